use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{BillingModel, Condition, RegistrationUsageStatus, UsageSource};

/// An Azure Stack stamp registered with Azure (`Microsoft.AzureStack/registrations`).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "csp.azurestack.io",
    version = "v1alpha1",
    kind = "Registration",
    namespaced,
    status = "RegistrationStatus",
    shortname = "azsreg",
    category = "azs-csp",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Billing","type":"string","jsonPath":".spec.billingModel"}"#,
    printcolumn = r#"{"name":"Approved","type":"boolean","jsonPath":".status.multitenancyApproved"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Customers","type":"integer","jsonPath":".status.customerSubscriptionCount"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("self.billingModel != 'Capacity' || (has(self.agreementNumber) && size(self.agreementNumber) > 0)")
        .message("spec.agreementNumber is required when spec.billingModel is Capacity")
        .field_path(".agreementNumber")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("self.billingModel != 'Custom' || (has(self.msAssetTag) && size(self.msAssetTag) > 0)")
        .message("spec.msAssetTag is required when spec.billingModel is Custom")
        .field_path(".msAssetTag")
        .reason(Reason::FieldValueRequired)
)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationSpec {
    /// The registration (default) subscription, a GUID.
    #[x_kube(validation = Rule::new(super::GUID_CEL)
        .message("InvalidRegistrationSubscription: spec.subscriptionId must be a GUID like 6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c"))]
    #[schemars(length(max = 64))]
    pub subscription_id: String,
    /// ARM resource group of the registration resource.
    #[x_kube(validation = Rule::new("self.matches('^[-\\\\w._()]{0,89}[-\\\\w_()]$')")
        .message("spec.resourceGroup must be a valid Azure resource group name: 1-90 letters, digits, '-', '_', '.', '(' or ')', not ending in '.'"))]
    #[schemars(length(max = 128))]
    pub resource_group: String,
    /// Name of the registration resource; defaults to metadata.name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[-\\\\w._]{1,128}$')")
        .message("spec.registrationName must be 1-128 letters, digits, '-', '_' or '.'"))]
    #[schemars(length(max = 256))]
    pub registration_name: Option<String>,
    /// The stamp's CloudID, a GUID; immutable.
    #[x_kube(
        validation = Rule::new(super::GUID_CEL)
            .message("spec.cloudId must be a GUID like 5f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"),
        validation = Rule::new("self == oldSelf")
            .message("spec.cloudId is immutable: a stamp keeps its CloudID; create a new Registration instead")
    )]
    #[schemars(length(max = 64))]
    pub cloud_id: String,
    pub billing_model: BillingModel,
    /// Required when billingModel is Capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub agreement_number: Option<String>,
    /// Required when billingModel is Custom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub ms_asset_tag: Option<String>,
    /// Azure mode: remove tenants that Azure holds for this registration but no
    /// CustomerSubscription declares (default false: they are only reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune_unmanaged: Option<bool>,
    /// The stamp's usage API: when set, usage is attributed and forwarded (DESIGN.md §9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_source: Option<UsageSource>,
}

impl RegistrationSpec {
    /// The ARM name of the registration resource.
    pub fn effective_registration_name<'a>(&'a self, object_name: &'a str) -> &'a str {
        self.registration_name.as_deref().unwrap_or(object_name)
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm_resource_id: Option<String>,
    /// Partner that collects for the registration subscription; absent if none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_partner_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multitenancy_approved: Option<bool>,
    /// CustomerSubscriptions attached (Ready=True) to this registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_subscription_count: Option<i64>,
    /// Azure mode: the registration as ARM returned it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<RegistrationAzureStatus>,
    /// Azure mode: tenants Azure holds for this registration that no CustomerSubscription declares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmanaged_customer_subscriptions: Option<i64>,
    /// Usage ingestion: written by the usage controller under its own field manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<RegistrationUsageStatus>,
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// What ARM answered for the registration resource (azure mode).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationAzureStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// `x-ms-request-id` of the GET that read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}
