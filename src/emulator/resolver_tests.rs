//! The http backend against the emulator's `/resolver` behind the test kit's fault layer (the
//! glue the integration tests use, `tests/emulated`): every documented answer, every failure
//! mode, coalescing, the in-flight bound, the TTL, the bearer token and a private CA; and how
//! that glue edits the catalog and the test kit counts the requests.

use std::{sync::Arc, time::Duration};

#[path = "../../tests/emulated/mod.rs"]
mod emulated;

use crate::guid::g;
use crate::resolver::{
    MetadataResolver, RegistrationKey, ResolveError, SubscriptionState,
    http::{HttpResolver, HttpResolverError, HttpResolverOptions},
};
use azs_csp_testkit::upstream::{
    Mode, Upstream,
    resolver::{ResolverCounts, subscription_lookups},
};
use emulated::Metadata;

const SUB: &str = "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a";
const OTHER: &str = "6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c";
const TENANT: &str = "2b7e0c1d-0000-4000-8000-000000000001";

fn options(server: &Metadata) -> HttpResolverOptions {
    let mut options = HttpResolverOptions::new(&server.url()).expect("valid url");
    options.timeout = Duration::from_millis(500);
    options
}

fn resolver(server: &Metadata) -> HttpResolver {
    HttpResolver::new(options(server)).expect("resolver")
}

fn subscription_value(id: &str) -> serde_json::Value {
    serde_json::from_str(&subscription_json(id)).expect("JSON")
}

fn subscription_json(id: &str) -> String {
    format!(
        r#"{{"id":"{id}","tenantId":"{}","state":"Enabled","offer":"CSP","billingPartnerId":"4412345"}}"#,
        TENANT.to_uppercase()
    )
}

#[tokio::test]
async fn documented_answers() {
    let server = Metadata::start().await;
    server.add_subscription(SUB, subscription_value(&SUB.to_uppercase()));
    server.set_approval(OTHER, "rg", "azurestack-1", true);
    server.set_approval(OTHER, "rg", "azurestack-2", false);
    let resolver = resolver(&server);

    let found = resolver
        .subscription(g(&SUB.to_uppercase()))
        .await
        .expect("ok")
        .expect("known");
    assert_eq!(found.id, g(SUB));
    assert_eq!(found.tenant_id, Some(g(TENANT)));
    assert_eq!(found.state, SubscriptionState::Enabled);
    assert_eq!(found.billing_partner_id.as_deref(), Some("4412345"));
    assert_eq!(
        resolver.subscription(g(OTHER)).await,
        Ok(None),
        "404 is unknown"
    );

    let approved = |name: &str| RegistrationKey::new(OTHER, "RG", name);
    assert_eq!(
        resolver
            .multitenancy_approved(&approved("AzureStack-1"))
            .await,
        Ok(true)
    );
    assert_eq!(
        resolver
            .multitenancy_approved(&approved("azurestack-2"))
            .await,
        Ok(false)
    );
    assert_eq!(
        resolver
            .multitenancy_approved(&approved("azurestack-3"))
            .await,
        Ok(false),
        "404 is not approved"
    );

    // A non-GUID cannot be asked for: the resolver takes a Guid, and text that does not parse
    // as one names no subscription (the controllers' lookups answer `Ok(None)` for it).
    assert_eq!(crate::guid::Guid::parse("not-a-guid"), None);
    assert_eq!(server.requests(), 5, "a non-GUID never reaches the server");
    assert_eq!(resolver.refresh_interval(), Some(Duration::from_secs(300)));
    assert!(matches!(
        resolver.changes().try_recv(),
        Err(tokio::sync::broadcast::error::TryRecvError::Empty)
    ));
}

#[tokio::test]
async fn names_are_percent_encoded_under_the_base_path() {
    let server = Metadata::start().await;
    let mut options = options(&server);
    options.base_url = format!("{}/api/v1/", Upstream::url(&server))
        .parse()
        .expect("url");
    let resolver = HttpResolver::new(options).expect("resolver");
    let key = RegistrationKey::new(OTHER, "my rg", "a/b?c");
    assert_eq!(resolver.multitenancy_approved(&key).await, Ok(false));
    let _ = resolver.subscription(g(SUB)).await;
    assert_eq!(
        server.paths(),
        vec![
            format!("/api/v1/registrations/{OTHER}/my%20rg/a%2Fb%3Fc"),
            format!("/api/v1/subscriptions/{SUB}"),
        ]
    );
}

#[derive(Clone, Copy, Debug)]
enum Want {
    Status(u16),
    Malformed,
    Ok,
}

fn check<T: std::fmt::Debug>(got: Result<T, ResolveError>, want: Want, case: &str) {
    match (want, &got) {
        (Want::Status(want), Err(ResolveError::UnexpectedStatus { status, .. })) => {
            assert_eq!(*status, want, "{case}")
        }
        (Want::Malformed, Err(ResolveError::MalformedBody { .. })) | (Want::Ok, Ok(_)) => {}
        _ => panic!("{case}: want {want:?}, got {got:?}"),
    }
}

#[tokio::test]
async fn every_other_answer_is_an_error() {
    let server = Metadata::start().await;
    let key = RegistrationKey::new(OTHER, "rg", "r");
    use Want::*;
    let cases: Vec<(u16, String, Want, Want)> = vec![
        (502, String::new(), Status(502), Status(502)),
        (500, "{}".into(), Status(500), Status(500)),
        (401, String::new(), Status(401), Status(401)),
        (301, String::new(), Status(301), Status(301)),
        (200, "<html>oops</html>".into(), Malformed, Malformed),
        (200, String::new(), Malformed, Malformed),
        (200, "[]".into(), Malformed, Malformed),
        // Each endpoint's documented JSON is wrong for the other one.
        (
            200,
            r#"{"multitenancyApproved":true}"#.into(),
            Malformed,
            Ok,
        ),
        (
            200,
            r#"{"multitenancyApproved":false}"#.into(),
            Malformed,
            Ok,
        ),
        (200, subscription_json(SUB), Ok, Malformed),
        (200, subscription_json(OTHER), Malformed, Malformed),
        (200, subscription_json("abc"), Malformed, Malformed),
        (
            200,
            subscription_json(SUB).replace("Enabled", "Active"),
            Malformed,
            Malformed,
        ),
        (
            200,
            subscription_json(SUB).replace("offer", "Offer"),
            Malformed,
            Malformed,
        ),
        (
            200,
            r#"{"multitenancyApproved":"yes"}"#.into(),
            Malformed,
            Malformed,
        ),
        (200, "x".repeat(100_000), Malformed, Malformed),
    ];
    for (code, body, want_subscription, want_approval) in cases {
        server.set_mode(Mode::Answer(code, body.clone()));
        let case = format!("{code} {}", body.chars().take(60).collect::<String>());
        // Successful answers are cached; each case starts from an empty cache.
        let resolver = resolver(&server);
        check(
            resolver.subscription(g(SUB)).await,
            want_subscription,
            &case,
        );
        check(
            resolver.multitenancy_approved(&key).await,
            want_approval,
            &case,
        );
    }
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_errors() {
    let server = Metadata::start().await;
    server.add_subscription(SUB, subscription_value(SUB));
    let mut options = options(&server);
    options.timeout = Duration::from_millis(200);
    options.failure_ttl = Duration::from_millis(300);
    let resolver = HttpResolver::new(options).expect("resolver");

    server.set_mode(Mode::Delay(Duration::from_secs(5)));
    let error = resolver.subscription(g(SUB)).await.expect_err("hangs");
    assert!(
        matches!(
            error,
            ResolveError::Timeout {
                timeout_ms: 200,
                ..
            }
        ),
        "{error}"
    );

    server.set_mode(Mode::Healthy);
    assert_eq!(
        resolver.subscription(g(SUB)).await,
        Err(error.clone()),
        "a failed request is not sent again at once"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        resolver.subscription(g(SUB)).await.expect("ok").is_some(),
        "errors are remembered briefly, not cached"
    );

    server.stop().await;
    let key = RegistrationKey::new(OTHER, "rg", "r");
    let error = resolver
        .multitenancy_approved(&key)
        .await
        .expect_err("refused");
    assert!(matches!(error, ResolveError::Unreachable { .. }), "{error}");
    assert!(
        error.to_string().to_lowercase().contains("refused"),
        "{error}"
    );
    let stats = resolver.stats().snapshot();
    assert_eq!((stats.upstream_requests, stats.upstream_errors), (3, 2));
}

#[tokio::test]
async fn concurrent_lookups_of_one_key_make_one_request() {
    let server = Metadata::start().await;
    server.add_subscription(SUB, subscription_value(SUB));
    server.set_mode(Mode::Delay(Duration::from_millis(200)));
    let resolver = resolver(&server);
    let lookups = (0..25).map(|_| resolver.subscription(g(SUB)));
    let answers = futures::future::join_all(lookups).await;
    assert!(
        answers
            .iter()
            .all(|a| matches!(a, Ok(Some(m)) if m.id == g(SUB)))
    );
    assert_eq!(server.requests(), 1);
    let stats = resolver.stats().snapshot();
    assert_eq!((stats.misses, stats.coalesced), (1, 24));
}

#[tokio::test]
async fn requests_in_flight_are_bounded() {
    let server = Metadata::start().await;
    server.set_mode(Mode::Delay(Duration::from_millis(100)));
    let mut options = options(&server);
    options.max_in_flight = 3;
    let resolver = HttpResolver::new(options).expect("resolver");
    let ids: Vec<String> = (0..12)
        .map(|i| format!("00000000-0000-4000-8000-{i:012}"))
        .collect();
    let answers =
        futures::future::join_all(ids.iter().map(|id| resolver.subscription(g(id)))).await;
    assert!(answers.iter().all(|a| a == &Ok(None)));
    assert_eq!(server.requests(), 12);
    assert!(
        server.max_in_flight() <= 3,
        "max in flight {}",
        server.max_in_flight()
    );
    assert!(server.max_in_flight() >= 2, "requests did run concurrently");
}

#[tokio::test]
async fn answers_are_cached_for_the_ttl() {
    let server = Metadata::start().await;
    server.add_subscription(SUB, subscription_value(SUB));
    let mut options = options(&server);
    options.cache_ttl = Duration::from_millis(300);
    let resolver = HttpResolver::new(options).expect("resolver");
    assert_eq!(
        resolver.refresh_interval(),
        Some(Duration::from_millis(300))
    );
    for _ in 0..3 {
        assert!(resolver.subscription(g(SUB)).await.expect("ok").is_some());
        assert_eq!(resolver.subscription(g(OTHER)).await, Ok(None));
    }
    assert_eq!(server.requests(), 2, "unknown answers are cached too");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(resolver.subscription(g(SUB)).await.expect("ok").is_some());
    assert_eq!(server.requests(), 3);
    assert_eq!(resolver.stats().hits(), 4);
}

#[tokio::test]
async fn the_bearer_token_is_sent_and_reread() {
    let server = Metadata::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "first-token\n").expect("write");
    let mut options = options(&server);
    options.token_file = Some(token.clone());
    let resolver = HttpResolver::new(options.clone()).expect("resolver");
    let _ = resolver.subscription(g(SUB)).await;
    std::fs::write(&token, "rotated-token").expect("write");
    let _ = resolver.subscription(g(OTHER)).await;
    assert_eq!(
        server.authorizations(),
        vec![
            Some("Bearer first-token".to_owned()),
            Some("Bearer rotated-token".to_owned())
        ]
    );

    std::fs::remove_file(&token).expect("remove");
    let error = resolver
        .subscription(g("11111111-1111-4111-8111-111111111111"))
        .await
        .expect_err("token gone");
    assert!(error.to_string().contains("bearer token file"), "{error}");
    assert_eq!(server.requests(), 2, "no request without the token");
    let error = HttpResolver::new(options)
        .err()
        .expect("missing token file");
    assert!(
        matches!(error, HttpResolverError::TokenFile { .. }),
        "{error}"
    );

    let plain = self::resolver(&server);
    let _ = plain
        .subscription(g("22222222-2222-4222-8222-222222222222"))
        .await;
    assert_eq!(server.authorizations().last(), Some(&None));
}

#[test]
fn unusable_options_are_refused_at_startup() {
    for url in [
        "not a url",
        "ftp://host/",
        "mailto:a@b",
        "http://host/?q=1",
        "unix:/x",
    ] {
        let error = HttpResolverOptions::new(url).expect_err(url);
        assert!(
            matches!(error, HttpResolverError::InvalidUrl { .. }),
            "{url}: {error}"
        );
        assert!(error.to_string().contains("--resolver-url"), "{error}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = HttpResolverOptions::new("https://metadata.example/").expect("valid");
    options.ca_file = Some(dir.path().join("missing.pem"));
    let error = HttpResolver::new(options.clone())
        .err()
        .expect("missing CA");
    assert!(error.to_string().contains("missing.pem"), "{error}");

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificates here\n").expect("write");
    options.ca_file = Some(empty);
    let error = HttpResolver::new(options.clone()).err().expect("no certs");
    assert!(error.to_string().contains("no PEM certificate"), "{error}");

    options.ca_file = None;
    options.max_in_flight = 0;
    assert!(matches!(
        HttpResolver::new(options),
        Err(HttpResolverError::NoConcurrency)
    ));
}

/// A CA, and a server certificate for 127.0.0.1 that it signed.
fn private_ca() -> (String, tokio_rustls::TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    )
    .expect("server config");
    (
        ca_cert.pem(),
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    )
}

#[tokio::test]
async fn https_with_a_private_ca() {
    let (ca_pem, acceptor) = private_ca();
    let server = Metadata::serve(Some(acceptor)).await.expect("an emulator");
    server.add_subscription(SUB, subscription_value(SUB));
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).expect("write");

    let untrusting = resolver(&server);
    let error = untrusting
        .subscription(g(SUB))
        .await
        .expect_err("unknown CA");
    assert!(matches!(error, ResolveError::Unreachable { .. }), "{error}");
    assert!(
        error.to_string().to_lowercase().contains("certificate"),
        "{error}"
    );

    let mut options = options(&server);
    options.ca_file = Some(ca_file);
    let trusting = HttpResolver::new(options).expect("resolver");
    let found = trusting
        .subscription(g(SUB))
        .await
        .expect("ok")
        .expect("known");
    assert_eq!(found.id, g(SUB));
}

#[tokio::test]
async fn answering_again_after_failures_is_announced_once() {
    let server = Metadata::start().await;
    server.add_subscription(SUB, subscription_value(SUB));
    let mut options = options(&server);
    options.failure_ttl = Duration::from_millis(100);
    let resolver = HttpResolver::new(options).expect("resolver");
    let mut changes = resolver.changes();
    assert!(resolver.subscription(g(OTHER)).await.is_ok());
    assert!(changes.try_recv().is_err(), "nothing failed: no news");

    server.set_mode(Mode::Answer(502, "bad gateway".into()));
    assert!(resolver.subscription(g(SUB)).await.is_err());
    assert!(resolver.subscription(g(SUB)).await.is_err());
    assert!(changes.try_recv().is_err(), "failing is no news either");

    server.set_mode(Mode::Healthy);
    // Past the moment for which the failure answers lookups of SUB.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(resolver.subscription(g(SUB)).await.expect("ok").is_some());
    let recovered = changes.try_recv().expect("announced");
    assert!(recovered.upstream_recovered && !recovered.is_empty());
    assert!(recovered.subscriptions.is_empty() && !recovered.everything);
    let key = RegistrationKey::new(OTHER, "rg", "r");
    assert_eq!(resolver.multitenancy_approved(&key).await, Ok(false));
    assert!(changes.try_recv().is_err(), "announced once");
}

#[tokio::test]
async fn the_catalog_is_edited_while_it_runs_and_requests_are_counted_by_kind_and_key() {
    let server = Metadata::start().await;
    let fresh = || resolver(&server);
    server.add_subscription(SUB, subscription_value(SUB));
    server.set_approval(OTHER, "RG", "Name", true);
    let key = RegistrationKey::new(OTHER, "rg", "name");
    let found = fresh()
        .subscription(g(SUB))
        .await
        .expect("ok")
        .expect("known");
    assert_eq!(found.offer, "CSP");
    assert_eq!(fresh().multitenancy_approved(&key).await, Ok(true));

    server.set_approval(OTHER, "rg", "name", false);
    server.add_subscription(
        &SUB.to_uppercase(),
        serde_json::from_str(&subscription_json(SUB).replace("CSP", "PayAsYouGo")).expect("JSON"),
    );
    assert_eq!(fresh().multitenancy_approved(&key).await, Ok(false));
    let replaced = fresh()
        .subscription(g(SUB))
        .await
        .expect("ok")
        .expect("known");
    assert_eq!(
        replaced.offer, "PayAsYouGo",
        "the entry of the same id is replaced"
    );
    assert_eq!(fresh().subscription(g(OTHER)).await, Ok(None));

    assert_eq!(
        ResolverCounts::of(&server.exchanges()),
        ResolverCounts {
            subscription_lookups: 3,
            approval_lookups: 2,
            other: 0,
            not_found: 2,
            distinct_subscriptions: 2,
            distinct_registrations: 1,
        }
    );
    assert_eq!(
        subscription_lookups(&server.exchanges(), &SUB.to_uppercase()),
        2
    );
}

#[tokio::test]
async fn an_entry_the_catalog_refuses_is_not_put_in_force() {
    let server = Metadata::start().await;
    server.add_subscription(SUB, subscription_value(SUB));
    let refused = std::panic::AssertUnwindSafe(|| {
        server.add_subscription(OTHER, serde_json::json!({"id": OTHER, "state": "Sleeping"}))
    });
    assert!(std::panic::catch_unwind(refused).is_err());
    assert!(
        resolver(&server)
            .subscription(g(SUB))
            .await
            .expect("ok")
            .is_some()
    );
    assert_eq!(resolver(&server).subscription(g(OTHER)).await, Ok(None));
}
