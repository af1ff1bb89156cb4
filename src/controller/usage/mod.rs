//! The usage controller (DESIGN.md §9), thin: every `--usage-interval` (and as soon as a
//! `spec.usageSource` is set or changed), per Registration with
//! `spec.usageSource`, the due windows in order from `status.usage.ingestedThrough`, in groups
//! while catching up (`usage::catch_up`, bounded by [`GROUP_MIN`]): directory once per group →
//! each window's pages fetched, validated and decided by `usage::ingest` ahead on several tasks
//! (`read_ahead`), its events written straight into CloudEvents batches, forwarded to the sink
//! in the windows' order, its usage folded in memory once acknowledged → only
//! once every batch of the group was acknowledged, each changed CustomerSubscription's
//! `status.usage` once (guarded by `through`), then the Registration's `status.usage` and
//! `Usage` condition; the next group is read meanwhile, and written after.
//!
//! Its status is applied under a field manager of its own and holds only `status.usage` (and,
//! on the Registration, the `Usage` condition): the decision controllers' applies leave both
//! alone, and this one leaves theirs alone.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, SecondsFormat, Utc};
use futures::{StreamExt, TryStreamExt};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    core::TypeMeta,
};
use serde_json::json;
use tracing::{debug, info, instrument, warn};

mod read_ahead;

use read_ahead::{Decided, Decisions};

use super::{Context, ObjKey};
use crate::{
    api::{
        Condition, CustomerSubscription, Registration, RegistrationUsageStatus, RejectedRecords,
        UsageSource, UsageTotals,
    },
    conditions::{self, USAGE},
    guid::Guid,
    policy::Reason,
    runtime::{health::Health, metrics::USAGE as USAGE_LABEL},
    usage::{
        attribution::{Attachment, Attachments, BilledTo, Directory},
        catch_up::CatchUp,
        cloudevents::{Batch, Origin},
        ingest::WindowIngest,
        rate_card::RateCard,
        totals::MonthToDate,
        window::{Window, first_checkpoint},
    },
    usage_io::{SinkClient, SinkError, SourceClient, SourceEndpoint},
};

/// The field manager of every usage status write.
pub const MANAGER: &str = "azs-csp-operator-usage";
/// Events per POST to the sink.
const BATCH: usize = 500;
/// What a batch body is allocated with: about 700 bytes an event.
const BATCH_BYTES: usize = BATCH * 768;

/// What the usage controller runs with (`run --usage-*`, `--rate-card`).
pub struct UsageMode {
    pub source: Arc<SourceClient>,
    /// `--usage-sink`; without it usage is only totalled into status.
    pub sink: Option<Arc<SinkClient>>,
    pub rate_card: Option<Arc<RateCard>>,
    pub interval: Duration,
    pub delay: Duration,
    /// What this process last wrote, which the caches may not show yet.
    written: Mutex<Written>,
}

#[derive(Default)]
struct Written {
    customers: HashMap<ObjKey, UsageTotals>,
    registrations: HashMap<ObjKey, RegistrationUsageStatus>,
    /// Since when each Registration's ingestion fails, and the first rejected record's cause.
    failing_since: HashMap<ObjKey, DateTime<Utc>>,
    first_rejection: HashMap<ObjKey, String>,
    /// How long each Registration's last group took to write (see [`GROUP_MIN`]).
    last_commit: HashMap<ObjKey, Duration>,
}

impl UsageMode {
    pub fn new(
        source: Arc<SourceClient>,
        sink: Option<Arc<SinkClient>>,
        rate_card: Option<Arc<RateCard>>,
        interval: Duration,
        delay: Duration,
    ) -> Self {
        Self {
            source,
            sink,
            rate_card,
            interval,
            delay,
            written: Mutex::default(),
        }
    }

    fn written(&self) -> std::sync::MutexGuard<'_, Written> {
        self.written.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long the Registration's next group, of `customers`, may fold windows.
    fn group_budget(&self, key: &ObjKey, customers: usize) -> Duration {
        group_budget(self.written().last_commit.get(key).copied(), customers)
    }

    fn committed(&self, key: &ObjKey, took: Duration) {
        self.written().last_commit.insert(key.clone(), took);
    }
}

/// Why a window is not done.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Source(String),
    #[error("{0}")]
    Sink(String),
    #[error("{0}")]
    Write(String),
}

/// How often the first pass looks whether the caches have listed.
const CACHE_SYNC_POLL: Duration = Duration::from_millis(100);

/// Status writes of a group in flight at once. A commit is the only work left when a catch-up
/// has read its last window: 1,000 customers' applies took 3.7 s with 64 in flight against
/// 4.4–4.9 s with 32 in the usage bench, well within kube-apiserver's 200 mutating requests.
const CUSTOMER_WRITES_IN_FLIGHT: usize = 64;

fn now(ctx: &Context) -> DateTime<Utc> {
    let now = ctx.clock.now().0;
    DateTime::from_timestamp(now.as_second(), now.subsec_nanosecond().max(0) as u32)
        .unwrap_or_else(Utc::now)
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Runs until `shutdown`: one pass over the Registrations every interval.
pub async fn run(
    ctx: Arc<Context>,
    usage: Arc<UsageMode>,
    health: Health,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    info!(
        interval_s = usage.interval.as_secs_f64(),
        delay_s = usage.delay.as_secs_f64(),
        sink = usage.sink.is_some(),
        "usage controller starting"
    );
    tokio::pin!(shutdown);
    // A window decided on caches still listing would bill an attached customer's usage to the
    // registration subscription and move the checkpoint past it for good (a restart found it).
    while !health.caches_synced() {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(CACHE_SYNC_POLL) => {}
        }
    }
    loop {
        let passed = usage_sources(&ctx);
        for registration in ctx.registrations.all() {
            if registration.spec.usage_source.is_none()
                || registration.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = process(&ctx, &usage, &registration) => {}
            }
        }
        debug!(registrations = passed.len(), "usage pass done");
        tokio::select! {
            _ = &mut shutdown => return,
            _ = next_pass(&ctx, usage.interval, &passed) => {}
        }
    }
}

/// How often the wait for the next pass looks whether a `spec.usageSource` changed.
const SOURCE_CHANGE_POLL: Duration = Duration::from_secs(1);

/// Each Registration's `spec.usageSource` in the cache, in key order.
fn usage_sources(ctx: &Context) -> Vec<(ObjKey, UsageSource)> {
    let mut sources: Vec<_> = ctx
        .registrations
        .all()
        .iter()
        .filter(|r| r.metadata.deletion_timestamp.is_none())
        .filter_map(|r| Some((ObjKey::of(r.as_ref()), r.spec.usage_source.clone()?)))
        .collect();
    sources.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    sources
}

/// Waits `interval`, or until a `spec.usageSource` differs from the pass's (one set, changed or
/// removed): with the default of 5 minutes, a partner who sets one would otherwise wait that
/// long for the first window. Only the cache is read.
async fn next_pass(ctx: &Context, interval: Duration, passed: &[(ObjKey, UsageSource)]) {
    let due = tokio::time::Instant::now() + interval;
    loop {
        let left = due.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(SOURCE_CHANGE_POLL)).await;
        if usage_sources(ctx) != passed {
            return;
        }
    }
}

/// The Registration's usage status: what this process wrote last, unless the cache is newer.
fn current_status(
    usage: &UsageMode,
    key: &ObjKey,
    registration: &Registration,
) -> RegistrationUsageStatus {
    let cached = registration
        .status
        .as_ref()
        .and_then(|s| s.usage.clone())
        .unwrap_or_default();
    let through = |s: &RegistrationUsageStatus| s.ingested_through.as_deref().and_then(parse_time);
    match usage.written().registrations.get(key) {
        Some(mine) if through(mine) > through(&cached) => mine.clone(),
        _ => cached,
    }
}

fn current_totals(
    usage: &UsageMode,
    key: &ObjKey,
    cached: Option<&UsageTotals>,
) -> Option<UsageTotals> {
    let through = |t: &UsageTotals| parse_time(&t.through);
    match (usage.written().customers.get(key), cached) {
        (Some(mine), Some(cached)) if through(cached) >= through(mine) => Some(cached.clone()),
        (Some(mine), _) => Some(mine.clone()),
        (None, cached) => cached.cloned(),
    }
}

#[instrument(skip_all, fields(namespace = registration.namespace().unwrap_or_default(), name = registration.name_any()))]
async fn process(ctx: &Context, usage: &UsageMode, registration: &Registration) {
    let Some(spec) = &registration.spec.usage_source else {
        return;
    };
    let key = ObjKey::of(registration);
    let namespace = registration.namespace().unwrap_or_default();
    let name = registration.name_any();
    let mut status = current_status(usage, &key, registration);
    let created = registration
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0))
        .unwrap_or_else(|| now(ctx));
    let checkpoint = status
        .ingested_through
        .as_deref()
        .and_then(parse_time)
        .unwrap_or_else(|| {
            first_checkpoint(created, spec.start_time.as_deref().and_then(parse_time))
        });
    let at = now(ctx);
    ctx.metrics.set_usage_lag(
        &namespace,
        &name,
        (at - checkpoint).num_milliseconds().max(0) as f64 / 1000.0,
    );
    let endpoint = SourceEndpoint {
        endpoint: spec.endpoint.clone(),
        provider_subscription_id: spec.provider_subscription_id.clone(),
        audience: spec.audience.clone(),
    };
    let mut done_any = false;
    let mut next = Window::starting_at(checkpoint);
    // A group read and not yet written, and the failure that ended the reading.
    let mut pending: Option<ReadGroup> = None;
    let mut failed: Option<(Window, Failure)> = None;
    loop {
        let read_next = failed.is_none() && next.is_due(at, usage.delay);
        if !read_next && pending.is_none() {
            break;
        }
        // The next group is read while the one before is written: its fold starts from the
        // totals being written, and its own write waits for that one (see [`GROUP_MIN`]).
        let registration_start = match &pending {
            Some(previous) => Ok(previous.group.totals(&Party::Registration).cloned()),
            None => totals_of(status.registration_subscription.as_ref()),
        };
        let previous_written = AtomicBool::new(pending.is_none());
        let (read, written) = tokio::join!(
            async {
                if !read_next {
                    return None;
                }
                let end = GroupEnd {
                    started: Instant::now(),
                    key: &key,
                    previous_written: &previous_written,
                };
                let previous = pending.as_ref().map(|p| &p.group);
                Some(
                    read_group(
                        ctx,
                        usage,
                        registration,
                        &endpoint,
                        (next, at),
                        previous,
                        registration_start,
                        &end,
                    )
                    .await,
                )
            },
            async {
                let result = match &pending {
                    Some(group) => write_group(ctx, usage, registration, group, &mut status).await,
                    None => Ok(()),
                };
                previous_written.store(true, Ordering::Release);
                result
            },
        );
        if let Err(error) = written {
            // The group read meanwhile is dropped: its windows are read again, from the
            // checkpoint that did not move (the sink de-duplicates what was sent).
            warn!(%error, "usage status not written; the windows after the checkpoint are retried");
            return;
        }
        done_any |= pending.take().is_some();
        match read {
            None => {}
            Some(Err(failure)) => failed = Some(failure),
            Some(Ok(mut group)) => {
                failed = group.failure.take();
                match group.group.through() {
                    Some(through) => {
                        next = Window::starting_at(through);
                        pending = Some(group);
                    }
                    None if failed.is_none() => break,
                    None => {}
                }
            }
        }
    }
    if let Some((window, failure)) = failed {
        let (reason, result, what) = match &failure {
            Failure::Source(_) => (Reason::SourceFailed, "source_failed", "Reading usage from"),
            Failure::Sink(_) => (Reason::SinkFailed, "sink_failed", "Forwarding usage from"),
            Failure::Write(error) => {
                warn!(%error, window = %rfc3339(window.start), "usage status not written; the window is retried");
                return;
            }
        };
        ctx.metrics.usage_window(result);
        let since = *usage
            .written()
            .failing_since
            .entry(key.clone())
            .or_insert(at);
        let message = format!(
            "{what} {} for the window starting {} fails since {}: {failure}. Windows are retried every {}s; none is skipped.",
            spec.endpoint,
            rfc3339(window.start),
            rfc3339(since),
            usage.interval.as_secs()
        );
        warn!(%failure, window = %rfc3339(window.start), "usage window failed");
        if let Err(error) =
            apply_registration(ctx, usage, registration, &status, reason, &message).await
        {
            warn!(%error, "cannot write the Usage condition");
        }
        return;
    }
    usage.written().failing_since.remove(&key);
    let stale_generation = registration
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, USAGE))
        .is_some_and(|c| c.observed_generation != registration.metadata.generation);
    if !done_any
        && stale_generation
        && let Some(through) = status.ingested_through.clone()
    {
        // The spec changed while caught up: the condition says it was read against this one.
        let message = format!("Usage is ingested through {through}.");
        if let Err(error) =
            apply_registration(ctx, usage, registration, &status, Reason::Current, &message).await
        {
            warn!(%error, "cannot write the Usage condition");
        }
    }
    if !done_any && status.ingested_through.is_none() {
        let message = format!(
            "No usage window is due yet: the first, from {}, is ingested once it is {}s old.",
            rfc3339(checkpoint),
            usage.delay.as_secs()
        );
        if let Err(error) = apply_registration(
            ctx,
            usage,
            registration,
            &status,
            Reason::Starting,
            &message,
        )
        .await
        {
            warn!(%error, "cannot write the Usage condition");
        }
    }
}

/// A party billed in a group: a CustomerSubscription of the Registration (by name), or the
/// Registration's own share.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Party {
    Registration,
    Customer(String),
}

/// A group of windows is folded until it has run this long: at least [`GROUP_MIN`], at most
/// [`GROUP_MAX`], and [`GROUP_PER_COMMIT`] times as long as the Registration's last commit took
/// (before its first, as [`COMMIT_PER_CUSTOMER`] estimates it); and never before the group
/// before it is written. Every customer is written once per group, not once per window, and a
/// group's statuses are written while the next group is read (its fold starting from the
/// totals being written), so while catching up the writes are off the clock but for the last
/// group's. The checkpoint still moves only once every customer of a
/// group is written, and a group is written only after the group before it: a crash at any
/// moment re-does the windows after the checkpoint, whose events the sink de-duplicates and
/// whose totals each customer's `through` guards. A group ends within a minute so that
/// `status.usage` and the lag visibly move while catching up and a crash re-does little. Once
/// caught up, one window is due at a time and a group is that window.
const GROUP_MIN: Duration = Duration::from_secs(1);
const GROUP_MAX: Duration = Duration::from_secs(60);
const GROUP_PER_COMMIT: u32 = 10;
/// What a commit is taken to cost a customer before this process has timed one (1,000
/// customers' applies took 3.0–4.0 s in the usage bench): a first group of [`GROUP_MIN`]
/// whatever the number of customers would write every one of them beside the reading of the
/// rest of a catch-up, and the next group would write them all again.
const COMMIT_PER_CUSTOMER: Duration = Duration::from_millis(5);

/// [`GROUP_PER_COMMIT`] times the last commit, or the commit of `customers` estimated by
/// [`COMMIT_PER_CUSTOMER`] before one was timed; within [`GROUP_MIN`] and [`GROUP_MAX`].
fn group_budget(last_commit: Option<Duration>, customers: usize) -> Duration {
    let commit = last_commit.unwrap_or_else(|| {
        COMMIT_PER_CUSTOMER.saturating_mul(u32::try_from(customers).unwrap_or(u32::MAX))
    });
    commit
        .saturating_mul(GROUP_PER_COMMIT)
        .clamp(GROUP_MIN, GROUP_MAX)
}

/// A group read: what it was decided against, its windows folded, and the window whose
/// failure ended it (the windows before it are in the fold, and are written).
struct ReadGroup {
    setup: Setup,
    group: CatchUp<Party>,
    failure: Option<(Window, Failure)>,
    started: Instant,
    waited: Waited,
}

/// How long a group's reading waited, by what it waited for: where a catch-up's time goes.
#[derive(Debug, Default)]
struct Waited {
    /// For the next batch (fetched, validated and decided on the reading tasks).
    for_batches: Duration,
    /// For the sink to acknowledge a batch, before the next could be sent.
    for_sink: Duration,
}

/// When a group being read ends (after a window): once the group before it is written and
/// its budget ([`UsageMode::group_budget`]) is spent.
struct GroupEnd<'a> {
    started: Instant,
    key: &'a ObjKey,
    previous_written: &'a AtomicBool,
}

impl GroupEnd<'_> {
    fn reached(&self, usage: &UsageMode, customers: usize) -> bool {
        self.previous_written.load(Ordering::Acquire)
            && self.started.elapsed() >= usage.group_budget(self.key, customers)
    }
}

/// What a group's windows are decided against, read once per group.
struct Setup {
    /// Shared with the tasks that read and decide the windows.
    decisions: Arc<Decisions>,
    customers: HashMap<String, Arc<CustomerSubscription>>,
}

impl Setup {
    async fn read(
        ctx: &Context,
        usage: &UsageMode,
        registration: &Registration,
        endpoint: &SourceEndpoint,
    ) -> Result<Self, Failure> {
        let namespace = registration.namespace().unwrap_or_default();
        let name = registration.name_any();
        let local = usage
            .source
            .subscriptions(endpoint)
            .await
            .map_err(|e| Failure::Source(e.to_string()))?;
        let directory = Directory::new(
            local
                .iter()
                .filter_map(|s| Some((s.subscription_id.as_str(), s.tenant_id.as_deref()?))),
        );
        drop(local);
        let customers: HashMap<String, Arc<CustomerSubscription>> = ctx
            .customers
            .all()
            .into_iter()
            .filter(|c| {
                c.namespace().as_deref() == Some(namespace.as_str())
                    && c.spec.registration_ref.name == name
            })
            .map(|c| (c.name_any(), c))
            .collect();
        let attachments = Attachments::new(
            customers
                .values()
                .filter_map(|c| Attachment::of(c, &namespace, &name)),
        );
        let registration_subscription = Guid::parse(&registration.spec.subscription_id)
            .ok_or_else(|| {
                Failure::Source(format!(
                    "spec.subscriptionId {:?} is not a GUID",
                    registration.spec.subscription_id
                ))
            })?;
        let cloud_id = Guid::parse(&registration.spec.cloud_id).ok_or_else(|| {
            Failure::Source(format!(
                "spec.cloudId {:?} is not a GUID",
                registration.spec.cloud_id
            ))
        })?;
        Ok(Self {
            decisions: Arc::new(Decisions {
                origin: Origin {
                    namespace,
                    name,
                    cloud_id,
                },
                directory,
                attachments,
                registration_subscription,
                rate_card: usage.rate_card.clone(),
            }),
            customers,
        })
    }
}

fn party_of(billed: &BilledTo) -> Option<Party> {
    Some(match billed {
        BilledTo::Customer { customer, .. } => Party::Customer(customer.name.clone()),
        BilledTo::Registration { .. } => Party::Registration,
    })
}

fn totals_of(current: Option<&UsageTotals>) -> Result<Option<MonthToDate>, Failure> {
    current
        .map(UsageTotals::totals)
        .transpose()
        .map_err(|e| Failure::Write(e.to_string()))
}

/// One group of the windows due from `first` at `at` (see [`GROUP_MIN`]): each window's
/// batches acknowledged and its usage folded in memory, from the totals of `previous` (the
/// group being written meanwhile) for its parties and from the statuses for the others.
/// `Err` is a failure before any window was folded.
#[allow(clippy::too_many_arguments)]
async fn read_group(
    ctx: &Context,
    usage: &UsageMode,
    registration: &Registration,
    endpoint: &SourceEndpoint,
    (first, at): (Window, DateTime<Utc>),
    previous: Option<&CatchUp<Party>>,
    registration_start: Result<Option<MonthToDate>, Failure>,
    end: &GroupEnd<'_>,
) -> Result<ReadGroup, (Window, Failure)> {
    let started = Instant::now();
    let setup = Setup::read(ctx, usage, registration, endpoint)
        .await
        .map_err(|failure| (first, failure))?;
    let mut group = CatchUp::new();
    for (name, object) in &setup.customers {
        let party = Party::Customer(name.clone());
        let totals = match previous.and_then(|p| p.carried(&party)) {
            Some(totals) => totals,
            None => {
                let cached = object.status.as_ref().and_then(|s| s.usage.as_ref());
                let current = current_totals(usage, &ObjKey::of(object.as_ref()), cached);
                totals_of(current.as_ref()).map_err(|failure| (first, failure))?
            }
        };
        group.party(party, totals);
    }
    let registration_start = registration_start.map_err(|failure| (first, failure))?;
    group.party(Party::Registration, registration_start);
    let mut waited = Waited::default();
    let failure = forward(
        ctx,
        usage,
        &setup,
        endpoint,
        (first, at),
        end,
        &mut group,
        &mut waited,
    )
    .await
    .err();
    Ok(ReadGroup {
        setup,
        group,
        failure,
        started,
        waited,
    })
}

/// Writes a group read (see [`commit`]) and remembers how long it took (the next group's
/// budget).
async fn write_group(
    ctx: &Context,
    usage: &UsageMode,
    registration: &Registration,
    read: &ReadGroup,
    status: &mut RegistrationUsageStatus,
) -> Result<(), Failure> {
    let committing = Instant::now();
    commit(ctx, usage, registration, &read.setup, &read.group, status).await?;
    let key = ObjKey::of(registration);
    usage.committed(&key, committing.elapsed());
    debug!(
        windows = read.group.windows(),
        seconds = read.started.elapsed().as_secs_f64(),
        waited_for_batches_seconds = read.waited.for_batches.as_secs_f64(),
        waited_for_sink_seconds = read.waited.for_sink.as_secs_f64(),
        commit_seconds = committing.elapsed().as_secs_f64(),
        "usage group written"
    );
    Ok(())
}

/// The group's windows, from `first`, until `end` is reached after a window: read and decided
/// ahead ([`read_ahead`]), their batches forwarded several in flight, each window folded into
/// `group` once its batches are all acknowledged. `Err` names the window that failed.
#[allow(clippy::too_many_arguments)]
async fn forward(
    ctx: &Context,
    usage: &UsageMode,
    setup: &Setup,
    endpoint: &SourceEndpoint,
    (first, at): (Window, DateTime<Utc>),
    end: &GroupEnd<'_>,
    group: &mut CatchUp<Party>,
    waited: &mut Waited,
) -> Result<(), (Window, Failure)> {
    let mut decided = read_ahead::read_ahead(usage, endpoint, &setup.decisions, first, at);
    let mut forwarder = Forwarder::new(ctx, usage);
    loop {
        let waiting = Instant::now();
        let Some(next) = decided.recv().await else {
            break;
        };
        waited.for_batches += waiting.elapsed();
        let Decided {
            window,
            batch,
            completes,
        } = match next {
            Ok(next) => next,
            Err(failed) => {
                forwarder.settle(group).await?;
                return Err(failed);
            }
        };
        let window_done = completes.is_some();
        let waiting = Instant::now();
        forwarder.send(group, window, batch, completes).await?;
        waited.for_sink += waiting.elapsed();
        if window_done && end.reached(usage, setup.customers.len()) {
            break;
        }
    }
    forwarder.settle(group).await
}

/// Batch POSTs in flight at once, each about 0.3 MB: while the sink reads some, the next are on
/// their way and another is built. Acknowledged in the order sent, so a window is folded only
/// after every batch before its last. With two in flight the consumer waited 9.5 s of a
/// month's 27 s for acknowledgements; with eight (and four pages ahead), 5.7 s of 20 s.
const BATCHES_IN_FLIGHT: usize = 8;

/// Up to [`BATCHES_IN_FLIGHT`] batch POSTs in flight, the next batch built meanwhile; a window
/// is folded into the group once its last batch is acknowledged.
struct Forwarder<'a> {
    ctx: &'a Context,
    usage: &'a UsageMode,
    /// Oldest first.
    in_flight: VecDeque<InFlight>,
}

struct InFlight {
    /// The window the batch is of.
    window: Window,
    /// The POST and its answer.
    task: tokio::task::JoinHandle<Result<u16, SinkError>>,
    /// The window this batch completes, folded once it is acknowledged.
    completes: Option<WindowIngest>,
}

impl<'a> Forwarder<'a> {
    fn new(ctx: &'a Context, usage: &'a UsageMode) -> Self {
        Self {
            ctx,
            usage,
            in_flight: VecDeque::with_capacity(BATCHES_IN_FLIGHT),
        }
    }

    /// Waits for every batch in flight; each window they complete is folded into `group`.
    async fn settle(&mut self, group: &mut CatchUp<Party>) -> Result<(), (Window, Failure)> {
        while self.settle_oldest(group).await? {}
        Ok(())
    }

    /// Waits for the oldest batch in flight (`false`: there was none); its window, when
    /// complete, is folded into `group`.
    async fn settle_oldest(
        &mut self,
        group: &mut CatchUp<Party>,
    ) -> Result<bool, (Window, Failure)> {
        let Some(in_flight) = self.in_flight.pop_front() else {
            return Ok(false);
        };
        let result = match in_flight.task.await {
            Ok(result) => result,
            Err(error) => {
                return Err((
                    in_flight.window,
                    Failure::Sink(format!("the batch was not sent: {error}")),
                ));
            }
        };
        match &result {
            Ok(code) => self.ctx.metrics.usage_sink_request(&code.to_string()),
            Err(error) => {
                if let Some(code) = error.code() {
                    self.ctx.metrics.usage_sink_request(&code);
                }
            }
        }
        result.map_err(|e| (in_flight.window, Failure::Sink(e.to_string())))?;
        if let Some(done) = in_flight.completes {
            group.fold_ingest(&done, party_of);
        }
        Ok(true)
    }

    /// Sends `batch` of `window` once fewer than [`BATCHES_IN_FLIGHT`] are unacknowledged;
    /// `completes` is the window when `batch` is its last.
    async fn send(
        &mut self,
        group: &mut CatchUp<Party>,
        window: Window,
        batch: Batch,
        completes: Option<WindowIngest>,
    ) -> Result<(), (Window, Failure)> {
        let sink = match &self.usage.sink {
            Some(sink) if !batch.is_empty() => sink.clone(),
            _ => {
                // Nothing to send: the window is complete once the batches before are.
                self.settle(group).await?;
                if let Some(done) = completes {
                    group.fold_ingest(&done, party_of);
                }
                return Ok(());
            }
        };
        while self.in_flight.len() >= BATCHES_IN_FLIGHT {
            self.settle_oldest(group).await?;
        }
        let task = tokio::spawn(async move {
            let events = batch.events();
            sink.send(batch.into_body(), events).await
        });
        self.in_flight.push_back(InFlight {
            window,
            task,
            completes,
        });
        Ok(())
    }
}

/// Every batch of the group's windows is acknowledged: each changed customer's totals are
/// written (side by side, as the decision controllers write), then the Registration's share,
/// rejections and checkpoint, which moves only once every customer is written.
async fn commit(
    ctx: &Context,
    usage: &UsageMode,
    registration: &Registration,
    setup: &Setup,
    group: &CatchUp<Party>,
    status: &mut RegistrationUsageStatus,
) -> Result<(), Failure> {
    let key = ObjKey::of(registration);
    let Some(through) = group.through() else {
        return Ok(());
    };
    let currency = usage.rate_card.as_deref().map(RateCard::currency);
    let mut registration_share = None;
    let mut pending = Vec::new();
    for (party, totals) in group.changed() {
        let next = UsageTotals::new(totals, currency);
        match party {
            Party::Registration => registration_share = Some(next),
            Party::Customer(name) => {
                if let Some(object) = setup.customers.get(name) {
                    pending.push(apply_customer(ctx, usage, object, next));
                }
            }
        }
    }
    futures::stream::iter(pending)
        .buffer_unordered(CUSTOMER_WRITES_IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;

    let previous_through = status.ingested_through.as_deref().and_then(parse_time);
    let mut next = status.clone();
    if let Some(share) = registration_share {
        next.registration_subscription = Some(share);
    }
    if previous_through.is_none_or(|t| t < through) {
        let rejected = next
            .rejected_records
            .get_or_insert_with(RejectedRecords::default);
        rejected.total += group.rejected.total as i64;
        for (cause, n) in &group.rejected.by_cause {
            *rejected.by_cause.entry(cause.clone()).or_insert(0) += *n as i64;
        }
        if let Some(first) = &group.first_rejection {
            usage
                .written()
                .first_rejection
                .entry(key.clone())
                .or_insert_with(|| format!("{}: {}", first.cause.as_str(), first.message));
        }
        record_outcomes(ctx, group);
    }
    next.ingested_through = Some(rfc3339(through));
    let rejected_total = next.rejected_records.as_ref().map_or(0, |r| r.total);
    let first = usage.written().first_rejection.get(&key).cloned();
    let message = match (rejected_total, first) {
        (0, _) => format!("Usage is ingested through {}.", rfc3339(through)),
        (n, Some(first)) => format!(
            "Usage is ingested through {}; {n} bad records were not forwarded (the first: {first}).",
            rfc3339(through)
        ),
        (n, None) => format!(
            "Usage is ingested through {}; {n} bad records were not forwarded (status.usage.rejectedRecords).",
            rfc3339(through)
        ),
    };
    apply_registration(ctx, usage, registration, &next, Reason::Current, &message).await?;
    *status = next;
    for _ in 0..group.windows() {
        ctx.metrics.usage_window("done");
    }
    ctx.metrics.set_usage_lag(
        &setup.decisions.origin.namespace,
        &setup.decisions.origin.name,
        (now(ctx) - through).num_milliseconds().max(0) as f64 / 1000.0,
    );
    Ok(())
}

fn record_outcomes(ctx: &Context, group: &CatchUp<Party>) {
    let outcomes = &group.outcomes;
    ctx.metrics.usage_records("forwarded", outcomes.forwarded);
    ctx.metrics
        .usage_records("unmapped_meter", outcomes.unmapped_meter);
    ctx.metrics.usage_records("late", outcomes.late);
    for (cause, n) in &group.rejected.by_cause {
        ctx.metrics.usage_records(cause, *n);
    }
}

async fn apply_customer(
    ctx: &Context,
    usage: &UsageMode,
    object: &CustomerSubscription,
    next: UsageTotals,
) -> Result<(), Failure> {
    let key = ObjKey::of(object);
    let cached = object.status.as_ref().and_then(|s| s.usage.as_ref());
    if current_totals(usage, &key, cached).as_ref() == Some(&next) {
        return Ok(());
    }
    if apply_status::<CustomerSubscription>(ctx, &key, json!({"usage": next})).await? {
        usage.written().customers.insert(key, next);
    }
    Ok(())
}

/// Applies `status` to the `K` named by `key` under [`MANAGER`]: `false` when it is gone
/// (deleted meanwhile: its usage is in the sink's events, there is no status to total).
async fn apply_status<K>(
    ctx: &Context,
    key: &ObjKey,
    status: serde_json::Value,
) -> Result<bool, Failure>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let body = json!({
        "apiVersion": TypeMeta::resource::<K>().api_version,
        "kind": TypeMeta::resource::<K>().kind,
        "status": status,
    });
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &key.namespace);
    match api
        .patch_status(
            &key.name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(body),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(false),
        Err(error) => {
            return Err(Failure::Write(format!(
                "{}/{}: {error}",
                key.namespace, key.name
            )));
        }
    }
    ctx.metrics.status_written(USAGE_LABEL);
    Ok(true)
}

async fn apply_registration(
    ctx: &Context,
    usage: &UsageMode,
    registration: &Registration,
    next: &RegistrationUsageStatus,
    reason: Reason,
    message: &str,
) -> Result<(), Failure> {
    let key = ObjKey::of(registration);
    let existing: Vec<Condition> = registration
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, USAGE).cloned())
        .into_iter()
        .collect();
    let mut condition = existing.clone();
    conditions::set_condition(
        &mut condition,
        USAGE,
        reason,
        message,
        registration.metadata.generation,
        ctx.clock.as_ref(),
    );
    let cached = registration
        .status
        .as_ref()
        .and_then(|s| s.usage.clone())
        .unwrap_or_default();
    let same_condition = existing
        .first()
        .map(|c| (&c.status, &c.reason, &c.message, c.observed_generation))
        == condition
            .first()
            .map(|c| (&c.status, &c.reason, &c.message, c.observed_generation));
    let written_same = usage.written().registrations.get(&key) == Some(next);
    if same_condition && (cached == *next || written_same) {
        return Ok(());
    }
    let usage_body = if *next == RegistrationUsageStatus::default() {
        None
    } else {
        Some(next)
    };
    let mut status = json!({"conditions": condition});
    if let Some(usage_body) = usage_body {
        status["usage"] = json!(usage_body);
    }
    if apply_status::<Registration>(ctx, &key, status).await? {
        usage.written().registrations.insert(key, next.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{GROUP_MAX, GROUP_MIN, group_budget};

    #[test]
    fn a_group_folds_ten_commits_long_and_before_the_first_commit_by_the_customers() {
        let ms = Duration::from_millis;
        let cases = [
            // (last commit, customers, budget)
            (None, 0, GROUP_MIN),
            (None, 3, GROUP_MIN),
            (None, 20, GROUP_MIN),
            (None, 100, Duration::from_secs(5)),
            (None, 1_000, Duration::from_secs(50)),
            (None, 100_000, GROUP_MAX),
            (None, usize::MAX, GROUP_MAX),
            (Some(ms(10)), 1_000, GROUP_MIN),
            (Some(ms(300)), 1_000, Duration::from_secs(3)),
            (Some(ms(3_500)), 3, Duration::from_secs(35)),
            (Some(Duration::from_secs(30)), 1_000, GROUP_MAX),
            (Some(Duration::MAX), 1, GROUP_MAX),
        ];
        for (last, customers, want) in cases {
            assert_eq!(
                group_budget(last, customers),
                want,
                "last commit {last:?}, {customers} customers"
            );
        }
    }
}
