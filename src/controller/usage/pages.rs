//! The pages of the due windows, fetched, parsed and validated ahead of the window being
//! decided, and handed on in the windows' order.
//!
//! A window's pages are a chain: a page's `continuationToken` names the next, so one window's
//! pages come one after another, each a round trip to the stamp. Windows are independent, so
//! [`FETCH_CHAINS`] tasks take turns by window (the first task the 1st, 3rd, … window, the
//! second the 2nd, 4th, …), and while one waits for the stamp the other reads. [`Pages`] hands
//! their pages on window by window, as one stream.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::{Failure, UsageMode};
use crate::{
    usage::{
        attribution::Directory,
        record::{PageRef, Rejection, UsageRecord, validate_view},
        window::{Window, due_windows},
    },
    usage_io::{SourceClient, SourceEndpoint},
};

/// Tasks fetching windows side by side. Two keep a stamp's answer time off the clock without
/// asking it for more than two pages at once.
const FETCH_CHAINS: usize = 2;

/// Pages each task holds ahead of the consumer. A page is about 0.8 MB of JSON while parsed and
/// its validated records about a fifth of that once handed on, so four ahead are about 1.3 MB
/// over both tasks. With one ahead the consumer waited 5.2 s of a month's 27 s for pages: a
/// task that waits for its stamp cannot run ahead of a consumer that waits for the sink.
const PAGES_AHEAD: usize = 4;

/// A page of a window's records, fetched, parsed and validated ahead of its use.
pub(super) struct Fetched<R = Vec<Result<UsageRecord, Rejection>>> {
    /// Each record as [`validate_view`] found it.
    pub records: R,
    /// The window's last page.
    pub last: bool,
}

/// Aborts the task when dropped (a group that ends, or a controller shut down).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type Chain<R> = mpsc::Receiver<Result<Fetched<R>, Failure>>;

/// The pages of every chain, in the windows' order: a window's pages from its chain, then the
/// next window's from the next chain. An error ends the stream where it is met.
pub(super) struct Pages<R = Vec<Result<UsageRecord, Rejection>>> {
    chains: Vec<Chain<R>>,
    /// The chain of the window being read.
    current: usize,
    _tasks: Vec<AbortOnDrop>,
}

impl<R> Pages<R> {
    fn in_order(chains: Vec<Chain<R>>, tasks: Vec<AbortOnDrop>) -> Self {
        Self {
            chains,
            current: 0,
            _tasks: tasks,
        }
    }

    /// The next page in the windows' order; `None` once every window was handed on.
    pub async fn recv(&mut self) -> Option<Result<Fetched<R>, Failure>> {
        let chain = self.chains.get_mut(self.current)?;
        let page = chain.recv().await;
        if let Some(Ok(Fetched { last: true, .. })) = &page {
            self.current = (self.current + 1) % self.chains.len();
        }
        page
    }
}

/// Fetches, parses and validates the pages of the windows due from `first`.
pub(super) fn prefetch(
    usage: &UsageMode,
    endpoint: &SourceEndpoint,
    directory: &Arc<Directory>,
    first: Window,
    at: DateTime<Utc>,
) -> Pages {
    let mut chains = Vec::with_capacity(FETCH_CHAINS);
    let mut tasks = Vec::with_capacity(FETCH_CHAINS);
    for chain in 0..FETCH_CHAINS {
        let (tx, rx) = mpsc::channel(PAGES_AHEAD);
        let windows = due_windows(first.start, at, usage.delay)
            .skip(chain)
            .step_by(FETCH_CHAINS);
        let (source, endpoint) = (usage.source.clone(), endpoint.clone());
        let directory = directory.clone();
        tasks.push(AbortOnDrop(tokio::spawn(async move {
            for window in windows {
                if !fetch_window(&source, &endpoint, &directory, window, &tx).await {
                    return;
                }
            }
        })));
        chains.push(rx);
    }
    Pages::in_order(chains, tasks)
}

/// Sends the window's pages to `tx`, following `continuationToken`: `false` when the stream
/// ended (an error sent, or nobody reads any more).
async fn fetch_window(
    source: &SourceClient,
    endpoint: &SourceEndpoint,
    directory: &Directory,
    window: Window,
    tx: &mpsc::Sender<Result<Fetched, Failure>>,
) -> bool {
    let mut continuation: Option<String> = None;
    loop {
        let page = fetch_page(source, endpoint, directory, window, continuation.as_deref()).await;
        let (records, next) = match page {
            Ok(page) => page,
            Err(failure) => {
                let _ = tx.send(Err(failure)).await;
                return false;
            }
        };
        continuation = next.filter(|t| !t.is_empty());
        let last = continuation.is_none();
        if tx.send(Ok(Fetched { records, last })).await.is_err() {
            return false;
        }
        if last {
            return true;
        }
    }
}

/// One page: its records validated against `directory`, and its continuation token.
async fn fetch_page(
    source: &SourceClient,
    endpoint: &SourceEndpoint,
    directory: &Directory,
    window: Window,
    continuation: Option<&str>,
) -> Result<(Vec<Result<UsageRecord, Rejection>>, Option<String>), Failure> {
    let body = source
        .records_page(endpoint, window.start, window.end, continuation)
        .await
        .map_err(|e| Failure::Source(e.to_string()))?;
    let page: PageRef<'_> = serde_json::from_slice(&body).map_err(|e| {
        Failure::Source(format!(
            "a page of {} is not the documented JSON: {e}",
            endpoint.endpoint
        ))
    })?;
    let records = page
        .value
        .iter()
        .map(|raw| validate_view(&raw.view(), directory))
        .collect();
    Ok((records, page.continuation_token))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (window, page) as a chain hands it on; `last` marks a window's last page.
    type Page = (usize, usize);

    /// Sends `windows` (each window's page count) round robin over `chains` chains, as
    /// [`prefetch`] splits them, then reads them through [`Pages`].
    async fn read_in_order(windows: &[usize], chains: usize, fail_at: Option<Page>) -> Vec<Page> {
        let mut receivers = Vec::new();
        let mut tasks = Vec::new();
        for chain in 0..chains {
            let (tx, rx) = mpsc::channel(PAGES_AHEAD);
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
                            Err(Failure::Source(format!("window {window} page {page}")))
                        } else {
                            Ok(Fetched {
                                records: (window, page),
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
        let mut pages = Pages::in_order(receivers, tasks);
        let mut read = Vec::new();
        while let Some(page) = pages.recv().await {
            match page {
                Ok(fetched) => read.push(fetched.records),
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
