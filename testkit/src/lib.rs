//! The test kit of azs-csp-operator: what the unit tests, the integration tests (`tests/`) and
//! the benchmark (`benches/scale`) share, each piece once.
//!
//! - [`upstream`]: the one metadata test server: a fault layer (status codes, canned answers,
//!   delays, hangs, dropped and refused connections, malformed bodies, flapping) in front of a
//!   handler, recording every exchange. The handler is the operator's emulator of DESIGN.md
//!   §10, whose `/resolver` routes serve the http-resolver contract of §4 (the operator's
//!   tests put it there through `tests/emulated`, the bench directly); this crate holds no
//!   second implementation of that contract, only the counting of what it was asked
//!   ([`upstream::resolver`]).
//! - [`metrics`]: the Prometheus text format, read (the operator's and kube-apiserver's).
//! - [`cluster`]: a client for the test cluster, CRDs installed and established, namespaces,
//!   many objects created concurrently, waiting on a condition with a timeout.
//! - [`api_proxy`]: the test cluster's API server behind that same fault layer, for one
//!   operator process (its requests of one kind held back, say).
//! - [`process`]: the operator binary as a child process (or, with
//!   `AZS_CSP_TEST_OPERATOR=external`, an operator someone else started).
//!
//! Why a crate of its own and no `testkit` feature of the operator's library: the operator's
//! unit tests (`src/emulator/resolver_tests.rs`, `src/runtime/metrics.rs`) use it as a
//! dev-dependency, so it must not depend on the operator crate, or `cargo test --lib` would
//! build the library twice with two incompatible copies of its types. It therefore knows
//! nothing of the operator's types: CRDs, binaries and typed objects are handed in by the
//! caller; what is typed to the operator (waiting for a Ready reason of a CustomerSubscription,
//! the YAML of test objects) lives in `tests/common`, one file per part, and each test binary
//! declares the parts it uses (`mod common { pub mod reasons; }`), so that every helper is
//! compiled only where it is used. The fault-test helpers (API server restarts, generated
//! populations) are in `tests/fault_kit/`, compiled only into that binary.

pub mod api_proxy;
pub mod cluster;
pub mod metrics;
pub mod process;
pub mod upstream;
