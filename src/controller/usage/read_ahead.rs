//! The due windows read ahead of the task that forwards them: each window's pages fetched,
//! parsed and validated, its records decided and written into CloudEvents batches, and the
//! batches handed on in the windows' order.
//!
//! A window's pages are a chain: a page's `continuationToken` names the next, so one window's
//! pages come one after another, each a round trip to the stamp. Windows are independent, so
//! [`READ_CHAINS`] tasks take turns by window (with three, the first task the 1st, 4th, …
//! window, the second the 2nd, 5th, …): while one waits for the stamp the others read and
//! decide, and the decisions (a month's catch-up spent about half its time in them on the
//! forwarding task) use both cores. [`InOrder`] hands their batches on window by window, as
//! one stream; a window's usage comes with its last batch, to be folded once the sink
//! acknowledged it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tracing::debug;

use super::{BATCH, BATCH_BYTES, Failure, UsageMode, rfc3339};
use crate::{
    guid::Guid,
    usage::{
        attribution::{Attachments, Directory},
        cloudevents::{Batch, EventWriter, Origin},
        ingest::{self, WindowIngest},
        rate_card::RateCard,
        record::{PageRef, validate_view},
        window::{Window, due_windows},
    },
    usage_io::{SourceClient, SourceEndpoint},
};

/// Tasks reading windows side by side, so at most this many pages asked of a stamp at once.
/// In the usage bench (docs/benchmarks.md U8) a month took 19.0–22.2 s with two, 18.1–20.9 s
/// with three and 17.5–24.6 s with four, whose 0.35 MB batches ahead took the RSS growth to
/// 25–30.5 MiB of the 32 allowed (three: 21–24.7 MiB).
const READ_CHAINS: usize = 3;

/// Batches each task holds ahead of the forwarding task: about 0.35 MB each, two a page of
/// 1,000 records, nine a window of the bench's 4,000. A task whose window is not the one
/// being forwarded stops once this many are waiting: with two or four, the forwarder waited
/// 10–17 s of a month's 17–25 s for batches; with eight, 3–7 s.
const BATCHES_AHEAD: usize = 8;

/// What a window's records are decided against: the group's directory, attachments and
/// rate card, shared by the reading tasks.
pub(super) struct Decisions {
    pub origin: Origin,
    pub directory: Directory,
    pub attachments: Attachments,
    pub registration_subscription: Guid,
    pub rate_card: Option<Arc<RateCard>>,
}

impl Decisions {
    fn context(&self) -> ingest::Context<'_> {
        ingest::Context {
            origin: &self.origin,
            directory: &self.directory,
            attachments: &self.attachments,
            registration_subscription: self.registration_subscription,
            rate_card: self.rate_card.as_deref(),
        }
    }
}

/// A batch of a window's events, decided ahead of its forwarding.
pub(super) struct Decided {
    pub window: Window,
    pub batch: Batch,
    /// The window's usage, with its last batch: folded once that is acknowledged.
    pub completes: Option<WindowIngest>,
}

/// What a chain hands on: a window's batch, or the failure of the window named.
type Read = Result<Decided, (Window, Failure)>;

/// Ends a window: the chain after it hands on the next.
pub(super) trait EndsWindow {
    fn ends_window(&self) -> bool;
}

impl EndsWindow for Decided {
    fn ends_window(&self) -> bool {
        self.completes.is_some()
    }
}

/// Aborts the task when dropped (a group that ends, or a controller shut down).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The items of every chain, in the windows' order: a window's from its chain, then the next
/// window's from the next chain. An error ends the stream where it is met.
pub(super) struct InOrder<T, E> {
    chains: Vec<mpsc::Receiver<Result<T, E>>>,
    /// The chain of the window being read.
    current: usize,
    _tasks: Vec<AbortOnDrop>,
}

impl<T: EndsWindow, E> InOrder<T, E> {
    fn new(chains: Vec<mpsc::Receiver<Result<T, E>>>, tasks: Vec<AbortOnDrop>) -> Self {
        Self {
            chains,
            current: 0,
            _tasks: tasks,
        }
    }

    /// The next item in the windows' order; `None` once every window was handed on.
    pub async fn recv(&mut self) -> Option<Result<T, E>> {
        let chain = self.chains.get_mut(self.current)?;
        let item = chain.recv().await;
        if let Some(Ok(item)) = &item
            && item.ends_window()
        {
            self.current = (self.current + 1) % self.chains.len();
        }
        item
    }
}

/// Reads and decides the windows due from `first` at `at`.
pub(super) fn read_ahead(
    usage: &UsageMode,
    endpoint: &SourceEndpoint,
    decisions: &Arc<Decisions>,
    first: Window,
    at: DateTime<Utc>,
) -> InOrder<Decided, (Window, Failure)> {
    let mut chains = Vec::with_capacity(READ_CHAINS);
    let mut tasks = Vec::with_capacity(READ_CHAINS);
    for chain in 0..READ_CHAINS {
        let (tx, rx) = mpsc::channel(BATCHES_AHEAD);
        let windows = due_windows(first.start, at, usage.delay)
            .skip(chain)
            .step_by(READ_CHAINS);
        let (source, endpoint) = (usage.source.clone(), endpoint.clone());
        let decisions = decisions.clone();
        tasks.push(AbortOnDrop(tokio::spawn(async move {
            let mut body = Vec::new();
            for window in windows {
                let read = read_window(&source, &endpoint, &decisions, window, &mut body, &tx);
                let read = read.await;
                let ended = match read {
                    Ok(ended) => ended,
                    Err(failure) => {
                        let _ = tx.send(Err((window, failure))).await;
                        true
                    }
                };
                if ended {
                    return;
                }
            }
        })));
        chains.push(rx);
    }
    InOrder::new(chains, tasks)
}

/// Sends the window's batches to `tx`, following `continuationToken`, each page read into
/// `body`: `Ok(true)` when nobody reads any more.
async fn read_window(
    source: &SourceClient,
    endpoint: &SourceEndpoint,
    decisions: &Decisions,
    window: Window,
    body: &mut Vec<u8>,
    tx: &mpsc::Sender<Read>,
) -> Result<bool, Failure> {
    let context = decisions.context();
    let mut writer = EventWriter::new(&decisions.origin).map_err(cannot_write)?;
    let mut decided = WindowIngest::new(window);
    let mut batch = Batch::with_capacity(BATCH_BYTES);
    let mut continuation: Option<String> = None;
    let mut pages = 0u64;
    loop {
        source
            .records_page(
                endpoint,
                (window.start, window.end),
                continuation.as_deref(),
                body,
            )
            .await
            .map_err(|e| Failure::Source(e.to_string()))?;
        let page: PageRef<'_> = serde_json::from_slice(body).map_err(|e| {
            Failure::Source(format!(
                "a page of {} is not the documented JSON: {e}",
                endpoint.endpoint
            ))
        })?;
        pages += 1;
        for raw in &page.value {
            let validated = validate_view(&raw.view(), &decisions.directory);
            let written = decided
                .ingest_into(&context, validated, &mut writer, &mut batch)
                .map_err(cannot_write)?;
            if written && batch.events() >= BATCH {
                let full = std::mem::replace(&mut batch, Batch::with_capacity(BATCH_BYTES));
                let sent = Decided {
                    window,
                    batch: full,
                    completes: None,
                };
                if tx.send(Ok(sent)).await.is_err() {
                    return Ok(true);
                }
            }
        }
        continuation = page.continuation_token.filter(|t| !t.is_empty());
        if continuation.is_none() {
            break;
        }
    }
    debug!(window = %rfc3339(window.start), pages, forwarded = decided.outcomes.forwarded, "window decided");
    let last = Decided {
        window,
        batch,
        completes: Some(decided),
    };
    Ok(tx.send(Ok(last)).await.is_err())
}

fn cannot_write(error: serde_json::Error) -> Failure {
    Failure::Sink(format!("cannot write an event: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (window, page) as a chain hands it on.
    type Page = (usize, usize);

    struct Item {
        page: Page,
        last: bool,
    }

    impl EndsWindow for Item {
        fn ends_window(&self) -> bool {
            self.last
        }
    }

    /// Sends `windows` (each window's page count) round robin over `chains` chains, as
    /// [`read_ahead`] splits them, then reads them through [`InOrder`].
    async fn read_in_order(windows: &[usize], chains: usize, fail_at: Option<Page>) -> Vec<Page> {
        let mut receivers = Vec::new();
        let mut tasks = Vec::new();
        for chain in 0..chains {
            let (tx, rx) = mpsc::channel(BATCHES_AHEAD);
            let mine: Vec<(usize, usize)> = windows
                .iter()
                .copied()
                .enumerate()
                .skip(chain)
                .step_by(chains)
                .collect();
            tasks.push(AbortOnDrop(tokio::spawn(async move {
                for (window, pages) in mine {
                    for page in 0..pages {
                        let sent = if fail_at == Some((window, page)) {
                            Err(format!("window {window} page {page}"))
                        } else {
                            Ok(Item {
                                page: (window, page),
                                last: page + 1 == pages,
                            })
                        };
                        let failed = sent.is_err();
                        if tx.send(sent).await.is_err() || failed {
                            return;
                        }
                    }
                }
            })));
            receivers.push(rx);
        }
        let mut in_order = InOrder::new(receivers, tasks);
        let mut read = Vec::new();
        while let Some(item) = in_order.recv().await {
            match item {
                Ok(item) => read.push(item.page),
                Err(_) => {
                    read.push((usize::MAX, usize::MAX));
                    break;
                }
            }
        }
        read
    }

    fn expected(windows: &[usize]) -> Vec<Page> {
        windows
            .iter()
            .enumerate()
            .flat_map(|(window, pages)| (0..*pages).map(move |page| (window, page)))
            .collect()
    }

    #[tokio::test]
    async fn pages_come_in_window_order_whatever_the_chains() {
        let cases: [(&[usize], usize); 6] = [
            (&[], 2),
            (&[1], 2),
            (&[4, 4, 4, 4, 4], 2),
            (&[1, 3, 2, 5, 1, 1, 4], 2),
            (&[2, 1, 3], 3),
            (&[3, 1, 2], 1),
        ];
        for (windows, chains) in cases {
            assert_eq!(
                read_in_order(windows, chains, None).await,
                expected(windows),
                "{windows:?} over {chains} chains"
            );
        }
    }

    #[tokio::test]
    async fn an_error_ends_the_stream_where_its_window_comes() {
        // Window 1's second page fails, in the second chain: windows 0 and 1's first page come
        // first, and nothing of window 2 (whose chain ran ahead) after the error.
        let read = read_in_order(&[2, 3, 2], 2, Some((1, 1))).await;
        assert_eq!(read, vec![(0, 0), (0, 1), (1, 0), (usize::MAX, usize::MAX)]);
    }
}
