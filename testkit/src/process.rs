//! The operator binary as a child process against the test cluster.
//!
//! `AZS_CSP_TEST_OPERATOR=external` makes [`Operator::start`] start nothing: the tests then
//! run against an operator that someone else started (in a pod on a real node, say) and that
//! watches their namespaces; what needs the process itself (its pid, killing it, its flags)
//! fails with a message saying so. Its log is that of its pods, read through the API
//! ([`Operator::log_text`], with `AZS_CSP_TEST_OPERATOR_PODS`), and its catalog a ConfigMap
//! the tests may rewrite (`AZS_CSP_TEST_OPERATOR_CATALOG`, see [`external_catalog`]).
//! [`Operator::spawn`] (the benchmark) always starts one.

use std::{
    ffi::{OsStr, OsString},
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, LogParams},
};

use crate::cluster::{TIMEOUT, kubeconfig_path};

/// The environment variable that switches the tests to an operator they did not start.
pub const OPERATOR_ENV: &str = "AZS_CSP_TEST_OPERATOR";
/// Where the pods of the external operator are: `NAMESPACE/LABEL-SELECTOR`.
pub const OPERATOR_PODS_ENV: &str = "AZS_CSP_TEST_OPERATOR_PODS";
/// The ConfigMap the external operator reads its catalog from: `NAMESPACE/NAME`.
pub const OPERATOR_CATALOG_ENV: &str = "AZS_CSP_TEST_OPERATOR_CATALOG";

/// Whether the tests run against an operator they did not start (`AZS_CSP_TEST_OPERATOR=external`).
pub fn external() -> bool {
    std::env::var(OPERATOR_ENV).is_ok_and(|v| v == "external")
}

/// `(namespace, rest)` of a `NAMESPACE/REST` variable; a label selector's keys may hold `/`
/// themselves, a namespace never does.
fn namespaced_env(name: &str) -> Result<(String, String), String> {
    let value = std::env::var(name)
        .map_err(|_| format!("{OPERATOR_ENV}=external needs {name}=NAMESPACE/..."))?;
    value
        .split_once('/')
        .filter(|(ns, rest)| !ns.is_empty() && !rest.is_empty())
        .map(|(ns, rest)| (ns.to_string(), rest.to_string()))
        .ok_or_else(|| format!("{name}={value} is not NAMESPACE/..."))
}

/// The external operator's catalog ConfigMap, `(namespace, name)`, from
/// `AZS_CSP_TEST_OPERATOR_CATALOG`; an error naming the variable when it is not set.
pub fn external_catalog() -> Result<(String, String), String> {
    namespaced_env(OPERATOR_CATALOG_ENV)
}

/// The current logs of the external operator's pods (`AZS_CSP_TEST_OPERATOR_PODS`), one
/// after another, each under a `---- pod NAME ----` line.
pub async fn external_logs(client: &Client) -> Result<String, String> {
    let (namespace, selector) = namespaced_env(OPERATOR_PODS_ENV)?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| format!("listing pods {selector} in {namespace}: {e}"))?;
    if list.items.is_empty() {
        return Err(format!("no pod {selector} in {namespace}"));
    }
    let mut text = String::new();
    for pod in list {
        let name = pod.name_any();
        let log = pods
            .logs(&name, &LogParams::default())
            .await
            .map_err(|e| format!("logs of {namespace}/{name}: {e}"))?;
        text.push_str(&format!("---- pod {name} ----\n{log}"));
    }
    Ok(text)
}

/// How to start `BINARY run ARGS`.
pub struct OperatorCommand {
    binary: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    log: Option<PathBuf>,
}

impl OperatorCommand {
    /// `binary run --metrics-addr 127.0.0.1:0` with the tests' kubeconfig and debug logging.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            args: vec!["--metrics-addr".into(), "127.0.0.1:0".into()],
            env: vec![
                ("KUBECONFIG".into(), kubeconfig_path().into()),
                ("RUST_LOG".into(), "info,azs_csp_operator=debug".into()),
            ],
            log: None,
        }
    }

    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Sets (or overrides) an environment variable of the process.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// [`Self::env`] for each pair.
    pub fn envs<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        self,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        pairs
            .into_iter()
            .fold(self, |command, (key, value)| command.env(key, value))
    }

    /// Where stdout and stderr go (default: a temporary directory of the process).
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }
}

/// The operator process; killed on drop (its log is printed when a test panics).
pub struct Operator {
    /// `None` for an external operator.
    child: Option<Child>,
    pub log: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Operator {
    /// Starts the process for a test (fails the test when it cannot), or, with
    /// `AZS_CSP_TEST_OPERATOR=external`, stands for the operator someone else runs.
    pub fn start(command: OperatorCommand) -> Self {
        if external() {
            return Self {
                child: None,
                log: PathBuf::new(),
                _dir: None,
            };
        }
        Self::spawn(command).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the process, whatever `AZS_CSP_TEST_OPERATOR` says.
    pub fn spawn(command: OperatorCommand) -> Result<Self, String> {
        let OperatorCommand {
            binary,
            args,
            env,
            log,
        } = command;
        if !binary.exists() {
            return Err(format!(
                "{} does not exist: build it first",
                binary.display()
            ));
        }
        let (log, dir) = match log {
            Some(log) => (log, None),
            None => {
                let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
                (dir.path().join("operator.log"), Some(dir))
            }
        };
        let file = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let stderr = file
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(&binary)
            .arg("run")
            .args(&args)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        Ok(Self {
            child: Some(child),
            log,
            _dir: dir,
        })
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().unwrap_or_else(|| {
            panic!(
                "this test needs an operator process it started itself, not {OPERATOR_ENV}=external"
            )
        })
    }

    pub fn is_external(&self) -> bool {
        self.child.is_none()
    }

    /// The log of the process this test started (empty for an external operator: see
    /// [`Operator::log_text`]).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log, whoever started the operator: this process's file, or the logs of the
    /// external operator's pods read through the API ([`external_logs`]).
    pub async fn log_text(&self, client: &Client) -> String {
        if self.is_external() {
            external_logs(client)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        } else {
            self.logs()
        }
    }

    /// Whether the process is still running (an external operator: always).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// The exit status, when the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child().try_wait().ok().flatten()
    }

    pub fn pid(&self) -> u32 {
        match &self.child {
            Some(child) => child.id(),
            None => panic!("an external operator ({OPERATOR_ENV}=external) has no pid here"),
        }
    }

    /// Kills the process at once (SIGKILL: no cleanup, no lease release) and reaps it.
    pub fn kill(&mut self) {
        let child = self.child();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends SIGTERM, as the kubelet does to stop a pod.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// SIGTERM, then SIGKILL after 10 s. Only ever this child, by its pid.
    pub fn stop(&mut self) {
        if self.child.is_none() || self.exited().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }

    /// The address of the metrics and health endpoints, read from the log line "metrics server
    /// listening" (text or JSON logs; the tests bind port 0).
    pub fn metrics_addr(&self) -> SocketAddr {
        assert!(
            !self.is_external(),
            "the metrics address of an external operator ({OPERATOR_ENV}=external) is unknown"
        );
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let logs = self.logs();
            let found = logs.lines().find_map(logged_metrics_addr);
            if let Some(addr) = found {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "the operator did not log its metrics address within {TIMEOUT:?}; logs:\n{logs}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit by itself and returns its exit code and logs.
    pub fn wait_exit(mut self, timeout: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return (status.code(), self.logs());
            }
            if Instant::now() > deadline {
                let logs = self.logs();
                panic!("operator did not exit within {timeout:?}; logs:\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

/// `addr` of the "metrics server listening" line, in the text or the JSON log format.
fn logged_metrics_addr(line: &str) -> Option<SocketAddr> {
    const MESSAGE: &str = "metrics server listening";
    if let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) {
        if !entry["message"].as_str()?.contains(MESSAGE) {
            return None;
        }
        return entry["addr"].as_str()?.parse().ok();
    }
    let marker = format!("{MESSAGE} addr=");
    let rest = &line[line.find(&marker)? + marker.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// A plain HTTP/1.1 GET to the operator's endpoints: (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
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

impl Drop for Operator {
    fn drop(&mut self) {
        let Some(child) = &mut self.child else {
            return;
        };
        let _ = child.kill();
        let _ = child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- operator log ({}) ----\n{}",
                self.log.display(),
                self.logs()
            );
        }
    }
}
