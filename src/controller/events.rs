//! Kubernetes Events, published in the background.
//!
//! An Event is a courtesy to the people reading `kubectl events`; the conditions are the
//! record. So a reconcile only queues its Event and moves on: a few requests drain the queue,
//! and when it is full (a burst such as adopting thousands of objects at once) further
//! Events are dropped and counted, as client-go's broadcaster does. Events are created
//! directly, without the kube `Recorder`, which keeps every Event it published for six
//! minutes to aggregate repeats that never happen here (each object gets its own).

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{context::Kind, index::ObjKey};
use crate::{runtime::Metrics, upstream::Waiting};

/// Events waiting to be published; beyond this they are dropped.
pub const QUEUE_CAPACITY: usize = 1024;
/// Requests creating Events at once: few, so that Events never crowd out status writes.
const IN_FLIGHT: usize = 2;

/// Who reports the Events.
#[derive(Clone, Debug)]
pub struct Reporter {
    pub controller: String,
    pub instance: String,
}

/// One Event to publish about `regarding`.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingEvent {
    pub regarding: ObjectReference,
    pub warning: bool,
    pub reason: String,
    pub action: String,
    pub note: String,
}

/// The sending side, held by the controllers.
#[derive(Clone)]
pub struct EventQueue {
    tx: mpsc::Sender<PendingEvent>,
    metrics: Arc<Metrics>,
}

impl EventQueue {
    /// A queue holding up to `capacity` Events, and its receiving side for [`publish_queued`].
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> (Self, mpsc::Receiver<PendingEvent>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Self { tx, metrics }, rx)
    }

    /// Queues `event` without waiting; drops it (counted) when the queue is full.
    pub fn send(&self, event: PendingEvent) {
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event)) => {
                self.metrics.event_dropped();
                debug!(reason = %event.reason, "event queue full, event dropped");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.metrics.event_dropped(),
        }
    }
}

fn event_object(event: PendingEvent, reporter: &Reporter, now: Timestamp) -> Event {
    let name = event.regarding.name.clone().unwrap_or_default();
    Event {
        metadata: ObjectMeta {
            // Unique per object and instant, like client-go's `name.hex(nanoseconds)`.
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: event.regarding.namespace.clone(),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        action: Some(event.action),
        reason: Some(event.reason),
        note: Some(event.note),
        type_: Some(if event.warning { "Warning" } else { "Normal" }.to_string()),
        regarding: Some(event.regarding),
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(reporter.instance.clone()),
        ..Event::default()
    }
}

/// Publishes queued Events, [`IN_FLIGHT`] at a time, until every [`EventQueue`] is dropped
/// and the queue is empty. While the objects waiting on an upstream that answers again are
/// re-evaluated (see [`Waiting`]), Events wait: their status writes go first.
pub async fn publish_queued(
    mut rx: mpsc::Receiver<PendingEvent>,
    client: Client,
    reporter: Reporter,
    metrics: Arc<Metrics>,
    waiting: Arc<Waiting<(Kind, ObjKey)>>,
) {
    let queued = futures::stream::poll_fn(|cx| rx.poll_recv(cx));
    queued
        .for_each_concurrent(IN_FLIGHT, |event| {
            let (client, reporter, metrics) = (client.clone(), &reporter, &metrics);
            let waiting = waiting.clone();
            async move {
                waiting.drained().await;
                let namespace = event.regarding.namespace.clone().unwrap_or_default();
                let reason = event.reason.clone();
                let body = event_object(event, reporter, Timestamp::now());
                let api: Api<Event> = Api::namespaced(client, &namespace);
                match api.create(&PostParams::default(), &body).await {
                    Ok(_) => metrics.event_published(),
                    Err(error) => {
                        metrics.event_failed();
                        warn!(%error, %namespace, %reason, "could not publish event");
                    }
                }
            }
        })
        .await;
}

/// How long a stopping operator waits for queued Events.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(name: &str) -> PendingEvent {
        PendingEvent {
            regarding: ObjectReference {
                api_version: Some(
                    <crate::api::CustomerSubscription as kube::Resource>::api_version(&())
                        .into_owned(),
                ),
                kind: Some("CustomerSubscription".into()),
                name: Some(name.into()),
                namespace: Some("tenants".into()),
                uid: Some("0b6f8f7e-5d0b-4b7e-9a43-3f3c6c1f0a11".into()),
                ..ObjectReference::default()
            },
            warning: true,
            reason: "BadCustomerSubscriptionId".into(),
            action: "Evaluate".into(),
            note: "the subscription belongs to another partner".into(),
        }
    }

    fn count(metrics: &Metrics, outcome: &str) -> u64 {
        let text = metrics.encode().unwrap_or_default();
        let line = format!("azs_csp_events_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(u64::MAX)
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let metrics = Arc::new(Metrics::new());
        let (queue, mut rx) = EventQueue::new(2, metrics.clone());
        for name in ["a", "b", "c", "d"] {
            queue.send(pending(name));
        }
        assert_eq!(count(&metrics, "dropped"), 2);
        let kept: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| e.regarding.name.unwrap_or_default())
            .collect();
        assert_eq!(kept, ["a", "b"], "the oldest Events are kept, in order");
        queue.send(pending("e"));
        assert_eq!(count(&metrics, "dropped"), 2, "room again once drained");
    }

    #[test]
    fn a_closed_queue_counts_the_event_as_dropped() {
        let metrics = Arc::new(Metrics::new());
        let (queue, rx) = EventQueue::new(4, metrics.clone());
        drop(rx);
        queue.send(pending("a"));
        assert_eq!(count(&metrics, "dropped"), 1);
    }

    #[test]
    fn the_event_object_names_its_object_reporter_and_type() {
        let reporter = Reporter {
            controller: "azs-csp-operator".into(),
            instance: "pod-1".into(),
        };
        let now = Timestamp::from_second(1_800_000_000).unwrap_or(Timestamp::UNIX_EPOCH);
        let event = event_object(pending("web"), &reporter, now);
        assert_eq!(event.metadata.namespace.as_deref(), Some("tenants"));
        let name = event.metadata.name.clone().unwrap_or_default();
        assert!(name.starts_with("web."), "{name}");
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert_eq!(
            event.reporting_controller.as_deref(),
            Some("azs-csp-operator")
        );
        assert_eq!(event.reporting_instance.as_deref(), Some("pod-1"));
        assert_eq!(event.event_time, Some(MicroTime(now)));
        assert_eq!(
            event.regarding.and_then(|r| r.kind).as_deref(),
            Some("CustomerSubscription")
        );
        let normal = PendingEvent {
            warning: false,
            ..pending("web")
        };
        assert_eq!(
            event_object(normal, &reporter, now).type_.as_deref(),
            Some("Normal")
        );
    }
}
