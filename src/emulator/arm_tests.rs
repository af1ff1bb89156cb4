use std::collections::HashMap;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::Value;

use super::*;
use crate::emulator::{Emulator, entra::TokenIssuer, throttle::WriteThrottle};

const BASE: &str = "https://127.0.0.1:8443";
const REG_SUB: &str = "6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c";
const CLOUD: &str = "5f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f";
const TENANT: &str = "2b7e0c1d-0000-4000-8000-000000000001";
const CLIENT: &str = "3c8f1d2e-0000-4000-8000-000000000002";
const CUSTOMER: &str = "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a";
const CUSTOMER_TENANT: &str = "7a1b2c3d-0000-4000-8000-000000000003";
const OTHER_PARTNER: &str = "e09a4e93-29a7-4eba-a7f2-000000000001";
const NOT_CSP: &str = "e09a4e93-29a7-4eba-a7f2-000000000002";
const DISABLED: &str = "e09a4e93-29a7-4eba-a7f2-000000000003";
const SAME_TENANT: &str = "e09a4e93-29a7-4eba-a7f2-000000000004";
const UNKNOWN: &str = "e09a4e93-29a7-4eba-a7f2-00000000ffff";
const REG: &str = "/subscriptions/6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c/resourceGroups/azurestack/providers/Microsoft.AzureStack/registrations/azurestack-reg";
const CAPACITY_REG: &str = "/subscriptions/6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c/resourceGroups/azurestack/providers/Microsoft.AzureStack/registrations/capacity-reg";
const UNAPPROVED_REG: &str = "/subscriptions/6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c/resourceGroups/azurestack/providers/Microsoft.AzureStack/registrations/unapproved-reg";

/// A principal whose role reaches one registration only, and one without any role.
const SCOPED: &str = "3c8f1d2e-0000-4000-8000-0000000000a1";
const NO_ROLE: &str = "3c8f1d2e-0000-4000-8000-0000000000a2";

fn catalog(extra_customers: usize) -> Catalog {
    Catalog::parse(&catalog_text(extra_customers)).expect("catalog")
}

fn catalog_text(extra_customers: usize) -> String {
    let mut text = format!(
        r#"
subscriptions:
- {{id: {REG_SUB}, tenantId: {TENANT}, state: Enabled, offer: CSP, billingPartnerId: "4412345"}}
- {{id: {CUSTOMER}, tenantId: {CUSTOMER_TENANT}, state: Enabled, offer: CSP, billingPartnerId: "4412345"}}
- {{id: {SAME_TENANT}, tenantId: {CUSTOMER_TENANT}, state: Enabled, offer: CSP, billingPartnerId: "4412345"}}
- {{id: {OTHER_PARTNER}, state: Enabled, offer: CSP, billingPartnerId: "5590000"}}
- {{id: {NOT_CSP}, state: Enabled, offer: PayAsYouGo}}
- {{id: {DISABLED}, state: Disabled, offer: CSP, billingPartnerId: "4412345"}}
"#
    );
    for i in 0..extra_customers {
        text.push_str(&format!(
            "- {{id: 00000000-0000-4000-8000-{i:012}, state: Enabled, offer: CSP, billingPartnerId: \"4412345\"}}\n"
        ));
    }
    text.push_str(&format!(
        r#"
multitenancyApprovals:
- {{subscriptionId: {REG_SUB}, resourceGroup: azurestack, registrationName: azurestack-reg}}
- {{subscriptionId: {REG_SUB}, resourceGroup: azurestack, registrationName: capacity-reg}}
registrations:
- {{subscriptionId: {REG_SUB}, resourceGroup: AzureStack, name: azurestack-reg, cloudId: {CLOUD}, billingModel: PayAsYouUse}}
- {{subscriptionId: {REG_SUB}, resourceGroup: azurestack, name: capacity-reg, cloudId: {CLOUD}, billingModel: Capacity}}
- {{subscriptionId: {REG_SUB}, resourceGroup: azurestack, name: unapproved-reg, cloudId: {CLOUD}, billingModel: PayAsYouUse}}
servicePrincipals:
- {{tenantId: {TENANT}, clientId: {CLIENT}, clientSecret: s}}
- {{tenantId: {TENANT}, clientId: {SCOPED}, clientSecret: s, registrations: ["{CAPACITY_REG}"]}}
- {{tenantId: {TENANT}, clientId: {NO_ROLE}, clientSecret: s, registrations: []}}
"#
    ));
    text
}

struct Fixture {
    emulator: Emulator,
    token: String,
}

impl Fixture {
    fn new(extra_customers: usize, burst: u32) -> Self {
        let tokens = TokenIssuer::generate().expect("key");
        let emulator = Emulator::new(
            catalog(extra_customers),
            BASE.to_owned(),
            tokens,
            WriteThrottle::new(burst, 0.001),
        );
        let token = emulator.tokens_for(BASE);
        Self { emulator, token }
    }

    fn call(&self, method: Method, path: &str, body: &str) -> (StatusCode, HeaderMap, Value) {
        self.call_as(Some(&self.token), method, path, "2022-06-01", body)
    }

    fn call_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        api_version: &str,
        body: &str,
    ) -> (StatusCode, HeaderMap, Value) {
        let (path, query_text) = path.split_once('?').unwrap_or((path, ""));
        let mut query: HashMap<String, String> = query_text
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.replace("%24", "$"), v.to_owned()))
            .collect();
        if !api_version.is_empty() {
            query.insert("api-version".to_owned(), api_version.to_owned());
        }
        let mut headers = HeaderMap::new();
        if let Some(token) = token {
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
            );
        }
        let response = match handle(
            &self.emulator,
            &method,
            path,
            &headers,
            &query,
            body.as_bytes(),
        ) {
            Ok(response) => response,
            Err(error) => error.into_response(),
        };
        let status = response.status();
        let headers = response.headers().clone();
        let bytes =
            futures::executor::block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
                .expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON body")
        };
        (status, headers, body)
    }
}

impl Emulator {
    /// A token of the catalog's first principal for `audience`.
    fn tokens_for(&self, audience: &str) -> String {
        self.token_of(CLIENT, audience)
    }

    /// A token of the catalog's principal `client` for `audience`.
    fn token_of(&self, client: &str, audience: &str) -> String {
        let catalog = self.catalog();
        let principal = catalog
            .service_principals()
            .iter()
            .find(|p| p.client_id == client)
            .expect("a principal of the catalog");
        self.tokens
            .issue(
                &entra::issuer_of(&self.base_url, &principal.tenant_id),
                principal,
                audience,
                chrono::Utc::now().timestamp(),
            )
            .expect("token")
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("(no error code)")
}

#[test]
fn puts_are_decided_by_the_policy() {
    let fixture = Fixture::new(0, 100);
    let put = |registration: &str, customer: &str, body: &str| {
        let (status, _, answer) = fixture.call(
            Method::PUT,
            &format!("{registration}/customerSubscriptions/{customer}"),
            body,
        );
        (status, answer)
    };
    let unknown_registration = REG.replace("azurestack-reg", "no-such-registration");
    let cases = [
        (
            REG,
            CUSTOMER,
            r#"{"properties":{}}"#,
            StatusCode::OK,
            "Attached",
        ),
        (
            REG,
            CUSTOMER,
            &format!(
                r#"{{"properties":{{"tenantId":"{}"}}}}"#,
                CUSTOMER_TENANT.to_uppercase()
            ),
            StatusCode::OK,
            "Attached",
        ),
        (
            REG,
            OTHER_PARTNER,
            "{}",
            StatusCode::BAD_REQUEST,
            "BadCustomerSubscriptionId",
        ),
        (
            REG,
            NOT_CSP,
            "{}",
            StatusCode::BAD_REQUEST,
            "InvalidCSPSubscription",
        ),
        (
            REG,
            DISABLED,
            "{}",
            StatusCode::BAD_REQUEST,
            "InvalidCustomerSubscriptionId",
        ),
        (
            REG,
            UNKNOWN,
            "{}",
            StatusCode::BAD_REQUEST,
            "InvalidCustomerSubscriptionId",
        ),
        (
            REG,
            "not-a-guid",
            "{}",
            StatusCode::BAD_REQUEST,
            "InvalidCustomerSubscriptionId",
        ),
        (
            REG,
            CUSTOMER,
            &format!(r#"{{"properties":{{"tenantId":"{TENANT}"}}}}"#),
            StatusCode::BAD_REQUEST,
            "InvalidCustomerSubscriptionId",
        ),
        (
            CAPACITY_REG,
            CUSTOMER,
            "{}",
            StatusCode::BAD_REQUEST,
            "CustomerSubscriptionsNotAllowed",
        ),
        (
            UNAPPROVED_REG,
            CUSTOMER,
            "{}",
            StatusCode::BAD_REQUEST,
            "UnauthorizedCspRegistration",
        ),
        (
            &unknown_registration,
            CUSTOMER,
            "{}",
            StatusCode::NOT_FOUND,
            "RegistrationNotFound",
        ),
        (
            REG,
            CUSTOMER,
            "{not json",
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
        ),
    ];
    for (registration, customer, body, want_status, want) in cases {
        let (status, answer) = put(registration, customer, body);
        assert_eq!(status, want_status, "{customer} {body}: {answer}");
        if want == "Attached" {
            assert_eq!(answer["name"], customer);
            assert_eq!(answer["type"], CUSTOMER_SUBSCRIPTION_TYPE);
            assert_eq!(
                answer["id"],
                format!(
                    "/subscriptions/{REG_SUB}/resourceGroups/AzureStack/providers/Microsoft.AzureStack/registrations/azurestack-reg/customerSubscriptions/{customer}"
                )
            );
            assert_eq!(answer["properties"]["tenantId"], CUSTOMER_TENANT);
        } else {
            assert_eq!(code(&answer), want, "{customer} {body}: {answer}");
            assert!(
                !answer["error"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("spec."),
                "{answer}"
            );
        }
    }
}

#[test]
fn put_get_list_delete() {
    let fixture = Fixture::new(0, 100);
    let item = format!("{REG}/customerSubscriptions/{CUSTOMER}");
    let (status, _, body) = fixture.call(Method::GET, &item, "");
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "CustomerSubscriptionNotFound")
    );
    let (status, headers, _) = fixture.call(Method::PUT, &item, "{}");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[REMAINING_WRITES_HEADER], "99");
    // Paths are case-insensitive, as in ARM.
    let (status, _, body) = fixture.call(Method::GET, &item.to_lowercase(), "");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["properties"]["tenantId"], CUSTOMER_TENANT);
    let (status, _, body) = fixture.call(Method::GET, &format!("{REG}/customerSubscriptions"), "");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["value"].as_array().map(Vec::len), Some(1));
    assert!(body.get("nextLink").is_none());
    // A second subscription of the same tenant replaces the first, as Azure does.
    let (status, _, _) = fixture.call(
        Method::PUT,
        &format!("{REG}/customerSubscriptions/{SAME_TENANT}"),
        "{}",
    );
    assert_eq!(status, StatusCode::OK);
    let (_, _, body) = fixture.call(Method::GET, &item, "");
    assert_eq!(code(&body), "CustomerSubscriptionNotFound");
    let same = format!("{REG}/customerSubscriptions/{SAME_TENANT}");
    let (status, _, body) = fixture.call(Method::DELETE, &same, "");
    assert_eq!((status, body), (StatusCode::OK, Value::Null));
    let (status, _, body) = fixture.call(Method::DELETE, &same, "");
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "CustomerSubscriptionNotFound")
    );
}

#[test]
fn lists_are_paged_by_100() {
    let fixture = Fixture::new(250, 1000);
    for i in 0..250 {
        let (status, _, body) = fixture.call(
            Method::PUT,
            &format!("{REG}/customerSubscriptions/00000000-0000-4000-8000-{i:012}"),
            "{}",
        );
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let mut next = Some(format!("{REG}/customerSubscriptions"));
    let mut pages = Vec::new();
    while let Some(path) = next.take() {
        let path = path.strip_prefix(BASE).unwrap_or(&path).to_owned();
        let (status, _, body) = fixture.call_as(
            Some(&fixture.token),
            Method::GET,
            &path,
            if path.contains("api-version") {
                ""
            } else {
                "2022-06-01"
            },
            "",
        );
        assert_eq!(status, StatusCode::OK, "{body}");
        pages.push(body["value"].as_array().map_or(0, Vec::len));
        next = body["nextLink"].as_str().map(str::to_owned);
        assert!(pages.len() < 10, "nextLink loops");
    }
    assert_eq!(pages, [100, 100, 50]);
}

#[test]
fn bearer_api_version_and_throttling() {
    let fixture = Fixture::new(0, 2);
    let item = format!("{REG}/customerSubscriptions/{CUSTOMER}");
    let other_audience = fixture.emulator.tokens_for("https://management.azure.com/");
    let slash_audience = fixture.emulator.tokens_for(&format!("{BASE}/"));
    let cases = [
        (
            None,
            "2022-06-01",
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
        ),
        (
            Some("garbage"),
            "2022-06-01",
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
        ),
        (
            Some(other_audience.as_str()),
            "2022-06-01",
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationTokenAudience",
        ),
        (
            Some(slash_audience.as_str()),
            "",
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
        ),
        (
            Some(slash_audience.as_str()),
            "2015-01-01",
            StatusCode::BAD_REQUEST,
            "NoRegisteredProviderFound",
        ),
    ];
    for (token, api_version, want_status, want_code) in cases {
        let (status, headers, body) = fixture.call_as(token, Method::GET, &item, api_version, "");
        assert_eq!(
            (status, code(&body)),
            (want_status, want_code),
            "{token:?} {api_version}"
        );
        if status == StatusCode::UNAUTHORIZED {
            assert!(headers.contains_key(header::WWW_AUTHENTICATE));
        }
    }
    for api_version in API_VERSIONS {
        let (status, _, body) =
            fixture.call_as(Some(&slash_audience), Method::GET, REG, api_version, "");
        assert_eq!(status, StatusCode::OK, "{api_version}");
        assert_eq!(body["properties"]["billingModel"], "PayAsYouUse");
        assert_eq!(body["properties"]["cloudId"], CLOUD);
    }
    // Burst 2: the third write is throttled, reads are not.
    for want in ["1", "0"] {
        let (status, headers, _) = fixture.call(Method::PUT, &item, "{}");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[REMAINING_WRITES_HEADER], want);
    }
    let (status, headers, body) = fixture.call(Method::DELETE, &item, "");
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests")
    );
    assert_eq!(headers[REMAINING_WRITES_HEADER], "0");
    let retry_after: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!(retry_after >= 1);
    let (status, _, _) = fixture.call(Method::GET, &item, "");
    assert_eq!(status, StatusCode::OK);
}

#[test]
fn registrations_and_subscriptions() {
    let fixture = Fixture::new(0, 10);
    let (status, _, body) = fixture.call(
        Method::GET,
        &format!("/subscriptions/{REG_SUB}/providers/Microsoft.AzureStack/registrations"),
        "",
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["value"].as_array().map(Vec::len), Some(3));
    let (status, _, body) = fixture.call(Method::GET, &REG.replace("azurestack-reg", "nope"), "");
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "RegistrationNotFound")
    );
    let (status, _, body) = fixture.call(Method::GET, &format!("/subscriptions/{REG_SUB}"), "");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["tenantId"], TENANT);
    let (status, _, body) = fixture.call(Method::GET, &format!("{REG}/somethingElse"), "");
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "InvalidResourceType")
    );
}

#[test]
fn targets_parse_case_insensitively() {
    let cases: [(&str, Option<Target<'_>>); 6] = [
        ("", Some(Target::Subscription)),
        ("providers/microsoft.azurestack", Some(Target::Provider)),
        (
            "RESOURCEGROUPS/rg/providers/Microsoft.AzureStack/registrations/r",
            Some(Target::Registration {
                group: "rg",
                name: "r",
            }),
        ),
        (
            "resourceGroups/rg/providers/Microsoft.AzureStack/registrations/r/customersubscriptions",
            Some(Target::Customers {
                group: "rg",
                name: "r",
            }),
        ),
        (
            "resourceGroups/rg/providers/Microsoft.AzureStack/registrations/r/customerSubscriptions/c",
            Some(Target::Customer {
                group: "rg",
                name: "r",
                customer: "c",
            }),
        ),
        (
            "resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/v",
            None,
        ),
    ];
    for (path, want) in cases {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        assert_eq!(parse_target(&segments), want, "{path}");
    }
}

#[test]
fn principals_act_only_where_their_role_reaches() {
    let fixture = Fixture::new(0, 100);
    let scoped = fixture.emulator.token_of(SCOPED, BASE);
    let no_role = fixture.emulator.token_of(NO_ROLE, BASE);
    let call = |token: &str, method: Method, path: &str| {
        fixture.call_as(Some(token), method, path, "2022-06-01", "{}")
    };
    let customer_of =
        |registration: &str| format!("{registration}/customerSubscriptions/{CUSTOMER}");
    let missing = REG.replace("azurestack-reg", "no-such-registration");
    let read = "Microsoft.AzureStack/registrations/read";
    let customers_read = "Microsoft.AzureStack/registrations/customerSubscriptions/read";
    let write = "Microsoft.AzureStack/registrations/customerSubscriptions/write";
    let delete = "Microsoft.AzureStack/registrations/customerSubscriptions/delete";
    let customers = format!("{REG}/customerSubscriptions");
    let denied = [
        (&scoped, Method::GET, REG.to_owned(), read),
        (&scoped, Method::GET, customers.clone(), customers_read),
        (&scoped, Method::GET, customer_of(REG), customers_read),
        (&scoped, Method::PUT, customer_of(REG), write),
        (&scoped, Method::DELETE, customer_of(REG), delete),
        // Authorization comes before existence: a 403 tells nothing about the registration.
        (&scoped, Method::GET, missing.clone(), read),
        (&no_role, Method::GET, CAPACITY_REG.to_owned(), read),
        (&no_role, Method::PUT, customer_of(CAPACITY_REG), write),
    ];
    for (token, method, path, action) in denied {
        let (status, _, body) = call(token, method.clone(), &path);
        assert_eq!(
            (status, code(&body)),
            (StatusCode::FORBIDDEN, "AuthorizationFailed"),
            "{method} {path}: {body}"
        );
        let client = if token == &scoped { SCOPED } else { NO_ROLE };
        assert_eq!(
            body["error"]["message"],
            format!(
                "The client '{client}' with object id '{client}' does not have authorization to perform action '{action}' over scope '{path}' or the scope is invalid. If access was recently granted, please refresh your credentials."
            ),
        );
    }
    // Refused writes took nothing from the principals' write buckets (burst 100).
    for client in [SCOPED, NO_ROLE] {
        let admission =
            fixture
                .emulator
                .throttle
                .lock()
                .expect("lock")
                .admit(client, REG_SUB, Instant::now());
        assert_eq!(admission, Admission::Allowed { remaining: 99 }, "{client}");
    }

    // Where the role reaches, the request is decided as usual.
    let (status, _, body) = call(&scoped, Method::GET, CAPACITY_REG);
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = call(&scoped, Method::PUT, &customer_of(CAPACITY_REG));
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "CustomerSubscriptionsNotAllowed")
    );
    let (status, _, body) = call(
        &scoped,
        Method::GET,
        &missing.replace("no-such-registration", "capacity-reg"),
    );
    assert_eq!(status, StatusCode::OK, "{body}");

    // Lists hold what the caller may read.
    let list = format!("/subscriptions/{REG_SUB}/providers/Microsoft.AzureStack/registrations");
    for (token, want) in [(&fixture.token, 3), (&scoped, 1), (&no_role, 0)] {
        let (status, _, body) = call(token, Method::GET, &list);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["value"].as_array().map(Vec::len), Some(want), "{body}");
    }
    // The unscoped principal still may do everything.
    let (status, _, body) = call(&fixture.token, Method::PUT, &customer_of(REG));
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[test]
fn a_reload_replaces_the_catalog_and_keeps_what_arm_holds() {
    use crate::resolver::watch::CatalogSink;
    let fixture = Fixture::new(0, 100);
    let item = format!("{REG}/customerSubscriptions/{CUSTOMER}");
    let (status, _, _) = fixture.call(Method::PUT, &item, "{}");
    assert_eq!(status, StatusCode::OK);
    let scoped = fixture.emulator.token_of(SCOPED, BASE);

    // The registration leaves the catalog, the scoped principal leaves too.
    let without = catalog_text(0)
        .lines()
        .filter(|line| !line.contains("name: azurestack-reg") && !line.contains(SCOPED))
        .collect::<Vec<_>>()
        .join("\n");
    fixture.emulator.offer(&without);
    let (status, _, body) = fixture.call(Method::GET, &item, "");
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "RegistrationNotFound")
    );
    let (status, _, body) =
        fixture.call_as(Some(&scoped), Method::GET, CAPACITY_REG, "2022-06-01", "");
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "AuthorizationFailed"),
        "a removed principal's token authenticates but holds no role"
    );

    // A bad catalog is refused whole: the one in force stays.
    fixture.emulator.offer("registrations: [");
    fixture
        .emulator
        .offer(&format!("{without}\nservicePrincipals: []"));
    assert_eq!(fixture.emulator.catalog.rejected_catalogs(), 2);
    let (status, _, _) = fixture.call(Method::GET, CAPACITY_REG, "");
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = fixture.call(Method::GET, REG, "");
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Back in the catalog, the registration still holds its customer subscription.
    fixture.emulator.offer(&catalog_text(0));
    let (status, _, body) = fixture.call(Method::GET, &item, "");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["properties"]["tenantId"], CUSTOMER_TENANT);
}

#[test]
fn resource_groups_of_registrations_are_readable_where_a_role_reaches() {
    let fixture = Fixture::new(0, 100);
    let scoped = fixture.emulator.token_of(SCOPED, BASE);
    let group = format!("/subscriptions/{REG_SUB}/resourcegroups/AzureStack");
    let cases = [
        (&fixture.token, group.clone(), StatusCode::OK, ""),
        (
            &fixture.token,
            format!("/subscriptions/{REG_SUB}/resourceGroups/other"),
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
        ),
        // A role on one registration does not reach its group.
        (
            &scoped,
            group.clone(),
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
        ),
    ];
    for (token, path, want_status, want_code) in cases {
        // Microsoft.Resources' own api-version, not Microsoft.AzureStack's.
        let (status, _, body) = fixture.call_as(Some(token), Method::GET, &path, "2024-11-01", "");
        assert_eq!(status, want_status, "{path}: {body}");
        if want_status == StatusCode::OK {
            assert_eq!(body["name"], "AzureStack");
            assert_eq!(body["location"], "global");
            assert_eq!(body["type"], "Microsoft.Resources/resourceGroups");
        } else {
            assert_eq!(code(&body), want_code, "{path}");
        }
    }
    let (status, _, body) = fixture.call(Method::PUT, &group, "{}");
    assert_eq!(
        (status, code(&body)),
        (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed")
    );
}
