//! The metadata upstream of the http-resolver tests: the emulator of DESIGN.md §10 in this
//! process, its `/resolver` routes answering the contract of §4, behind the test kit's fault
//! layer, with a catalog the test edits while it runs ([`CatalogEditor`]). Its users are the
//! integration tests (`mod emulated;`) and the library's own tests of the http backend
//! (`#[path]` to this file), and each uses all of it; what they were asked is counted by the
//! test kit from the layer's record (`azs_csp_testkit::upstream::resolver`). The bench, which
//! never edits its catalog, serves the emulator without this glue.

use std::ops::Deref;

use azs_csp_operator::emulator::{
    self,
    in_process::{CatalogEditor, InProcess, InProcessOptions},
};
use azs_csp_testkit::upstream::{Upstream, resolver};

/// The emulator behind the fault layer; derefs to the layer ([`Upstream`]) for faults and its
/// record.
pub struct Metadata {
    upstream: Upstream,
    editor: CatalogEditor,
}

impl Metadata {
    /// An empty catalog over plain HTTP.
    pub async fn start() -> Self {
        Self::serve(None).await.expect("an emulator")
    }

    /// An empty catalog, over HTTPS with `tls`'s certificate when given.
    pub async fn serve(
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let started = InProcess::start("{}", InProcessOptions::default()).await?;
        let editor = CatalogEditor::new(started.emulator.clone(), serde_json::json!({}));
        let upstream =
            Upstream::serve_on(started.listener, emulator::router(started.emulator), tls);
        Ok(Self { upstream, editor })
    }

    /// The `--resolver-url` of the operator: the emulator's `/resolver`.
    pub fn url(&self) -> String {
        resolver::url(&self.upstream)
    }

    /// Serves `GET /resolver/subscriptions/{id}` with this catalog entry from now on.
    pub fn add_subscription(&self, id: &str, entry: serde_json::Value) {
        self.add_subscriptions([(id.to_owned(), entry)]);
    }

    /// [`Metadata::add_subscription`] of many, put in force at once.
    pub fn add_subscriptions(
        &self,
        entries: impl IntoIterator<Item = (String, serde_json::Value)>,
    ) {
        self.editor
            .add_subscriptions(entries)
            .unwrap_or_else(|e| panic!("the emulator refused a subscription: {e}"));
    }

    /// Approves (or withdraws the approval of) the registration in the catalog.
    pub fn set_approval(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
        approved: bool,
    ) {
        self.editor
            .set_approval(subscription, resource_group, name, approved)
            .unwrap_or_else(|e| panic!("the emulator refused the approval: {e}"));
    }
}

impl Deref for Metadata {
    type Target = Upstream;

    fn deref(&self) -> &Upstream {
        &self.upstream
    }
}
