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

/// An error with its sources, as one line: HTTP clients' own messages ("error sending
/// request", "failed to execute `reqwest` request") hide whether the connection was refused
/// or the TLS handshake failed, which is further down the chain.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_names_its_causes() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let error = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
        assert_eq!(error_chain(&error), "outer: connection refused");
    }
}
