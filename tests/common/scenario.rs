//! An operator of this build watching a namespace, the catalog file it watches, and a
//! scenario: a namespace with the CRDs, a catalog and an operator watching only that namespace.

use std::{io::Write, path::PathBuf};

use azs_csp_testkit::{
    cluster::TestNamespace,
    process::{Operator, external_catalog},
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    api::{Patch, PatchParams},
};

use super::{crds::ensure_crds, process::start_operator_with_env};

/// Starts `azs-csp-operator run ARGS` of this build (add `--watch-namespace` to keep tests
/// apart); with `AZS_CSP_TEST_OPERATOR=external`, nothing (see the test kit's `process`).
pub fn start_operator(args: &[&str]) -> Operator {
    start_operator_with_env(args, &[])
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
