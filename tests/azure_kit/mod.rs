//! Azure mode's test world (compiled into `tests/azure.rs` only): the emulator of DESIGN.md §10
//! served in this process behind the test kit's fault layer, over HTTPS with its own CA
//! ([`world`]), its catalog, and an operator in `--mode azure` signed in to it with a client
//! secret file.

pub mod world;

use std::collections::BTreeSet;

use azs_csp_operator::{domain::RegistrationKey, emulator::arm::StoredCustomer, guid::Guid};
use azs_csp_testkit::process::OperatorCommand;
pub use world::{AzureWorld, CLIENT, SECRET, TENANT};

pub const REG_SUB: &str = "6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c";
pub const RG: &str = "azurestack";
pub const REG_NAME: &str = "azurestack-5f1c2d3e";
pub const CLOUD: &str = "5f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f";
/// A second registration of the catalog, not approved for multitenancy.
pub const UNAPPROVED_NAME: &str = "azurestack-unapproved";
pub const UNAPPROVED_CLOUD: &str = "5f1c2d3e-4b5a-4c6d-8e7f-000000000002";
/// A fourth that nobody adds customers to.
pub const IDLE_NAME: &str = "azurestack-idle";
pub const IDLE_CLOUD: &str = "5f1c2d3e-4b5a-4c6d-8e7f-00000000000b";
/// A third, with the Capacity billing model in Azure.
pub const CAPACITY_NAME: &str = "azurestack-capacity";
pub const CAPACITY_CLOUD: &str = "5f1c2d3e-4b5a-4c6d-8e7f-000000000003";
pub const PARTNER: &str = "4412345";
/// CSP customers of the registration's partner.
pub const GOOD: [&str; 3] = [
    "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a",
    "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8b",
    "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8c",
];
pub const GOOD_TENANT: &str = "7a1b2c3d-0000-4000-8000-000000000003";
pub const OTHER_PARTNER: &str = "e09a4e93-29a7-4eba-a7f2-000000000001";
pub const NOT_CSP: &str = "e09a4e93-29a7-4eba-a7f2-000000000002";
pub const UNKNOWN: &str = "e09a4e93-29a7-4eba-a7f2-000000000003";

/// Subscriptions `extra_subscription(0..n)` are CSP customers too (for bursts).
pub fn extra_subscription(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

/// The emulator's catalog: one approved PayAsYouUse registration, one unapproved, one
/// Capacity; a service principal with `SECRET`; customers of every kind; `extra` more CSP ones.
pub fn catalog(extra: usize) -> String {
    let mut text = format!(
        r#"subscriptions:
- {{id: {REG_SUB}, tenantId: {TENANT}, state: Enabled, offer: CSP, billingPartnerId: "{PARTNER}"}}
- {{id: {}, tenantId: {GOOD_TENANT}, state: Enabled, offer: CSP, billingPartnerId: "{PARTNER}"}}
- {{id: {}, state: Enabled, offer: CSP, billingPartnerId: "{PARTNER}"}}
- {{id: {}, state: Enabled, offer: CSP, billingPartnerId: "{PARTNER}"}}
- {{id: {OTHER_PARTNER}, state: Enabled, offer: CSP, billingPartnerId: "5590000"}}
- {{id: {NOT_CSP}, state: Enabled, offer: PayAsYouGo}}
"#,
        GOOD[0], GOOD[1], GOOD[2]
    );
    for i in 0..extra {
        text.push_str(&format!(
            "- {{id: {}, state: Enabled, offer: CSP, billingPartnerId: \"{PARTNER}\"}}\n",
            extra_subscription(i)
        ));
    }
    text.push_str(&format!(
        r#"multitenancyApprovals:
- {{subscriptionId: {REG_SUB}, resourceGroup: {RG}, registrationName: {REG_NAME}}}
- {{subscriptionId: {REG_SUB}, resourceGroup: {RG}, registrationName: {CAPACITY_NAME}}}
registrations:
- {{subscriptionId: {REG_SUB}, resourceGroup: {RG}, name: {REG_NAME}, cloudId: {CLOUD}, billingModel: PayAsYouUse}}
- {{subscriptionId: {REG_SUB}, resourceGroup: {RG}, name: {UNAPPROVED_NAME}, cloudId: {UNAPPROVED_CLOUD}, billingModel: PayAsYouUse}}
- {{subscriptionId: {REG_SUB}, resourceGroup: {RG}, name: {CAPACITY_NAME}, cloudId: {CAPACITY_CLOUD}, billingModel: Capacity}}
- {{subscriptionId: {REG_SUB}, resourceGroup: {RG}, name: {IDLE_NAME}, cloudId: {IDLE_CLOUD}, billingModel: PayAsYouUse}}
servicePrincipals:
- {{tenantId: {TENANT}, clientId: {CLIENT}, clientSecret: {SECRET}}}
"#
    ));
    text
}

impl AzureWorld {
    /// An emulator over `catalog_yaml` with ARM's write bucket (`burst`, `refill` per second).
    pub async fn start(catalog_yaml: &str, burst: u32, refill: f64) -> Self {
        Self::start_with_stamp(catalog_yaml, burst, refill, None).await
    }

    /// The lower-case customer subscriptions the emulator holds for registration `name`.
    pub fn tenants(&self, name: &str) -> BTreeSet<String> {
        let key = RegistrationKey::new(REG_SUB, RG, name);
        self.emulator
            .arm
            .lock()
            .expect("arm state")
            .customers
            .get(&key)
            .map(|c| c.keys().map(Guid::to_string).collect())
            .unwrap_or_default()
    }

    /// Removes a tenant behind the operator's back.
    pub fn remove_tenant(&self, name: &str, subscription: &str) {
        let key = RegistrationKey::new(REG_SUB, RG, name);
        let subscription = Guid::parse(subscription).expect("a GUID");
        if let Some(customers) = self
            .emulator
            .arm
            .lock()
            .expect("arm state")
            .customers
            .get_mut(&key)
        {
            customers.remove(&subscription);
        }
    }

    /// Adds a tenant behind the operator's back.
    pub fn add_tenant(&self, name: &str, subscription: &str) {
        let key = RegistrationKey::new(REG_SUB, RG, name);
        self.emulator
            .arm
            .lock()
            .expect("arm state")
            .customers
            .entry(key)
            .or_default()
            .insert(
                Guid::parse(subscription).expect("a GUID"),
                StoredCustomer {
                    name: subscription.to_string(),
                    tenant_id: None,
                    etag: "\"behind-the-back\"".to_string(),
                },
            );
    }

    /// ARM writes (PUT, DELETE of customerSubscriptions) the layer saw.
    pub fn arm_writes(&self) -> usize {
        self.upstream
            .exchanges()
            .iter()
            .filter(|e| {
                e.path.contains("/customerSubscriptions/")
                    && (e.method == "PUT" || e.method == "DELETE")
            })
            .count()
    }

    /// The operator command of azure mode against this emulator, watching `namespace`.
    pub fn operator(&self, namespace: &str, extra: &[&str]) -> OperatorCommand {
        OperatorCommand::new(env!("CARGO_BIN_EXE_azs-csp-operator"))
            .args([
                "--mode",
                "azure",
                "--arm-endpoint",
                &self.url(),
                "--azure-ca-file",
                self.ca_file.to_str().expect("utf-8"),
                "--azure-credential",
                "client-secret",
                "--azure-client-secret-file",
                self.secret_file.to_str().expect("utf-8"),
                "--arm-timeout",
                "2s",
                "--watch-namespace",
                namespace,
            ])
            .args(extra)
            .env("AZURE_TENANT_ID", TENANT)
            .env("AZURE_CLIENT_ID", CLIENT)
            .env("AZURE_AUTHORITY_HOST", self.url())
    }
}
