//! What every client of a service outside the cluster shares, so that an outage of that
//! service costs it a trickle of requests however many objects wait on it: a circuit
//! breaker per upstream, a brief memory of failed requests, and the objects waiting for the
//! upstream to answer again. The http metadata resolver uses them; the ARM client and the
//! usage source and sink are meant to, each under its own `upstream` name.

pub mod breaker;
pub mod recent_failures;
pub mod tls;
pub mod waiting;

pub use breaker::{Breaker, BreakerSettings, Down, State};
pub use recent_failures::RecentFailures;
pub use waiting::Waiting;
