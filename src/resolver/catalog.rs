//! The catalog document (DESIGN.md §4): parsed strictly, validated as a whole, then frozen
//! into an immutable [`Catalog`] that lookups read without further checks.
//!
//! Parsing does not buffer the document: serde-saphyr (which kube uses for kubeconfigs)
//! deserializes while it parses, and each list entry is validated as it is read, so a catalog
//! of 10,000 subscriptions is never held twice. Its errors are worded by [`CatalogWording`];
//! `golden_tests` has the exact text of each.

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
};

use serde::{Deserialize, Deserializer};
use serde_saphyr::MessageFormatter;

use super::{MetadataChange, RegistrationKey, SubscriptionMetadata, SubscriptionState};
use crate::guid::Guid;

#[path = "catalog/azure.rs"]
mod azure;
pub use azure::{CatalogRegistration, FederatedCredential, RegistrationScope, ServicePrincipal};

/// A long list of problems helps nobody and floods the log; the first ones show the pattern.
const MAX_LISTED_PROBLEMS: usize = 20;

const STATES: [SubscriptionState; 5] = [
    SubscriptionState::Enabled,
    SubscriptionState::Warned,
    SubscriptionState::PastDue,
    SubscriptionState::Disabled,
    SubscriptionState::Deleted,
];

/// Why a catalog was not accepted.
#[derive(thiserror::Error, Debug)]
pub enum CatalogError {
    /// Not YAML, or YAML of the wrong shape (unknown field, wrong type, missing field).
    #[error("the catalog is not a valid catalog document: {message}")]
    Syntax {
        message: String,
        line: Option<usize>,
        column: Option<usize>,
    },
    /// Well-formed, but some entries break the rules; every problem names entry and field.
    #[error("the catalog is invalid: {}", format_problems(problems))]
    Invalid { problems: Vec<String> },
    #[error("the catalog file {path} is not UTF-8 text")]
    NotUtf8 { path: PathBuf },
    #[error("cannot read the catalog file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn format_problems(problems: &[String]) -> String {
    let mut text = problems
        .iter()
        .take(MAX_LISTED_PROBLEMS)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("; ");
    if problems.len() > MAX_LISTED_PROBLEMS {
        text.push_str(&format!(
            "; and {} more problems",
            problems.len() - MAX_LISTED_PROBLEMS
        ));
    }
    text
}

impl CatalogError {
    /// The error of reading `text`. An error about the document's root (say, a list instead
    /// of a mapping) comes without a position: it is that of the root node.
    fn syntax(error: serde_saphyr::Error, text: &str) -> Self {
        let (line, column) = match error
            .location()
            .filter(|l| *l != serde_saphyr::Location::UNKNOWN)
        {
            Some(l) => (
                usize::try_from(l.line()).ok(),
                usize::try_from(l.column()).ok(),
            ),
            None => root_position(text).unzip(),
        };
        // Control characters of the document never reach the log line.
        let mut message: String = CatalogWording
            .format_message(&error)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if let (Some(line), Some(column)) = (line, column) {
            message.push_str(&format!(" at line {line} column {column}"));
        }
        Self::Syntax {
            message,
            line,
            column,
        }
    }
}

/// Line and column (from 1) of the first node of a single-document `text`: the first
/// character that is not blank, part of a comment, a directive or the document start marker.
fn root_position(text: &str) -> Option<(usize, usize)> {
    text.lines().enumerate().find_map(|(index, line)| {
        let content = line.strip_prefix("---").unwrap_or(line);
        let offset = line.len() - content.len();
        let start = content.find(|c: char| !c.is_whitespace())?;
        let rest = &content[start..];
        let comment = rest.starts_with('#');
        let directive = offset == 0 && rest.starts_with('%');
        (!comment && !directive).then(|| (index + 1, offset + content[..start].chars().count() + 1))
    })
}

/// serde-saphyr's user-facing wording, except where it names a parser state instead of the
/// problem ("expected sequence start": the value is of the wrong type).
struct CatalogWording;

impl serde_saphyr::MessageFormatter for CatalogWording {
    fn format_message<'a>(&self, error: &'a serde_saphyr::Error) -> Cow<'a, str> {
        match error {
            serde_saphyr::Error::Unexpected { expected, .. } => {
                let wanted = match *expected {
                    "string scalar" | "scalar" => "a string",
                    "sequence start" => "a sequence",
                    "mapping start" | "empty mapping start" => "a mapping",
                    other => other,
                };
                Cow::Owned(format!("invalid type: expected {wanted}"))
            }
            other => serde_saphyr::UserMessageFormatter.format_message(other),
        }
    }
}

/// The document: a mapping, or nothing at all (an empty catalog).
#[derive(Default)]
struct CatalogDocument {
    subscriptions: Subscriptions,
    multitenancy_approvals: Approvals,
    registrations: Vec<azure::RegistrationEntry>,
    service_principals: Vec<azure::ServicePrincipalEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CatalogFields {
    #[serde(default)]
    subscriptions: Subscriptions,
    #[serde(default)]
    multitenancy_approvals: Approvals,
    #[serde(default)]
    registrations: Vec<azure::RegistrationEntry>,
    #[serde(default)]
    service_principals: Vec<azure::ServicePrincipalEntry>,
}

impl<'de> Deserialize<'de> for CatalogDocument {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DocumentVisitor;
        impl<'de> serde::de::Visitor<'de> for DocumentVisitor {
            type Value = CatalogDocument;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a catalog: a mapping with `subscriptions` and `multitenancyApprovals`")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                let fields =
                    CatalogFields::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(CatalogDocument {
                    subscriptions: fields.subscriptions,
                    multitenancy_approvals: fields.multitenancy_approvals,
                    registrations: fields.registrations,
                    service_principals: fields.service_principals,
                })
            }
        }
        // Any value, so that a document of the wrong shape is named as such.
        deserializer.deserialize_any(DocumentVisitor)
    }
}

/// One `subscriptions[]` entry as written, before validation. Also the body of the http
/// backend's `GET /subscriptions/{id}`. Unknown fields are rejected: a misspelt `tenantID`
/// silently read as "no tenant" would switch off the tenant check of rule 5.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct SubscriptionEntry {
    id: String,
    #[serde(default)]
    tenant_id: Option<String>,
    state: String,
    offer: String,
    #[serde(default, deserialize_with = "partner_id")]
    billing_partner_id: Option<String>,
    #[serde(default, deserialize_with = "partner_id")]
    reseller_partner_id: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ApprovalEntry {
    subscription_id: String,
    resource_group: String,
    registration_name: String,
}

/// Partner (MPN) IDs are numbers, and unquoted they read as YAML integers; both are accepted.
fn partner_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    struct PartnerId;
    impl<'de> serde::de::Visitor<'de> for PartnerId {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a partner ID (string or number)")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_owned()))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<S: Deserializer<'de>>(self, d: S) -> Result<Self::Value, S::Error> {
            d.deserialize_any(self)
        }
    }
    deserializer.deserialize_option(PartnerId)
}

impl SubscriptionEntry {
    /// The entry in canonical form, or the problems found, each prefixed with `at`
    /// (e.g. `subscriptions[3]`).
    pub(crate) fn validate(
        &self,
        at: &str,
        problems: &mut Vec<String>,
    ) -> Option<SubscriptionMetadata> {
        self.validated(at, problems).map(|(_, metadata)| metadata)
    }

    /// [`Self::validate`], with the subscription's GUID as parsed.
    fn validated(
        &self,
        at: &str,
        problems: &mut Vec<String>,
    ) -> Option<(Guid, SubscriptionMetadata)> {
        let before = problems.len();
        let id = Guid::parse(&self.id);
        if id.is_none() {
            problems.push(format!("{at}.id: {:?} is not a GUID", self.id));
        }
        let tenant_id = match &self.tenant_id {
            None => None,
            Some(tenant) => {
                let parsed = Guid::parse(tenant);
                if parsed.is_none() {
                    problems.push(format!("{at}.tenantId: {tenant:?} is not a GUID"));
                }
                parsed
            }
        };
        let state = STATES.iter().copied().find(|s| s.as_str() == self.state);
        if state.is_none() {
            problems.push(format!(
                "{at}.state: {:?} is not one of Enabled, Warned, PastDue, Disabled, Deleted",
                self.state
            ));
        }
        if self.offer.trim().is_empty() {
            problems.push(format!("{at}.offer: must not be empty"));
        }
        for (field, value) in [
            ("billingPartnerId", &self.billing_partner_id),
            ("resellerPartnerId", &self.reseller_partner_id),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                problems.push(format!(
                    "{at}.{field}: must not be empty (leave the field out when there is none)"
                ));
            }
        }
        if problems.len() > before {
            return None;
        }
        let id = id?;
        let metadata = SubscriptionMetadata {
            id,
            tenant_id,
            state: state?,
            offer: self.offer.clone(),
            billing_partner_id: self.billing_partner_id.clone(),
            reseller_partner_id: self.reseller_partner_id.clone(),
        };
        Some((id, metadata))
    }
}

/// The `subscriptions` list, validated entry by entry as it is deserialized, so that the
/// entries as written are never all held at once.
#[derive(Default)]
struct Subscriptions {
    valid: HashMap<Guid, Arc<SubscriptionMetadata>>,
    /// Position of each subscription, for "duplicates subscriptions[N].id".
    first: HashMap<Guid, usize>,
    read: usize,
    problems: Vec<String>,
}

impl Subscriptions {
    fn add(&mut self, entry: &SubscriptionEntry) {
        let index = self.read;
        self.read += 1;
        let at = format!("subscriptions[{index}]");
        let Some((key, metadata)) = entry.validated(&at, &mut self.problems) else {
            return;
        };
        if let Some(first) = self.first.get(&key) {
            self.problems.push(format!(
                "{at}.id: {:?} duplicates subscriptions[{first}].id",
                entry.id
            ));
            return;
        }
        self.first.insert(key, index);
        self.valid.insert(key, Arc::new(metadata));
    }
}

/// The `multitenancyApprovals` list, validated entry by entry like [`Subscriptions`].
#[derive(Default)]
struct Approvals {
    valid: HashSet<RegistrationKey>,
    first: HashMap<RegistrationKey, usize>,
    read: usize,
    problems: Vec<String>,
}

impl Approvals {
    fn add(&mut self, entry: &ApprovalEntry) {
        let index = self.read;
        self.read += 1;
        let at = format!("multitenancyApprovals[{index}]");
        let problems = &mut self.problems;
        let before = problems.len();
        let subscription = Guid::parse(&entry.subscription_id);
        if subscription.is_none() {
            problems.push(format!(
                "{at}.subscriptionId: {:?} is not a GUID",
                entry.subscription_id
            ));
        }
        if entry.resource_group.trim().is_empty() {
            problems.push(format!("{at}.resourceGroup: must not be empty"));
        }
        if entry.registration_name.trim().is_empty() {
            problems.push(format!("{at}.registrationName: must not be empty"));
        }
        let Some(subscription) = subscription.filter(|_| problems.len() == before) else {
            return;
        };
        let key = RegistrationKey::new(
            subscription,
            &entry.resource_group,
            &entry.registration_name,
        );
        if let Some(first) = self.first.get(&key) {
            problems.push(format!(
                "{at}: duplicates multitenancyApprovals[{first}] ({key})"
            ));
            return;
        }
        self.first.insert(key.clone(), index);
        self.valid.insert(key);
    }
}

/// Deserializes a sequence of `E` into `L`, one element at a time. A list written without
/// entries (`subscriptions:` or `subscriptions: null`) is an empty list.
struct ListVisitor<E, L>(std::marker::PhantomData<(E, L)>);

impl<'de, E: Deserialize<'de>, L: Default + AddEntry<E>> serde::de::Visitor<'de>
    for ListVisitor<E, L>
{
    type Value = L;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_unit<Er: serde::de::Error>(self) -> Result<L, Er> {
        Ok(L::default())
    }

    fn visit_none<Er: serde::de::Error>(self) -> Result<L, Er> {
        Ok(L::default())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<L, A::Error> {
        let mut list = L::default();
        while let Some(entry) = seq.next_element::<E>()? {
            list.add_entry(&entry);
        }
        Ok(list)
    }
}

trait AddEntry<E> {
    fn add_entry(&mut self, entry: &E);
}

impl AddEntry<SubscriptionEntry> for Subscriptions {
    fn add_entry(&mut self, entry: &SubscriptionEntry) {
        self.add(entry);
    }
}

impl AddEntry<ApprovalEntry> for Approvals {
    fn add_entry(&mut self, entry: &ApprovalEntry) {
        self.add(entry);
    }
}

impl<'de> Deserialize<'de> for Subscriptions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ListVisitor::<SubscriptionEntry, Self>(Default::default()))
    }
}

impl<'de> Deserialize<'de> for Approvals {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ListVisitor::<ApprovalEntry, Self>(Default::default()))
    }
}

/// A validated catalog. GUIDs and registration keys are stored in canonical lower case.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    /// A GUID is 16 bytes, and a lookup needs no lower-case copy of the ID.
    subscriptions: HashMap<Guid, Arc<SubscriptionMetadata>>,
    approvals: HashSet<RegistrationKey>,
    /// What the emulator's ARM and Entra ID serve (DESIGN.md §10); the operator ignores them.
    registrations: Arc<Vec<CatalogRegistration>>,
    service_principals: Arc<Vec<ServicePrincipal>>,
}

impl Catalog {
    /// Parses and validates a catalog document. An empty document (or `{}`) is an empty
    /// catalog; anything wrong rejects the whole document.
    pub fn parse(text: &str) -> Result<Self, CatalogError> {
        let mut options = serde_saphyr::Options::default();
        // The catalog is the operator's own configuration, not untrusted input; its size is
        // bounded by the file or the ConfigMap, and 25,000 subscriptions are more nodes than
        // the default budget allows.
        options.budget = None;
        // `<<` is an ordinary key (and so an unknown field), as in YAML 1.2.
        options.merge_keys = serde_saphyr::MergeKeyPolicy::AsOrdinary;
        options.with_snippet = false;
        // Partner IDs are numbers that may start with 0: `0123` stays "0123".
        options.leading_zero_numbers_as_strings = true;
        // A text field written `~` or `null` holds that text; the validation judges it.
        options.null_as_string = true;
        // `Option` so that an empty (or comment-only, or `null`) document is an empty catalog.
        let document: Option<CatalogDocument> = serde_saphyr::from_str_with_options(text, options)
            .map_err(|error| CatalogError::syntax(error, text))?;
        Self::build(document.unwrap_or_default())
    }

    fn build(document: CatalogDocument) -> Result<Self, CatalogError> {
        let CatalogDocument {
            subscriptions,
            multitenancy_approvals: approvals,
            registrations,
            service_principals,
        } = document;
        // Subscription problems come first whatever the order of the lists.
        let mut problems = subscriptions.problems;
        problems.extend(approvals.problems);
        let registrations = azure::validate_registrations(registrations, &mut problems);
        let service_principals =
            azure::validate_service_principals(service_principals, &mut problems);
        if problems.is_empty() {
            Ok(Catalog {
                subscriptions: subscriptions.valid,
                approvals: approvals.valid,
                registrations: Arc::new(registrations),
                service_principals: Arc::new(service_principals),
            })
        } else {
            Err(CatalogError::Invalid { problems })
        }
    }

    /// Metadata of a subscription (GUID in any case), `None` when the catalog does not know it.
    pub fn subscription(&self, subscription_id: &str) -> Option<Arc<SubscriptionMetadata>> {
        self.get(Guid::parse(subscription_id)?)
    }

    /// Metadata of a subscription, `None` when the catalog does not know it.
    pub fn get(&self, subscription_id: Guid) -> Option<Arc<SubscriptionMetadata>> {
        self.subscriptions.get(&subscription_id).cloned()
    }

    /// Whether the catalog lists this registration as approved for multitenancy.
    pub fn is_approved(&self, key: &RegistrationKey) -> bool {
        // The key's fields are public, so it may not be in canonical form.
        let canonical = RegistrationKey::new(
            key.subscription_id.clone(),
            &key.resource_group,
            &key.registration_name,
        );
        self.approvals.contains(&canonical)
    }

    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    pub fn approval_count(&self) -> usize {
        self.approvals.len()
    }

    /// The `registrations` list: the registration resources the emulator's ARM holds.
    pub fn registrations(&self) -> &[CatalogRegistration] {
        &self.registrations
    }

    /// The `servicePrincipals` list: who the emulator's Entra ID issues tokens to.
    pub fn service_principals(&self) -> &[ServicePrincipal] {
        &self.service_principals
    }

    /// Every subscription of the catalog, in no particular order.
    pub fn subscriptions(&self) -> impl Iterator<Item = &SubscriptionMetadata> {
        self.subscriptions.values().map(AsRef::as_ref)
    }

    /// Exactly the subscriptions and registrations whose data differ between two catalogs.
    pub fn diff(old: &Catalog, new: &Catalog) -> MetadataChange {
        let mut change = MetadataChange::default();
        for (key, metadata) in &new.subscriptions {
            if old.subscriptions.get(key) != Some(metadata) {
                change.subscriptions.insert(metadata.id);
            }
        }
        for (key, metadata) in &old.subscriptions {
            if !new.subscriptions.contains_key(key) {
                change.subscriptions.insert(metadata.id);
            }
        }
        change
            .registrations
            .extend(old.approvals.symmetric_difference(&new.approvals).cloned());
        change
    }

    /// Counts for `catalog check` and for logs.
    pub fn summary(&self) -> CatalogSummary {
        let by_state = STATES
            .iter()
            .map(|state| {
                let count = self
                    .subscriptions
                    .values()
                    .filter(|s| s.state == *state)
                    .count();
                (*state, count)
            })
            .collect();
        CatalogSummary {
            subscriptions: self.subscriptions.len(),
            csp_subscriptions: self.subscriptions.values().filter(|s| s.is_csp()).count(),
            by_state,
            multitenancy_approvals: self.approvals.len(),
            registrations: self.registrations.len(),
            service_principals: self.service_principals.len(),
        }
    }
}

impl FromStr for Catalog {
    type Err = CatalogError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// What a valid catalog contains, for `azs-csp-operator catalog check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogSummary {
    pub subscriptions: usize,
    /// Subscriptions whose offer is `CSP`.
    pub csp_subscriptions: usize,
    /// Subscriptions per state, every state listed (in declaration order), zeros included.
    pub by_state: Vec<(SubscriptionState, usize)>,
    pub multitenancy_approvals: usize,
    pub registrations: usize,
    pub service_principals: usize,
}

impl fmt::Display for CatalogSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "catalog is valid: {} subscriptions ({} CSP",
            self.subscriptions, self.csp_subscriptions
        )?;
        for (state, count) in self.by_state.iter().filter(|(_, count)| *count > 0) {
            write!(f, ", {count} {state}")?;
        }
        write!(
            f,
            "), {} multitenancy approvals",
            self.multitenancy_approvals
        )?;
        // Only catalogs written for the emulator have these lists.
        if self.registrations > 0 || self.service_principals > 0 {
            write!(
                f,
                ", {} registrations, {} service principals",
                self.registrations, self.service_principals
            )?;
        }
        Ok(())
    }
}

/// Reads a catalog file as text; not UTF-8 is reported as such rather than as an I/O error.
pub(crate) fn read_catalog_text(path: &Path, bytes: Vec<u8>) -> Result<String, CatalogError> {
    String::from_utf8(bytes).map_err(|_| CatalogError::NotUtf8 {
        path: path.to_path_buf(),
    })
}

/// Validates a catalog file: the whole check behind `azs-csp-operator catalog check FILE`.
/// Print the summary's `Display` on success, the error's `Display` on failure.
pub fn check_catalog_file(path: impl AsRef<Path>) -> Result<CatalogSummary, CatalogError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| CatalogError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = read_catalog_text(path, bytes)?;
    Ok(Catalog::parse(&text)?.summary())
}

#[cfg(test)]
#[path = "catalog/golden_tests.rs"]
mod golden_tests;

#[cfg(test)]
mod tests {
    use super::*;

    const SUB_A: &str = "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a";
    const SUB_B: &str = "6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c";
    const TENANT: &str = "2b7e0c1d-0000-4000-8000-000000000001";

    fn problems(text: &str) -> Vec<String> {
        match Catalog::parse(text) {
            Err(CatalogError::Invalid { problems }) => problems,
            other => panic!("expected Invalid, got {other:?}\n{text}"),
        }
    }

    #[test]
    fn valid_catalog_is_stored_in_canonical_form() {
        let text = format!(
            r#"
subscriptions:
- id: {upper}
  tenantId: {tenant_upper}
  state: Enabled
  offer: CSP
  billingPartnerId: "4412345"
  resellerPartnerId: 5523456
- id: {SUB_B}
  state: Deleted
  offer: PayAsYouGo
multitenancyApprovals:
- subscriptionId: {SUB_B}
  resourceGroup: AzureStack
  registrationName: azurestack-5F1C
"#,
            upper = SUB_A.to_uppercase(),
            tenant_upper = TENANT.to_uppercase()
        );
        let catalog = Catalog::parse(&text).expect("valid");
        let a = catalog.subscription(SUB_A).expect("known");
        assert_eq!(a.id.to_string(), SUB_A);
        assert_eq!(a.tenant_id.map(|t| t.to_string()).as_deref(), Some(TENANT));
        assert_eq!(a.state, SubscriptionState::Enabled);
        assert_eq!(a.billing_partner_id.as_deref(), Some("4412345"));
        assert_eq!(a.reseller_partner_id.as_deref(), Some("5523456"));
        assert!(catalog.subscription(&SUB_A.to_uppercase()).is_some());
        let b = catalog.subscription(SUB_B).expect("known");
        assert_eq!((b.tenant_id, b.billing_partner_id.clone()), (None, None));
        assert!(catalog.is_approved(&RegistrationKey::new(
            SUB_B,
            "azurestack",
            "AZURESTACK-5f1c"
        )));
        assert!(!catalog.is_approved(&RegistrationKey::new(
            SUB_A,
            "azurestack",
            "azurestack-5f1c"
        )));
        let summary = catalog.summary();
        assert_eq!(
            summary.to_string(),
            "catalog is valid: 2 subscriptions (1 CSP, 1 Enabled, 1 Deleted), 1 multitenancy approvals"
        );
    }

    /// The catalog's key of a subscription ID.
    fn guid_key(s: &str) -> Option<u128> {
        Guid::parse(s).map(Guid::as_u128)
    }

    #[test]
    fn guid_keys_are_the_128_bits_of_the_guid_in_any_letter_case() {
        let want = Some(0xe09a4e93_29a7_4eba_a7f2_3b2c1d0e9f8a_u128);
        assert_eq!(guid_key(SUB_A), want);
        assert_eq!(guid_key(&SUB_A.to_uppercase()), want);
        assert_eq!(guid_key("00000000-0000-0000-0000-000000000000"), Some(0));
        assert_eq!(
            guid_key("FFFFFFFF-ffff-FFFF-ffff-FFFFFFFFFFFF"),
            Some(u128::MAX)
        );
        for not_a_guid in [
            "",
            "e09a4e93",
            "e09a4e9329a74ebaa7f23b2c1d0e9f8a",
            "not-a-guid",
        ] {
            assert_eq!(guid_key(not_a_guid), None, "{not_a_guid:?}");
        }
        let catalog = Catalog::parse(&format!(
            "subscriptions:\n- {{id: {SUB_A}, state: Enabled, offer: CSP}}\n"
        ))
        .expect("valid");
        assert!(catalog.subscription("not-a-guid").is_none());
        assert!(catalog.subscription(SUB_B).is_none());
    }

    #[test]
    fn empty_documents_are_empty_catalogs() {
        for text in [
            "",
            "\n",
            "# nothing yet\n",
            "{}",
            "---\n",
            "null",
            "subscriptions: []",
        ] {
            let catalog = Catalog::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(catalog, Catalog::default(), "{text:?}");
        }
    }

    #[test]
    fn invalid_entries_are_named_precisely() {
        let sub = |fields: &str| format!("subscriptions:\n- {{{fields}}}\n");
        let ok = format!("id: {SUB_A}, state: Enabled, offer: CSP");
        let approval = |fields: &str| format!("multitenancyApprovals:\n- {fields}\n");
        let dup_message = format!(
            "subscriptions[2].id: {:?} duplicates subscriptions[0].id",
            SUB_A.to_uppercase()
        );
        let cases: Vec<(String, &str)> = vec![
            (
                sub("id: abc, state: Enabled, offer: CSP"),
                r#"subscriptions[0].id: "abc" is not a GUID"#,
            ),
            (
                sub(&format!("{ok}, tenantId: not-a-tenant")),
                r#"subscriptions[0].tenantId: "not-a-tenant" is not a GUID"#,
            ),
            (
                sub(&format!("id: {SUB_A}, state: Active, offer: CSP")),
                r#"subscriptions[0].state: "Active" is not one of Enabled, Warned, PastDue, Disabled, Deleted"#,
            ),
            (
                sub(&format!("id: {SUB_A}, state: enabled, offer: CSP")),
                r#"subscriptions[0].state: "enabled" is not one of"#,
            ),
            (
                sub(&format!("id: {SUB_A}, state: Enabled, offer: ''")),
                "subscriptions[0].offer: must not be empty",
            ),
            (
                sub(&format!("{ok}, billingPartnerId: ''")),
                "subscriptions[0].billingPartnerId: must not be empty",
            ),
            (
                sub(&format!("{ok}, resellerPartnerId: ' '")),
                "subscriptions[0].resellerPartnerId: must not be empty",
            ),
            (
                format!(
                    "subscriptions:\n- {{{ok}}}\n- {{id: {SUB_B}, state: Enabled, offer: CSP}}\n- {{id: {}, state: Warned, offer: CSP}}\n",
                    SUB_A.to_uppercase()
                ),
                dup_message.as_str(),
            ),
            (
                approval("{subscriptionId: 123, resourceGroup: rg, registrationName: r}"),
                r#"multitenancyApprovals[0].subscriptionId: "123" is not a GUID"#,
            ),
            (
                approval(&format!(
                    "{{subscriptionId: {SUB_A}, resourceGroup: '', registrationName: r}}"
                )),
                "multitenancyApprovals[0].resourceGroup: must not be empty",
            ),
            (
                approval(&format!(
                    "{{subscriptionId: {SUB_A}, resourceGroup: rg, registrationName: ''}}"
                )),
                "multitenancyApprovals[0].registrationName: must not be empty",
            ),
            (
                format!(
                    "multitenancyApprovals:\n- {{subscriptionId: {SUB_A}, resourceGroup: rg, registrationName: r}}\n- {{subscriptionId: {SUB_B}, resourceGroup: rg, registrationName: r}}\n- {{subscriptionId: {}, resourceGroup: RG, registrationName: R}}\n",
                    SUB_A.to_uppercase()
                ),
                "multitenancyApprovals[2]: duplicates multitenancyApprovals[0] (/subscriptions/e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a/resourceGroups/rg/providers/Microsoft.AzureStack/registrations/r)",
            ),
        ];
        for (text, want) in cases {
            let got = problems(&text);
            assert_eq!(got.len(), 1, "{text}\n{got:#?}");
            assert!(
                got[0].starts_with(want),
                "{text}\nwant {want}\ngot  {}",
                got[0]
            );
        }
    }

    #[test]
    fn every_problem_is_reported_and_the_index_is_the_entry_position() {
        let text = format!(
            "subscriptions:\n- {{id: {SUB_A}, state: Enabled, offer: CSP}}\n- {{id: {SUB_B}, state: Enabled, offer: CSP}}\n- {{id: {SUB_B}, state: Enabled, offer: CSP}}\n- {{id: abc, state: Nope, offer: CSP}}\n"
        );
        let got = problems(&text);
        assert_eq!(
            got,
            vec![
                format!("subscriptions[2].id: {SUB_B:?} duplicates subscriptions[1].id"),
                r#"subscriptions[3].id: "abc" is not a GUID"#.to_string(),
                r#"subscriptions[3].state: "Nope" is not one of Enabled, Warned, PastDue, Disabled, Deleted"#.to_string(),
            ]
        );
        let error = Catalog::parse(&text).expect_err("invalid");
        assert!(
            error
                .to_string()
                .starts_with("the catalog is invalid: subscriptions[2].id")
        );
    }

    #[test]
    fn long_problem_lists_are_cut_in_the_message() {
        let mut text = "subscriptions:\n".to_string();
        for _ in 0..25 {
            text.push_str("- {id: x, state: Enabled, offer: CSP}\n");
        }
        let message = Catalog::parse(&text).expect_err("invalid").to_string();
        assert!(message.ends_with("; and 5 more problems"), "{message}");
    }

    #[test]
    fn shape_errors_carry_the_location() {
        let cases = [
            ("subscriptions: [\n", "unclosed bracket"),
            (
                "subscriptions:\n- id: x\n  state: Enabled\n  offer: CSP\n  colour: red\n",
                "unknown field `colour`",
            ),
            ("subscription: []\n", "unknown field `subscription`"),
            (
                "subscriptions:\n- state: Enabled\n  offer: CSP\n",
                "missing field `id`",
            ),
            (
                "subscriptions:\n- id: x\n  state: [Enabled]\n  offer: CSP\n",
                "invalid type",
            ),
            (
                "- just a list\n",
                "expected a catalog: a mapping with `subscriptions` and `multitenancyApprovals`",
            ),
            ("subscriptions: []\nsubscriptions: []\n", "duplicate"),
        ];
        for (text, want) in cases {
            match Catalog::parse(text) {
                Err(CatalogError::Syntax {
                    message,
                    line,
                    column,
                }) => {
                    assert!(message.contains(want), "{text:?}: {message}");
                    assert!(line.is_some() && column.is_some(), "{text:?}: {message}");
                    assert!(message.contains(" at line "), "{text:?}: {message}");
                }
                other => panic!("{text:?}: expected Syntax, got {other:?}"),
            }
        }
    }

    #[test]
    fn diff_lists_exactly_what_changed() {
        let base = format!(
            "subscriptions:\n- {{id: {SUB_A}, state: Enabled, offer: CSP, billingPartnerId: '1'}}\n- {{id: {SUB_B}, state: Enabled, offer: CSP}}\nmultitenancyApprovals:\n- {{subscriptionId: {SUB_B}, resourceGroup: rg, registrationName: r1}}\n"
        );
        let old = Catalog::parse(&base).expect("valid");
        let key = |name: &str| RegistrationKey::new(SUB_B, "rg", name);
        let sub_c = "11111111-2222-4333-8444-555555555555";
        let cases: Vec<(String, Vec<&str>, Vec<RegistrationKey>)> = vec![
            (base.clone(), vec![], vec![]),
            // Only letter case and formatting differ: nothing changed.
            (
                base.replace(SUB_A, &SUB_A.to_uppercase())
                    .replace(SUB_B, &SUB_B.to_uppercase())
                    .replace("resourceGroup: rg", "resourceGroup: RG"),
                vec![],
                vec![],
            ),
            (
                base.replace("billingPartnerId: '1'", "billingPartnerId: '2'"),
                vec![SUB_A],
                vec![],
            ),
            (
                base.replace(
                    "{id: 6d3c",
                    "{tenantId: 2b7e0c1d-0000-4000-8000-000000000001, id: 6d3c",
                ),
                vec![SUB_B],
                vec![],
            ),
            (
                base.replace("r1}", "r2}"),
                vec![],
                vec![key("r1"), key("r2")],
            ),
            (
                format!(
                    "{base}- {{subscriptionId: {SUB_B}, resourceGroup: rg, registrationName: r3}}\n"
                ),
                vec![],
                vec![key("r3")],
            ),
            (
                base.replace(
                    "subscriptions:\n",
                    &format!("subscriptions:\n- {{id: {sub_c}, state: Warned, offer: APSS}}\n"),
                ),
                vec![sub_c],
                vec![],
            ),
            ("{}".to_string(), vec![SUB_A, SUB_B], vec![key("r1")]),
        ];
        for (text, subs, regs) in cases {
            let new = Catalog::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let change = Catalog::diff(&old, &new);
            let want = MetadataChange {
                subscriptions: subs.iter().map(|s| crate::guid::g(s)).collect(),
                registrations: regs.into_iter().collect(),
                ..MetadataChange::default()
            };
            assert_eq!(change, want, "{text}");
            assert_eq!(Catalog::diff(&new, &old), want, "reverse of {text}");
        }
    }

    #[test]
    fn check_catalog_file_reports_counts_and_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("good.yaml");
        std::fs::write(
            &good,
            format!("subscriptions:\n- {{id: {SUB_A}, state: PastDue, offer: CSP}}\n"),
        )
        .expect("write");
        let summary = check_catalog_file(&good).expect("valid");
        assert_eq!(summary.subscriptions, 1);
        assert_eq!(summary.csp_subscriptions, 1);
        assert!(summary.by_state.contains(&(SubscriptionState::PastDue, 1)));
        assert_eq!(summary.multitenancy_approvals, 0);

        let missing = dir.path().join("missing.yaml");
        let error = check_catalog_file(&missing).expect_err("missing");
        assert!(matches!(error, CatalogError::Read { .. }));
        assert!(error.to_string().contains("missing.yaml"), "{error}");

        let binary = dir.path().join("binary.yaml");
        std::fs::write(&binary, [0xff, 0xfe, 0x00]).expect("write");
        assert!(matches!(
            check_catalog_file(&binary),
            Err(CatalogError::NotUtf8 { .. })
        ));
    }
}
