//! The election against [`MemoryLeases`] on a paused clock: every wait is simulated, so the
//! lease's timing rules are checked exactly and at once.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::Lease, apimachinery::pkg::apis::meta::v1::MicroTime, jiff::Timestamp,
};
use tokio::time::{Instant, timeout};

use super::{LeaderElector, LeadershipLost, LeaseSettings, memory::MemoryLeases};
use crate::runtime::Health;

fn candidate(leases: &MemoryLeases, identity: &str) -> LeaderElector<MemoryLeases> {
    LeaderElector::with_store(
        leases.clone(),
        LeaseSettings::new("ns", identity),
        Health::new(true, Duration::from_secs(30)),
    )
}

fn transitions(leases: &MemoryLeases) -> Option<i32> {
    leases
        .lease()
        .and_then(|l| l.spec)
        .and_then(|s| s.lease_transitions)
}

/// What another candidate writes when it takes the lease.
fn taken_by(holder: &'static str) -> impl FnOnce(&mut Lease) + Send + 'static {
    move |lease| {
        let spec = lease.spec.get_or_insert_default();
        spec.holder_identity = Some(holder.to_string());
        spec.lease_duration_seconds = Some(15);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
    }
}

#[tokio::test(start_paused = true)]
async fn a_standby_takes_over_once_the_record_has_not_changed_for_the_lease_duration() {
    let leases = MemoryLeases::default();
    let mut a = candidate(&leases, "a");
    a.acquire().await;
    assert_eq!(leases.holder().as_deref(), Some("a"));
    assert_eq!(transitions(&leases), Some(0));
    // `a` stops renewing (killed).
    drop(a);

    let mut b = candidate(&leases, "b");
    let started = Instant::now();
    b.acquire().await;
    let waited = started.elapsed();
    assert_eq!(leases.holder().as_deref(), Some("b"));
    assert_eq!(transitions(&leases), Some(1));
    // Expiry is counted from b's first sight of the record, and noticed at the next retry.
    let settings = b.settings();
    assert!(
        waited >= settings.lease_duration,
        "took over after {waited:?}"
    );
    assert!(
        waited <= settings.lease_duration + settings.retry_period.mul_f64(1.2),
        "took over after {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_standby_never_takes_a_lease_that_is_renewed() {
    let leases = MemoryLeases::default();
    let mut a = candidate(&leases, "a");
    a.acquire().await;
    let leader = tokio::spawn(async move { a.hold().await });

    let mut b = candidate(&leases, "b");
    let minute = Duration::from_secs(60);
    assert!(
        timeout(minute, b.acquire()).await.is_err(),
        "b took the lease"
    );
    assert_eq!(leases.holder().as_deref(), Some("a"));
    // One create, then a renewal every 5 s.
    assert!(leases.writes() >= 12, "{} writes", leases.writes());
    assert!(!leader.is_finished(), "the leader stopped: {leader:?}");
    leader.abort();
}

#[tokio::test(start_paused = true)]
async fn the_leader_gives_up_once_renewals_fail_for_the_renew_deadline() {
    let leases = MemoryLeases::default();
    let mut a = candidate(&leases, "a");
    a.acquire().await;
    let acquired = Instant::now();
    leases.set_unavailable(true);

    let lost = a.hold().await;
    let led = acquired.elapsed();
    let settings = a.settings();
    assert_eq!(lost, LeadershipLost::RenewDeadline(settings.renew_deadline));
    // Counted from the last successful request, and over before any standby may consider
    // the lease expired.
    assert!(led >= settings.renew_deadline, "gave up after {led:?}");
    assert!(led < settings.lease_duration, "gave up after {led:?}");
    // The failures were retried, not taken for a lost lease.
    assert_eq!(leases.writes(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_leader_recovers_from_failed_renewals_within_the_deadline() {
    let leases = MemoryLeases::default();
    let mut a = candidate(&leases, "a");
    a.acquire().await;
    leases.set_unavailable(true);
    let outage = {
        let leases = leases.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(8)).await;
            leases.set_unavailable(false);
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        lost = a.hold() => panic!("lost the lease: {lost}"),
        _ = tokio::time::sleep(Duration::from_secs(40)) => {}
        _ = outage => {}
    }
    assert_eq!(leases.holder().as_deref(), Some("a"));
    assert!(leases.writes() > 1, "never renewed after the outage");
}

#[tokio::test(start_paused = true)]
async fn a_conflicting_write_loses_to_the_candidate_that_wrote_first() {
    let leases = MemoryLeases::default();

    // Acquiring: b creates the lease between a's read and a's create.
    let mut a = candidate(&leases, "a");
    leases.interfere_with_next_write(taken_by("b"));
    assert!(
        timeout(Duration::from_secs(10), a.acquire()).await.is_err(),
        "a acquired a lease b had just taken"
    );
    assert_eq!(leases.holder().as_deref(), Some("b"));

    // Renewing: c writes between the leader's read and its update.
    let leases = MemoryLeases::default();
    let mut a = candidate(&leases, "a");
    a.acquire().await;
    leases.interfere_with_next_write(taken_by("c"));
    let lost = a.hold().await;
    assert_eq!(
        lost,
        LeadershipLost::TakenBy {
            holder: "c".to_string()
        }
    );
    assert_eq!(leases.holder().as_deref(), Some("c"));
}

#[tokio::test(start_paused = true)]
async fn a_released_lease_is_taken_at_the_next_attempt() {
    let leases = MemoryLeases::default();
    let mut a = candidate(&leases, "a");
    assert!(!a.release().await.expect("release"), "released no lease");
    a.acquire().await;
    assert!(a.release().await.expect("release"));
    let spec = leases.lease().and_then(|l| l.spec).expect("a Lease");
    assert_eq!(spec.holder_identity, None);
    assert_eq!(spec.lease_duration_seconds, Some(1));

    let mut b = candidate(&leases, "b");
    let started = Instant::now();
    b.acquire().await;
    assert_eq!(started.elapsed(), Duration::ZERO, "b waited for the lease");
    assert_eq!(leases.holder().as_deref(), Some("b"));
    assert_eq!(transitions(&leases), Some(1));
    // Only the holder releases.
    assert!(!a.release().await.expect("release"));
    assert_eq!(leases.holder().as_deref(), Some("b"));
}
