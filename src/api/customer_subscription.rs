use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{Condition, UsageTotals};

/// A customer's Azure subscription added to a Registration (a tenant for multitenant billing).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "csp.azurestack.io",
    version = "v1alpha1",
    kind = "CustomerSubscription",
    namespaced,
    status = "CustomerSubscriptionStatus",
    shortname = "custsub",
    category = "azs-csp",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Registration","type":"string","jsonPath":".spec.registrationRef.name"}"#,
    printcolumn = r#"{"name":"Subscription","type":"string","jsonPath":".spec.subscriptionId"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"VCORE-HOURS","type":"string","jsonPath":".status.usage.vcoreHours","priority":1}"#,
    printcolumn = r#"{"name":"CHARGE","type":"string","jsonPath":".status.usage.estimatedCharge","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CustomerSubscriptionSpec {
    /// The Registration, in this namespace, to add the subscription to.
    pub registration_ref: RegistrationRef,
    /// The customer's Azure subscription, a GUID.
    #[x_kube(validation = Rule::new(super::GUID_CEL)
        .message("InvalidCustomerSubscriptionId: spec.subscriptionId must be a GUID like e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a"))]
    #[schemars(length(max = 64))]
    pub subscription_id: String,
    /// The customer's directory tenant, a GUID; when set, the subscription must belong to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(super::GUID_CEL)
        .message("InvalidCustomerSubscriptionId: spec.tenantId must be a GUID like 2b7e0c1d-3a4b-4c5d-8e6f-7a8b9c0d1e2f"))]
    #[schemars(length(max = 64))]
    pub tenant_id: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RegistrationRef {
    /// Name of a Registration in the same namespace.
    #[x_kube(validation = Rule::new("size(self) > 0")
        .message("spec.registrationRef.name must name a Registration in this namespace"))]
    #[schemars(length(max = 253))]
    pub name: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CustomerSubscriptionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm_resource_id: Option<String>,
    /// The directory tenant, as resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_partner_id: Option<String>,
    /// The reseller, in the indirect CSP model only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reseller_partner_id: Option<String>,
    /// Azure mode: the ARM call that decided Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<CustomerSubscriptionAzureStatus>,
    /// Month-to-date usage billed to this subscription: written by the usage controller under
    /// its own field manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageTotals>,
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// The ARM call that decided a CustomerSubscription (azure mode).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CustomerSubscriptionAzureStatus {
    /// `x-ms-request-id` of the call: support asks for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}
