//! azs-csp-operator: onboards CSP customers' Azure subscriptions to Azure Stack registrations.

pub mod api;
pub mod azure;
pub mod cli;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod domain;
pub mod emulator;
pub mod guid;
pub mod operator;
pub mod policy;
pub mod resolver;
pub mod runtime;
pub mod upstream;
pub mod usage;
pub mod usage_io;
pub mod verify;

#[cfg(test)]
mod layering_tests;

// The test glue shared with the integration tests (`tests/emulated`) names this crate as they
// do.
#[cfg(test)]
extern crate self as azs_csp_operator;
