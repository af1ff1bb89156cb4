//! Shared helpers of the integration tests: a client for the test cluster, a namespace per
//! test, the operator binary as a child process, and waiting on conditions with timeouts.
#![allow(dead_code)] // each test binary uses its own subset

pub mod faults;
pub mod upstream;

use std::{
    fmt::Debug,
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use azs_csp_operator::api::{CustomerSubscription, Registration};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, Config, Resource, ResourceExt,
    api::{DeleteParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::wait::await_condition,
};
use serde::de::DeserializeOwned;

pub const TIMEOUT: Duration = Duration::from_secs(30);

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `KUBECONFIG` when set (e.g. a kind cluster), else the local cluster's `.cluster/kubeconfig`.
pub fn kubeconfig_path() -> PathBuf {
    std::env::var_os("KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cluster/kubeconfig"))
}

const HOW_TO_START: &str = "no Kubernetes cluster is reachable for the integration tests: start the local one with `make cluster-up` (or run `make test`, which does), or point KUBECONFIG at a cluster";

/// A client for the test cluster. Fails the test (never skips it) when there is none.
pub async fn client() -> Client {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("{HOW_TO_START} (cannot read {}: {e})", path.display()));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{HOW_TO_START} (bad kubeconfig {}: {e})", path.display()));
    let client = Client::try_from(config).unwrap_or_else(|e| panic!("{HOW_TO_START} ({e})"));
    match client.apiserver_version().await {
        Ok(version) => {
            static PRINTED: std::sync::Once = std::sync::Once::new();
            PRINTED.call_once(|| {
                eprintln!(
                    "integration tests run against kube-apiserver {}",
                    version.git_version
                )
            });
        }
        Err(e) => panic!("{HOW_TO_START} ({}: {e})", path.display()),
    }
    client
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A namespace of one test, deleted (without waiting) when dropped.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl TestNamespace {
    pub async fn new(prefix: &str) -> Self {
        let client = client().await;
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"azs-csp-operator.test": "true"}}
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("cannot create namespace {name}: {e}"));
        Self { name, client }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Creates an object from YAML (namespace filled in).
    pub async fn create<K>(&self, yaml: &str) -> K
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + Debug,
    {
        let obj: K =
            serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("bad test YAML: {e}\n{yaml}"));
        self.api::<K>()
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", obj.name_any()))
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop cannot await, and the test's client is driven by the test's runtime, which this
        // thread is blocking: a fresh runtime with a fresh client sends the delete.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(kubeconfig) = Kubeconfig::read_from(kubeconfig_path()) else {
                    return;
                };
                let Ok(config) =
                    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await
                else {
                    return;
                };
                let Ok(client) = Client::try_from(config) else {
                    return;
                };
                let _ = Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::background())
                    .await;
            });
        })
        .join();
    }
}

/// Waits until `condition` holds for the named object, or fails with its last state.
pub async fn wait_for<K>(api: &Api<K>, name: &str, what: &str, condition: impl Fn(&K) -> bool) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let waited = tokio::time::timeout(
        TIMEOUT,
        await_condition(api.clone(), name, |obj: Option<&K>| {
            obj.is_some_and(&condition)
        }),
    )
    .await;
    match waited {
        Ok(Ok(Some(obj))) => obj,
        Ok(Ok(None)) => panic!("{name} vanished while waiting for {what}"),
        Ok(Err(e)) => panic!("watch on {name} failed while waiting for {what}: {e}"),
        Err(_) => {
            let last = api.get_opt(name).await;
            panic!("timed out after {TIMEOUT:?} waiting for {name}: {what}; last seen: {last:#?}")
        }
    }
}

/// Waits until the named object is gone.
pub async fn wait_gone<K>(api: &Api<K>, name: &str)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let waited = tokio::time::timeout(
        TIMEOUT,
        kube::runtime::wait::await_condition(
            api.clone(),
            name,
            kube::runtime::conditions::is_deleted(""),
        ),
    )
    .await;
    if waited.is_err() {
        let last = api.get_opt(name).await;
        panic!(
            "timed out after {TIMEOUT:?} waiting for {name} to be deleted; last seen: {last:#?}"
        );
    }
}

fn ready(
    conditions: &[azs_csp_operator::api::Condition],
) -> Option<&azs_csp_operator::api::Condition> {
    conditions.iter().find(|c| c.type_ == "Ready")
}

/// The Ready reason of a CustomerSubscription, when written for its current generation.
pub fn customer_reason(cs: &CustomerSubscription) -> Option<String> {
    let status = cs.status.as_ref()?;
    let condition = ready(&status.conditions)?;
    (condition.observed_generation == cs.metadata.generation).then(|| condition.reason.clone())
}

/// The Ready reason of a Registration, when written for its current generation.
pub fn registration_reason(reg: &Registration) -> Option<String> {
    let status = reg.status.as_ref()?;
    let condition = ready(&status.conditions)?;
    (condition.observed_generation == reg.metadata.generation).then(|| condition.reason.clone())
}

/// Waits until the CustomerSubscription's Ready reason (current generation) is `reason`.
pub async fn wait_customer_reason(
    ns: &TestNamespace,
    name: &str,
    reason: &str,
) -> CustomerSubscription {
    wait_for(
        &ns.api::<CustomerSubscription>(),
        name,
        &format!("Ready reason {reason}"),
        |cs| customer_reason(cs).as_deref() == Some(reason),
    )
    .await
}

/// Waits until the Registration's Ready reason (current generation) is `reason`.
pub async fn wait_registration_reason(
    ns: &TestNamespace,
    name: &str,
    reason: &str,
) -> Registration {
    wait_for(
        &ns.api::<Registration>(),
        name,
        &format!("Ready reason {reason}"),
        |r| registration_reason(r).as_deref() == Some(reason),
    )
    .await
}

/// The operator binary, run as a child process against the test cluster; killed on drop.
pub struct Operator {
    child: Child,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Operator {
    /// Starts `azs-csp-operator run ARGS` (add `--watch-namespace` to keep tests apart).
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("operator.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_azs-csp-operator"));
        command
            .arg("run")
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(args)
            .env("KUBECONFIG", kubeconfig_path())
            .env("RUST_LOG", "info,azs_csp_operator=debug")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("cannot start the operator binary");
        Self {
            child,
            log,
            _dir: dir,
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process ID of the operator.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process at once (SIGKILL: no cleanup, no lease release) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM, as the kubelet does to stop a pod.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// The address of the metrics and health endpoints, read from the log line
    /// `metrics server listening addr=HOST:PORT` (the tests bind port 0).
    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        const MARKER: &str = "metrics server listening addr=";
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let logs = self.logs();
            let found = logs.lines().find_map(|line| {
                let rest = &line[line.find(MARKER)? + MARKER.len()..];
                rest.split_whitespace().next()?.parse().ok()
            });
            if let Some(addr) = found {
                return addr;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the operator did not log its metrics address within {TIMEOUT:?}; logs:\n{logs}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit by itself and returns its exit code and logs.
    pub fn wait_exit(mut self, timeout: Duration) -> (Option<i32>, String) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status.code(), self.logs());
            }
            if std::time::Instant::now() > deadline {
                let logs = self.logs();
                panic!("operator did not exit within {timeout:?}; logs:\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- operator log ({}) ----\n{}",
                self.log.display(),
                self.logs()
            );
        }
    }
}

/// A catalog file the test can rewrite while the operator watches it.
pub struct CatalogFile {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl CatalogFile {
    pub fn new(yaml: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("catalog.yaml");
        std::fs::write(&path, yaml).expect("write catalog");
        Self { _dir: dir, path }
    }

    /// Replaces the content the way editors and ConfigMap volumes do: write aside, rename.
    pub fn replace(&self, yaml: &str) {
        let tmp = self.path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp).expect("write catalog");
        file.write_all(yaml.as_bytes()).expect("write catalog");
        drop(file);
        std::fs::rename(&tmp, &self.path).expect("rename catalog");
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("utf-8 path")
    }
}

/// Path of a cached tool (kubectl, helm) built by `make control-plane`.
pub fn tool(name: &str) -> PathBuf {
    let output = Command::new(repo_root().join("hack/bin-dir.sh"))
        .output()
        .expect("hack/bin-dir.sh");
    let dir = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let path = Path::new(&dir).join(name);
    assert!(
        path.exists(),
        "{} is not built: run `make control-plane`",
        path.display()
    );
    path
}

/// Installs (server-side applies) the CRDs of this build and waits until they are served.
pub async fn ensure_crds(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in azs_csp_operator::crd::definitions() {
        let name = crd.name_any();
        api.patch(
            &name,
            &kube::api::PatchParams::apply("azs-csp-operator-tests").force(),
            &kube::api::Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot install CRD {name}: {e}"));
        let established = tokio::time::timeout(
            TIMEOUT,
            await_condition(
                api.clone(),
                &name,
                kube::runtime::conditions::is_crd_established(),
            ),
        )
        .await;
        assert!(
            matches!(established, Ok(Ok(_))),
            "CRD {name} did not become established"
        );
    }
}

/// A namespace with the CRDs installed and an operator watching only it, fed by `catalog`.
pub struct Scenario {
    pub ns: TestNamespace,
    pub catalog: CatalogFile,
    pub operator: Operator,
}

impl Scenario {
    pub async fn start(prefix: &str, catalog_yaml: &str) -> Self {
        let ns = TestNamespace::new(prefix).await;
        ensure_crds(&ns.client).await;
        let catalog = CatalogFile::new(catalog_yaml);
        let operator = Operator::start(&[
            "--catalog-file",
            catalog.path_str(),
            "--watch-namespace",
            &ns.name,
        ]);
        Self {
            ns,
            catalog,
            operator,
        }
    }
}

/// A plain HTTP/1.1 GET to the operator's endpoints: (status code, body).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let invalid = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response");
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(invalid)?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .ok_or_else(invalid)?;
    Ok((code, body))
}
