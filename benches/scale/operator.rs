//! The release operator binary under measurement: the test kit's process wrapper, with the
//! bench's kubeconfig, log filter and log file.

use std::ffi::OsString;

use azs_csp_testkit::process::{Operator, OperatorCommand};

use crate::{Result, settings::Settings};

/// `resolver`: the metadata flags (`--catalog-file F`, or `--resolver http ...`).
pub fn start(s: &Settings, resolver: &[OsString], namespace: &str) -> Result<Operator> {
    let command = OperatorCommand::new(&s.operator)
        .args(resolver)
        .args(["--watch-namespace", namespace])
        .env("KUBECONFIG", &s.kubeconfig)
        .env("RUST_LOG", &s.operator_log_filter)
        .log_file(s.out_dir.join("operator.log"));
    Operator::spawn(command)
        .map_err(|e| format!("{e} (build it with `cargo build --release`: make bench does)").into())
}
