//! `azs-csp-operator emulate` as users run it: the real binary over HTTPS, with Microsoft's own
//! clients (DESIGN.md §10): the generated Python client and the Azure CLI, which come from PyPI
//! into venvs in the cache (hack/python-venv.sh), built once per requirements file. Only the
//! workload identity test needs the cluster (for real ServiceAccount tokens).

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use azs_csp_operator::{
    guid::Guid,
    resolver::{
        HttpResolver, HttpResolverOptions, MetadataResolver, RegistrationKey, SubscriptionState,
    },
};

const REG_SUB: &str = "6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c";
const TENANT: &str = "2b7e0c1d-0000-4000-8000-000000000001";
const CLIENT: &str = "3c8f1d2e-0000-4000-8000-000000000002";
const SECRET: &str = "emulator-test-secret";
/// A principal that authenticates but holds no role on any registration.
const NO_ROLE_CLIENT: &str = "3c8f1d2e-0000-4000-8000-0000000000a0";
const NO_ROLE_SECRET: &str = "no-role-secret";
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
- {{tenantId: {TENANT}, clientId: {NO_ROLE_CLIENT}, clientSecret: {NO_ROLE_SECRET}, registrations: []}}
"#
    ));
    text
}

/// A running `azs-csp-operator emulate` on a free loopback port; killed when dropped.
struct RunningEmulator {
    child: Child,
    url: String,
    ca_file: PathBuf,
    catalog_file: PathBuf,
    /// Its log lines so far (warnings and errors; also echoed to the test's stderr).
    log: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
}

impl RunningEmulator {
    fn start() -> Self {
        Self::start_with(&catalog(), &[])
    }

    /// An emulator of this catalog, with these files next to it.
    fn start_with(catalog: &str, files: &[(&str, &str)]) -> Self {
        Self::start_with_args(catalog, files, &[])
    }

    /// The same with more arguments; a relative path in them names one of `files`.
    fn start_with_args(catalog: &str, files: &[(&str, &str)], args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog_file = dir.path().join("catalog.yaml");
        std::fs::write(&catalog_file, catalog).expect("catalog");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("file");
        }
        let tls_dir = dir.path().join("tls");
        let mut child = Command::new(env!("CARGO_BIN_EXE_azs-csp-operator"))
            .arg("emulate")
            .arg("--catalog")
            .arg(&catalog_file)
            .args(["--listen", "127.0.0.1:0", "--tls-dir"])
            .arg(&tls_dir)
            .args(args)
            .current_dir(dir.path())
            // Its request log would drown the test output; warnings still show.
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the emulator");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("emulator: {line}");
                lines.lock().expect("log").push(line);
            }
        });
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
            catalog_file,
            log,
            dir,
        }
    }

    fn logged(&self, text: &str) -> bool {
        self.log
            .lock()
            .expect("log")
            .iter()
            .any(|line| line.contains(text))
    }

    /// Microsoft's client `program` pointed at this emulator and the catalog's entries. Nothing
    /// can reach the public cloud: every host but loopback goes to a proxy that refuses.
    fn microsoft_client(&self, program: &Path) -> Command {
        let extra: Vec<String> = (0..EXTRA).map(extra_subscription).collect();
        let mut command = Command::new(program);
        command
            .env("REQUESTS_CA_BUNDLE", &self.ca_file)
            .env("EMULATOR_URL", &self.url)
            .env("TENANT_ID", TENANT)
            .env("CLIENT_ID", CLIENT)
            .env("CLIENT_SECRET", SECRET)
            .env("NO_ROLE_CLIENT_ID", NO_ROLE_CLIENT)
            .env("NO_ROLE_CLIENT_SECRET", NO_ROLE_SECRET)
            .env("REGISTRATION_SUBSCRIPTION", REG_SUB)
            .env("RESOURCE_GROUP", "azurestack")
            .env("REGISTRATION_NAME", "azurestack-reg")
            .env("CLOUD_ID", CLOUD)
            .env("CUSTOMER_SUBSCRIPTION", CUSTOMER)
            .env("CUSTOMER_TENANT", CUSTOMER_TENANT)
            .env("OTHER_PARTNER_SUBSCRIPTION", OTHER_PARTNER)
            .env("EXTRA_SUBSCRIPTIONS", extra.join(","));
        for proxy in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
            command.env(proxy, "http://127.0.0.1:9");
        }
        for no_proxy in ["NO_PROXY", "no_proxy"] {
            command.env(no_proxy, "127.0.0.1,localhost");
        }
        command
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
    let output = emulator
        .microsoft_client(&venv.join("bin/python"))
        .arg(repo().join("tests/clients/azure_sdk.py"))
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

#[test]
fn the_azure_cli_logs_in_to_the_emulator_as_a_custom_cloud_and_manages_customer_subscriptions() {
    let built = Instant::now();
    let venv = venv("python-azure-cli.txt");
    eprintln!(
        "the Azure CLI venv was ready in {:.1} s",
        built.elapsed().as_secs_f64()
    );
    let emulator = RunningEmulator::start();
    let config_dir = emulator.dir.path().join("azure-cli");
    std::fs::create_dir(&config_dir).expect("config dir");
    let ran = Instant::now();
    let output = emulator
        .microsoft_client(Path::new("bash"))
        .arg(repo().join("tests/clients/azure_cli.sh"))
        .env("AZ", venv.join("bin/az"))
        .env("AZURE_CONFIG_DIR", &config_dir)
        // What the README tells users: MSAL must not ask login.microsoftonline.com about the
        // emulator's authority; no telemetry, no survey.
        .env("AZURE_CORE_INSTANCE_DISCOVERY", "false")
        .env("AZURE_CORE_COLLECT_TELEMETRY", "false")
        .env("AZURE_CORE_SURVEY_MESSAGE", "false")
        .env("AZURE_CORE_NO_COLOR", "true")
        .output()
        .expect("run the Azure CLI script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!(
        "the Azure CLI script ran in {:.1} s",
        ran.elapsed().as_secs_f64()
    );
    assert!(
        output.status.success() && stdout.trim_end().ends_with("PASS"),
        "the Azure CLI failed:\n{stdout}\n{stderr}"
    );
    for secret in [SECRET, NO_ROLE_SECRET] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret));
    }
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
        .subscription(Guid::parse(CUSTOMER).expect("a GUID"))
        .await
        .expect("lookup")
        .expect("known");
    assert_eq!(
        customer.tenant_id,
        Some(Guid::parse(CUSTOMER_TENANT).expect("a GUID"))
    );
    assert_eq!(customer.state, SubscriptionState::Enabled);
    assert_eq!(customer.billing_partner_id.as_deref(), Some("4412345"));
    assert!(
        resolver
            .subscription(Guid::parse("e09a4e93-29a7-4eba-a7f2-00000000ffff").expect("a GUID"))
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

/// Asks the emulator's Entra ID for an ARM token with these credential fields.
async fn request_token(
    client: &reqwest::Client,
    url: &str,
    client_id: &str,
    credential: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let scope = format!("{url}/.default");
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("scope", scope.as_str()),
    ];
    form.extend_from_slice(credential);
    let response = client
        .post(format!("{url}/{TENANT}/oauth2/v2.0/token"))
        .form(&form)
        .send()
        .await
        .expect("token request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

/// Waits (bounded) until `check` holds; the emulator polls its catalog file once a second.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within 20 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_emulator_reloads_its_catalog_and_keeps_what_arm_holds() {
    let emulator = RunningEmulator::start();
    let client = https_client(&emulator.ca_file);
    let url = emulator.url.clone();
    let secret_token = |secret: &'static str| {
        let client = client.clone();
        let url = url.clone();
        async move { request_token(&client, &url, CLIENT, &[("client_secret", secret)]).await }
    };
    let (status, token) = secret_token(SECRET).await;
    assert_eq!(status, 200, "{token}");
    let bearer = token["access_token"].as_str().expect("token").to_owned();
    let item = format!(
        "{url}/subscriptions/{REG_SUB}/resourceGroups/azurestack/providers/Microsoft.AzureStack/registrations/azurestack-reg/customerSubscriptions/{CUSTOMER}?api-version=2022-06-01"
    );
    let put = client
        .put(&item)
        .bearer_auth(&bearer)
        .json(&serde_json::json!({"properties": {}}))
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), 200);

    // A new secret takes effect without a restart; the stored tenant stays.
    let rotated = catalog().replace(SECRET, "rotated-secret");
    std::fs::write(&emulator.catalog_file, &rotated).expect("write");
    eventually("the rotated secret is accepted", || async {
        secret_token("rotated-secret").await.0 == 200
    })
    .await;
    assert_eq!(
        secret_token(SECRET).await.0,
        401,
        "the old secret is refused"
    );
    let stored = || async {
        let get = client.get(&item).bearer_auth(&bearer).send().await;
        get.expect("get").status().as_u16()
    };
    assert_eq!(
        stored().await,
        200,
        "the customer subscription outlived the reload"
    );

    // A bad catalog is refused with a log line; the one in force stays.
    std::fs::write(
        &emulator.catalog_file,
        format!("{rotated}\nregistrations: ["),
    )
    .expect("write");
    eventually("the bad catalog is refused in the log", || async {
        emulator.logged("catalog rejected")
    })
    .await;
    assert_eq!(secret_token("rotated-secret").await.0, 200);
    assert_eq!(stored().await, 200);
}

/// A GET of the API server as the test's admin, as text.
async fn cluster_get(client: &kube::Client, path: &str) -> String {
    let request = axum::http::Request::get(path)
        .body(Vec::new())
        .expect("request");
    client.request_text(request).await.expect(path)
}

async fn service_account_token(
    api: &kube::Api<k8s_openapi::api::core::v1::ServiceAccount>,
    name: &str,
    audience: &str,
) -> String {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.to_owned()]),
            expiration_seconds: Some(600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    api.create_token_request(name, &Default::default(), &request)
        .await
        .expect("TokenRequest")
        .status
        .and_then(|status| status.token)
        .expect("a token in the status")
}

/// The local cluster's service-account signing key (hack/cluster-up.sh), PKCS#8 PEM, as a
/// JWT signing key; `None` for a cluster the tests did not make.
fn local_cluster_signing_key() -> Option<jsonwebtoken::EncodingKey> {
    use base64::Engine;
    use rsa::{pkcs1::EncodeRsaPrivateKey, pkcs8::DecodePrivateKey};
    if std::env::var_os("KUBECONFIG").is_some() {
        return None;
    }
    let cluster_dir = std::env::var_os("AZS_CSP_CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".cluster"));
    let pem = std::fs::read_to_string(cluster_dir.join("pki/sa.key"))
        .expect("the local cluster's pki/sa.key");
    let base64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(base64)
        .expect("base64");
    let key = rsa::RsaPrivateKey::from_pkcs8_der(&der).expect("an RSA key");
    let pkcs1 = key.to_pkcs1_der().expect("der");
    Some(jsonwebtoken::EncodingKey::from_rsa_der(pkcs1.as_bytes()))
}

/// Workload identity: a real ServiceAccount token from TokenRequest is exchanged for an ARM
/// token when its signature verifies against the cluster's keys (the JWKS the API server
/// serves, in the catalog's `jwksFile`), and forged, wrong-audience and expired ones are
/// refused with `invalid_client`.
#[tokio::test]
async fn service_account_tokens_are_exchanged_only_when_the_cluster_signed_them() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let namespace = azs_csp_testkit::cluster::TestNamespace::new("emu-wi").await;
    let accounts: kube::Api<ServiceAccount> = namespace.api();
    namespace
        .create::<ServiceAccount>(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: workload\n",
        )
        .await;
    let discovery: serde_json::Value = serde_json::from_str(
        &cluster_get(&namespace.client, "/.well-known/openid-configuration").await,
    )
    .expect("openid configuration");
    let issuer = discovery["issuer"].as_str().expect("issuer").to_owned();
    let jwks = cluster_get(&namespace.client, "/openid/v1/jwks").await;
    let subject = format!("system:serviceaccount:{}:workload", namespace.name);

    let federated_client = "3c8f1d2e-0000-4000-8000-0000000000f1";
    let catalog = format!(
        "{}- {{tenantId: {TENANT}, clientId: {federated_client}, federatedCredentials: [{{issuer: '{issuer}', subject: '{subject}', jwksFile: cluster-jwks.json}}]}}\n",
        catalog()
    );
    let emulator = RunningEmulator::start_with(&catalog, &[("cluster-jwks.json", &jwks)]);
    let client = https_client(&emulator.ca_file);
    let exchange = |assertion: String| {
        let client = client.clone();
        let url = emulator.url.clone();
        async move {
            request_token(
                &client,
                &url,
                federated_client,
                &[
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &assertion),
                ],
            )
            .await
        }
    };

    let good = service_account_token(&accounts, "workload", "api://AzureADTokenExchange").await;
    let (status, answer) = exchange(good.clone()).await;
    assert_eq!(
        status, 200,
        "a real ServiceAccount token is exchanged: {answer}"
    );
    let registration = client
        .get(format!(
            "{}/subscriptions/{REG_SUB}/resourceGroups/azurestack/providers/Microsoft.AzureStack/registrations/azurestack-reg?api-version=2022-06-01",
            emulator.url
        ))
        .bearer_auth(answer["access_token"].as_str().expect("access_token"))
        .send()
        .await
        .expect("ARM");
    assert_eq!(registration.status(), 200, "and its ARM token works");

    // The same claims signed by someone else's key under the cluster key's ID.
    let header = jsonwebtoken::decode_header(&good).expect("header");
    let claims: serde_json::Value = jsonwebtoken::dangerous::insecure_decode(&good)
        .expect("claims")
        .claims;
    let forger = emulator_signing_key();
    let mut forged_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    forged_header.kid = header.kid.clone();
    let forged = jsonwebtoken::encode(&forged_header, &claims, &forger).expect("forged");
    // A real signature over other content: the good token's payload under another's signature.
    let wrong_audience = service_account_token(&accounts, "workload", &issuer).await;
    let spliced = {
        let mut good_parts = good.split('.');
        let (head, body) = (
            good_parts.next().expect("header"),
            good_parts.next().expect("body"),
        );
        let signature = wrong_audience.split('.').nth(2).expect("signature");
        format!("{head}.{body}.{signature}")
    };
    let mut refused = vec![
        ("signed by another key", forged, 700027),
        ("a signature of other content", spliced, 700027),
        ("a real token for another audience", wrong_audience, 700212),
    ];
    match local_cluster_signing_key() {
        Some(key) => {
            let mut expired_claims = claims.clone();
            let now = chrono::Utc::now().timestamp();
            expired_claims["iat"] = (now - 3600).into();
            expired_claims["nbf"] = (now - 3600).into();
            expired_claims["exp"] = (now - 1800).into();
            let expired = jsonwebtoken::encode(&forged_header, &expired_claims, &key).expect("jwt");
            refused.push(("signed by the cluster but expired", expired, 700024));
        }
        None => eprintln!(
            "KUBECONFIG names a cluster the tests did not make: its signing key is unknown, so the expired case is left to the unit tests"
        ),
    }
    for (what, assertion, code) in refused {
        let (status, answer) = exchange(assertion).await;
        assert_eq!(
            (
                status,
                answer["error"].as_str(),
                answer["error_codes"][0].as_u64()
            ),
            (401, Some("invalid_client"), Some(code)),
            "{what}: {answer}"
        );
    }
}

/// An RSA key of the test's own (the emulator makes its signing key the same way).
fn emulator_signing_key() -> jsonwebtoken::EncodingKey {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("key");
    jsonwebtoken::EncodingKey::from_rsa_der(key.to_pkcs1_der().expect("der").as_bytes())
}

/// The stamp's admin APIs and the CloudEvents sink, through the real binary over HTTPS
/// (DESIGN.md §9, §10): bearer checks as ARM's, pages of 1,000 followed by `nextLink`, an
/// extra record as written, ARM errors for bad parameters, the subscription list; the sink
/// de-duplicating by (source, id), with its token required.
#[tokio::test]
async fn the_stamps_usage_pages_and_the_sink_answer_over_https() {
    const PROVIDER: &str = "1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b";
    const LOCAL: &str = "5a100000-0000-4000-8000-00000000000f";
    let mut stamp = format!(
        "providerSubscriptionId: {PROVIDER}\nreportingDelay: 1h\nsubscriptions:\n- {{subscriptionId: {LOCAL}, tenantId: {CUSTOMER_TENANT}}}\nvirtualMachines:\n"
    );
    // 600 Linux VMs for one hour: 1,200 records, reported at 11:00, and one extra record.
    for i in 0..600 {
        stamp.push_str(&format!(
            "- {{name: vm{i}, subscriptionId: {LOCAL}, size: A1, vcores: 2, os: Linux, running: [{{from: '2026-01-01T10:00:00Z', to: '2026-01-01T11:00:00Z'}}]}}\n"
        ));
    }
    stamp.push_str("extraRecords:\n- {id: negative, reportedTime: '2026-01-01T11:30:00Z', properties: {quantity: -1}}\n");
    let emulator = RunningEmulator::start_with_args(
        &catalog(),
        &[("stamp.yaml", &stamp), ("sink-token", "sink-secret\n")],
        &["--stamp", "stamp.yaml", "--sink-token-file", "sink-token"],
    );
    let client = https_client(&emulator.ca_file);
    let url = &emulator.url;
    let (status, token) = request_token(&client, url, CLIENT, &[("client_secret", SECRET)]).await;
    assert_eq!(status, 200, "{token}");
    let bearer = token["access_token"].as_str().expect("token").to_owned();

    let first = format!(
        "{url}/subscriptions/{PROVIDER}/providers/Microsoft.Commerce.Admin/subscriberUsageAggregates?reportedStartTime=2026-01-01T11%3A00%3A00Z&reportedEndTime=2026-01-01T12%3A00%3A00Z&aggregationGranularity=Hourly&api-version=2015-06-01-preview"
    );
    let unauthenticated = client.get(&first).send().await.expect("usage");
    assert_eq!(unauthenticated.status(), 401);
    let mut next = Some(first.clone());
    let mut records = Vec::new();
    let mut pages = 0;
    while let Some(link) = next {
        let response = client
            .get(&link)
            .bearer_auth(&bearer)
            .send()
            .await
            .expect("usage");
        assert_eq!(response.status(), 200);
        assert!(response.headers().contains_key("x-ms-request-id"));
        let page: serde_json::Value = response.json().await.expect("json");
        records.extend(page["value"].as_array().expect("value").iter().cloned());
        assert_eq!(
            page["nextLink"].is_string(),
            page["continuationToken"].is_string()
        );
        next = page["nextLink"].as_str().map(str::to_owned);
        pages += 1;
    }
    assert_eq!((records.len(), pages), (1201, 2));
    let record = &records[0];
    assert_eq!(record["type"], "Microsoft.Commerce.Admin/UsageAggregate");
    assert_eq!(record["properties"]["subscriptionId"], LOCAL);
    assert_eq!(
        record["properties"]["usageStartTime"],
        "2026-01-01T10:00:00+00:00"
    );
    assert_eq!(
        record["properties"]["meterId"],
        "FAB6EB84-500B-4A09-A8CA-7358F8BBAEA5"
    );
    assert_eq!(record["properties"]["quantity"], 2.0);
    let instance: serde_json::Value = serde_json::from_str(
        record["properties"]["instanceData"]
            .as_str()
            .expect("a string"),
    )
    .expect("instanceData JSON");
    assert_eq!(
        instance["Microsoft.Resources"]["resourceUri"],
        format!(
            "/subscriptions/{LOCAL}/resourceGroups/default/providers/Microsoft.Compute/virtualMachines/vm0"
        )
    );
    assert_eq!(
        records[1200],
        serde_json::json!({"id": "negative", "properties": {"quantity": -1}})
    );

    let daily = client
        .get(first.replace("Hourly", "Daily"))
        .bearer_auth(&bearer)
        .send()
        .await
        .expect("usage");
    assert_eq!(daily.status(), 400);
    let daily: serde_json::Value = daily.json().await.expect("json");
    assert_eq!(daily["error"]["code"], "InvalidParameter");

    let subscriptions: serde_json::Value = client
        .get(format!(
            "{url}/subscriptions/{PROVIDER}/providers/Microsoft.Subscriptions.Admin/subscriptions?api-version=2015-11-01"
        ))
        .bearer_auth(&bearer)
        .send()
        .await
        .expect("subscriptions")
        .json()
        .await
        .expect("json");
    assert_eq!(subscriptions["value"][0]["subscriptionId"], LOCAL);
    assert_eq!(subscriptions["value"][0]["tenantId"], CUSTOMER_TENANT);

    let event = |id: &str, quantity: f64| {
        serde_json::json!({
            "specversion": "1.0", "id": id, "source": "/registrations/partner/stack",
            "type": "csp.azurestack.io.usage.v1", "subject": CUSTOMER,
            "data": {"meterId": "FAB6EB84-500B-4A09-A8CA-7358F8BBAEA5", "quantity": quantity},
        })
    };
    let batch = serde_json::to_vec(&[event("a", 0.1), event("b", 0.2)]).expect("json");
    let post = |token: Option<&'static str>| {
        let mut request = client
            .post(format!("{url}/events"))
            .header("content-type", "application/cloudevents-batch+json")
            .body(batch.clone());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(post(None).await.expect("post").status(), 401);
    assert_eq!(post(Some("sink-secret")).await.expect("post").status(), 200);
    assert_eq!(post(Some("sink-secret")).await.expect("post").status(), 200);
    let totals: serde_json::Value = client
        .get(format!("{url}/events/totals"))
        .send()
        .await
        .expect("totals")
        .json()
        .await
        .expect("json");
    assert_eq!(
        totals,
        serde_json::json!({"received": 4, "duplicates": 2, "totals": [
            {"subject": CUSTOMER, "meterId": "fab6eb84-500b-4a09-a8ca-7358f8bbaea5", "quantity": "0.3"}
        ]})
    );
    assert!(
        !emulator.logged("sink-secret"),
        "the sink's token is never logged"
    );
}
