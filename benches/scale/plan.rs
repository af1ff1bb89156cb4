//! The scenario plan: registrations, customer subscriptions, the catalog that produces their
//! outcomes, and the outcome each object must end with.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Write as _,
};

use azs_csp_operator::api::{
    CustomerSubscription, CustomerSubscriptionSpec, Registration, RegistrationRef,
};

use serde_json::json;

use crate::{PARTNERS, RESOURCE_GROUP, Result};

/// A GUID of a family (`kind`) and a serial number: distinct, readable, valid.
pub fn guid(kind: u32, n: u64) -> String {
    format!("{kind:08x}-0000-4000-8000-{n:012x}")
}

pub const G_REG_SUB: u32 = 0xa5000001;
pub const G_CLOUD: u32 = 0xa5000002;
pub const G_PARTNER_TENANT: u32 = 0xa5000003;
pub const G_CUST_SUB: u32 = 0xc5000001;
pub const G_CUST_TENANT: u32 = 0xc5000002;
pub const G_FOREIGN_TENANT: u32 = 0xc5000003;

pub fn partner_id(p: u64) -> String {
    format!("44{:05}", 10_000 + p)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RegKind {
    Approved,
    Unapproved,
    Capacity,
    Development,
}

pub struct RegPlan {
    pub name: String,
    pub subscription_id: String,
    pub registration_name: String,
    pub cloud_id: String,
    pub kind: RegKind,
    pub partner: u64,
}

impl RegPlan {
    pub fn billing_model(&self) -> &'static str {
        match self.kind {
            RegKind::Approved | RegKind::Unapproved => "PayAsYouUse",
            RegKind::Capacity => "Capacity",
            RegKind::Development => "Development",
        }
    }

    pub fn object(&self) -> Result<Registration> {
        let model = self.billing_model();
        Ok(serde_json::from_value(json!({
            "apiVersion": "csp.azurestack.io/v1alpha1",
            "kind": "Registration",
            "metadata": {"name": self.name},
            "spec": {
                "subscriptionId": self.subscription_id,
                "resourceGroup": RESOURCE_GROUP,
                "registrationName": self.registration_name,
                "cloudId": self.cloud_id,
                "billingModel": model,
                "agreementNumber": (self.kind == RegKind::Capacity).then_some("EA-BENCH-1"),
            }
        }))?)
    }
}

pub struct CustPlan {
    pub name: String,
    pub registration: usize,
    pub subscription_id: String,
    pub tenant_id: Option<String>,
    /// Created after every non-duplicate, so that the original is always the older one.
    pub second_wave: bool,
    pub expected: &'static str,
}

impl CustPlan {
    pub fn object(&self, registrations: &[RegPlan]) -> CustomerSubscription {
        CustomerSubscription::new(
            &self.name,
            CustomerSubscriptionSpec {
                registration_ref: RegistrationRef {
                    name: registrations[self.registration].name.clone(),
                },
                subscription_id: self.subscription_id.clone(),
                tenant_id: self.tenant_id.clone(),
            },
        )
    }
}

/// Whose registrations they are.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Partners {
    /// Ten CSP partners, each registration in an Azure subscription of its own.
    Ten,
    /// One partner whose registrations all live in one Azure subscription: one principal's
    /// writes then share one ARM throttling bucket (azure mode).
    OneSubscription,
}

pub struct Plan {
    pub registrations: Vec<RegPlan>,
    pub customers: Vec<CustPlan>,
    /// `subscriptions:` entries of the catalog, one YAML flow mapping each.
    pub catalog_subscriptions: Vec<String>,
    /// Index of the registration the fan-out revokes.
    pub fanout_registration: usize,
}

pub const ATTACHED: &str = "Attached";
pub const UNAUTHORIZED: &str = "UnauthorizedCspRegistration";

impl Plan {
    /// Deterministic: the same N gives the same objects, catalog and expectations; the
    /// registrations belong to whom `partners` says.
    pub fn new(n: usize, registration_count: usize, fanout: usize, partners: Partners) -> Self {
        let r = registration_count;
        // Registration 0 is the large one whose approval the fan-out revokes; a few others
        // are not approved, or not PayAsYouUse.
        let kind_of = |i: usize| match i {
            _ if i == r - 1 => RegKind::Capacity,
            _ if i == r - 4 => RegKind::Development,
            _ if i == r - 2 || i == r - 3 => RegKind::Unapproved,
            _ => RegKind::Approved,
        };
        let registrations: Vec<RegPlan> = (0..r)
            .map(|i| {
                let cloud_id = guid(G_CLOUD, i as u64);
                let (subscription, partner) = match partners {
                    Partners::Ten => (i as u64, i as u64 % PARTNERS),
                    Partners::OneSubscription => (0, 0),
                };
                RegPlan {
                    name: format!("reg-{i:03}"),
                    subscription_id: guid(G_REG_SUB, subscription),
                    registration_name: format!("azurestack-{}", &cloud_id[24..]),
                    cloud_id,
                    kind: kind_of(i),
                    partner,
                }
            })
            .collect();
        let mut registration_subscriptions = HashSet::new();
        let mut catalog_subscriptions: Vec<String> = registrations
            .iter()
            .filter(|reg| registration_subscriptions.insert(reg.subscription_id.clone()))
            .map(|reg| {
                format!(
                    "{{id: {}, tenantId: {}, state: Enabled, offer: APSS, billingPartnerId: \"{}\"}}",
                    reg.subscription_id,
                    guid(G_PARTNER_TENANT, reg.partner),
                    partner_id(reg.partner)
                )
            })
            .collect();

        let mut customers = Vec::with_capacity(n);
        // Attached, first-wave customers per registration: originals for duplicates.
        let mut originals: Vec<Vec<usize>> = vec![Vec::new(); r];
        for j in 0..n {
            let registration = if j < fanout {
                0
            } else {
                1 + (j - fanout) % (r - 1)
            };
            let reg = &registrations[registration];
            let sub = guid(G_CUST_SUB, j as u64);
            let tenant = guid(G_CUST_TENANT, j as u64);
            let mut plan = CustPlan {
                name: format!("cs-{j:06}"),
                registration,
                subscription_id: sub.clone(),
                tenant_id: None,
                second_wave: false,
                expected: ATTACHED,
            };
            // ~88% attached; the rest split over the documented failures and duplicates.
            let entry = match j % 100 {
                0..=3 => {
                    // A CSP customer of another partner.
                    plan.expected = "BadCustomerSubscriptionId";
                    let other = (reg.partner + 1 + j as u64 % (PARTNERS - 1)) % PARTNERS;
                    Some(format!(
                        "{{id: {sub}, tenantId: {tenant}, state: Enabled, offer: CSP, billingPartnerId: \"{}\"}}",
                        partner_id(other)
                    ))
                }
                4..=6 => {
                    plan.expected = "InvalidCSPSubscription";
                    let offer = if j % 2 == 0 {
                        "PayAsYouGo"
                    } else {
                        "EnterpriseAgreement"
                    };
                    Some(format!(
                        "{{id: {sub}, tenantId: {tenant}, state: Enabled, offer: {offer}}}"
                    ))
                }
                7 => {
                    // Unknown to Azure: no catalog entry.
                    plan.expected = "InvalidCustomerSubscriptionId";
                    None
                }
                8 => {
                    plan.expected = "InvalidCustomerSubscriptionId";
                    let state = if j % 2 == 0 { "Disabled" } else { "Deleted" };
                    Some(format!(
                        "{{id: {sub}, tenantId: {tenant}, state: {state}, offer: CSP, billingPartnerId: \"{}\"}}",
                        partner_id(reg.partner)
                    ))
                }
                9 => {
                    // spec.tenantId names another directory than the subscription's.
                    plan.expected = "InvalidCustomerSubscriptionId";
                    plan.tenant_id = Some(guid(G_FOREIGN_TENANT, j as u64));
                    Some(format!(
                        "{{id: {sub}, tenantId: {tenant}, state: Enabled, offer: CSP, billingPartnerId: \"{}\"}}",
                        partner_id(reg.partner)
                    ))
                }
                // Not under an unapproved registration in azure mode: there the approval is
                // ARM's answer, which comes after the duplicate rule, and which of the two
                // reasons a duplicate ends with depends on timing (docs/benchmarks.md).
                m @ (10 | 11)
                    if !(originals[registration].is_empty()
                        || partners == Partners::OneSubscription
                            && reg.kind == RegKind::Unapproved) =>
                {
                    // A second CustomerSubscription for a subscription already attached.
                    let original = &customers[*originals[registration].last().expect("one")];
                    let original: &CustPlan = original;
                    plan.subscription_id = if m == 11 {
                        original.subscription_id.to_ascii_uppercase()
                    } else {
                        original.subscription_id.clone()
                    };
                    plan.second_wave = true;
                    plan.expected = "DuplicateCustomerSubscription";
                    None
                }
                _ => {
                    // Attached: direct or indirect, in every active state, tenant given or not.
                    let state = match j % 13 {
                        0 => "Warned",
                        1 => "PastDue",
                        _ => "Enabled",
                    };
                    if j % 2 == 0 {
                        plan.tenant_id = Some(tenant.clone());
                    }
                    let reseller = if j % 7 == 0 {
                        format!(", resellerPartnerId: \"55{:05}\"", j % 100)
                    } else {
                        String::new()
                    };
                    Some(format!(
                        "{{id: {sub}, tenantId: {tenant}, state: {state}, offer: CSP, billingPartnerId: \"{}\"{reseller}}}",
                        partner_id(reg.partner)
                    ))
                }
            };
            if plan.expected == ATTACHED {
                originals[registration].push(j);
            }
            // Rules 2 and 3 come before everything about the subscription.
            plan.expected = match reg.kind {
                RegKind::Approved => plan.expected,
                RegKind::Unapproved => UNAUTHORIZED,
                RegKind::Capacity | RegKind::Development => "CustomerSubscriptionsNotAllowed",
            };
            catalog_subscriptions.extend(entry);
            customers.push(plan);
        }
        Self {
            registrations,
            customers,
            catalog_subscriptions,
            fanout_registration: 0,
        }
    }

    /// The catalog YAML; `revoked` registrations lose their multitenancy approval.
    pub fn catalog(&self, revoked: &[usize]) -> String {
        let mut out = String::with_capacity(self.catalog_subscriptions.len() * 160);
        out.push_str("# Generated by benches/scale\nsubscriptions:\n");
        for entry in &self.catalog_subscriptions {
            let _ = writeln!(out, "- {entry}");
        }
        out.push_str("multitenancyApprovals:\n");
        for (i, reg) in self.registrations.iter().enumerate() {
            if reg.kind == RegKind::Unapproved || revoked.contains(&i) {
                continue;
            }
            let _ = writeln!(
                out,
                "- {{subscriptionId: {}, resourceGroup: {RESOURCE_GROUP}, registrationName: {}}}",
                reg.subscription_id, reg.registration_name
            );
        }
        out
    }

    /// [`Plan::catalog`] plus what the emulator needs to play ARM and Entra ID: every
    /// registration as ARM holds it, and one service principal (a role on all of them) that
    /// signs in with `secret`.
    pub fn azure_catalog(&self, tenant: &str, client: &str, secret: &str) -> String {
        let mut out = self.catalog(&[]);
        out.push_str("registrations:\n");
        for reg in &self.registrations {
            let _ = writeln!(
                out,
                "- {{subscriptionId: {}, resourceGroup: {RESOURCE_GROUP}, name: {}, cloudId: {}, billingModel: {}}}",
                reg.subscription_id,
                reg.registration_name,
                reg.cloud_id,
                reg.billing_model()
            );
        }
        let _ = writeln!(
            out,
            "servicePrincipals:\n- {{tenantId: {tenant}, clientId: {client}, clientSecret: {secret}}}"
        );
        out
    }

    /// The ARM PUTs azure mode cannot do without: one per customer of an approved
    /// PayAsYouUse registration that is not a duplicate (rules 2 and 8 are decided in the
    /// cluster). Customers of the unapproved registrations need at least one PUT per
    /// registration (what the answer teaches decides the rest): counted apart.
    pub fn necessary_puts(&self) -> usize {
        self.customers
            .iter()
            .filter(|c| self.registrations[c.registration].kind == RegKind::Approved)
            .filter(|c| c.expected != "DuplicateCustomerSubscription")
            .count()
    }

    pub fn unapproved_customers(&self) -> usize {
        self.customers
            .iter()
            .filter(|c| self.registrations[c.registration].kind == RegKind::Unapproved)
            .count()
    }

    pub fn expected_customers(&self, revoked: &[usize]) -> HashMap<String, String> {
        self.customers
            .iter()
            .map(|c| {
                let reason = if revoked.contains(&c.registration) {
                    UNAUTHORIZED
                } else {
                    c.expected
                };
                (c.name.clone(), reason.to_string())
            })
            .collect()
    }

    pub fn expected_registrations(&self, revoked: &[usize]) -> HashMap<String, String> {
        let mut attached = vec![0usize; self.registrations.len()];
        for c in &self.customers {
            if c.expected == ATTACHED && !revoked.contains(&c.registration) {
                attached[c.registration] += 1;
            }
        }
        self.registrations
            .iter()
            .zip(attached)
            .map(|(r, count)| (r.name.clone(), format!("Registered count={count}")))
            .collect()
    }

    /// Distinct subscriptions the objects name (customers' in any letter case, and the
    /// Registrations'): what a resolver that caches per subscription would have to look up.
    pub fn referenced_subscriptions(&self) -> usize {
        let customers = self
            .customers
            .iter()
            .map(|c| c.subscription_id.to_ascii_lowercase());
        let registrations = self.registrations.iter().map(|r| r.subscription_id.clone());
        customers
            .chain(registrations)
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    /// Distinct subscriptions the decisions look up: the Registrations', and the customers'
    /// whose Registration is PayAsYouUse (the operator skips the lookups when rule 2 fails, and
    /// asks for the approval and both subscriptions together otherwise, also when not approved).
    pub fn looked_up_subscriptions(&self) -> usize {
        let customers = self
            .customers
            .iter()
            .filter(|c| {
                matches!(
                    self.registrations[c.registration].kind,
                    RegKind::Approved | RegKind::Unapproved
                )
            })
            .map(|c| c.subscription_id.to_ascii_lowercase());
        let registrations = self.registrations.iter().map(|r| r.subscription_id.clone());
        customers.chain(registrations).collect::<HashSet<_>>().len()
    }

    pub fn outcome_mix(&self) -> BTreeMap<&'static str, usize> {
        let mut mix = BTreeMap::new();
        for c in &self.customers {
            *mix.entry(c.expected).or_default() += 1;
        }
        mix
    }
}
