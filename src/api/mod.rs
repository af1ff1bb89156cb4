//! The CRD types of `csp.azurestack.io/v1alpha1`. Types only: no I/O.

mod billing_model;
mod condition;
mod customer_subscription;
mod registration;
mod usage;

pub use billing_model::BillingModel;
pub use condition::{Condition, ConditionStatus};
pub use customer_subscription::{
    CustomerSubscription, CustomerSubscriptionAzureStatus, CustomerSubscriptionSpec,
    CustomerSubscriptionStatus, RegistrationRef,
};
pub use registration::{
    Registration, RegistrationAzureStatus, RegistrationSpec, RegistrationStatus,
};
pub use usage::{
    MeterTotal, PreviousTotals, RegistrationUsageStatus, RejectedRecords, UsageSource, UsageTotals,
};

/// API group of both kinds.
pub const GROUP: &str = "csp.azurestack.io";
/// API version of both kinds.
pub const VERSION: &str = "v1alpha1";

/// CEL expression accepting a GUID in any letter case.
pub(crate) const GUID_CEL: &str =
    "self.matches('^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')";
