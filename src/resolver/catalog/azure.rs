//! The catalog's optional Azure-side lists, read by the emulator (DESIGN.md §10): the
//! `registrations` ARM knows and the `servicePrincipals` Entra ID issues tokens to, with the
//! registrations each principal holds a role on. The operator itself ignores them; `catalog
//! check` validates them with the rest of the document.

use std::{collections::HashMap, fmt, path::PathBuf};

use serde::Deserialize;

use super::RegistrationKey;
use crate::api::BillingModel;

/// One `registrations[]` entry as written.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RegistrationEntry {
    subscription_id: String,
    resource_group: String,
    name: String,
    cloud_id: String,
    billing_model: String,
    #[serde(default)]
    object_id: Option<String>,
}

/// A registration resource as ARM holds it. GUIDs are lower-case; names keep their spelling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogRegistration {
    pub subscription_id: String,
    pub resource_group: String,
    pub name: String,
    pub cloud_id: String,
    pub billing_model: BillingModel,
    /// The object identifier ARM reports; the cloud ID when the catalog names none.
    pub object_id: String,
}

impl CatalogRegistration {
    pub fn key(&self) -> RegistrationKey {
        RegistrationKey::new(&self.subscription_id, &self.resource_group, &self.name)
    }
}

/// One `servicePrincipals[]` entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ServicePrincipalEntry {
    tenant_id: String,
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    federated_credentials: Vec<FederatedCredential>,
    /// Absent: a role on every registration. Present (even empty): only on these scopes.
    #[serde(default)]
    registrations: Option<Vec<ScopeEntry>>,
}

/// A client assertion is accepted when its `iss` and `sub` are exactly these and, when
/// `jwksFile` is given, its signature verifies against one of that file's keys.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FederatedCredential {
    pub issuer: String,
    pub subject: String,
    /// The issuer's public keys: a JWKS document (e.g. a cluster's `/openid/v1/jwks`) or a
    /// PEM RSA public key (e.g. the API server's `--service-account-key-file`). A relative path is
    /// relative to the catalog file's directory. Absent: the signature is not checked.
    #[serde(default, rename = "jwksFile")]
    pub jwks_file: Option<PathBuf>,
}

/// One `servicePrincipals[].registrations[]` entry as written: an ARM resource ID (of a
/// subscription, a resource group or a registration) or its parts.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub(super) enum ScopeEntry {
    ResourceId(String),
    Parts(ScopeParts),
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ScopeParts {
    subscription_id: String,
    #[serde(default)]
    resource_group: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// Where a principal's role on registrations applies, as an Azure role assignment's scope: a
/// subscription, a resource group or one registration. Stored lower-case (ARM names are
/// case-insensitive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationScope {
    pub subscription_id: String,
    pub resource_group: Option<String>,
    pub name: Option<String>,
}

impl RegistrationScope {
    /// Whether a role at this scope reaches the registration `key`.
    pub fn covers(&self, key: &RegistrationKey) -> bool {
        crate::guid::GuidText::parse(&self.subscription_id) == key.subscription_id
            && self
                .resource_group
                .as_ref()
                .is_none_or(|group| *group == key.resource_group)
            && self
                .name
                .as_ref()
                .is_none_or(|name| *name == key.registration_name)
    }
}

impl fmt::Display for RegistrationScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/subscriptions/{}", self.subscription_id)?;
        if let Some(group) = &self.resource_group {
            write!(f, "/resourceGroups/{group}")?;
            if let Some(name) = &self.name {
                write!(f, "/providers/Microsoft.AzureStack/registrations/{name}")?;
            }
        }
        Ok(())
    }
}

/// A principal Entra ID issues tokens to.
#[derive(Clone, PartialEq, Eq)]
pub struct ServicePrincipal {
    /// Lower-case GUID.
    pub tenant_id: String,
    /// Lower-case GUID.
    pub client_id: String,
    pub client_secret: Option<String>,
    pub federated_credentials: Vec<FederatedCredential>,
    /// The scopes of its role on registrations; `None`: every registration.
    pub registrations: Option<Vec<RegistrationScope>>,
}

impl ServicePrincipal {
    /// Whether its role reaches the registration `key` (ARM answers 403 otherwise).
    pub fn may_manage(&self, key: &RegistrationKey) -> bool {
        self.registrations
            .as_ref()
            .is_none_or(|scopes| scopes.iter().any(|scope| scope.covers(key)))
    }
}

// Secrets never reach a log line, not even a debug one.
impl fmt::Debug for ServicePrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServicePrincipal")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "(redacted)"),
            )
            .field("federated_credentials", &self.federated_credentials)
            .field("registrations", &self.registrations)
            .finish()
    }
}

fn guid_field(at: &str, field: &str, value: &str, problems: &mut Vec<String>) -> Option<String> {
    let normalized = crate::guid::Guid::parse(value).map(|g| g.to_string());
    if normalized.is_none() {
        problems.push(format!("{at}.{field}: {value:?} is not a GUID"));
    }
    normalized
}

fn not_empty(at: &str, field: &str, value: &str, problems: &mut Vec<String>) {
    if value.trim().is_empty() {
        problems.push(format!("{at}.{field}: must not be empty"));
    }
}

/// Validates `registrations`: GUIDs, a known billing model, one entry per registration.
pub(super) fn validate_registrations(
    entries: Vec<RegistrationEntry>,
    problems: &mut Vec<String>,
) -> Vec<CatalogRegistration> {
    let mut first: HashMap<RegistrationKey, usize> = HashMap::new();
    let mut valid = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let at = format!("registrations[{index}]");
        let before = problems.len();
        let subscription_id = guid_field(&at, "subscriptionId", &entry.subscription_id, problems);
        not_empty(&at, "resourceGroup", &entry.resource_group, problems);
        not_empty(&at, "name", &entry.name, problems);
        let cloud_id = guid_field(&at, "cloudId", &entry.cloud_id, problems);
        let object_id = match &entry.object_id {
            Some(object_id) => guid_field(&at, "objectId", object_id, problems),
            None => cloud_id.clone(),
        };
        let billing_model = BillingModel::ALL
            .into_iter()
            .find(|model| model.as_str() == entry.billing_model);
        if billing_model.is_none() {
            problems.push(format!(
                "{at}.billingModel: {:?} is not one of PayAsYouUse, Capacity, Development, Custom, Ruggedized",
                entry.billing_model
            ));
        }
        let (Some(subscription_id), Some(cloud_id), Some(object_id), Some(billing_model)) =
            (subscription_id, cloud_id, object_id, billing_model)
        else {
            continue;
        };
        if problems.len() > before {
            continue;
        }
        let registration = CatalogRegistration {
            subscription_id,
            resource_group: entry.resource_group,
            name: entry.name,
            cloud_id,
            billing_model,
            object_id,
        };
        let key = registration.key();
        if let Some(first) = first.get(&key) {
            problems.push(format!("{at}: duplicates registrations[{first}] ({key})"));
            continue;
        }
        first.insert(key, index);
        valid.push(registration);
    }
    valid
}

/// Validates `servicePrincipals`: GUIDs, at least one way to authenticate, one entry per
/// (tenant, client).
pub(super) fn validate_service_principals(
    entries: Vec<ServicePrincipalEntry>,
    problems: &mut Vec<String>,
) -> Vec<ServicePrincipal> {
    let mut first: HashMap<(String, String), usize> = HashMap::new();
    let mut valid = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let at = format!("servicePrincipals[{index}]");
        let before = problems.len();
        let tenant_id = guid_field(&at, "tenantId", &entry.tenant_id, problems);
        let client_id = guid_field(&at, "clientId", &entry.client_id, problems);
        if entry.client_secret.as_deref().is_some_and(str::is_empty) {
            problems.push(format!(
                "{at}.clientSecret: must not be empty (leave the field out when there is none)"
            ));
        }
        if entry.client_secret.is_none() && entry.federated_credentials.is_empty() {
            problems.push(format!(
                "{at}: needs a clientSecret or federatedCredentials, or it can never get a token"
            ));
        }
        for (i, credential) in entry.federated_credentials.iter().enumerate() {
            let at = format!("{at}.federatedCredentials[{i}]");
            not_empty(&at, "issuer", &credential.issuer, problems);
            not_empty(&at, "subject", &credential.subject, problems);
            if credential
                .jwks_file
                .as_ref()
                .is_some_and(|path| path.as_os_str().is_empty())
            {
                problems.push(format!(
                    "{at}.jwksFile: must not be empty (leave the field out to skip signature checks)"
                ));
            }
        }
        let registrations = entry.registrations.map(|scopes| {
            scopes
                .iter()
                .enumerate()
                .filter_map(|(i, scope)| {
                    validate_scope(&format!("{at}.registrations[{i}]"), scope, problems)
                })
                .collect::<Vec<_>>()
        });
        let (Some(tenant_id), Some(client_id)) = (tenant_id, client_id) else {
            continue;
        };
        if problems.len() > before {
            continue;
        }
        let key = (tenant_id.clone(), client_id.clone());
        if let Some(first) = first.get(&key) {
            problems.push(format!(
                "{at}: duplicates servicePrincipals[{first}] (tenant {tenant_id}, client {client_id})"
            ));
            continue;
        }
        first.insert(key, index);
        valid.push(ServicePrincipal {
            tenant_id,
            client_id,
            client_secret: entry.client_secret,
            federated_credentials: entry.federated_credentials,
            registrations,
        });
    }
    valid
}

/// A scope entry in canonical form, or a problem naming it.
fn validate_scope(
    at: &str,
    entry: &ScopeEntry,
    problems: &mut Vec<String>,
) -> Option<RegistrationScope> {
    let (subscription_id, resource_group, name) = match entry {
        ScopeEntry::ResourceId(id) => {
            let Some(parts) = parse_scope_id(id) else {
                problems.push(format!(
                    "{at}: {id:?} is not the resource ID of a subscription, a resource group or a Microsoft.AzureStack registration"
                ));
                return None;
            };
            parts
        }
        ScopeEntry::Parts(parts) => {
            if parts.resource_group.is_none() && parts.name.is_some() {
                problems.push(format!("{at}.name: needs a resourceGroup"));
                return None;
            }
            (
                parts.subscription_id.as_str(),
                parts.resource_group.as_deref(),
                parts.name.as_deref(),
            )
        }
    };
    let before = problems.len();
    let subscription_id = guid_field(at, "subscriptionId", subscription_id, problems);
    if let Some(group) = resource_group {
        not_empty(at, "resourceGroup", group, problems);
    }
    if let Some(name) = name {
        not_empty(at, "name", name, problems);
    }
    if problems.len() > before {
        return None;
    }
    Some(RegistrationScope {
        subscription_id: subscription_id?,
        resource_group: resource_group.map(str::to_ascii_lowercase),
        name: name.map(str::to_ascii_lowercase),
    })
}

/// `/subscriptions/{s}`, `/subscriptions/{s}/resourceGroups/{g}` or
/// `/subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.AzureStack/registrations/{n}`
/// (segment names case-insensitive, as in ARM).
fn parse_scope_id(id: &str) -> Option<(&str, Option<&str>, Option<&str>)> {
    let segments: Vec<&str> = id.trim_end_matches('/').split('/').collect();
    let is = |segment: &str, word: &str| segment.eq_ignore_ascii_case(word);
    match segments.as_slice() {
        ["", s, sub] if is(s, "subscriptions") => Some((sub, None, None)),
        ["", s, sub, g, group] if is(s, "subscriptions") && is(g, "resourceGroups") => {
            Some((sub, Some(group), None))
        }
        ["", s, sub, g, group, p, ns, r, name]
            if is(s, "subscriptions")
                && is(g, "resourceGroups")
                && is(p, "providers")
                && is(ns, "Microsoft.AzureStack")
                && is(r, "registrations") =>
        {
            Some((sub, Some(group), Some(name)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::api::BillingModel;
    use crate::resolver::{Catalog, CatalogError, RegistrationKey};

    const SUB: &str = "6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c";
    const CLOUD: &str = "5f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f";
    const TENANT: &str = "2b7e0c1d-0000-4000-8000-000000000001";
    const CLIENT: &str = "3c8f1d2e-0000-4000-8000-000000000002";

    fn problems(text: &str) -> Vec<String> {
        match Catalog::parse(text) {
            Err(CatalogError::Invalid { problems }) => problems,
            other => panic!("expected Invalid, got {other:?}\n{text}"),
        }
    }

    #[test]
    fn valid_lists_are_kept_in_canonical_form() {
        let text = format!(
            r#"
registrations:
- subscriptionId: {sub}
  resourceGroup: AzureStack
  name: azurestack-5F1C
  cloudId: {cloud}
  billingModel: PayAsYouUse
servicePrincipals:
- tenantId: {tenant}
  clientId: {client}
  clientSecret: s3cret
- tenantId: {tenant}
  clientId: {TENANT}
  federatedCredentials:
  - issuer: https://kubernetes.default.svc
    subject: system:serviceaccount:azs-csp:azs-csp-operator
"#,
            sub = SUB.to_uppercase(),
            cloud = CLOUD.to_uppercase(),
            tenant = TENANT.to_uppercase(),
            client = CLIENT.to_uppercase(),
        );
        let catalog = Catalog::parse(&text).expect("valid");
        let [registration] = catalog.registrations() else {
            panic!("one registration")
        };
        assert_eq!(registration.subscription_id, SUB);
        assert_eq!(registration.cloud_id, CLOUD);
        assert_eq!(
            registration.object_id, CLOUD,
            "objectId defaults to the cloud ID"
        );
        assert_eq!(registration.name, "azurestack-5F1C");
        assert_eq!(registration.billing_model, BillingModel::PayAsYouUse);
        let principals = catalog.service_principals();
        assert_eq!(principals.len(), 2);
        assert_eq!(principals[0].client_id, CLIENT);
        assert_eq!(principals[0].client_secret.as_deref(), Some("s3cret"));
        assert!(!format!("{:?}", principals[0]).contains("s3cret"));
        assert_eq!(principals[1].federated_credentials.len(), 1);
        assert!(
            catalog
                .summary()
                .to_string()
                .ends_with(", 1 registrations, 2 service principals")
        );
    }

    #[test]
    fn each_bad_entry_is_named() {
        let cases = [
            (
                format!(
                    "registrations:\n- {{subscriptionId: x, resourceGroup: rg, name: n, cloudId: {CLOUD}, billingModel: PayAsYouUse}}"
                ),
                "registrations[0].subscriptionId: \"x\" is not a GUID",
            ),
            (
                format!(
                    "registrations:\n- {{subscriptionId: {SUB}, resourceGroup: rg, name: n, cloudId: {CLOUD}, billingModel: Free}}"
                ),
                "registrations[0].billingModel: \"Free\" is not one of",
            ),
            (
                format!(
                    "registrations:\n- {{subscriptionId: {SUB}, resourceGroup: ' ', name: n, cloudId: {CLOUD}, billingModel: Capacity}}"
                ),
                "registrations[0].resourceGroup: must not be empty",
            ),
            (
                format!(
                    "registrations:\n- {{subscriptionId: {SUB}, resourceGroup: rg, name: n, cloudId: {CLOUD}, billingModel: Capacity}}\n- {{subscriptionId: {SUB}, resourceGroup: RG, name: N, cloudId: {CLOUD}, billingModel: Capacity}}"
                ),
                "registrations[1]: duplicates registrations[0]",
            ),
            (
                format!("servicePrincipals:\n- {{tenantId: {TENANT}, clientId: {CLIENT}}}"),
                "servicePrincipals[0]: needs a clientSecret or federatedCredentials",
            ),
            (
                format!(
                    "servicePrincipals:\n- {{tenantId: {TENANT}, clientId: nope, clientSecret: s}}"
                ),
                "servicePrincipals[0].clientId: \"nope\" is not a GUID",
            ),
            (
                format!(
                    "servicePrincipals:\n- {{tenantId: {TENANT}, clientId: {CLIENT}, federatedCredentials: [{{issuer: '', subject: s}}]}}"
                ),
                "servicePrincipals[0].federatedCredentials[0].issuer: must not be empty",
            ),
            (
                format!(
                    "servicePrincipals:\n- {{tenantId: {TENANT}, clientId: {CLIENT}, clientSecret: a}}\n- {{tenantId: {TENANT}, clientId: {CLIENT}, clientSecret: b}}"
                ),
                "servicePrincipals[1]: duplicates servicePrincipals[0]",
            ),
        ];
        for (text, want) in cases {
            let found = problems(&text);
            assert!(
                found.iter().any(|p| p.starts_with(want)),
                "{want:?} not in {found:?}"
            );
        }
    }

    #[test]
    fn registration_scopes_limit_a_principal() {
        let other_sub = "7e4d5c0f-2a4b-4d7f-8c8b-3e2f1a0b9c8d";
        let text = format!(
            r#"
servicePrincipals:
- {{tenantId: {TENANT}, clientId: {CLIENT}, clientSecret: s}}
- tenantId: {TENANT}
  clientId: {SUB}
  clientSecret: s
  registrations:
  - /Subscriptions/{sub_upper}/resourceGroups/AzureStack/providers/microsoft.azurestack/registrations/Reg-A
  - {{subscriptionId: {other_sub}, resourceGroup: Other}}
- tenantId: {TENANT}
  clientId: {CLOUD}
  clientSecret: s
  registrations:
  - /subscriptions/{other_sub}/
- tenantId: {TENANT}
  clientId: {TENANT}
  clientSecret: s
  registrations: []
"#,
            sub_upper = SUB.to_uppercase(),
        );
        let catalog = Catalog::parse(&text).expect("valid");
        let [everything, two, subscription, nothing] = catalog.service_principals() else {
            panic!("four principals")
        };
        let key = |sub: &str, group: &str, name: &str| RegistrationKey::new(sub, group, name);
        let cases = [
            (key(SUB, "azurestack", "reg-a"), [true, true, false, false]),
            (key(SUB, "AZURESTACK", "REG-A"), [true, true, false, false]),
            (key(SUB, "azurestack", "reg-b"), [true, false, false, false]),
            (key(other_sub, "other", "any"), [true, true, true, false]),
            (key(other_sub, "else", "any"), [true, false, true, false]),
        ];
        for (key, want) in cases {
            let got = [everything, two, subscription, nothing].map(|p| p.may_manage(&key));
            assert_eq!(got, want, "{key}");
        }
        assert_eq!(
            two.registrations.as_ref().map(|s| s[0].to_string()),
            Some(format!(
                "/subscriptions/{SUB}/resourceGroups/azurestack/providers/Microsoft.AzureStack/registrations/reg-a"
            ))
        );
    }

    #[test]
    fn bad_registration_scopes_are_named() {
        let principal = |scopes: &str| {
            format!(
                "servicePrincipals:\n- {{tenantId: {TENANT}, clientId: {CLIENT}, clientSecret: s, registrations: [{scopes}]}}"
            )
        };
        let cases = [
            (
                principal("/subscriptions/nope"),
                "servicePrincipals[0].registrations[0].subscriptionId: \"nope\" is not a GUID",
            ),
            (
                principal(&format!(
                    "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/v"
                )),
                "servicePrincipals[0].registrations[0]: \"/subscriptions/",
            ),
            (
                principal(&format!("'{SUB}'")),
                "servicePrincipals[0].registrations[0]: \"6d3c",
            ),
            (
                principal(&format!("{{subscriptionId: {SUB}, name: reg}}")),
                "servicePrincipals[0].registrations[0].name: needs a resourceGroup",
            ),
            (
                principal(&format!("{{subscriptionId: {SUB}, resourceGroup: ''}}")),
                "servicePrincipals[0].registrations[0].resourceGroup: must not be empty",
            ),
            (
                format!(
                    "servicePrincipals:\n- {{tenantId: {TENANT}, clientId: {CLIENT}, federatedCredentials: [{{issuer: i, subject: s, jwksFile: ''}}]}}"
                ),
                "servicePrincipals[0].federatedCredentials[0].jwksFile: must not be empty",
            ),
        ];
        for (text, want) in cases {
            let found = problems(&text);
            assert!(
                found.iter().any(|p| p.starts_with(want)),
                "{want:?} not in {found:?}"
            );
        }
        // A scope mapping with a misspelt field is no scope at all.
        let misspelt = principal(&format!("{{subscriptionID: {SUB}}}"));
        assert!(matches!(
            Catalog::parse(&misspelt),
            Err(CatalogError::Syntax { .. })
        ));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = format!(
            "servicePrincipals:\n- {{tenantId: {TENANT}, clientId: {CLIENT}, clientSecret: s, secret: t}}"
        );
        assert!(matches!(
            Catalog::parse(&text),
            Err(CatalogError::Syntax { .. })
        ));
    }
}
