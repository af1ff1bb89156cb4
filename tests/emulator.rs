//! `azs-csp-operator emulate` as users run it: the real binary over HTTPS, with Microsoft's own
//! clients (DESIGN.md §10). Needs no cluster. The Python clients come from PyPI into a venv in
//! the cache (hack/python-venv.sh), built once per requirements file.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use azs_csp_operator::resolver::{
    HttpResolver, HttpResolverOptions, MetadataResolver, RegistrationKey, SubscriptionState,
};

const REG_SUB: &str = "6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c";
const TENANT: &str = "2b7e0c1d-0000-4000-8000-000000000001";
const CLIENT: &str = "3c8f1d2e-0000-4000-8000-000000000002";
const SECRET: &str = "emulator-test-secret";
const CLOUD: &str = "5f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f";
const CUSTOMER: &str = "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a";
const CUSTOMER_TENANT: &str = "7a1b2c3d-0000-4000-8000-000000000003";
const OTHER_PARTNER: &str = "e09a4e93-29a7-4eba-a7f2-000000000001";
/// More than a page (100), so that listing follows `nextLink`.
const EXTRA: usize = 120;

fn extra_subscription(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

fn catalog() -> String {
    let mut text = format!(
        r#"subscriptions:
- {{id: {REG_SUB}, tenantId: {TENANT}, state: Enabled, offer: CSP, billingPartnerId: "4412345"}}
- {{id: {CUSTOMER}, tenantId: {CUSTOMER_TENANT}, state: Enabled, offer: CSP, billingPartnerId: "4412345"}}
- {{id: {OTHER_PARTNER}, state: Enabled, offer: CSP, billingPartnerId: "5590000"}}
"#
    );
    for i in 0..EXTRA {
        text.push_str(&format!(
            "- {{id: {}, state: Enabled, offer: CSP, billingPartnerId: \"4412345\"}}\n",
            extra_subscription(i)
        ));
    }
    text.push_str(&format!(
        r#"multitenancyApprovals:
- {{subscriptionId: {REG_SUB}, resourceGroup: azurestack, registrationName: azurestack-reg}}
registrations:
- {{subscriptionId: {REG_SUB}, resourceGroup: azurestack, name: azurestack-reg, cloudId: {CLOUD}, billingModel: PayAsYouUse}}
servicePrincipals:
- {{tenantId: {TENANT}, clientId: {CLIENT}, clientSecret: {SECRET}}}
"#
    ));
    text
}

/// A running `azs-csp-operator emulate` on a free loopback port; killed when dropped.
struct RunningEmulator {
    child: Child,
    url: String,
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl RunningEmulator {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog_file = dir.path().join("catalog.yaml");
        std::fs::write(&catalog_file, catalog()).expect("catalog");
        let tls_dir = dir.path().join("tls");
        let mut child = Command::new(env!("CARGO_BIN_EXE_azs-csp-operator"))
            .arg("emulate")
            .arg("--catalog")
            .arg(&catalog_file)
            .args(["--listen", "127.0.0.1:0", "--tls-dir"])
            .arg(&tls_dir)
            // Its request log would drown the test output; warnings still show.
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the emulator");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("the emulator says where it listens within 60 s");
        let url = line
            .strip_prefix("emulator listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Self {
            child,
            url,
            ca_file: tls_dir.join("ca.crt"),
            _dir: dir,
        }
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv of a requirements file in hack/, made on first use.
fn venv(requirements: &str) -> PathBuf {
    let output = Command::new(repo().join("hack/python-venv.sh"))
        .arg(repo().join("hack").join(requirements))
        .stderr(Stdio::inherit())
        .output()
        .expect("run hack/python-venv.sh");
    assert!(
        output.status.success(),
        "hack/python-venv.sh {requirements} failed"
    );
    PathBuf::from(String::from_utf8(output.stdout).expect("utf-8").trim())
}

#[test]
fn the_generated_python_client_creates_lists_and_deletes_customer_subscriptions() {
    let venv = venv("python-clients.txt");
    let emulator = RunningEmulator::start();
    let extra: Vec<String> = (0..EXTRA).map(extra_subscription).collect();
    let output = Command::new(venv.join("bin/python"))
        .arg(repo().join("tests/clients/azure_sdk.py"))
        .env("REQUESTS_CA_BUNDLE", &emulator.ca_file)
        .env("EMULATOR_URL", &emulator.url)
        .env("TENANT_ID", TENANT)
        .env("CLIENT_ID", CLIENT)
        .env("CLIENT_SECRET", SECRET)
        .env("REGISTRATION_SUBSCRIPTION", REG_SUB)
        .env("RESOURCE_GROUP", "azurestack")
        .env("REGISTRATION_NAME", "azurestack-reg")
        .env("CLOUD_ID", CLOUD)
        .env("CUSTOMER_SUBSCRIPTION", CUSTOMER)
        .env("CUSTOMER_TENANT", CUSTOMER_TENANT)
        .env("OTHER_PARTNER_SUBSCRIPTION", OTHER_PARTNER)
        .env("EXTRA_SUBSCRIPTIONS", extra.join(","))
        // Nothing may reach the public cloud: no proxy, no instance discovery.
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .output()
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.trim_end().ends_with("PASS"),
        "the Python client failed:\n{stdout}\n{stderr}"
    );
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET));
}

fn https_client(ca_file: &Path) -> reqwest::Client {
    let tls = azs_csp_operator::resolver::http_tls::client_config(Some(ca_file)).expect("tls");
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .expect("client")
}

#[tokio::test]
async fn the_project_http_resolver_reads_the_emulator() {
    let emulator = RunningEmulator::start();
    let mut options =
        HttpResolverOptions::new(&format!("{}/resolver", emulator.url)).expect("options");
    options.ca_file = Some(emulator.ca_file.clone());
    let resolver = HttpResolver::new(options).expect("resolver");
    let customer = resolver
        .subscription(CUSTOMER)
        .await
        .expect("lookup")
        .expect("known");
    assert_eq!(customer.tenant_id.as_deref(), Some(CUSTOMER_TENANT));
    assert_eq!(customer.state, SubscriptionState::Enabled);
    assert_eq!(customer.billing_partner_id.as_deref(), Some("4412345"));
    assert!(
        resolver
            .subscription("e09a4e93-29a7-4eba-a7f2-00000000ffff")
            .await
            .expect("lookup")
            .is_none()
    );
    let approved = RegistrationKey::new(REG_SUB, "AzureStack", "azurestack-reg");
    assert!(
        resolver
            .multitenancy_approved(&approved)
            .await
            .expect("lookup")
    );
    let other = RegistrationKey::new(REG_SUB, "azurestack", "other");
    assert!(
        !resolver
            .multitenancy_approved(&other)
            .await
            .expect("lookup")
    );
}

#[tokio::test]
async fn entra_and_arm_answer_over_https_with_request_ids() {
    let emulator = RunningEmulator::start();
    let client = https_client(&emulator.ca_file);
    let url = &emulator.url;

    let metadata: serde_json::Value = client
        .get(format!(
            "{url}/{TENANT}/v2.0/.well-known/openid-configuration"
        ))
        .send()
        .await
        .expect("openid")
        .json()
        .await
        .expect("json");
    assert_eq!(
        metadata["token_endpoint"],
        format!("{url}/{TENANT}/oauth2/v2.0/token")
    );
    let keys: serde_json::Value = client
        .get(metadata["jwks_uri"].as_str().expect("jwks_uri"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    assert_eq!(keys["keys"][0]["kty"], "RSA");

    let token_url = format!("{url}/{TENANT}/oauth2/v2.0/token");
    let scope = format!("{url}/.default");
    let refused = client
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT),
            ("client_secret", "wrong"),
            ("scope", &scope),
        ])
        .send()
        .await
        .expect("token");
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().contains_key("x-ms-request-id"));
    let refused: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(refused["error"], "invalid_client");

    let token: serde_json::Value = client
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("scope", &scope),
            ("client_info", "1"),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let access_token = token["access_token"].as_str().expect("access_token");

    let unauthenticated = client
        .get(format!("{url}/subscriptions?api-version=2022-12-01"))
        .send()
        .await
        .expect("subscriptions");
    assert_eq!(unauthenticated.status(), 401);
    let subscriptions = client
        .get(format!("{url}/subscriptions?api-version=2022-12-01"))
        .bearer_auth(access_token)
        .header(
            "x-ms-client-request-id",
            "c0ffee00-0000-4000-8000-000000000000",
        )
        .send()
        .await
        .expect("subscriptions");
    assert_eq!(subscriptions.status(), 200);
    assert!(subscriptions.headers().contains_key("x-ms-request-id"));
    assert_eq!(
        subscriptions.headers()["x-ms-client-request-id"],
        "c0ffee00-0000-4000-8000-000000000000"
    );
    let subscriptions: serde_json::Value = subscriptions.json().await.expect("json");
    let ids: Vec<&str> = subscriptions["value"]
        .as_array()
        .expect("value")
        .iter()
        .filter_map(|s| s["subscriptionId"].as_str())
        .collect();
    assert_eq!(ids, [REG_SUB], "the subscriptions of the token's tenant");

    let endpoints: serde_json::Value = client
        .get(format!("{url}/metadata/endpoints?api-version=2015-01-01"))
        .send()
        .await
        .expect("endpoints")
        .json()
        .await
        .expect("json");
    assert_eq!(
        endpoints["authentication"]["loginEndpoint"],
        format!("{url}/")
    );
}
