//! What each event requeues: exactly the affected objects, nothing on status-only writes.

use std::collections::{BTreeSet, HashSet};

use super::*;
use crate::{
    api::{
        BillingModel, CustomerSubscriptionSpec, CustomerSubscriptionStatus, RegistrationRef,
        RegistrationSpec,
    },
    guid::g,
    resolver::MetadataChange,
};

pub(crate) fn registration(
    ns: &str,
    name: &str,
    subscription: &str,
    cloud_id: &str,
    generation: i64,
) -> Registration {
    let mut r = Registration::new(
        name,
        RegistrationSpec {
            subscription_id: subscription.into(),
            resource_group: "rg".into(),
            registration_name: None,
            cloud_id: cloud_id.into(),
            billing_model: BillingModel::PayAsYouUse,
            agreement_number: None,
            ms_asset_tag: None,
            prune_unmanaged: None,
            usage_source: None,
        },
    );
    r.metadata.namespace = Some(ns.into());
    r.metadata.generation = Some(generation);
    r
}

pub(crate) fn customer(
    ns: &str,
    name: &str,
    registration: &str,
    subscription: &str,
    tenant: Option<&str>,
) -> CustomerSubscription {
    let mut c = CustomerSubscription::new(
        name,
        CustomerSubscriptionSpec {
            registration_ref: RegistrationRef {
                name: registration.into(),
            },
            subscription_id: subscription.into(),
            tenant_id: tenant.map(Into::into),
        },
    );
    c.metadata.namespace = Some(ns.into());
    c
}

fn keys(items: &[(&str, &str)]) -> BTreeSet<ObjKey> {
    items
        .iter()
        .map(|(ns, name)| ObjKey::new(ns, name))
        .collect()
}

#[test]
fn a_customer_event_requeues_its_registration_and_siblings_sharing_subscription_or_tenant() {
    let index = Index::default();
    index.apply_registration(&registration("a", "reg", "S", "C1", 1));
    index.apply_customer(&customer("a", "same-sub", "reg", "SUB-1", None));
    index.apply_customer(&customer("a", "same-tenant", "reg", "SUB-2", Some("T")));
    index.apply_customer(&customer("a", "unrelated", "reg", "SUB-3", None));
    index.apply_customer(&customer("b", "other-namespace", "reg", "SUB-1", Some("T")));

    let affected = index.apply_customer(&customer("a", "me", "reg", "sub-1", Some("t")));
    assert_eq!(affected.registrations, keys(&[("a", "reg")]));
    assert_eq!(
        affected.customers,
        keys(&[("a", "same-sub"), ("a", "same-tenant")])
    );
}

#[test]
fn a_resolved_tenant_in_status_counts_as_the_customers_tenant() {
    let index = Index::default();
    let mut resolved = customer("a", "resolved", "reg", "SUB-9", None);
    resolved.status = Some(CustomerSubscriptionStatus {
        tenant_id: Some("T".into()),
        ..Default::default()
    });
    index.apply_customer(&resolved);
    let affected = index.apply_customer(&customer("a", "me", "reg", "SUB-1", Some("t")));
    assert_eq!(affected.customers, keys(&[("a", "resolved")]));
}

#[test]
fn moving_a_customer_to_another_registration_requeues_both() {
    let index = Index::default();
    index.apply_customer(&customer("a", "me", "old", "SUB-1", None));
    let affected = index.apply_customer(&customer("a", "me", "new", "SUB-1", None));
    assert_eq!(affected.registrations, keys(&[("a", "old"), ("a", "new")]));
    assert_eq!(index.dependents(&ObjKey::new("a", "old")), vec![]);
    assert_eq!(
        index.dependents(&ObjKey::new("a", "new")),
        vec![ObjKey::new("a", "me")]
    );
}

#[test]
fn a_deleted_customer_requeues_its_registration_and_siblings() {
    let index = Index::default();
    index.apply_customer(&customer("a", "older", "reg", "SUB-1", None));
    index.apply_customer(&customer("a", "younger", "reg", "SUB-1", None));
    let affected = index.delete_customer(&ObjKey::new("a", "older"));
    assert_eq!(affected.registrations, keys(&[("a", "reg")]));
    assert_eq!(affected.customers, keys(&[("a", "younger")]));
    assert_eq!(
        index.dependents(&ObjKey::new("a", "reg")),
        vec![ObjKey::new("a", "younger")]
    );
}

#[test]
fn registration_spec_changes_requeue_dependents_but_status_writes_do_not() {
    let index = Index::default();
    index.apply_customer(&customer("a", "c1", "reg", "SUB-1", None));
    index.apply_customer(&customer("a", "c2", "reg", "SUB-2", None));
    index.apply_customer(&customer("a", "elsewhere", "other", "SUB-3", None));

    let created = index.apply_registration(&registration("a", "reg", "S", "C1", 1));
    assert_eq!(created.customers, keys(&[("a", "c1"), ("a", "c2")]));

    // Same generation: only the status changed (the operator's own write).
    let status_only = index.apply_registration(&registration("a", "reg", "S", "C1", 1));
    assert_eq!(status_only, Affected::default());

    let spec_change = index.apply_registration(&registration("a", "reg", "S", "C1", 2));
    assert_eq!(spec_change.customers, keys(&[("a", "c1"), ("a", "c2")]));

    let mut deleting = registration("a", "reg", "S", "C1", 2);
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
    assert_eq!(
        index.apply_registration(&deleting).customers,
        keys(&[("a", "c1"), ("a", "c2")])
    );
    assert_eq!(
        index
            .delete_registration(&ObjKey::new("a", "reg"))
            .customers,
        keys(&[("a", "c1"), ("a", "c2")])
    );
}

#[test]
fn registrations_sharing_a_cloud_id_requeue_each_other_case_insensitively() {
    let index = Index::default();
    index.apply_registration(&registration("a", "first", "S", "abc", 1));
    index.apply_registration(&registration("b", "unrelated", "S", "xyz", 1));
    let affected = index.apply_registration(&registration("b", "second", "S", "ABC", 1));
    assert_eq!(affected.registrations, keys(&[("a", "first")]));
    let second = registration("b", "second", "S", "ABC", 1);
    assert_eq!(
        index.same_cloud_id(&second),
        vec![ObjKey::new("a", "first")]
    );
    // Deleting one requeues the other, which may now own the cloudId.
    assert_eq!(
        index
            .delete_registration(&ObjKey::new("a", "first"))
            .registrations,
        keys(&[("b", "second")])
    );
}

#[test]
fn a_metadata_change_requeues_exactly_what_depends_on_it() {
    // Metadata changes name GUIDs; the objects spell them in upper case.
    const REG_SUB: &str = "6D3C4B9E-1F3A-4C6E-9B7A-2D1E0F9A8B7C";
    const SUB_3: &str = "E09A4E93-29A7-4EBA-A7F2-3B2C1D0E9F8A";
    let index = Index::default();
    index.apply_registration(&registration("a", "reg", REG_SUB, "C1", 1));
    index.apply_registration(&registration("a", "other-reg", "OTHER-SUB", "C2", 1));
    index.apply_customer(&customer("a", "c1", "reg", "SUB-1", None));
    index.apply_customer(&customer("a", "c2", "reg", "SUB-2", None));
    index.apply_customer(&customer("a", "c3", "other-reg", SUB_3, None));

    let customer_only = MetadataChange {
        subscriptions: [g(SUB_3)].into(),
        ..Default::default()
    };
    let affected = index.affected_by(&customer_only);
    assert_eq!(affected.customers, keys(&[("a", "c3")]));
    assert!(affected.registrations.is_empty());

    // The registration subscription's metadata feeds every dependent's decision.
    let registration_subscription = MetadataChange {
        subscriptions: [g(REG_SUB)].into(),
        ..Default::default()
    };
    let affected = index.affected_by(&registration_subscription);
    assert_eq!(affected.registrations, keys(&[("a", "reg")]));
    assert_eq!(affected.customers, keys(&[("a", "c1"), ("a", "c2")]));

    let approval = MetadataChange {
        registrations: [RegistrationKey::new("OTHER-SUB", "RG", "other-reg")].into(),
        ..Default::default()
    };
    let affected = index.affected_by(&approval);
    assert_eq!(affected.registrations, keys(&[("a", "other-reg")]));
    assert_eq!(affected.customers, keys(&[("a", "c3")]));

    let everything = index.affected_by(&MetadataChange {
        everything: true,
        ..Default::default()
    });
    assert_eq!(everything.customers.len(), 3);
    assert_eq!(everything.registrations.len(), 2);
}

#[test]
fn a_relist_forgets_what_is_gone_in_its_scope_only() {
    let index = Index::default();
    index.apply_customer(&customer("a", "kept", "reg", "SUB-1", None));
    index.apply_customer(&customer("a", "gone", "reg", "SUB-2", None));
    index.apply_customer(&customer("b", "other-scope", "reg", "SUB-3", None));
    let keep: HashSet<ObjKey> = [ObjKey::new("a", "kept")].into();
    let affected = index.retain_customers(Some("a"), &keep);
    assert_eq!(affected.registrations, keys(&[("a", "reg")]));
    assert_eq!(
        index.dependents(&ObjKey::new("a", "reg")),
        vec![ObjKey::new("a", "kept")]
    );
    assert_eq!(
        index.dependents(&ObjKey::new("b", "reg")),
        vec![ObjKey::new("b", "other-scope")]
    );
}

#[test]
fn duplicate_candidates_are_the_siblings_sharing_subscription_or_tenant() {
    let index = Index::default();
    index.apply_customer(&customer("a", "same-sub", "reg", "SUB-1", None));
    index.apply_customer(&customer("a", "same-tenant", "reg", "SUB-2", Some("T")));
    let mut resolved = customer("a", "resolved-tenant", "reg", "SUB-3", None);
    resolved.status = Some(CustomerSubscriptionStatus {
        tenant_id: Some("t".into()),
        ..Default::default()
    });
    index.apply_customer(&resolved);
    index.apply_customer(&customer("a", "unrelated", "reg", "SUB-4", Some("U")));
    index.apply_customer(&customer(
        "a",
        "other-registration",
        "other",
        "SUB-1",
        Some("T"),
    ));
    index.apply_customer(&customer("b", "other-namespace", "reg", "SUB-1", Some("T")));
    let reg = ObjKey::new("a", "reg");
    let candidates = index.duplicate_candidates(&reg, "sub-1", Some("T".into()));
    let want: Vec<ObjKey> = keys(&[
        ("a", "resolved-tenant"),
        ("a", "same-sub"),
        ("a", "same-tenant"),
    ])
    .into_iter()
    .collect();
    assert_eq!(candidates, want);
    assert_eq!(
        index.duplicate_candidates(&reg, "sub-1", None),
        vec![ObjKey::new("a", "same-sub")]
    );
}

fn with_ready(
    mut c: CustomerSubscription,
    status: crate::api::ConditionStatus,
    reason: &str,
) -> CustomerSubscription {
    c.status = Some(CustomerSubscriptionStatus {
        conditions: vec![crate::api::Condition {
            type_: conditions::READY.into(),
            status,
            reason: reason.into(),
            message: String::new(),
            last_transition_time: None,
            observed_generation: None,
        }],
        ..Default::default()
    });
    c
}

#[test]
fn a_customer_status_write_requeues_its_registration_only_when_attachment_changes() {
    use crate::api::ConditionStatus::{False, True};
    let index = Index::default();
    index.apply_customer(&customer("a", "sibling", "reg", "SUB-1", None));
    let me = || customer("a", "me", "reg", "SUB-1", None);
    let created = index.apply_customer(&me());
    assert_eq!(
        created.registrations,
        keys(&[("a", "reg")]),
        "a new dependent"
    );
    assert_eq!(created.customers, keys(&[("a", "sibling")]));

    // The same object seen again (a relist): nothing to do.
    assert_eq!(index.apply_customer(&me()), Affected::default());

    // A decision that does not attach changes no count and no sibling's decision.
    let rejected = index.apply_customer(&with_ready(me(), False, "InvalidCSPSubscription"));
    assert_eq!(rejected, Affected::default());
    let other_reason =
        index.apply_customer(&with_ready(me(), False, "DuplicateCustomerSubscription"));
    assert_eq!(other_reason, Affected::default());

    let attached = index.apply_customer(&with_ready(me(), True, "Attached"));
    assert_eq!(
        attached.registrations,
        keys(&[("a", "reg")]),
        "the count changes"
    );
    assert!(
        attached.customers.is_empty(),
        "siblings decide on specs, not on status"
    );

    let detached = index.apply_customer(&with_ready(me(), False, "BadCustomerSubscriptionId"));
    assert_eq!(detached.registrations, keys(&[("a", "reg")]));
}

#[test]
fn a_customer_spec_or_deletion_change_requeues_its_siblings() {
    let index = Index::default();
    index.apply_customer(&customer("a", "sibling", "reg", "SUB-1", None));
    let mut me = customer("a", "me", "reg", "SUB-1", None);
    me.metadata.generation = Some(1);
    index.apply_customer(&me);

    me.metadata.generation = Some(2);
    let edited = index.apply_customer(&me);
    assert_eq!(edited.customers, keys(&[("a", "sibling")]));
    assert!(edited.registrations.is_empty(), "attachment did not change");

    me.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    ));
    assert_eq!(
        index.apply_customer(&me).customers,
        keys(&[("a", "sibling")])
    );
}

#[test]
fn keys_filed_under_one_subscription_grow_and_shrink() {
    let index = Index::default();
    let reg = ObjKey::new("a", "reg");
    for name in ["c1", "c2", "c3"] {
        index.apply_customer(&customer("a", name, "reg", "SUB-1", None));
    }
    assert_eq!(index.duplicate_candidates(&reg, "SUB-1", None).len(), 3);
    index.delete_customer(&ObjKey::new("a", "c2"));
    assert_eq!(
        index.duplicate_candidates(&reg, "sub-1", None),
        vec![ObjKey::new("a", "c1"), ObjKey::new("a", "c3")]
    );
    index.delete_customer(&ObjKey::new("a", "c1"));
    index.delete_customer(&ObjKey::new("a", "c3"));
    assert!(index.duplicate_candidates(&reg, "sub-1", None).is_empty());
    assert!(index.dependents(&reg).is_empty());
    let state = index.lock();
    assert!(
        state.customers_by_subscription.is_empty(),
        "no empty entries are kept"
    );
    assert!(state.customers_by_registration.is_empty());
}
