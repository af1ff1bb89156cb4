//! Azure mode's world as the usage tests need it too: the emulator of DESIGN.md §10 served in
//! this process behind the test kit's fault layer, over HTTPS with its own CA, and the client
//! secret an operator in `--mode azure` signs in with. `tests/usage.rs` compiles this part only
//! (`mod azure_kit { pub mod world; }`); `tests/azure.rs` all of the kit.

use std::{path::PathBuf, sync::Arc};

use azs_csp_operator::emulator::{
    self, Emulator,
    in_process::{InProcess, InProcessOptions},
};
use azs_csp_testkit::upstream::Upstream;

pub const TENANT: &str = "2b7e0c1d-0000-4000-8000-000000000001";
pub const CLIENT: &str = "3c8f1d2e-0000-4000-8000-000000000002";
pub const SECRET: &str = "azure-mode-test-secret-Zq8";

/// The emulator in this process, behind the fault layer.
pub struct AzureWorld {
    pub emulator: Arc<Emulator>,
    pub upstream: Upstream,
    pub ca_file: PathBuf,
    pub secret_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl AzureWorld {
    /// `AzureWorld::start` with the stamp's usage APIs and the CloudEvents sink (§10).
    pub async fn start_with_stamp(
        catalog_yaml: &str,
        burst: u32,
        refill: f64,
        stamp: Option<emulator::stamp::Stamp>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let started = InProcess::start(
            catalog_yaml,
            InProcessOptions {
                write_burst: burst,
                write_refill_per_second: refill,
                tls_dir: Some(dir.path().join("tls")),
                stamp,
            },
        )
        .await
        .expect("the emulator");
        let emulator = started.emulator;
        let upstream = Upstream::serve_on(
            started.listener,
            emulator::router(emulator.clone()),
            started.tls,
        );
        let secret_file = dir.path().join("client-secret");
        std::fs::write(&secret_file, SECRET).expect("secret");
        Self {
            emulator,
            upstream,
            ca_file: started.ca_file.expect("a CA"),
            secret_file,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        self.upstream.url()
    }
}
