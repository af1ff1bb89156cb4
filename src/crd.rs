//! The CustomResourceDefinitions as served by `azs-csp-operator crds` and committed in `crds/`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api::{CustomerSubscription, Registration};

/// Both CRDs, Registration first.
pub fn definitions() -> Vec<CustomResourceDefinition> {
    vec![Registration::crd(), CustomerSubscription::crd()]
}

/// File name of each CRD under `crds/`, keyed by its position in [`definitions`].
pub const FILE_NAMES: [&str; 2] = [
    "csp.azurestack.io_registrations.yaml",
    "csp.azurestack.io_customersubscriptions.yaml",
];

/// One CRD as the YAML document committed in `crds/`.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(crd)
}

/// Both CRDs as one multi-document YAML stream.
pub fn all_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in definitions() {
        out.push_str("---\n");
        out.push_str(&to_yaml(&crd)?);
    }
    Ok(out)
}
