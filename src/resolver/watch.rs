//! Keeps a [`CatalogResolver`] in step with its source: a file (`--catalog-file`) or one
//! ConfigMap key (`--catalog-configmap NS/NAME`, key `catalog.yaml`).

use std::{fmt, path::PathBuf, str::FromStr, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};

use super::catalog_resolver::{CatalogResolver, digest};

/// The ConfigMap key that holds the catalog document.
pub const CATALOG_KEY: &str = "catalog.yaml";

/// How often [`watch_file`] looks at the file.
pub const FILE_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// An editor that truncates and then writes leaves a moment where the file is empty, and an
/// empty file is a valid (empty) catalog that would detach every subscription. A change is
/// applied only once the content reads the same twice this far apart.
const SETTLE_DELAY: Duration = Duration::from_millis(200);

/// Whoever takes the catalogs a watch reads: the operator's [`CatalogResolver`], or the
/// emulator, which logs what a reload put in force.
pub trait CatalogSink: Send + Sync + 'static {
    /// A new content of the source: validated, and put in force or rejected (logged and
    /// counted by the sink).
    fn offer(&self, text: &str);
    /// The source could not deliver a catalog at all; the catalog in force stays.
    fn source_unavailable(&self, reason: &str);
}

impl CatalogSink for CatalogResolver {
    fn offer(&self, text: &str) {
        // Errors are logged and counted inside `replace`.
        let _ = self.replace(text);
    }

    fn source_unavailable(&self, reason: &str) {
        self.record_source_error(reason);
    }
}

/// Polls the catalog file and hands its content to the sink (the resolver) when it changes;
/// runs until the future is dropped or its task aborted.
///
/// Polling (rather than inotify through `notify`) because the file is swapped in ways that
/// inotify watches on the path miss or report confusingly: editors write a new file and
/// rename it over the old one, and a ConfigMap volume replaces a `..data` symlink, which
/// leaves a watch on the old inode. Reading a catalog-sized file once a second costs
/// nothing, and comparing contents (not mtimes) also catches same-second rewrites.
pub async fn watch_file<S: CatalogSink>(sink: Arc<S>, path: PathBuf) {
    watch_file_every(sink, path, FILE_POLL_INTERVAL).await;
}

/// [`watch_file`] with a chosen poll interval.
pub async fn watch_file_every<S: CatalogSink>(sink: Arc<S>, path: PathBuf, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // What was last handed to the sink (or why the file was unreadable), so that a bad file
    // is reported once and not every second, without keeping a copy.
    let mut last_seen: Option<Seen> = None;
    loop {
        ticker.tick().await;
        let Some((read, seen)) = read_changed(&path, last_seen.as_ref(), read_file).await else {
            continue;
        };
        if last_seen.as_ref() == Some(&seen) {
            continue;
        }
        match read {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => sink.offer(&text),
                Err(_) => sink.source_unavailable(&format!("{} is not UTF-8 text", path.display())),
            },
            Err(reason) => sink.source_unavailable(&reason),
        }
        last_seen = Some(seen);
    }
}

/// A read of the file: its content, or why it could not be read.
type Read = Result<Vec<u8>, String>;

/// A read as the poll remembers it: the content's digest, or why it could not be read.
type Seen = Result<u64, String>;

fn seen(read: &Read) -> Seen {
    read.as_ref()
        .map(|bytes| digest(bytes))
        .map_err(Clone::clone)
}

async fn read_file(path: PathBuf) -> Read {
    tokio::fs::read(&path)
        .await
        .map_err(|e| format!("cannot read the catalog file {}: {e}", path.display()))
}

/// The file's content once it has stopped changing, with its [`Seen`]; `None` when it reads
/// as `last_seen`, which is what a poll finds nearly every second. Only one read is held at
/// a time, the one before it by its digest: a catalog of 10,000 subscriptions is 1.5 MB, and
/// holding two reads across the settle delay held 3 MB for a fifth of every second.
async fn read_changed<F, Fut>(
    path: &std::path::Path,
    last_seen: Option<&Seen>,
    read: F,
) -> Option<(Read, Seen)>
where
    F: Fn(PathBuf) -> Fut,
    Fut: std::future::Future<Output = Read>,
{
    let first = read(path.to_path_buf()).await;
    let mut previous = seen(&first);
    if last_seen == Some(&previous) {
        return None;
    }
    drop(first);
    loop {
        tokio::time::sleep(SETTLE_DELAY).await;
        let current = read(path.to_path_buf()).await;
        let current_seen = seen(&current);
        if current_seen == previous {
            return Some((current, current_seen));
        }
        previous = current_seen;
    }
}

/// `--catalog-configmap NS/NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigMapRef {
    pub namespace: String,
    pub name: String,
}

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error(
    "--catalog-configmap must be NAMESPACE/NAME (a DNS label, a slash, a DNS subdomain), got {0:?}"
)]
pub struct ConfigMapRefError(String);

impl FromStr for ConfigMapRef {
    type Err = ConfigMapRefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || ConfigMapRefError(s.to_owned());
        let (namespace, name) = s.split_once('/').ok_or_else(invalid)?;
        if !is_dns_label(namespace) || !name.split('.').all(is_dns_label) || name.len() > 253 {
            return Err(invalid());
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for ConfigMapRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

/// Watches one ConfigMap and replaces the resolver's catalog from its `catalog.yaml` key;
/// runs until the future is dropped or its task aborted. A missing key or a deleted
/// ConfigMap is logged and counted, and the last good catalog stays. Pair it with
/// [`CatalogResolver::wait_loaded`] to wait for the first catalog at startup.
pub async fn watch_configmap(
    resolver: Arc<CatalogResolver>,
    client: Client,
    configmap: ConfigMapRef,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &configmap.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", configmap.name));
    let mut events = watcher(api, config).default_backoff().boxed();
    // A (re)list that finds no object is how a missing ConfigMap shows up.
    let mut seen_in_list = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => seen_in_list = false,
            Ok(watcher::Event::InitApply(cm) | watcher::Event::Apply(cm)) => {
                seen_in_list = true;
                apply_configmap(&resolver, &configmap, &cm);
            }
            Ok(watcher::Event::InitDone) => {
                if !seen_in_list {
                    resolver.record_source_error(&format!(
                        "ConfigMap {configmap} does not exist; keeping the last good catalog"
                    ));
                }
            }
            Ok(watcher::Event::Delete(_)) => resolver.record_source_error(&format!(
                "ConfigMap {configmap} was deleted; keeping the last good catalog"
            )),
            Err(error) => {
                // The watcher retries with backoff by itself; this is only worth a warning.
                tracing::warn!(configmap = %configmap, %error, "watching the catalog ConfigMap failed");
            }
        }
    }
}

fn apply_configmap(resolver: &CatalogResolver, configmap: &ConfigMapRef, cm: &ConfigMap) {
    match cm.data.as_ref().and_then(|data| data.get(CATALOG_KEY)) {
        Some(text) => {
            // Errors are logged and counted inside `replace`.
            let _ = resolver.replace(text);
        }
        None => resolver.record_source_error(&format!(
            "ConfigMap {configmap} has no data key {CATALOG_KEY:?}; keeping the last good catalog"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guid::g;
    use crate::resolver::MetadataResolver;

    const SUB_A: &str = "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a";

    #[tokio::test(start_paused = true)]
    async fn a_poll_reads_an_unchanged_file_once_and_a_changed_one_until_it_settles() {
        let a: Read = Ok(b"a".to_vec());
        let b: Read = Ok(b"b".to_vec());
        let c: Read = Ok(b"c".to_vec());
        let gone: Read = Err("cannot read".to_owned());
        // (what the poll saw last, what the file reads as, one read after another;
        //  what the poll settles on, reads done)
        type Case<'r> = (Option<&'r Read>, Vec<&'r Read>, Option<&'r Read>, usize);
        let cases: Vec<Case> = vec![
            (Some(&a), vec![&a], None, 1),
            (Some(&gone), vec![&gone], None, 1),
            (None, vec![&a, &a], Some(&a), 2),
            (Some(&a), vec![&b, &b], Some(&b), 2),
            (Some(&a), vec![&b, &c, &c], Some(&c), 3),
            (Some(&a), vec![&b, &a, &a], Some(&a), 3),
            (Some(&a), vec![&gone, &gone], Some(&gone), 2),
            (Some(&gone), vec![&a, &b, &b], Some(&b), 3),
        ];
        for (last, reads, settled, count) in cases {
            let done = std::sync::atomic::AtomicUsize::new(0);
            let read = |_: PathBuf| {
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let content = reads
                    .get(n)
                    .map_or_else(|| Err("read too often".to_owned()), |r| (*r).clone());
                async move { content }
            };
            let last_seen = last.map(seen);
            let got = read_changed(
                std::path::Path::new("catalog.yaml"),
                last_seen.as_ref(),
                read,
            )
            .await;
            let expected = settled.map(|r| (r.clone(), seen(r)));
            assert_eq!(got, expected, "{last:?} then {reads:?}");
            assert_eq!(done.into_inner(), count, "{last:?} then {reads:?}");
        }
    }

    fn catalog(state: &str) -> String {
        format!("subscriptions:\n- {{id: {SUB_A}, state: {state}, offer: CSP}}\n")
    }

    async fn state_of(resolver: &CatalogResolver) -> Option<String> {
        let metadata = resolver.subscription(g(SUB_A)).await.ok()??;
        Some(metadata.state.to_string())
    }

    /// Waits (bounded) until the resolver answers `want` for SUB_A.
    async fn eventually(resolver: &CatalogResolver, want: &str) {
        let reached = tokio::time::timeout(Duration::from_secs(5), async {
            while state_of(resolver).await.as_deref() != Some(want) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            reached.is_ok(),
            "state never became {want}: {:?}",
            state_of(resolver).await
        );
    }

    #[tokio::test]
    async fn file_watch_follows_edits_and_keeps_the_last_good_catalog() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("catalog.yaml");
        std::fs::write(&path, catalog("Enabled")).expect("write");
        let resolver = CatalogResolver::from_file(&path).await.expect("valid");
        let mut changes = resolver.changes();
        let task = tokio::spawn(watch_file_every(
            Arc::clone(&resolver),
            path.clone(),
            Duration::from_millis(50),
        ));

        std::fs::write(&path, catalog("Warned")).expect("write");
        eventually(&resolver, "Warned").await;
        let change = tokio::time::timeout(Duration::from_secs(5), changes.recv())
            .await
            .expect("in time")
            .expect("change");
        assert!(change.subscriptions.contains(&g(SUB_A)));

        // Rename-replace, as editors and atomic writers do.
        let staged = dir.path().join("catalog.yaml.tmp");
        std::fs::write(&staged, catalog("PastDue")).expect("write");
        std::fs::rename(&staged, &path).expect("rename");
        eventually(&resolver, "PastDue").await;

        std::fs::write(&path, "subscriptions: {").expect("write");
        let rejected = tokio::time::timeout(Duration::from_secs(5), async {
            while resolver.rejected_catalogs() == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(rejected.is_ok(), "the bad catalog was never rejected");
        assert_eq!(state_of(&resolver).await.as_deref(), Some("PastDue"));

        std::fs::remove_file(&path).expect("remove");
        let noticed = tokio::time::timeout(Duration::from_secs(5), async {
            while resolver.source_errors() == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(noticed.is_ok(), "the missing file was never noticed");
        assert_eq!(state_of(&resolver).await.as_deref(), Some("PastDue"));

        std::fs::write(&path, catalog("Deleted")).expect("write");
        eventually(&resolver, "Deleted").await;
        assert_eq!(
            resolver.rejected_catalogs(),
            1,
            "a bad file is reported once"
        );
        task.abort();
    }

    #[test]
    fn configmap_refs_parse_with_clear_errors() {
        let ok = "azs-csp/catalog.v1".parse::<ConfigMapRef>().expect("valid");
        assert_eq!(
            (ok.namespace.as_str(), ok.name.as_str()),
            ("azs-csp", "catalog.v1")
        );
        assert_eq!(ok.to_string(), "azs-csp/catalog.v1");
        for bad in [
            "catalog",
            "/catalog",
            "ns/",
            "ns/a/b",
            "NS/catalog",
            "ns/-x",
            "ns/a..b",
            "n_s/x",
        ] {
            let error = bad.parse::<ConfigMapRef>().expect_err(bad);
            assert!(
                error.to_string().contains("must be NAMESPACE/NAME"),
                "{error}"
            );
            assert!(error.to_string().contains(bad), "{error}");
        }
    }

    #[tokio::test]
    async fn configmap_content_is_applied_and_a_missing_key_keeps_the_last_good() {
        let resolver = CatalogResolver::new("configmap ns/cm");
        let cm_ref: ConfigMapRef = "ns/cm".parse().expect("valid");
        let mut cm = ConfigMap {
            data: Some([(CATALOG_KEY.to_string(), catalog("Enabled"))].into()),
            ..ConfigMap::default()
        };
        apply_configmap(&resolver, &cm_ref, &cm);
        assert_eq!(state_of(&resolver).await.as_deref(), Some("Enabled"));
        cm.data = Some([("other.yaml".to_string(), catalog("Disabled"))].into());
        apply_configmap(&resolver, &cm_ref, &cm);
        assert_eq!(resolver.source_errors(), 1);
        assert_eq!(state_of(&resolver).await.as_deref(), Some("Enabled"));
    }
}
