//! azs-csp-operator: onboards CSP customers' Azure subscriptions to Azure Stack registrations.

pub mod api;
pub mod conditions;
pub mod crd;
pub mod guid;
pub mod policy;
pub mod resolver;
