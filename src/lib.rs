//! azs-csp-operator: onboards CSP customers' Azure subscriptions to Azure Stack registrations.

pub mod api;
pub mod crd;
pub mod guid;
pub mod resolver;
