//! The foundation: the integration tests reach a real kube-apiserver.

use azs_csp_testkit::cluster::TestNamespace;
use k8s_openapi::api::{
    authentication::v1::{SelfSubjectReview, TokenRequest},
    core::v1::{ConfigMap, ServiceAccount},
};
use kube::{
    Api, Client, Config,
    api::PostParams,
    config::{AuthInfo, KubeConfigOptions, Kubeconfig},
};

#[tokio::test]
async fn a_namespace_and_an_object_round_trip_through_the_api_server() {
    let ns = TestNamespace::new("cluster").await;
    let created: ConfigMap = ns
        .create(
            r#"
metadata: {name: round-trip}
data: {answer: "42"}
"#,
        )
        .await;
    let read = ns
        .api::<ConfigMap>()
        .get("round-trip")
        .await
        .expect("read back");
    assert_eq!(read.metadata.uid, created.metadata.uid);
    assert_eq!(read.data.unwrap()["answer"], "42");
}

/// A client that authenticates with `token` only (no client certificate).
pub async fn token_client(token: &str) -> Client {
    let kubeconfig =
        Kubeconfig::read_from(azs_csp_testkit::cluster::kubeconfig_path()).expect("kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    config.auth_info = AuthInfo {
        token: Some(token.to_string().into()),
        ..AuthInfo::default()
    };
    Client::try_from(config).expect("token client")
}

#[tokio::test]
async fn a_service_account_token_from_token_request_is_accepted() {
    let ns = TestNamespace::new("token").await;
    let _: ServiceAccount = ns.create("metadata: {name: robot}").await;
    let request: TokenRequest = serde_json::from_value(serde_json::json!({
        "spec": {"audiences": [], "expirationSeconds": 600}
    }))
    .unwrap();
    let issued: TokenRequest = ns
        .api::<ServiceAccount>()
        .create_subresource("token", "robot", &PostParams::default(), &request)
        .await
        .expect("TokenRequest");
    let token = issued
        .status
        .and_then(|s| s.token)
        .expect("a token is issued");
    assert!(!token.is_empty());

    let client = token_client(&token).await;
    let review: SelfSubjectReview = serde_json::from_value(serde_json::json!({})).unwrap();
    let answered = Api::<SelfSubjectReview>::all(client)
        .create(&PostParams::default(), &review)
        .await
        .expect("the API server accepts the token");
    let username = answered
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username);
    assert_eq!(
        username.as_deref(),
        Some(format!("system:serviceaccount:{}:robot", ns.name).as_str())
    );
}
