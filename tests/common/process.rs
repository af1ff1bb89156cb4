//! The operator binary of this build as a child process.

use azs_csp_testkit::process::{Operator, OperatorCommand};

/// `azs-csp-operator run ARGS` of this build with these environment variables set; with
/// `AZS_CSP_TEST_OPERATOR=external`, nothing (see the test kit's `process`).
pub fn start_operator_with_env(args: &[&str], env: &[(&str, &str)]) -> Operator {
    Operator::start(
        OperatorCommand::new(env!("CARGO_BIN_EXE_azs-csp-operator"))
            .args(args)
            .envs(env.iter().copied()),
    )
}
