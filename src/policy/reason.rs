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
    // Azure mode (DESIGN.md §8)
    /// No token, or ARM answered 401/403: the identity or its role assignment is wrong.
    AzureAuthorizationFailed,
    /// ARM refused the call with a code that is not one of the seed's.
    AzureRequestFailed,
    /// The registration in Azure has another billing model or cloudId than spec.
    RegistrationMismatch,
    /// The CustomerSubscription is being deleted and its tenant is being removed in Azure.
    Detaching,
    /// MultitenancyApproved before any PUT answered.
    NotYetKnown,
    /// Registration InSync: Azure holds exactly the declared tenants (none unmanaged).
    InSync,
    /// Registration InSync: Azure holds tenants no CustomerSubscription declares.
    UnmanagedCustomerSubscriptions,
    // Registration Usage (DESIGN.md §9)
    /// Every due window is ingested and acknowledged by the sink.
    Current,
    /// The stamp's usage API (or the credential for it) failed.
    SourceFailed,
    /// The sink did not acknowledge a batch.
    SinkFailed,
    /// No window has been ingested yet.
    Starting,
}

impl Reason {
    pub const ALL: [Reason; 27] = [
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
        Reason::AzureAuthorizationFailed,
        Reason::AzureRequestFailed,
        Reason::RegistrationMismatch,
        Reason::Detaching,
        Reason::NotYetKnown,
        Reason::InSync,
        Reason::UnmanagedCustomerSubscriptions,
        Reason::Current,
        Reason::SourceFailed,
        Reason::SinkFailed,
        Reason::Starting,
    ];

    /// The reasons of a Registration's `Usage` condition.
    pub const USAGE: [Reason; 4] = [
        Reason::Current,
        Reason::SourceFailed,
        Reason::SinkFailed,
        Reason::Starting,
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
            Reason::AzureAuthorizationFailed => "AzureAuthorizationFailed",
            Reason::AzureRequestFailed => "AzureRequestFailed",
            Reason::RegistrationMismatch => "RegistrationMismatch",
            Reason::Detaching => "Detaching",
            Reason::NotYetKnown => "NotYetKnown",
            Reason::InSync => "InSync",
            Reason::UnmanagedCustomerSubscriptions => "UnmanagedCustomerSubscriptions",
            Reason::Current => "Current",
            Reason::SourceFailed => "SourceFailed",
            Reason::SinkFailed => "SinkFailed",
            Reason::Starting => "Starting",
        }
    }

    /// The condition status a reason stands for: success is True, an undecided outcome
    /// (upstream failure, pending) is Unknown, every rejection is False.
    pub fn status(self) -> ConditionStatus {
        match self {
            Reason::Attached
            | Reason::Registered
            | Reason::Approved
            | Reason::InSync
            | Reason::Current => ConditionStatus::True,
            Reason::MetadataResolverBadGatewayError
            | Reason::Reconciling
            | Reason::Detaching
            | Reason::NotYetKnown
            | Reason::Starting => ConditionStatus::Unknown,
            _ => ConditionStatus::False,
        }
    }

    /// Whether the outcome is an upstream failure the operator retries by itself with backoff.
    /// `NotYetKnown` is undecided too, but waits for a PUT to answer rather than retrying.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Reason::MetadataResolverBadGatewayError
                | Reason::Reconciling
                | Reason::Detaching
                | Reason::Starting
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
