//! The test cluster: a client, a namespace per test, CRDs installed, many objects created
//! concurrently, and waiting on a condition with a timeout.

use std::{
    fmt::Debug,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use futures::{StreamExt, stream};
use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config, Resource, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{conditions::is_crd_established, wait::await_condition},
};
use serde::{Serialize, de::DeserializeOwned};

/// How long a test waits for a condition.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The repository (the workspace root).
pub fn repo_root() -> PathBuf {
    let kit = Path::new(env!("CARGO_MANIFEST_DIR"));
    kit.parent().unwrap_or(kit).to_path_buf()
}

/// Path of a cached tool (kubectl, helm) built by `make control-plane`.
pub fn tool(name: &str) -> PathBuf {
    let output = std::process::Command::new(repo_root().join("hack/bin-dir.sh"))
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

/// `KUBECONFIG` when set (e.g. a kind cluster), else the local cluster's `.cluster/kubeconfig`.
pub fn kubeconfig_path() -> PathBuf {
    std::env::var_os("KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cluster/kubeconfig"))
}

const HOW_TO_START: &str = "no Kubernetes cluster is reachable for the integration tests: start the local one with `make cluster-up` (or run `make test`, which does), or point KUBECONFIG at a cluster";

/// The client configuration of a kubeconfig file.
pub async fn config(kubeconfig: &Path) -> Result<Config, String> {
    let file = Kubeconfig::read_from(kubeconfig)
        .map_err(|e| format!("cannot read {} ({e})", kubeconfig.display()))?;
    Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("bad kubeconfig {} ({e})", kubeconfig.display()))
}

/// A client for the local control plane only: refuses a kubeconfig that points elsewhere.
pub async fn local_client(kubeconfig: &Path) -> Result<Client, String> {
    let config = config(kubeconfig)
        .await
        .map_err(|e| format!("{e}; start the local cluster with `make cluster-up`"))?;
    let host = config.cluster_url.host().unwrap_or_default();
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1") {
        return Err(format!(
            "only the local control plane is used, but {} points at {host}",
            kubeconfig.display()
        ));
    }
    Client::try_from(config).map_err(|e| e.to_string())
}

/// A client for the test cluster. Fails the test (never skips it) when there is none.
pub async fn client() -> Client {
    let path = kubeconfig_path();
    let config = config(&path)
        .await
        .unwrap_or_else(|e| panic!("{HOW_TO_START} ({e})"));
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

/// Creates namespace `name` with these labels.
pub async fn create_namespace(
    client: &Client,
    name: &str,
    labels: &[(&str, &str)],
) -> Result<Namespace, kube::Error> {
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(name.to_owned());
    namespace.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
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
        create_namespace(&client, &name, &[("azs-csp-operator.test", "true")])
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
            + Serialize
            + Debug,
    {
        let obj: K = from_yaml(yaml);
        self.api::<K>()
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", obj.name_any()))
    }
}

/// Sends `value` as it is (as `kubectl apply` would) as a `K` into the namespace, without
/// the typed client's checks: for what admission must reject.
pub async fn create_untyped<K>(
    ns: &TestNamespace,
    mut value: serde_json::Value,
) -> Result<DynamicObject, kube::Error>
where
    K: Resource<DynamicType = ()>,
{
    let resource = ApiResource::erase::<K>(&());
    value["apiVersion"] = serde_json::json!(resource.api_version);
    value["kind"] = serde_json::json!(resource.kind);
    let obj: DynamicObject = serde_json::from_value(value).expect("a DynamicObject");
    Api::<DynamicObject>::namespaced_with(ns.client.clone(), &ns.name, &resource)
        .create(&PostParams::default(), &obj)
        .await
}

/// A typed object from test YAML (read as JSON first, as the API server reads manifests).
pub fn from_yaml<K: DeserializeOwned>(yaml: &str) -> K {
    let value: serde_json::Value =
        serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("bad test YAML: {e}\n{yaml}"));
    serde_json::from_value(value).unwrap_or_else(|e| panic!("bad test object: {e}\n{yaml}"))
}

/// The documents of a multi-document YAML stream as JSON values (empty documents dropped).
pub fn yaml_documents(text: &str) -> Vec<serde_json::Value> {
    let mut options = serde_saphyr::Options::default();
    // YAML 1.2, as the API server reads manifests: `yes` and `on` are text.
    options.strict_booleans = true;
    serde_saphyr::from_multiple_with_options::<serde_json::Value>(text, options)
        .unwrap_or_else(|e| panic!("bad YAML stream: {e}\n{text}"))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// Runs `task` to its end on a runtime of its own in a thread of its own, and waits for it.
/// For `Drop`, which cannot await: the test's client is driven by the test's runtime, which
/// the dropping thread is blocking, so `task` makes a client of its own.
pub fn run_to_completion<F>(task: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = ()>,
{
    let _ = std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            runtime.block_on(task());
        }
    })
    .join();
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let name = self.name.clone();
        run_to_completion(move || async move {
            let Ok(config) = config(&kubeconfig_path()).await else {
                return;
            };
            let Ok(client) = Client::try_from(config) else {
                return;
            };
            let _ = Api::<Namespace>::all(client)
                .delete(&name, &DeleteParams::background())
                .await;
        });
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
    // Not kube's `is_deleted(uid)`: with an empty uid it holds for any object still there.
    let waited = tokio::time::timeout(
        TIMEOUT,
        await_condition(api.clone(), name, |obj: Option<&K>| obj.is_none()),
    )
    .await;
    if waited.is_err() {
        let last = api.get_opt(name).await;
        panic!(
            "timed out after {TIMEOUT:?} waiting for {name} to be deleted; last seen: {last:#?}"
        );
    }
}

/// Installs (server-side applies, as `manager`) these CRDs and waits until they are served.
pub async fn ensure_crds(
    client: &Client,
    crds: impl IntoIterator<Item = CustomResourceDefinition>,
    manager: &str,
) -> Result<(), String> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(&crd),
        )
        .await
        .map_err(|e| format!("cannot install CRD {name}: {e}"))?;
        let established = tokio::time::timeout(
            TIMEOUT,
            await_condition(api.clone(), &name, is_crd_established()),
        )
        .await;
        if !matches!(established, Ok(Ok(_))) {
            return Err(format!(
                "CRD {name} did not become established within {TIMEOUT:?}"
            ));
        }
    }
    Ok(())
}

/// Throttling, server errors and transport errors are worth another try.
pub fn retryable(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        _ => true,
    }
}

/// Creates `obj`; retries throttling, server errors and transport errors; an object that
/// already exists after a retry (a retried create that had landed) counts as created.
pub async fn create_retrying<K>(api: &Api<K>, obj: &K) -> Result<(), String>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let mut attempt = 0;
    loop {
        match api.create(&PostParams::default(), obj).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt > 0 => return Ok(()),
            Err(e) if retryable(&e) && attempt < 8 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 << attempt.min(5))).await;
            }
            Err(e) => return Err(format!("cannot create {}: {e}", obj.name_any())),
        }
    }
}

/// Creates `objects`, `concurrency` at a time (each with [`create_retrying`]).
pub async fn create_all<K>(
    api: &Api<K>,
    objects: impl IntoIterator<Item = K>,
    concurrency: usize,
) -> Result<(), String>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let objects: Vec<K> = objects.into_iter().collect();
    let mut results =
        stream::iter(objects.iter().map(|o| create_retrying(api, o))).buffer_unordered(concurrency);
    while let Some(result) = results.next().await {
        result?;
    }
    Ok(())
}
