//! What the integration tests share that is typed to this operator: its binary as a child
//! process, its CRDs, the Ready reasons of its objects, the YAML of test objects, and a
//! scenario (a namespace, a catalog file, an operator watching the namespace). The rest (the
//! cluster client, namespaces, waiting, the process wrapper, the metadata upstream, metrics
//! parsing) is the test kit, `azs-csp-testkit` (the types these helpers take are re-exported).
#![allow(dead_code)] // each test binary uses its own subset of these small typed helpers

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
};

use azs_csp_operator::api::{CustomerSubscription, Registration};
use azs_csp_testkit::process::{OperatorCommand, external_catalog};
pub use azs_csp_testkit::{
    cluster::{TestNamespace, repo_root, wait_for},
    process::Operator,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};

/// The Registration every test scenario uses (the example catalog approves it).
pub const REGISTRATION_SUB: &str = "6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c";

/// A Registration named `name` of the example catalog's approved registration.
pub fn registration_yaml(name: &str, billing_model: &str) -> String {
    format!(
        "metadata: {{name: {name}}}
spec:
  subscriptionId: {REGISTRATION_SUB}
  resourceGroup: azurestack
  registrationName: azurestack-5f1c2d3e
  cloudId: 5f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f
  billingModel: {billing_model}
  agreementNumber: EA-1"
    )
}

pub fn customer_yaml(name: &str, registration: &str, subscription: &str) -> String {
    format!(
        "metadata: {{name: {name}}}
spec:
  registrationRef: {{name: {registration}}}
  subscriptionId: {subscription}"
    )
}

fn ready(
    conditions: &[azs_csp_operator::api::Condition],
) -> Option<&azs_csp_operator::api::Condition> {
    conditions.iter().find(|c| c.type_ == "Ready")
}

/// The Ready reason of a CustomerSubscription, when written for its current generation.
pub fn customer_reason(cs: &CustomerSubscription) -> Option<String> {
    let status = cs.status.as_ref()?;
    let condition = ready(&status.conditions)?;
    (condition.observed_generation == cs.metadata.generation).then(|| condition.reason.clone())
}

/// The Ready reason of a Registration, when written for its current generation.
pub fn registration_reason(reg: &Registration) -> Option<String> {
    let status = reg.status.as_ref()?;
    let condition = ready(&status.conditions)?;
    (condition.observed_generation == reg.metadata.generation).then(|| condition.reason.clone())
}

/// Waits until the CustomerSubscription's Ready reason (current generation) is `reason`.
pub async fn wait_customer_reason(
    ns: &TestNamespace,
    name: &str,
    reason: &str,
) -> CustomerSubscription {
    wait_for(
        &ns.api::<CustomerSubscription>(),
        name,
        &format!("Ready reason {reason}"),
        |cs| customer_reason(cs).as_deref() == Some(reason),
    )
    .await
}

/// Waits until the Registration's Ready reason (current generation) is `reason`.
pub async fn wait_registration_reason(
    ns: &TestNamespace,
    name: &str,
    reason: &str,
) -> Registration {
    wait_for(
        &ns.api::<Registration>(),
        name,
        &format!("Ready reason {reason}"),
        |r| registration_reason(r).as_deref() == Some(reason),
    )
    .await
}

/// Starts `azs-csp-operator run ARGS` of this build (add `--watch-namespace` to keep tests
/// apart); with `AZS_CSP_TEST_OPERATOR=external`, nothing (see the test kit's `process`).
pub fn start_operator(args: &[&str]) -> Operator {
    start_operator_with_env(args, &[])
}

pub fn start_operator_with_env(args: &[&str], env: &[(&str, &str)]) -> Operator {
    let command = env.iter().fold(
        OperatorCommand::new(env!("CARGO_BIN_EXE_azs-csp-operator")).args(args),
        |command, (key, value)| command.env(key, value),
    );
    Operator::start(command)
}

/// An operator with the http resolver asking `upstream_url` (500 ms timeout, 1 s cache),
/// watching `namespace` only.
pub fn start_http_operator(upstream_url: &str, namespace: &str) -> Operator {
    start_operator(&[
        "--resolver",
        "http",
        "--resolver-url",
        upstream_url,
        "--resolver-timeout",
        "500ms",
        "--cache-ttl",
        "1s",
        "--watch-namespace",
        namespace,
    ])
}

/// A catalog file the test can rewrite while the operator watches it.
pub struct CatalogFile {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl CatalogFile {
    pub fn new(yaml: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("catalog.yaml");
        std::fs::write(&path, yaml).expect("write catalog");
        Self { _dir: dir, path }
    }

    /// Replaces the content the way editors and ConfigMap volumes do: write aside, rename.
    pub fn replace(&self, yaml: &str) {
        let tmp = self.path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp).expect("write catalog");
        file.write_all(yaml.as_bytes()).expect("write catalog");
        drop(file);
        std::fs::rename(&tmp, &self.path).expect("rename catalog");
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("utf-8 path")
    }
}

/// Path of a cached tool (kubectl, helm) built by `make control-plane`.
pub fn tool(name: &str) -> PathBuf {
    let output = Command::new(repo_root().join("hack/bin-dir.sh"))
        .output()
        .expect("hack/bin-dir.sh");
    let dir = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let path = Path::new(&dir).join(name);
    assert!(
        path.exists(),
        "{} is not built: run `make control-plane`",
        path.display()
    );
    path
}

/// Installs (server-side applies) the CRDs of this build and waits until they are served.
pub async fn ensure_crds(client: &Client) {
    azs_csp_testkit::cluster::ensure_crds(
        client,
        azs_csp_operator::crd::definitions(),
        "azs-csp-operator-tests",
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// A namespace with the CRDs installed and an operator watching only it, fed by `catalog`.
/// An external operator (`AZS_CSP_TEST_OPERATOR=external`) watches every namespace and reads
/// its catalog from the ConfigMap `AZS_CSP_TEST_OPERATOR_CATALOG`: the scenario writes its
/// catalog there instead, so each scenario finds the catalog it asked for whatever the one
/// before it left (its scenarios run one at a time).
pub struct Scenario {
    pub ns: TestNamespace,
    pub catalog: CatalogFile,
    pub operator: Operator,
}

impl Scenario {
    pub async fn start(prefix: &str, catalog_yaml: &str) -> Self {
        let ns = TestNamespace::new(prefix).await;
        ensure_crds(&ns.client).await;
        let catalog = CatalogFile::new(catalog_yaml);
        let operator = start_operator(&[
            "--catalog-file",
            catalog.path_str(),
            "--watch-namespace",
            &ns.name,
        ]);
        let s = Self {
            ns,
            catalog,
            operator,
        };
        if s.operator.is_external() {
            s.write_external_catalog(catalog_yaml).await;
        }
        s
    }

    /// Gives the operator another catalog: the file it watches, or an external operator's
    /// ConfigMap.
    pub async fn replace_catalog(&self, yaml: &str) {
        if self.operator.is_external() {
            self.write_external_catalog(yaml).await;
        } else {
            self.catalog.replace(yaml);
        }
    }

    async fn write_external_catalog(&self, yaml: &str) {
        let (namespace, name) = external_catalog().unwrap_or_else(|e| panic!("{e}"));
        let configmaps: Api<ConfigMap> = Api::namespaced(self.ns.client.clone(), &namespace);
        let current = configmaps
            .get(&name)
            .await
            .unwrap_or_else(|e| panic!("the external operator's catalog {namespace}/{name}: {e}"));
        let key = "catalog.yaml";
        if current
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(String::as_str)
            == Some(yaml)
        {
            return;
        }
        configmaps
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"data": {key: yaml}})),
            )
            .await
            .unwrap_or_else(|e| panic!("writing the catalog {namespace}/{name}: {e}"));
    }
}
