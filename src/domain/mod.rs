//! The domain vocabulary the decisions and the I/O share: what Azure Commerce knows about a
//! subscription, the key of a multitenancy approval, and why a lookup failed.
//!
//! At the bottom of the dependency graph (DESIGN.md §6): `policy` decides over these types and
//! `resolver` produces them, so neither has to import the other. [`arm`] is the same for
//! azure mode: what ARM answered, produced by the ARM client and decided over by `policy`.

pub mod arm;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::guid::{Guid, GuidText};

/// Lifecycle state of an Azure subscription.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubscriptionState {
    Enabled,
    Warned,
    PastDue,
    Disabled,
    Deleted,
}

impl SubscriptionState {
    /// Whether usage can be charged to a subscription in this state.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Enabled | Self::Warned | Self::PastDue)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "Enabled",
            Self::Warned => "Warned",
            Self::PastDue => "PastDue",
            Self::Disabled => "Disabled",
            Self::Deleted => "Deleted",
        }
    }
}

impl fmt::Display for SubscriptionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What Azure Commerce knows about one subscription (one `subscriptions[]` catalog entry).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionMetadata {
    /// The subscription.
    pub id: Guid,
    /// Directory tenant that owns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<Guid>,
    pub state: SubscriptionState,
    /// `CSP`, `APSS`, `PayAsYouGo`, `EnterpriseAgreement` or other text.
    pub offer: String,
    /// Partner that collects: the direct CSP partner, or the indirect provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_partner_id: Option<String>,
    /// The reseller, in the indirect model only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reseller_partner_id: Option<String>,
}

impl SubscriptionMetadata {
    pub fn is_csp(&self) -> bool {
        self.offer == "CSP"
    }
}

/// Identifies a registration resource for the multitenancy approval lookup.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationKey {
    /// Registration subscription: a GUID, or in a Registration stored before admission checked
    /// the shape, the text of its spec.subscriptionId (no lookup knows it).
    pub subscription_id: GuidText,
    /// ARM resource group; compared case-insensitively, stored lower-case.
    pub resource_group: String,
    /// ARM name of the registration; compared case-insensitively, stored lower-case.
    pub registration_name: String,
}

impl RegistrationKey {
    /// Builds a key in canonical form (ARM names are case-insensitive).
    pub fn new(
        subscription_id: impl Into<GuidText>,
        resource_group: &str,
        registration_name: &str,
    ) -> Self {
        Self {
            subscription_id: subscription_id.into(),
            resource_group: resource_group.to_ascii_lowercase(),
            registration_name: registration_name.to_ascii_lowercase(),
        }
    }
}

impl fmt::Display for RegistrationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.AzureStack/registrations/{}",
            self.subscription_id, self.resource_group, self.registration_name
        )
    }
}

/// Why a lookup could not be answered: every variant is `MetadataResolverBadGatewayError`.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    #[error("the metadata server answered HTTP {status} for {url}")]
    UnexpectedStatus { url: String, status: u16 },
    #[error("the metadata server did not answer {url} within {timeout_ms} ms")]
    Timeout { url: String, timeout_ms: u64 },
    #[error("could not reach the metadata server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the metadata server's answer for {url} is not the documented JSON: {reason}")]
    MalformedBody { url: String, reason: String },
    #[error("no catalog has been loaded yet: {reason}")]
    CatalogUnavailable { reason: String },
    #[error(
        "the metadata server at {url} is treated as down after repeated failures ({cause}); no request is sent until a probe is answered"
    )]
    UpstreamDown { url: String, cause: String },
}
