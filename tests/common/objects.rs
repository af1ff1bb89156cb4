//! The YAML of the test objects: a Registration of the example catalog's approved
//! registration and a CustomerSubscription of it.

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
