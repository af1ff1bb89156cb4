//! What ARM answered (DESIGN.md §8): the ARM client produces these, the azure-mode policy
//! decides over them. No HTTP types: a status code, ARM's error code and message, and the
//! request id that support asks for.

use std::{fmt, time::Duration};

/// The five ARM calls of azure mode; [`ArmOperation::as_str`] is the `operation` label of
/// `azs_csp_arm_requests_total` and `azs_csp_arm_request_duration_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ArmOperation {
    GetRegistration,
    PutCustomerSubscription,
    GetCustomerSubscription,
    ListCustomerSubscriptions,
    DeleteCustomerSubscription,
}

impl ArmOperation {
    pub const ALL: [ArmOperation; 5] = [
        Self::GetRegistration,
        Self::PutCustomerSubscription,
        Self::GetCustomerSubscription,
        Self::ListCustomerSubscriptions,
        Self::DeleteCustomerSubscription,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::GetRegistration => "get_registration",
            Self::PutCustomerSubscription => "put_customer_subscription",
            Self::GetCustomerSubscription => "get_customer_subscription",
            Self::ListCustomerSubscriptions => "list_customer_subscriptions",
            Self::DeleteCustomerSubscription => "delete_customer_subscription",
        }
    }

    /// Whether ARM counts the call against the subscription's write budget.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Self::PutCustomerSubscription | Self::DeleteCustomerSubscription
        )
    }
}

impl fmt::Display for ArmOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an ARM call did not give the answer it asked for.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ArmError {
    /// ARM answered with an error status: `{"error":{"code","message"}}`, or a status without
    /// such a body (then `code` is the HTTP reason, e.g. `HttpStatus502`).
    #[error(
        "ARM answered HTTP {status} {code}: {message}{}",
        request_suffix(request_id)
    )]
    Answered {
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
        /// `Retry-After` (or `x-ms-retry-after-ms`), when ARM sent one.
        retry_after: Option<Duration>,
    },
    /// No token: the credential could not get one from Entra ID.
    #[error("could not get a token for ARM: {reason}")]
    Credential { reason: String },
    /// No answer: refused, reset, TLS failure, timeout.
    #[error("could not reach ARM: {reason}")]
    Unreachable { reason: String },
    /// An answer that is not the documented JSON.
    #[error(
        "ARM's answer (HTTP {status}) is not the documented JSON: {reason}{}",
        request_suffix(request_id)
    )]
    Malformed {
        status: u16,
        reason: String,
        request_id: Option<String>,
    },
    /// The client treats ARM as down after repeated failures and sent nothing.
    #[error(
        "ARM is treated as down after repeated failures ({cause}); no request is sent until a probe is answered"
    )]
    Down { cause: String },
}

fn request_suffix(request_id: &Option<String>) -> String {
    request_id
        .as_deref()
        .map(|id| format!(" (x-ms-request-id {id})"))
        .unwrap_or_default()
}

impl ArmError {
    /// The `x-ms-request-id` of the answer, when there was one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Answered { request_id, .. } | Self::Malformed { request_id, .. } => {
                request_id.as_deref()
            }
            _ => None,
        }
    }

    /// The wait ARM asked for before the next attempt.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Answered { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the failure says nothing about the request itself (ARM or the path to it
    /// failed), so that trying again later can succeed: 408, 429, 5xx, no answer, a body
    /// that is not ARM's. These count against the ARM breaker.
    pub fn is_upstream_failure(&self) -> bool {
        match self {
            Self::Answered { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            Self::Unreachable { .. } | Self::Malformed { .. } | Self::Down { .. } => true,
            Self::Credential { .. } => false,
        }
    }
}

/// A registration resource as ARM returns it (`GET .../registrations/{name}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArmRegistration {
    pub object_id: Option<String>,
    pub cloud_id: Option<String>,
    pub billing_model: Option<String>,
    pub etag: Option<String>,
    pub request_id: Option<String>,
}

/// A customerSubscription as ARM returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArmCustomerSubscription {
    /// Its name: the customer subscription GUID.
    pub name: String,
    pub tenant_id: Option<String>,
    pub request_id: Option<String>,
}

/// What a DELETE did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArmDeleted {
    /// False when ARM answered 404: there was nothing to remove.
    pub existed: bool,
    pub request_id: Option<String>,
}

/// Where the ARM client reports each answer: the operator's metrics. A trait at the bottom of
/// the graph, so that the client need not know the metrics registry.
pub trait ArmObserver: Send + Sync {
    /// One request answered (`code`: the HTTP status, or `unreachable`, `credential`,
    /// `short_circuited` when there was no answer) after `elapsed`.
    fn answered(&self, operation: ArmOperation, code: &str, elapsed: Duration);
    /// ARM answered 429.
    fn throttled(&self);
}
