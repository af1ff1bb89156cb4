//! This build's CRDs in the test cluster.

use kube::Client;

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
