//! The release operator binary under measurement: the test kit's process wrapper, with the
//! bench's kubeconfig, log filter and log file.

use std::ffi::OsString;

use azs_csp_testkit::process::{Operator, OperatorCommand};

use crate::{Result, settings::Settings};

/// `args`: the metadata flags (`--catalog-file F`, or `--resolver http ...`), or azure mode's;
/// `env`: what azure mode's credential reads.
pub fn start(
    s: &Settings,
    args: &[OsString],
    env: &[(&str, String)],
    namespace: &str,
) -> Result<Operator> {
    let mut command = OperatorCommand::new(&s.operator).args(args);
    for (key, value) in env {
        command = command.env(key, value);
    }
    let command = command
        .args(["--watch-namespace", namespace])
        .env("KUBECONFIG", &s.kubeconfig)
        .env("RUST_LOG", &s.operator_log_filter)
        .log_file(s.out_dir.join("operator.log"));
    Operator::spawn(command)
        .map_err(|e| format!("{e} (build it with `cargo build --release`: make bench does)").into())
}
