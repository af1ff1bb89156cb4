use serde_json::Value;

use super::*;
use crate::{
    emulator::{entra::TokenIssuer, stamp::Stamp, throttle::WriteThrottle},
    resolver::Catalog,
};

const BASE: &str = "https://127.0.0.1:8443";
const PROVIDER: &str = "6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c";
const LOCAL: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const TENANT: &str = "bbbbbbbb-0000-4000-8000-000000000001";
const USAGE: &str = "/subscriptions/6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c/providers/Microsoft.Commerce.Admin/subscriberUsageAggregates";

fn emulator(with_stamp: bool) -> Emulator {
    let emulator = Emulator::new(
        Catalog::default(),
        BASE.to_owned(),
        TokenIssuer::generate().expect("key"),
        WriteThrottle::new(1, 1.0),
    );
    if !with_stamp {
        return emulator;
    }
    // 700 Windows VMs for two hours: 4,200 records, five pages of an hour-long window pair.
    let mut text = format!(
        "providerSubscriptionId: {PROVIDER}\nsubscriptions:\n- {{subscriptionId: {LOCAL}, tenantId: {TENANT}}}\nvirtualMachines:\n"
    );
    for i in 0..700 {
        text.push_str(&format!(
            "- {{name: vm{i}, subscriptionId: {LOCAL}, size: A1, vcores: 2, os: Windows, running: [{{from: '2026-03-01T10:00:00Z', to: '2026-03-01T12:00:00Z'}}]}}\n"
        ));
    }
    let stamp = Stamp::parse(&text, "2026-03-02T00:00:00Z".parse().unwrap()).expect("stamp");
    emulator.with_stamp(stamp)
}

fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn usage_query(extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut q = query(&[
        ("reportedStartTime", "2026-03-01T00:00:00Z"),
        ("reportedEndTime", "2026-03-02T00:00:00Z"),
        ("aggregationGranularity", "Hourly"),
        ("api-version", COMMERCE_API_VERSION),
    ]);
    for (k, v) in extra {
        if v.is_empty() {
            q.remove(*k);
        } else {
            q.insert((*k).to_owned(), (*v).to_owned());
        }
    }
    q
}

async fn body(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, serde_json::from_slice(&bytes).expect("JSON"))
}

fn now() -> DateTime<Utc> {
    "2026-03-05T00:00:00Z".parse().unwrap()
}

fn call(
    emulator: &Emulator,
    api: AdminApi,
    path: &str,
    q: &HashMap<String, String>,
) -> Result<Response, ArmError> {
    answer(emulator, api, &Method::GET, path, PROVIDER, q, now())
}

#[tokio::test]
async fn pages_follow_by_next_link_or_continuation_token_to_every_record() {
    let emulator = emulator(true);
    let mut q = usage_query(&[]);
    let mut count = 0;
    let mut pages = 0;
    loop {
        let (status, page) =
            body(call(&emulator, AdminApi::UsageAggregates, USAGE, &q).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        count += page["value"].as_array().unwrap().len();
        pages += 1;
        let Some(token) = page["continuationToken"].as_str() else {
            assert!(page.get("nextLink").is_none());
            break;
        };
        let link = page["nextLink"].as_str().unwrap();
        let (head, query_text) = link.split_once('?').unwrap();
        assert_eq!(head, format!("{BASE}{USAGE}"));
        // The link is the same request with the token: read it back as a client would.
        let linked: HashMap<String, String> = query_text
            .split('&')
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap();
                let v = v.replace("%3A", ":");
                (k.to_owned(), v)
            })
            .collect();
        assert_eq!(linked["continuationToken"], token);
        assert_eq!(linked["reportedStartTime"], q["reportedStartTime"]);
        assert_eq!(linked["api-version"], COMMERCE_API_VERSION);
        q = linked;
    }
    assert_eq!((count, pages), (4200, 5));
}

#[tokio::test]
async fn bad_parameters_are_answered_as_arm_errors() {
    let emulator = emulator(true);
    let cases: Vec<(HashMap<String, String>, StatusCode, &str, &str)> = vec![
        (
            usage_query(&[("reportedStartTime", "")]),
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "'reportedStartTime' is required",
        ),
        (
            usage_query(&[("reportedEndTime", "tomorrow")]),
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "'reportedEndTime' value 'tomorrow' is not an ISO 8601 time",
        ),
        (
            usage_query(&[("reportedStartTime", "2026-03-01T00:30:00Z")]),
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "beginning of an hour",
        ),
        (
            usage_query(&[("reportedEndTime", "2026-03-01T00:00:00Z")]),
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "after the reportedStartTime",
        ),
        (
            usage_query(&[("aggregationGranularity", "Daily")]),
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "Hourly only",
        ),
        (
            usage_query(&[("aggregationGranularity", "")]),
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "Hourly only",
        ),
        (
            usage_query(&[("subscriberId", "me")]),
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "subscriberId 'me'",
        ),
        (
            usage_query(&[("continuationToken", "g.1")]),
            StatusCode::BAD_REQUEST,
            "InvalidContinuationToken",
            "'g.1'",
        ),
        (
            usage_query(&[("api-version", "")]),
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "api-version",
        ),
        (
            usage_query(&[("api-version", "2015-11-01")]),
            StatusCode::BAD_REQUEST,
            "NoRegisteredProviderFound",
            "'2015-06-01-preview'",
        ),
    ];
    for (q, status, code, message) in cases {
        let error = call(&emulator, AdminApi::UsageAggregates, USAGE, &q).unwrap_err();
        assert_eq!(
            (error.status, error.code.as_str()),
            (status, code),
            "{q:?}: {}",
            error.message
        );
        assert!(error.message.contains(message), "{q:?}: {}", error.message);
    }
    let other = answer(
        &emulator,
        AdminApi::UsageAggregates,
        &Method::GET,
        USAGE,
        LOCAL,
        &usage_query(&[]),
        now(),
    )
    .unwrap_err();
    assert_eq!(
        (other.status, other.code.as_str()),
        (StatusCode::NOT_FOUND, "SubscriptionNotFound")
    );
    let post = answer(
        &emulator,
        AdminApi::UsageAggregates,
        &Method::POST,
        USAGE,
        PROVIDER,
        &usage_query(&[]),
        now(),
    )
    .unwrap_err();
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    let none = call(
        &self::emulator(false),
        AdminApi::UsageAggregates,
        USAGE,
        &usage_query(&[]),
    )
    .unwrap_err();
    assert_eq!(
        (none.status, none.code.as_str()),
        (StatusCode::NOT_FOUND, "InvalidResourceType")
    );
}

#[tokio::test]
async fn the_subscription_list_answers_its_api_version() {
    let emulator = emulator(true);
    let path =
        format!("/subscriptions/{PROVIDER}/providers/Microsoft.Subscriptions.Admin/subscriptions");
    let (status, list) = body(
        call(
            &emulator,
            AdminApi::Subscriptions,
            &path,
            &query(&[("api-version", SUBSCRIPTIONS_API_VERSION)]),
        )
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["value"][0]["subscriptionId"], LOCAL);
    assert_eq!(list["value"][0]["tenantId"], TENANT);
    let wrong = call(
        &emulator,
        AdminApi::Subscriptions,
        &path,
        &query(&[("api-version", COMMERCE_API_VERSION)]),
    )
    .unwrap_err();
    assert_eq!(wrong.code, "NoRegisteredProviderFound");
}

#[test]
fn admin_paths_are_matched_case_insensitively() {
    for (segments, want) in [
        (
            vec![
                "providers",
                "Microsoft.Commerce.Admin",
                "subscriberUsageAggregates",
            ],
            Some(AdminApi::UsageAggregates),
        ),
        (
            vec![
                "PROVIDERS",
                "microsoft.commerce.admin",
                "SubscriberUsageAggregates",
            ],
            Some(AdminApi::UsageAggregates),
        ),
        (
            vec![
                "providers",
                "Microsoft.Subscriptions.Admin",
                "subscriptions",
            ],
            Some(AdminApi::Subscriptions),
        ),
        (
            vec!["providers", "Microsoft.Commerce", "usageAggregates"],
            None,
        ),
        (
            vec!["providers", "Microsoft.AzureStack", "registrations"],
            None,
        ),
    ] {
        assert_eq!(AdminApi::of(&segments), want, "{segments:?}");
    }
}
