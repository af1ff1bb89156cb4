//! What runs around the controllers: the metrics and health endpoints, and leader election.

pub mod health;
pub mod leader;
pub mod metrics;

pub use health::{Health, ServeError, serve};
pub use leader::{LEASE_NAME, LeaderElector, LeadershipLost, LeaseSettings, default_identity};
pub use metrics::Metrics;
