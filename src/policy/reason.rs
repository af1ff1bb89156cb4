use std::fmt;

use crate::api::ConditionStatus;

/// Every condition reason the operator writes. The names are a public contract (DESIGN.md §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    // CustomerSubscription Ready
    Attached,
    InvalidCustomerSubscriptionId,
    RegistrationNotFound,
    CustomerSubscriptionsNotAllowed,
    UnauthorizedCspRegistration,
    MetadataResolverBadGatewayError,
    InvalidCSPSubscription,
    BadCustomerSubscriptionId,
    DuplicateCustomerSubscription,
    Reconciling,
    // The verify operation
    CustomerSubscriptionNotFound,
    // Registration Ready
    Registered,
    InvalidRegistrationSubscription,
    DuplicateCloudId,
    DeletionBlocked,
    // Registration MultitenancyApproved
    Approved,
}

impl Reason {
    pub const ALL: [Reason; 16] = [
        Reason::Attached,
        Reason::InvalidCustomerSubscriptionId,
        Reason::RegistrationNotFound,
        Reason::CustomerSubscriptionsNotAllowed,
        Reason::UnauthorizedCspRegistration,
        Reason::MetadataResolverBadGatewayError,
        Reason::InvalidCSPSubscription,
        Reason::BadCustomerSubscriptionId,
        Reason::DuplicateCustomerSubscription,
        Reason::Reconciling,
        Reason::CustomerSubscriptionNotFound,
        Reason::Registered,
        Reason::InvalidRegistrationSubscription,
        Reason::DuplicateCloudId,
        Reason::DeletionBlocked,
        Reason::Approved,
    ];

    /// The reasons of a CustomerSubscription's Ready condition.
    pub const CUSTOMER_SUBSCRIPTION_READY: [Reason; 10] = [
        Reason::Attached,
        Reason::InvalidCustomerSubscriptionId,
        Reason::RegistrationNotFound,
        Reason::CustomerSubscriptionsNotAllowed,
        Reason::UnauthorizedCspRegistration,
        Reason::MetadataResolverBadGatewayError,
        Reason::InvalidCSPSubscription,
        Reason::BadCustomerSubscriptionId,
        Reason::DuplicateCustomerSubscription,
        Reason::Reconciling,
    ];

    /// The reasons of a Registration's Ready condition.
    pub const REGISTRATION_READY: [Reason; 6] = [
        Reason::Registered,
        Reason::InvalidRegistrationSubscription,
        Reason::DuplicateCloudId,
        Reason::DeletionBlocked,
        Reason::MetadataResolverBadGatewayError,
        Reason::Reconciling,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Attached => "Attached",
            Reason::InvalidCustomerSubscriptionId => "InvalidCustomerSubscriptionId",
            Reason::RegistrationNotFound => "RegistrationNotFound",
            Reason::CustomerSubscriptionsNotAllowed => "CustomerSubscriptionsNotAllowed",
            Reason::UnauthorizedCspRegistration => "UnauthorizedCspRegistration",
            Reason::MetadataResolverBadGatewayError => "MetadataResolverBadGatewayError",
            Reason::InvalidCSPSubscription => "InvalidCSPSubscription",
            Reason::BadCustomerSubscriptionId => "BadCustomerSubscriptionId",
            Reason::DuplicateCustomerSubscription => "DuplicateCustomerSubscription",
            Reason::Reconciling => "Reconciling",
            Reason::CustomerSubscriptionNotFound => "CustomerSubscriptionNotFound",
            Reason::Registered => "Registered",
            Reason::InvalidRegistrationSubscription => "InvalidRegistrationSubscription",
            Reason::DuplicateCloudId => "DuplicateCloudId",
            Reason::DeletionBlocked => "DeletionBlocked",
            Reason::Approved => "Approved",
        }
    }

    /// The condition status a reason stands for: success is True, an undecided outcome
    /// (upstream failure, pending) is Unknown, every rejection is False.
    pub fn status(self) -> ConditionStatus {
        match self {
            Reason::Attached | Reason::Registered | Reason::Approved => ConditionStatus::True,
            Reason::MetadataResolverBadGatewayError | Reason::Reconciling => {
                ConditionStatus::Unknown
            }
            _ => ConditionStatus::False,
        }
    }

    /// Whether the outcome is an upstream failure the operator retries by itself with backoff.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Reason::MetadataResolverBadGatewayError | Reason::Reconciling
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
