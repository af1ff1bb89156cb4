//! The usage parts of both kinds (DESIGN.md §9): where a Registration reads its stamp's usage,
//! and the month-to-date totals status shows. Quantities and charges are decimal strings, so
//! that totals read back after a restart are exactly the ones written (`usage::status`
//! converts them).

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// `spec.usageSource`: the stamp's admin ARM endpoint, read for usage records and the local
/// subscriptions' tenants.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UsageSource {
    /// The stamp's admin ARM endpoint, e.g. https://adminmanagement.local.azurestack.external.
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')")
        .message("spec.usageSource.endpoint must be an http(s) URL like https://adminmanagement.local.azurestack.external"))]
    #[schemars(length(max = 2048))]
    pub endpoint: String,
    /// The stamp's default provider subscription, a GUID.
    #[x_kube(validation = Rule::new(super::GUID_CEL)
        .message("spec.usageSource.providerSubscriptionId must be a GUID"))]
    #[schemars(length(max = 64))]
    pub provider_subscription_id: String,
    /// Token audience; default `{endpoint}/.default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub audience: Option<String>,
    /// Reported time to start ingesting at (RFC 3339); default the Registration's creation hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\\\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$')")
        .message("spec.usageSource.startTime must be an RFC 3339 time like 2026-03-01T00:00:00Z"))]
    #[schemars(length(max = 64))]
    pub start_time: Option<String>,
}

/// Month-to-date totals of one billed party: `CustomerSubscription.status.usage`, and the
/// Registration's `status.usage.registrationSubscription`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UsageTotals {
    /// The UTC month totalled, YYYY-MM.
    pub period: String,
    /// The end of the last window added, RFC 3339: a window is added at most once.
    pub through: String,
    /// Base VM Size Hours: the virtual core hours of every VM.
    pub vcore_hours: String,
    /// Priced usage, when a rate card is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_charge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default)]
    pub meters: Vec<MeterTotal>,
    /// The month before, while its late records still arrive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousTotals>,
}

/// The month before, same shape without `through`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PreviousTotals {
    pub period: String,
    pub vcore_hours: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_charge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default)]
    pub meters: Vec<MeterTotal>,
}

/// One meter's total quantity.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MeterTotal {
    pub meter_id: String,
    /// Empty for a meter the built-in table does not know.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub unit: String,
    pub quantity: String,
}

/// `Registration.status.usage`: the checkpoint, rejected records and the registration
/// subscription's own share.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationUsageStatus {
    /// The end of the last window whose every batch the sink acknowledged, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingested_through: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_records: Option<RejectedRecords>,
    /// Usage billed to the registration subscription (tenants not attached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_subscription: Option<UsageTotals>,
}

/// Bad records, never forwarded, counted per cause since ingestion started.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RejectedRecords {
    pub total: i64,
    #[serde(default)]
    pub by_cause: std::collections::BTreeMap<String, i64>,
}
