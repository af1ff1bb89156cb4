//! The Helm chart (charts/azs-csp-operator): its CRDs are the repository's, it lints, renders
//! what the contract asks (restricted pod, least-privilege RBAC, flags per value), passes
//! checkov and kubeconform, is accepted by the API server, installs, and the operator runs
//! with nothing but the chart's ServiceAccount token.
//!
//! Tools: the cached helm and kubectl (`make control-plane`; HELM / KUBECTL override them, e.g.
//! on a kind machine), checkov and kubeconform from `hack/tools.sh` (installed into the cache
//! on first use; `make tools`). The same static checks run as `make chart-check`.

mod common {
    pub mod process;
    pub mod reasons;
}

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use k8s_openapi::api::{
    apps::v1::Deployment, authentication::v1::TokenRequest, core::v1::ServiceAccount,
    events::v1::Event,
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams},
    config::Kubeconfig,
};
use serde_json::{Value, json};

use azs_csp_operator::api::{CustomerSubscription, Registration};
use azs_csp_testkit::cluster::{TestNamespace, repo_root};
use common::{
    process::start_operator_with_env,
    reasons::{wait_customer_reason, wait_registration_reason},
};

const RELEASE: &str = "azs-csp-operator";
const NS: &str = "azs-csp-system";

fn chart_dir() -> PathBuf {
    repo_root().join("charts/azs-csp-operator")
}

/// `$ENV` when set, else the cached tool `name`.
fn tool(env: &str, name: &str) -> PathBuf {
    std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| azs_csp_testkit::cluster::tool(name))
}

fn helm() -> Command {
    let mut command = Command::new(tool("HELM", "helm"));
    command.env("KUBECONFIG", azs_csp_testkit::cluster::kubeconfig_path());
    command
}

fn kubectl() -> Command {
    let mut command = Command::new(tool("KUBECTL", "kubectl"));
    command
        .arg("--kubeconfig")
        .arg(azs_csp_testkit::cluster::kubeconfig_path());
    command
}

/// Runs the command; returns (success, stdout, stderr).
fn output(command: &mut Command) -> (bool, String, String) {
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the command, fails the test with its output unless it succeeds; returns stdout.
fn run(command: &mut Command) -> String {
    let (ok, stdout, stderr) = output(command);
    assert!(ok, "{command:?} failed:\n{stdout}\n{stderr}");
    stdout
}

/// Path of a linter installed by hack/tools.sh (installing it on first use).
fn linter(name: &str) -> PathBuf {
    let (ok, stdout, stderr) =
        output(Command::new(repo_root().join("hack/tools.sh")).args(["path", name]));
    assert!(
        ok,
        "cannot install {name} with hack/tools.sh (run `make tools` and see why):\n{stderr}"
    );
    PathBuf::from(stdout.trim())
}

/// A set of values the chart is checked with: name, `--set` arguments.
struct Variant {
    name: String,
    sets: Vec<String>,
}

/// The value sets every static check covers (hack/chart-variants.txt). `ns1`, `ns2`: the
/// watched namespaces.
fn variants(ns1: &str, ns2: &str) -> Vec<Variant> {
    include_str!("../hack/chart-variants.txt")
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next().unwrap_or_default().to_string();
            let sets = words
                .map(|set| set.replace("@NS1@", ns1).replace("@NS2@", ns2))
                .collect();
            Variant { name, sets }
        })
        .collect()
}

fn set_args(sets: &[String]) -> Vec<String> {
    sets.iter()
        .flat_map(|s| ["--set".to_string(), s.clone()])
        .collect()
}

/// `helm template` output, or the error text when rendering fails.
fn try_template(namespace: &str, sets: &[String]) -> Result<String, String> {
    let (ok, stdout, stderr) = output(
        helm()
            .args(["template", RELEASE])
            .arg(chart_dir())
            .args(["--namespace", namespace])
            .args(set_args(sets)),
    );
    if ok { Ok(stdout) } else { Err(stderr) }
}

fn template(namespace: &str, sets: &[String]) -> String {
    try_template(namespace, sets).unwrap_or_else(|e| panic!("helm template {sets:?} failed: {e}"))
}

fn render(namespace: &str, sets: &[&str]) -> Vec<Value> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    azs_csp_testkit::cluster::yaml_documents(&template(namespace, &sets))
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn args_of(docs: &[Value]) -> Vec<String> {
    let deployment = one(docs, "Deployment", RELEASE);
    serde_json::from_value(deployment["spec"]["template"]["spec"]["containers"][0]["args"].clone())
        .expect("args are strings")
}

/// The operator's rules on its own kinds and Events (Role or ClusterRole).
fn operator_rules() -> Value {
    json!([
        {"apiGroups": ["csp.azurestack.io"], "resources": ["registrations"], "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": ["csp.azurestack.io"], "resources": ["registrations/status"], "verbs": ["patch"]},
        {"apiGroups": ["csp.azurestack.io"], "resources": ["customersubscriptions"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["csp.azurestack.io"], "resources": ["customersubscriptions/status"], "verbs": ["patch"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    ])
}

// ---------------------------------------------------------------- static checks

#[test]
fn the_chart_crds_are_the_repository_crds_and_are_kept_on_uninstall() {
    let repo = repo_root().join("crds");
    let copies = chart_dir().join("files/crds");
    let names = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect();
        names.sort();
        names
    };
    let files = names(&repo);
    assert!(!files.is_empty(), "no CRDs in crds/");
    assert_eq!(
        files,
        names(&copies),
        "the chart's CRD files differ from crds/: run `make chart-crds`"
    );
    for file in &files {
        let original = std::fs::read(repo.join(file)).unwrap();
        let copy = std::fs::read(copies.join(file)).unwrap();
        assert!(
            original == copy,
            "{file} in the chart differs from crds/{file}: run `make chart-crds`"
        );
    }

    let docs = render(NS, &[]);
    let rendered = of_kind(&docs, "CustomResourceDefinition");
    assert_eq!(rendered.len(), files.len(), "one rendered CRD per file");
    for file in &files {
        let source = azs_csp_testkit::cluster::yaml_documents(
            &std::fs::read_to_string(repo.join(file)).unwrap(),
        );
        assert_eq!(source.len(), 1, "{file}: one CRD per file");
        let source = &source[0];
        let name = source["metadata"]["name"].as_str().unwrap();
        let mut crd = one(&docs, "CustomResourceDefinition", name).clone();
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{name} must survive helm uninstall"
        );
        // Apart from the injected annotation, the rendered CRD is the file's.
        let annotations = crd["metadata"]["annotations"].as_object_mut().unwrap();
        annotations.remove("helm.sh/resource-policy");
        if annotations.is_empty() {
            crd["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("annotations");
        }
        assert_eq!(&crd, source, "rendered {name} differs from crds/{file}");
    }

    let without = render(NS, &["crds.install=false"]);
    assert!(of_kind(&without, "CustomResourceDefinition").is_empty());
}

#[test]
fn helm_lint_passes_for_every_set_of_values() {
    for variant in variants("partner-a", "partner-b") {
        run(helm()
            .args(["lint", "--strict", "--namespace", NS])
            .arg(chart_dir())
            .args(set_args(&variant.sets)));
    }
}

#[test]
fn the_pod_meets_the_restricted_pod_security_standard_with_probes_and_resources() {
    let docs = render(NS, &[]);
    let service_account = one(&docs, "ServiceAccount", RELEASE);
    assert_eq!(service_account["metadata"]["namespace"], NS);
    assert_eq!(service_account["automountServiceAccountToken"], false);

    let deployment = one(&docs, "Deployment", RELEASE);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], RELEASE);
    assert_eq!(
        pod["automountServiceAccountToken"], true,
        "the operator needs the API"
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    for key in ["hostNetwork", "hostPID", "hostIPC", "volumes"] {
        assert!(pod.get(key).is_none(), "unexpected pod {key}");
    }

    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(
        c["image"], "azs-csp-operator:0.1.0",
        "tag defaults to appVersion"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert!(sc["capabilities"].get("add").is_none());
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][resource].is_string(),
                "resources.{kind}.{resource}"
            );
        }
    }
    assert_eq!(
        c["ports"],
        json!([{"name": "http-metrics", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "http-metrics"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "http-metrics"})
    );
    let env = c["env"].as_array().unwrap();
    let pod_name = env
        .iter()
        .find(|e| e["name"] == "POD_NAME")
        .expect("POD_NAME");
    assert_eq!(
        pod_name["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        deployment["spec"]["strategy"]["type"], "Recreate",
        "one writer at a time"
    );

    let service = one(&docs, "Service", &format!("{RELEASE}-metrics"));
    assert_eq!(service["spec"]["ports"][0]["name"], "http-metrics");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http-metrics");
    let policy = one(&docs, "NetworkPolicy", RELEASE);
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    assert_eq!(
        policy["spec"]["ingress"][0]["ports"][0]["port"],
        "http-metrics"
    );
    assert!(
        of_kind(&docs, "ServiceMonitor").is_empty(),
        "ServiceMonitor is opt-in"
    );

    // Every namespaced object lands in the release namespace.
    for doc in &docs {
        let cluster_scoped = [
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRoleBinding",
        ];
        if !cluster_scoped.contains(&doc["kind"].as_str().unwrap()) {
            assert_eq!(doc["metadata"]["namespace"], NS, "{}", doc["kind"]);
        }
    }
}

#[test]
fn the_flags_follow_the_values() {
    let catalog = render(NS, &[]);
    assert_eq!(
        args_of(&catalog),
        [
            "run",
            "--log-format=json",
            "--metrics-addr=0.0.0.0:8080",
            "--resolver=catalog",
            "--catalog-configmap=azs-csp-system/azs-csp-operator-catalog",
        ]
    );
    let configmap = one(&catalog, "ConfigMap", "azs-csp-operator-catalog");
    let content: Value =
        serde_saphyr::from_str(configmap["data"]["catalog.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(
        content,
        json!({"subscriptions": [], "multitenancyApprovals": []})
    );

    // The catalog from a file, as `--set-file` passes it.
    let example = repo_root().join("examples/catalog.yaml");
    let rendered = azs_csp_testkit::cluster::yaml_documents(&run(helm()
        .args(["template", RELEASE])
        .arg(chart_dir())
        .args(["--namespace", NS, "--set-file"])
        .arg(format!("catalog.data={}", example.display()))));
    let configmap = one(&rendered, "ConfigMap", "azs-csp-operator-catalog");
    assert_eq!(
        configmap["data"]["catalog.yaml"]
            .as_str()
            .unwrap()
            .trim_end(),
        std::fs::read_to_string(&example).unwrap().trim_end()
    );

    let ha = render(
        NS,
        &[
            "replicaCount=2",
            "watchNamespaces={partner-a,partner-b}",
            "logFormat=text",
        ],
    );
    let args = args_of(&ha);
    for expected in [
        "--watch-namespace=partner-a",
        "--watch-namespace=partner-b",
        "--leader-election",
        "--log-format=text",
    ] {
        assert!(
            args.iter().any(|a| a == expected),
            "{expected} missing from {args:?}"
        );
    }
    assert_eq!(one(&ha, "Deployment", RELEASE)["spec"]["replicas"], 2);
    assert_eq!(
        one(&ha, "Deployment", RELEASE)["spec"]["strategy"]["type"],
        "RollingUpdate"
    );

    let http = render(
        NS,
        &[
            "resolver.type=http",
            "http.url=https://metadata.example.com/api",
            "http.timeout=2s",
            "http.cacheTTL=1m",
            "http.tokenSecret.name=resolver-token",
            "http.caSecret.name=resolver-ca",
        ],
    );
    assert_eq!(
        args_of(&http),
        [
            "run",
            "--log-format=json",
            "--metrics-addr=0.0.0.0:8080",
            "--resolver=http",
            "--resolver-url=https://metadata.example.com/api",
            "--resolver-timeout=2s",
            "--cache-ttl=1m",
            "--resolver-token-file=/var/run/secrets/azs-csp-operator/resolver-token/token",
            "--resolver-ca-file=/var/run/secrets/azs-csp-operator/resolver-ca/ca.crt",
        ]
    );
    let pod = &one(&http, "Deployment", RELEASE)["spec"]["template"]["spec"];
    let volumes = pod["volumes"].as_array().unwrap();
    assert_eq!(volumes[0]["secret"]["secretName"], "resolver-token");
    assert_eq!(volumes[1]["secret"]["secretName"], "resolver-ca");
    let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().all(|m| m["readOnly"] == true));
    assert!(
        of_kind(&http, "ConfigMap").is_empty(),
        "no catalog with the http resolver"
    );
    assert!(
        !of_kind(&http, "Role")
            .iter()
            .any(|r| r["metadata"]["name"] == "azs-csp-operator-catalog"),
        "no ConfigMap access with the http resolver"
    );

    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let pinned = render(
        NS,
        &[
            "image.repository=registry.example.com/azs",
            &format!("image.digest={digest}"),
        ],
    );
    assert_eq!(
        one(&pinned, "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("registry.example.com/azs@{digest}")
    );

    let monitored = render(NS, &["metrics.serviceMonitor.enabled=true"]);
    let monitor = one(&monitored, "ServiceMonitor", RELEASE);
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "http-metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");

    for (sets, message) in [
        // values.schema.json
        (vec!["resolver.type=ftp"], "/resolver/type"),
        (vec!["logFormat=xml"], "/logFormat"),
        (
            vec!["watchNamespace=partner-a"],
            "'watchNamespace' not allowed",
        ),
        (vec!["watchNamespaces={Partner_A}"], "/watchNamespaces/0"),
        (vec!["http.timeout=soon"], "/http/timeout"),
        (vec!["replicaCount=0"], "/replicaCount"),
        // the templates' own checks
        (vec!["resolver.type=http"], "http.url is required"),
        (
            vec![
                "resolver.type=http",
                "http.url=https://x",
                "http.caSecret.name=a",
                "http.caConfigMap.name=b",
            ],
            "not both",
        ),
    ] {
        let sets: Vec<String> = sets.into_iter().map(String::from).collect();
        let error = try_template(NS, &sets).expect_err("contradictory values must not render");
        assert!(error.contains(message), "{sets:?}: {error}");
    }
}

#[test]
fn rbac_grants_exactly_what_the_operator_uses() {
    // Cluster mode: one ClusterRole, bound to the ServiceAccount.
    let cluster = render(NS, &[]);
    let role = one(&cluster, "ClusterRole", RELEASE);
    assert_eq!(role["rules"], operator_rules());
    let binding = one(&cluster, "ClusterRoleBinding", RELEASE);
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": RELEASE})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": RELEASE, "namespace": NS}])
    );
    let catalog = one(&cluster, "Role", "azs-csp-operator-catalog");
    assert_eq!(catalog["metadata"]["namespace"], NS);
    assert_eq!(
        catalog["rules"],
        json!([{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["azs-csp-operator-catalog"], "verbs": ["get", "list", "watch"]}])
    );
    assert_eq!(
        of_kind(&cluster, "Role").len(),
        1,
        "no Lease access with one replica"
    );

    // Namespaced mode: a Role per watched namespace, nothing cluster-wide.
    let namespaced = render(
        NS,
        &["replicaCount=3", "watchNamespaces={partner-a,partner-b}"],
    );
    assert!(of_kind(&namespaced, "ClusterRole").is_empty());
    assert!(of_kind(&namespaced, "ClusterRoleBinding").is_empty());
    for ns in ["partner-a", "partner-b"] {
        let role = of_kind(&namespaced, "Role")
            .into_iter()
            .find(|r| r["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("no Role in {ns}"));
        assert_eq!(role["rules"], operator_rules());
        let binding = of_kind(&namespaced, "RoleBinding")
            .into_iter()
            .find(|r| r["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("no RoleBinding in {ns}"));
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": RELEASE, "namespace": NS}])
        );
    }
    let leases = one(&namespaced, "Role", "azs-csp-operator-leader-election");
    assert_eq!(leases["metadata"]["namespace"], NS);
    assert_eq!(
        leases["rules"],
        json!([
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["azs-csp-operator"], "verbs": ["get", "update"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        ])
    );

    // An existing catalog ConfigMap elsewhere: read access to it alone, in its namespace.
    let existing = render(
        NS,
        &[
            "catalog.existingConfigMap.name=shared-catalog",
            "catalog.existingConfigMap.namespace=catalogs",
        ],
    );
    assert!(of_kind(&existing, "ConfigMap").is_empty());
    let catalog = one(&existing, "Role", "azs-csp-operator-catalog");
    assert_eq!(catalog["metadata"]["namespace"], "catalogs");
    assert_eq!(
        catalog["rules"][0]["resourceNames"],
        json!(["shared-catalog"])
    );
    assert!(
        args_of(&existing).contains(&"--catalog-configmap=catalogs/shared-catalog".to_string())
    );

    // No wildcard, no Secrets, no CRDs, no delete anywhere, whatever the values.
    for variant in variants("partner-a", "partner-b") {
        let docs = azs_csp_testkit::cluster::yaml_documents(&template(NS, &variant.sets));
        for role in of_kind(&docs, "Role")
            .into_iter()
            .chain(of_kind(&docs, "ClusterRole"))
        {
            for rule in role["rules"].as_array().unwrap() {
                let text = rule.to_string();
                assert!(!text.contains('*'), "{}: wildcard in {text}", variant.name);
                assert!(!text.contains("secrets"), "{}: {text}", variant.name);
                assert!(
                    !text.contains("customresourcedefinitions"),
                    "{}: {text}",
                    variant.name
                );
                assert!(!text.contains("delete"), "{}: {text}", variant.name);
            }
        }
    }
}

// ---------------------------------------------------------------- azure mode

/// The identity of the value sets below (any GUIDs: the chart only passes them on).
const CLIENT_ID: &str = "3c8f1d2e-4a5b-4c6d-8e7f-9a0b1c2d3e4f";
const TENANT_ID: &str = "2b7e0c1d-3a4b-4c5d-8e6f-7a8b9c0d1e2f";

fn pod_template(docs: &[Value]) -> &Value {
    &one(docs, "Deployment", RELEASE)["spec"]["template"]
}

/// The container's `AZURE_*` variables, in order, as (name, literal value).
fn azure_env(docs: &[Value]) -> Vec<(String, String)> {
    let env = pod_template(docs)["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env")
        .clone();
    env.into_iter()
        .filter(|e| e["name"].as_str().unwrap().starts_with("AZURE_"))
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_string();
            let value = e["value"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} is not a literal: {e}"))
                .to_string();
            (name, value)
        })
        .collect()
}

/// What azure mode renders for one set of values.
struct AzureCase {
    name: &'static str,
    sets: Vec<String>,
    /// The flags after `run --log-format=json --metrics-addr=0.0.0.0:8080`.
    args: Vec<&'static str>,
    env: Vec<(&'static str, &'static str)>,
    /// `azure.workload.identity/use: "true"` on the pod (the webhook's selector).
    webhook_label: bool,
    service_account_annotations: Value,
    volume_mounts: Value,
    volumes: Value,
}

fn azure_cases() -> Vec<AzureCase> {
    let sets = |sets: &[&str]| -> Vec<String> {
        std::iter::once("mode=azure")
            .chain(sets.iter().copied())
            .map(String::from)
            .collect()
    };
    let client = format!("azure.clientId={CLIENT_ID}");
    let tenant = format!("azure.tenantId={TENANT_ID}");
    let defaults = |credential: &'static str| {
        vec![
            "--mode=azure",
            "--arm-endpoint=https://management.azure.com",
            "--arm-api-version=2022-06-01",
            credential,
            "--azure-resync=10m",
            "--arm-timeout=30s",
            "--arm-writes-per-second=5",
            "--arm-write-burst=20",
        ]
    };
    let token_dir = "/var/run/secrets/azure/tokens";
    vec![
        AzureCase {
            name: "workload identity through the webhook",
            sets: sets(&[&client]),
            args: defaults("--azure-credential=workload-identity"),
            env: vec![],
            webhook_label: true,
            service_account_annotations: json!({"azure.workload.identity/client-id": CLIENT_ID}),
            volume_mounts: Value::Null,
            volumes: Value::Null,
        },
        AzureCase {
            name: "workload identity through the webhook, own tenant and cloud",
            sets: sets(&[
                &client,
                &tenant,
                "azure.authorityHost=https://login.microsoftonline.us/",
                "serviceAccount.annotations.team=billing",
            ]),
            args: defaults("--azure-credential=workload-identity"),
            env: vec![("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us/")],
            webhook_label: true,
            service_account_annotations: json!({
                "azure.workload.identity/client-id": CLIENT_ID,
                "azure.workload.identity/tenant-id": TENANT_ID,
                "team": "billing",
            }),
            volume_mounts: Value::Null,
            volumes: Value::Null,
        },
        AzureCase {
            name: "workload identity without the webhook",
            sets: sets(&[
                &client,
                &tenant,
                "azure.workloadIdentity.webhook=false",
                "azure.workloadIdentity.expirationSeconds=7200",
                "azure.authorityHost=https://login.microsoftonline.us/",
                "azure.arm.endpoint=https://management.usgovcloudapi.net",
                "watchNamespaces={partner-a}",
            ]),
            args: vec![
                "--mode=azure",
                "--arm-endpoint=https://management.usgovcloudapi.net",
                "--arm-api-version=2022-06-01",
                "--azure-credential=workload-identity",
                "--azure-resync=10m",
                "--arm-timeout=30s",
                "--arm-writes-per-second=5",
                "--arm-write-burst=20",
                "--watch-namespace=partner-a",
            ],
            env: vec![
                ("AZURE_TENANT_ID", TENANT_ID),
                ("AZURE_CLIENT_ID", CLIENT_ID),
                (
                    "AZURE_FEDERATED_TOKEN_FILE",
                    "/var/run/secrets/azure/tokens/azure-identity-token",
                ),
                ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us/"),
            ],
            webhook_label: false,
            // Not read without the webhook, but they say which identity the account federates to.
            service_account_annotations: json!({
                "azure.workload.identity/client-id": CLIENT_ID,
                "azure.workload.identity/tenant-id": TENANT_ID,
            }),
            volume_mounts: json!([
                {"name": "azure-identity-token", "mountPath": token_dir, "readOnly": true},
            ]),
            volumes: json!([{"name": "azure-identity-token", "projected": {"sources": [
                {"serviceAccountToken": {
                    "audience": "api://AzureADTokenExchange",
                    "expirationSeconds": 7200,
                    "path": "azure-identity-token",
                }},
            ]}}]),
        },
        AzureCase {
            name: "client secret from an existing Secret, CA from a ConfigMap",
            sets: sets(&[
                "azure.credential=client-secret",
                &client,
                &tenant,
                "azure.clientSecret.existingSecret=azs-csp-principal",
                "azure.clientSecret.key=secret",
                "azure.caConfigMap.name=azure-ca",
                "azure.arm.apiVersion=2017-06-01",
            ]),
            args: vec![
                "--mode=azure",
                "--arm-endpoint=https://management.azure.com",
                "--arm-api-version=2017-06-01",
                "--azure-credential=client-secret",
                "--azure-resync=10m",
                "--arm-timeout=30s",
                "--arm-writes-per-second=5",
                "--arm-write-burst=20",
                "--azure-client-secret-file=/var/run/secrets/azs-csp-operator/azure-client-secret/secret",
                "--azure-ca-file=/var/run/secrets/azs-csp-operator/azure-ca/ca.crt",
            ],
            env: vec![
                ("AZURE_TENANT_ID", TENANT_ID),
                ("AZURE_CLIENT_ID", CLIENT_ID),
            ],
            webhook_label: false,
            service_account_annotations: Value::Null,
            volume_mounts: json!([
                {"name": "azure-client-secret", "mountPath": "/var/run/secrets/azs-csp-operator/azure-client-secret", "readOnly": true},
                {"name": "azure-ca", "mountPath": "/var/run/secrets/azs-csp-operator/azure-ca", "readOnly": true},
            ]),
            volumes: json!([
                {"name": "azure-client-secret", "secret": {
                    "secretName": "azs-csp-principal", "defaultMode": 0o440,
                    "items": [{"key": "secret", "path": "secret"}],
                }},
                {"name": "azure-ca", "configMap": {
                    "name": "azure-ca", "defaultMode": 0o444,
                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                }},
            ]),
        },
        AzureCase {
            name: "user-assigned managed identity, CA from a Secret, own rates",
            sets: sets(&[
                "azure.credential=managed-identity",
                &client,
                // Meaningless for a managed identity (the node's endpoint issues its tokens).
                "azure.authorityHost=https://login.microsoftonline.us/",
                "azure.caSecret.name=azure-ca",
                "azure.caSecret.key=bundle.pem",
                "azure.arm.resync=30m",
                "azure.arm.timeout=5s",
                "azure.arm.writesPerSecond=2",
                "azure.arm.writeBurst=10",
            ]),
            args: vec![
                "--mode=azure",
                "--arm-endpoint=https://management.azure.com",
                "--arm-api-version=2022-06-01",
                "--azure-credential=managed-identity",
                "--azure-resync=30m",
                "--arm-timeout=5s",
                "--arm-writes-per-second=2",
                "--arm-write-burst=10",
                "--azure-ca-file=/var/run/secrets/azs-csp-operator/azure-ca/bundle.pem",
            ],
            env: vec![("AZURE_CLIENT_ID", CLIENT_ID)],
            webhook_label: false,
            service_account_annotations: Value::Null,
            volume_mounts: json!([
                {"name": "azure-ca", "mountPath": "/var/run/secrets/azs-csp-operator/azure-ca", "readOnly": true},
            ]),
            volumes: json!([{"name": "azure-ca", "secret": {
                "secretName": "azure-ca", "defaultMode": 0o444,
                "items": [{"key": "bundle.pem", "path": "bundle.pem"}],
            }}]),
        },
        AzureCase {
            name: "system-assigned managed identity",
            sets: sets(&["azure.credential=managed-identity"]),
            args: defaults("--azure-credential=managed-identity"),
            env: vec![],
            webhook_label: false,
            service_account_annotations: Value::Null,
            volume_mounts: Value::Null,
            volumes: Value::Null,
        },
    ]
}

#[test]
fn azure_mode_renders_what_each_credential_needs() {
    for case in azure_cases() {
        let name = case.name;
        let sets: Vec<&str> = case.sets.iter().map(String::as_str).collect();
        let docs = render(NS, &sets);

        let mut expected_args = vec!["run", "--log-format=json", "--metrics-addr=0.0.0.0:8080"];
        expected_args.extend(&case.args);
        assert_eq!(args_of(&docs), expected_args, "{name}: args");

        let expected_env: Vec<(String, String)> = case
            .env
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(azure_env(&docs), expected_env, "{name}: AZURE_* variables");

        let template = pod_template(&docs);
        let label = &template["metadata"]["labels"]["azure.workload.identity/use"];
        if case.webhook_label {
            assert_eq!(
                label, "true",
                "{name}: the webhook selects the pod by label"
            );
        } else {
            assert!(label.is_null(), "{name}: no webhook label");
        }
        // The label is on the pod only: the Deployment's selector stays what it was.
        assert_eq!(
            one(&docs, "Deployment", RELEASE)["spec"]["selector"]["matchLabels"],
            json!({"app.kubernetes.io/name": "azs-csp-operator", "app.kubernetes.io/instance": RELEASE}),
            "{name}: selector"
        );
        assert_eq!(
            one(&docs, "ServiceAccount", RELEASE)["metadata"]["annotations"],
            case.service_account_annotations,
            "{name}: ServiceAccount annotations"
        );
        assert_eq!(
            template["spec"]["containers"][0]["volumeMounts"], case.volume_mounts,
            "{name}: volume mounts"
        );
        assert_eq!(template["spec"]["volumes"], case.volumes, "{name}: volumes");

        // No resolver in azure mode: no catalog, no ConfigMap access, no resolver flags.
        assert!(of_kind(&docs, "ConfigMap").is_empty(), "{name}: no catalog");
        assert!(
            !of_kind(&docs, "Role")
                .iter()
                .any(|r| r["metadata"]["name"] == "azs-csp-operator-catalog"),
            "{name}: no catalog Role"
        );
        assert!(
            !args_of(&docs).iter().any(|a| a.starts_with("--resolver")
                || a.starts_with("--catalog")
                || a.starts_with("--cache-ttl")),
            "{name}: resolver flags"
        );
        // The client secret is only ever a mounted file.
        let text = serde_json::to_string(&docs).unwrap();
        assert!(!text.contains("AZURE_CLIENT_SECRET"), "{name}");
    }

    // Local mode (the default) knows nothing of Azure, whatever the azure values say.
    let local = render(
        NS,
        &[
            &format!("azure.clientId={CLIENT_ID}"),
            "azure.workloadIdentity.webhook=false",
            "azure.caSecret.name=azure-ca",
        ],
    );
    assert_eq!(args_of(&local), args_of(&render(NS, &[])));
    assert_eq!(pod_template(&local), pod_template(&render(NS, &[])));
    assert!(one(&local, "ServiceAccount", RELEASE)["metadata"]["annotations"].is_null());
}

/// The operator's rules in azure mode: local mode's, plus `patch` on customersubscriptions
/// (server-side apply of the `csp.azurestack.io/azure-detach` finalizer).
fn azure_operator_rules() -> Value {
    let mut rules = operator_rules();
    let customers = rules
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["resources"] == json!(["customersubscriptions"]))
        .unwrap();
    customers["verbs"] = json!(["get", "list", "watch", "patch"]);
    rules
}

#[test]
fn azure_mode_adds_only_patch_on_customersubscriptions_to_rbac() {
    let client = format!("azure.clientId={CLIENT_ID}");
    let cluster = render(NS, &["mode=azure", &client]);
    assert_eq!(
        one(&cluster, "ClusterRole", RELEASE)["rules"],
        azure_operator_rules()
    );
    assert!(
        of_kind(&cluster, "Role").is_empty(),
        "no catalog Role, no Lease Role with one replica"
    );

    let namespaced = render(
        NS,
        &[
            "mode=azure",
            &client,
            "replicaCount=2",
            "watchNamespaces={partner-a,partner-b}",
        ],
    );
    assert!(of_kind(&namespaced, "ClusterRole").is_empty());
    let mut roles: Vec<&str> = of_kind(&namespaced, "Role")
        .iter()
        .map(|r| r["metadata"]["name"].as_str().unwrap())
        .collect();
    roles.sort();
    assert_eq!(
        roles,
        [
            "azs-csp-operator",
            "azs-csp-operator",
            "azs-csp-operator-leader-election"
        ]
    );
    for role in of_kind(&namespaced, "Role") {
        if role["metadata"]["name"] == RELEASE {
            assert_eq!(role["rules"], azure_operator_rules());
        }
    }
}

#[test]
fn azure_values_that_cannot_work_are_refused_with_the_value_named() {
    let client = format!("azure.clientId={CLIENT_ID}");
    let tenant = format!("azure.tenantId={TENANT_ID}");
    for (sets, messages) in [
        // values.schema.json
        (vec!["mode=cloud"], vec!["/mode", "'local', 'azure'"]),
        (vec!["mode=azure"], vec!["/azure/clientId"]),
        (
            vec![
                "mode=azure",
                &client,
                "azure.workloadIdentity.webhook=false",
            ],
            vec!["/azure/tenantId"],
        ),
        (
            vec!["mode=azure", "azure.credential=client-secret"],
            vec![
                "/azure/tenantId",
                "/azure/clientId",
                "/azure/clientSecret/existingSecret",
            ],
        ),
        (
            vec![
                "mode=azure",
                "azure.credential=client-secret",
                &client,
                &tenant,
            ],
            vec!["/azure/clientSecret/existingSecret"],
        ),
        (
            vec!["mode=azure", "azure.credential=password"],
            vec!["/azure/credential"],
        ),
        (
            vec!["mode=azure", "azure.clientId=my-app"],
            vec!["/azure/clientId", "does not match"],
        ),
        // A secret is never a value: neither as azure.clientSecret nor as a variable.
        (
            vec!["mode=azure", &client, "azure.clientSecret=hunter2"],
            vec!["/azure/clientSecret", "want object"],
        ),
        (
            vec!["mode=azure", &client, "azure.clientSecret.value=hunter2"],
            vec!["'value' not allowed"],
        ),
        (
            vec![
                "extraEnv[0].name=AZURE_CLIENT_SECRET",
                "extraEnv[0].value=hunter2",
            ],
            vec!["/extraEnv/0"],
        ),
        (
            vec![
                "mode=azure",
                &client,
                "azure.arm.apiVersion=2020-06-01-preview",
            ],
            vec!["/azure/arm/apiVersion"],
        ),
        (
            vec![
                "mode=azure",
                &client,
                "azure.arm.endpoint=http://management.azure.com",
            ],
            vec!["/azure/arm/endpoint"],
        ),
        (
            vec!["mode=azure", &client, "azure.arm.resync=hourly"],
            vec!["/azure/arm/resync"],
        ),
        (
            vec!["mode=azure", &client, "azure.arm.timeout=1 minute"],
            vec!["/azure/arm/timeout"],
        ),
        (
            vec!["mode=azure", &client, "azure.arm.writeBurst=0"],
            vec!["/azure/arm/writeBurst"],
        ),
        // the templates' own checks
        (
            vec![
                "mode=azure",
                &client,
                "azure.caSecret.name=a",
                "azure.caConfigMap.name=b",
            ],
            vec!["set azure.caConfigMap.name or azure.caSecret.name, not both"],
        ),
    ] {
        let sets: Vec<String> = sets.into_iter().map(String::from).collect();
        let error = try_template(NS, &sets).expect_err("values that cannot work must not render");
        for message in messages {
            assert!(
                error.contains(message),
                "{sets:?}: {message} not in {error}"
            );
        }
        assert!(
            !error.contains("hunter2"),
            "{sets:?}: the error repeats the secret: {error}"
        );
    }
    // The azure requirements apply in azure mode only.
    try_template(NS, &["azure.credential=client-secret".into()])
        .expect("local mode ignores the azure values");
}

/// A temporary directory whose name does not start with a dot: checkov ignores hidden paths
/// (and then passes, having checked nothing).
fn visible_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("azs-csp-chart-")
        .tempdir()
        .expect("temp dir")
}

#[test]
fn helm_4_lints_and_renders_the_chart_as_helm_3_does() {
    let helm4 = linter("helm4");
    let (_, version, _) = output(Command::new(&helm4).args(["version", "--short"]));
    assert!(version.starts_with("v4."), "not Helm 4: {version}");
    for variant in variants("partner-a", "partner-b") {
        run(Command::new(&helm4)
            .args(["lint", "--strict", "--namespace", NS])
            .arg(chart_dir())
            .args(set_args(&variant.sets)));
        let rendered = run(Command::new(&helm4)
            .args(["template", RELEASE])
            .arg(chart_dir())
            .args(["--namespace", NS])
            .args(set_args(&variant.sets)));
        assert_eq!(
            azs_csp_testkit::cluster::yaml_documents(&rendered),
            azs_csp_testkit::cluster::yaml_documents(&template(NS, &variant.sets)),
            "Helm 4 renders the {} values differently",
            variant.name
        );
    }
}

/// Renders every variant into a fresh directory, one file each; returns the directory.
fn render_variants(namespace: &str, ns1: &str, ns2: &str) -> tempfile::TempDir {
    let dir = visible_tempdir();
    for variant in variants(ns1, ns2) {
        std::fs::write(
            dir.path().join(format!("{}.yaml", variant.name)),
            template(namespace, &variant.sets),
        )
        .unwrap();
    }
    dir
}

#[test]
fn checkov_finds_nothing_but_the_justified_skips() {
    let checkov = linter("checkov");
    let config = chart_dir().join(".checkov.yaml");
    let dir = render_variants(NS, "partner-a", "partner-b");
    let (ok, stdout, stderr) = output(
        Command::new(&checkov)
            .arg("--config-file")
            .arg(&config)
            .arg("-d")
            .arg(dir.path()),
    );
    assert!(
        ok,
        "checkov found problems in the rendered chart:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("Failed checks: 0") && !stdout.contains("Passed checks: 0,"),
        "checkov checked nothing or found problems:\n{stdout}"
    );

    // The linter is live: a privileged, root container is caught.
    let bad = visible_tempdir();
    std::fs::write(
        bad.path().join("bad.yaml"),
        template(
            NS,
            &[
                "securityContext.privileged=true".into(),
                "securityContext.allowPrivilegeEscalation=true".into(),
            ],
        ),
    )
    .unwrap();
    let (ok, stdout, _) = output(
        Command::new(&checkov)
            .arg("--config-file")
            .arg(&config)
            .arg("-d")
            .arg(bad.path()),
    );
    assert!(!ok, "checkov accepted a privileged container:\n{stdout}");
    assert!(
        stdout.contains("CKV_K8S_16"),
        "privileged container not reported:\n{stdout}"
    );
}

// ---------------------------------------------------------------- against the cluster

/// Installs the CRDs the way the README says (idempotent, shared by every test).
fn apply_crds() {
    run(kubectl()
        .args(["apply", "--server-side", "--force-conflicts", "-f"])
        .arg(repo_root().join("crds")));
    run(kubectl().args([
        "wait",
        "--for=condition=established",
        "--timeout=30s",
        "crd/registrations.csp.azurestack.io",
        "crd/customersubscriptions.csp.azurestack.io",
    ]));
}

#[tokio::test]
async fn the_api_server_and_kubeconform_accept_every_rendered_variant() {
    let release = TestNamespace::new("chart-dry").await;
    let watched_a = TestNamespace::new("chart-dry-a").await;
    let watched_b = TestNamespace::new("chart-dry-b").await;
    apply_crds();

    // kubeconform, with JSON schemas converted from this API server's OpenAPI document.
    let kubeconform = linter("kubeconform");
    let schemas = tempfile::tempdir().unwrap();
    let kubectl_command = format!(
        "{} --kubeconfig {}",
        tool("KUBECTL", "kubectl").display(),
        azs_csp_testkit::cluster::kubeconfig_path().display()
    );
    run(Command::new(repo_root().join("hack/chart-schemas.sh"))
        .arg(schemas.path())
        .env("KUBECTL", kubectl_command));
    let dir = render_variants(&release.name, &watched_a.name, &watched_b.name);
    let location = format!(
        "{}/{{{{ .Group }}}}/{{{{ .ResourceAPIVersion }}}}/{{{{ .ResourceKind }}}}.json",
        schemas.path().display()
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    // The ServiceMonitor's CRD (Prometheus Operator) is not part of this cluster.
    let stdout = run(Command::new(&kubeconform)
        .args([
            "-strict",
            "-summary",
            "-skip",
            "ServiceMonitor",
            "-schema-location",
            &location,
        ])
        .args(&files));
    assert!(stdout.contains("Invalid: 0, Errors: 0"), "{stdout}");

    // The API server's own validation (schemas, CEL, RBAC escalation checks), storing nothing.
    for variant in variants(&watched_a.name, &watched_b.name) {
        let docs =
            azs_csp_testkit::cluster::yaml_documents(&template(&release.name, &variant.sets));
        let items: Vec<&Value> = docs
            .iter()
            .filter(|d| d["kind"] != "ServiceMonitor")
            .collect();
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
        let mut child = kubectl()
            .args([
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=chart-dry-run",
                "--dry-run=server",
                "-f",
                "-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(list.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "the API server refused the {} variant:\n{}{}",
            variant.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn the_pod_is_admitted_where_the_restricted_pod_security_standard_is_enforced() {
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use kube::api::{Patch, PatchParams};
    let ns = TestNamespace::new("chart-restricted").await;
    let labels = json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }}});
    Api::<Namespace>::all(ns.client.clone())
        .patch(&ns.name, &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .expect("label the namespace");
    // The ServiceAccount admission plugin wants the pod's ServiceAccount to exist.
    let _: ServiceAccount = ns.create(&format!("metadata: {{name: {RELEASE}}}")).await;
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    // The Deployment's pod, as its ReplicaSet would create it (Pod Security admission judges
    // pods), for every set of values; then a privileged one, which must be refused.
    let mut cases: Vec<(String, Vec<String>, bool)> = variants("partner-a", "partner-b")
        .into_iter()
        .map(|v| (v.name.to_string(), v.sets, true))
        .collect();
    cases.push((
        "privileged".into(),
        vec![
            "securityContext.privileged=true".into(),
            "securityContext.allowPrivilegeEscalation=true".into(),
        ],
        false,
    ));
    for (name, sets, admitted) in cases {
        let docs = azs_csp_testkit::cluster::yaml_documents(&template(&ns.name, &sets));
        let template = &one(&docs, "Deployment", RELEASE)["spec"]["template"];
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("chart-{name}"), "labels": template["metadata"]["labels"]},
            "spec": template["spec"],
        }))
        .expect("a pod from the Deployment's template");
        let result = ns.api::<Pod>().create(&dry_run, &pod).await;
        match (admitted, result) {
            (true, Ok(_)) => {}
            (true, Err(e)) => panic!("the {name} pod violates the restricted standard: {e}"),
            (false, Err(kube::Error::Api(s))) => {
                assert!(s.message.contains("restricted"), "{name}: {}", s.message)
            }
            (false, other) => panic!("the {name} pod was not refused: {other:?}"),
        }
    }
}

/// A Helm release, uninstalled when dropped (its cluster-scoped objects outlive the namespace).
struct Release {
    name: String,
    namespace: String,
}

impl Release {
    fn install(name: &str, namespace: &str, sets: &[String]) -> Self {
        let example = repo_root().join("examples/catalog.yaml");
        run(helm()
            .args(["install", name])
            .arg(chart_dir())
            .args(["--namespace", namespace])
            .args(set_args(sets))
            .arg("--set-file")
            .arg(format!("catalog.data={}", example.display())));
        Self {
            name: name.to_string(),
            namespace: namespace.to_string(),
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = output(helm().args(["uninstall", &self.name, "--namespace", &self.namespace]));
    }
}

/// A kubeconfig for the test cluster that authenticates with `token` alone: the server and CA
/// of the admin kubeconfig, but not its client certificate (which would take precedence).
fn token_kubeconfig(token: &str) -> tempfile::NamedTempFile {
    let admin =
        Kubeconfig::read_from(azs_csp_testkit::cluster::kubeconfig_path()).expect("kubeconfig");
    let context_name = admin.current_context.clone().expect("a current context");
    let context = admin
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.clone())
        .expect("the current context");
    let cluster = admin
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .cloned()
        .expect("the context's cluster");
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "chart-service-account", "user": {"token": token}}],
        "contexts": [{"name": "chart", "context": {"cluster": cluster.name, "user": "chart-service-account"}}],
        "current-context": "chart",
    });
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(serde_saphyr::to_string(&config).unwrap().as_bytes())
        .unwrap();
    file
}

/// On a failed test, the operator is gone before its objects are: strips the finalizers of
/// its Registrations (and, in azure mode, CustomerSubscriptions) so that the namespace can be
/// deleted (a passing test deletes them with the operator).
struct ReleaseFinalizers {
    namespace: String,
}

async fn strip_finalizers<K>(api: Api<K>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Ok(list) = api.list_metadata(&ListParams::default()).await else {
        return;
    };
    let patch = json!({"metadata": {"finalizers": null}});
    for object in list.items {
        let name = object.metadata.name.unwrap_or_default();
        let _ = api
            .patch(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await;
    }
}

impl Drop for ReleaseFinalizers {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let namespace = self.namespace.clone();
        azs_csp_testkit::cluster::run_to_completion(move || async move {
            let client = azs_csp_testkit::cluster::client().await;
            strip_finalizers(Api::<CustomerSubscription>::namespaced(
                client.clone(),
                &namespace,
            ))
            .await;
            strip_finalizers(Api::<Registration>::namespaced(client, &namespace)).await;
        });
    }
}

/// `kubectl auth can-i` for the ServiceAccount.
fn can_i(service_account: &str, verb: &str, resource: &str, namespace: Option<&str>) -> bool {
    let mut command = kubectl();
    command.args(["auth", "can-i", verb]);
    let (resource, subresource) = match resource.split_once(':') {
        Some((r, s)) => (r, Some(s)),
        None => (resource, None),
    };
    command.arg(resource);
    if let Some(subresource) = subresource {
        command.arg(format!("--subresource={subresource}"));
    }
    if let Some(namespace) = namespace {
        command.args(["--namespace", namespace]);
    }
    command.arg(format!("--as={service_account}"));
    let (_, stdout, stderr) = output(&mut command);
    match stdout.trim() {
        "yes" => true,
        "no" => false,
        other => panic!("kubectl auth can-i {verb} {resource}: {other} {stderr}"),
    }
}

fn random_guid() -> String {
    let hex = |n: usize| -> String {
        (0..n)
            .map(|_| char::from_digit(rand::random_range(0..16u32), 16).unwrap())
            .collect()
    };
    format!("{}-{}-4{}-8{}-{}", hex(8), hex(4), hex(3), hex(3), hex(12))
}

/// The operator's `POD_NAME`: its Events name it as their reporting instance.
const POD_NAME: &str = "azs-csp-operator-chart-test";

/// One operator end to end at a time: a cluster-wide one would also see the other's objects.
static E2E: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Installs the chart (catalog from examples/catalog.yaml), runs the operator binary out of
/// the cluster with the chart's Deployment args and a token of the chart's ServiceAccount,
/// and checks the core scenario plus what the ServiceAccount may and may not do.
/// Namespaced mode runs with two replicas, so with leader election on its Lease.
async fn operator_with_the_chart_service_account(namespaced: bool) {
    let _one_at_a_time = E2E.lock().await;
    apply_crds();
    let release_ns = TestNamespace::new("chart-rel").await;
    let partner = TestNamespace::new("chart-partner").await;
    let other = TestNamespace::new("chart-other").await;
    let _release_finalizers = ReleaseFinalizers {
        namespace: partner.name.clone(),
    };
    // Unique names: cluster-scoped RBAC objects of a crashed run must not block this one.
    let fullname = format!("azs-csp-{}", release_ns.name);
    let mut sets = vec![
        "crds.install=false".to_string(),
        format!("fullnameOverride={fullname}"),
    ];
    if namespaced {
        sets.push(format!("watchNamespaces={{{}}}", partner.name));
        sets.push("replicaCount=2".to_string());
    }
    let _release = Release::install(RELEASE, &release_ns.name, &sets);

    // The Deployment exists (no kubelet here: its pod never runs); take the flags from it.
    let deployment = release_ns
        .api::<Deployment>()
        .get(&fullname)
        .await
        .expect("the chart's Deployment");
    let container = deployment
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers
        .remove(0);
    let args = container.args.unwrap_or_default();
    let catalog_flag = format!("--catalog-configmap={}/{fullname}-catalog", release_ns.name);
    assert!(args.contains(&catalog_flag), "{args:?}");
    assert_eq!(
        args.contains(&format!("--watch-namespace={}", partner.name)),
        namespaced,
        "{args:?}"
    );
    assert_eq!(
        args.contains(&"--leader-election".to_string()),
        namespaced,
        "{args:?}"
    );
    let mut operator_args: Vec<String> = args
        .into_iter()
        .filter(|a| a != "run" && !a.starts_with("--metrics-addr"))
        .collect();
    if !namespaced {
        // The cluster is shared with other test runs, whose objects a cluster-wide operator
        // would evaluate against this test's catalog: the binary watches the test namespace
        // only, while its permissions there come from the chart's ClusterRole alone (and its
        // cluster-wide list and watch are checked below with the same token).
        operator_args.push(format!("--watch-namespace={}", partner.name));
    }
    let operator_args: Vec<&str> = operator_args.iter().map(String::as_str).collect();

    // A token of the chart's ServiceAccount, through TokenRequest.
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 900}}))
            .unwrap();
    let issued: TokenRequest = release_ns
        .api::<ServiceAccount>()
        .create_subresource("token", &fullname, &PostParams::default(), &request)
        .await
        .expect("TokenRequest for the chart's ServiceAccount");
    let token = issued
        .status
        .and_then(|s| s.token)
        .expect("a token is issued");
    let kubeconfig = token_kubeconfig(&token);
    let mut operator = start_operator_with_env(
        &operator_args,
        &[
            ("KUBECONFIG", kubeconfig.path().to_str().unwrap()),
            // What the Deployment's downward API gives the pod.
            ("POD_NAME", POD_NAME),
            ("POD_NAMESPACE", release_ns.name.as_str()),
        ],
    );

    // The core scenario, with the example's GUIDs (a fresh cloudId: it is unique cluster-wide).
    let _: Registration = partner
        .create(&format!(
            r#"
apiVersion: csp.azurestack.io/v1alpha1
kind: Registration
metadata: {{name: contoso-stack}}
spec:
  subscriptionId: 6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c
  resourceGroup: azurestack
  registrationName: azurestack-5f1c2d3e
  cloudId: {}
  billingModel: PayAsYouUse
"#,
            random_guid()
        ))
        .await;
    let _: CustomerSubscription = partner
        .create(
            r#"
apiVersion: csp.azurestack.io/v1alpha1
kind: CustomerSubscription
metadata: {name: fabrikam}
spec:
  registrationRef: {name: contoso-stack}
  subscriptionId: e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a
  tenantId: 2b7e0c1d-3a4b-4c5d-8e6f-7a8b9c0d1e2f
"#,
        )
        .await;
    wait_registration_reason(&partner, "contoso-stack", "Registered").await;
    wait_customer_reason(&partner, "fabrikam", "Attached").await;

    // Events are written with the ServiceAccount too.
    let events: Api<Event> = partner.api();
    let deadline = tokio::time::Instant::now() + azs_csp_testkit::cluster::TIMEOUT;
    loop {
        let list = events
            .list(&ListParams::default())
            .await
            .expect("list events");
        if list.items.iter().any(|e| {
            e.reason.as_deref() == Some("Attached")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("fabrikam")
                && e.reporting_instance.as_deref() == Some(POD_NAME)
        }) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no Attached event for fabrikam; events: {:?}; operator log:\n{}",
            list.items
                .iter()
                .map(|e| (&e.reason, &e.note))
                .collect::<Vec<_>>(),
            operator.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // What the ServiceAccount may do, and what it may not.
    let sa = format!("system:serviceaccount:{}:{fullname}", release_ns.name);
    let p = Some(partner.name.as_str());
    let r = Some(release_ns.name.as_str());
    let o = Some(other.name.as_str());
    let catalog = format!("configmaps/{fullname}-catalog");
    for (verb, resource, namespace, allowed) in [
        ("patch", "registrations.csp.azurestack.io:status", p, true),
        (
            "patch",
            "customersubscriptions.csp.azurestack.io:status",
            p,
            true,
        ),
        ("patch", "registrations.csp.azurestack.io", p, true),
        ("watch", "customersubscriptions.csp.azurestack.io", p, true),
        ("create", "events.events.k8s.io", p, true),
        ("get", catalog.as_str(), r, true),
        (
            "delete",
            "customersubscriptions.csp.azurestack.io",
            p,
            false,
        ),
        ("delete", "registrations.csp.azurestack.io", p, false),
        ("create", "registrations.csp.azurestack.io", p, false),
        ("patch", "customersubscriptions.csp.azurestack.io", p, false),
        ("update", "registrations.csp.azurestack.io:status", p, false),
        (
            "delete",
            "customresourcedefinitions.apiextensions.k8s.io",
            None,
            false,
        ),
        (
            "get",
            "customresourcedefinitions.apiextensions.k8s.io",
            None,
            false,
        ),
        ("get", "secrets", o, false),
        ("get", "secrets", r, false),
        ("get", "secrets", p, false),
        ("list", "configmaps", r, false),
        ("get", "configmaps/other", r, false),
        ("get", "configmaps", o, false),
        ("get", "leases.coordination.k8s.io/other", r, false),
        ("create", "leases.coordination.k8s.io", p, false),
        ("create", "pods", p, false),
    ] {
        assert_eq!(
            can_i(&sa, verb, resource, namespace),
            allowed,
            "can {sa} {verb} {resource} in {namespace:?}?"
        );
    }
    // Leader election (two replicas, namespaced mode here): the one Lease, in the release namespace.
    for (verb, resource) in [
        ("create", "leases.coordination.k8s.io"),
        ("get", "leases.coordination.k8s.io/azs-csp-operator"),
        ("update", "leases.coordination.k8s.io/azs-csp-operator"),
    ] {
        assert_eq!(
            can_i(&sa, verb, resource, r),
            namespaced,
            "{verb} {resource}"
        );
    }
    // Namespaced mode reaches the watched namespace only; cluster mode every namespace.
    assert_eq!(
        can_i(&sa, "patch", "registrations.csp.azurestack.io:status", o),
        !namespaced
    );
    assert_eq!(
        can_i(&sa, "list", "customersubscriptions.csp.azurestack.io", None),
        !namespaced
    );

    if namespaced {
        // It leads through the Lease it may write, as the chart's pod would.
        let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
            release_ns.client.clone(),
            &release_ns.name,
        )
        .get("azs-csp-operator")
        .await
        .expect("the leader election Lease in the release namespace");
        let holder = lease.spec.and_then(|s| s.holder_identity);
        assert_eq!(holder.as_deref(), Some(POD_NAME));
    }
    // The probes' and the ServiceMonitor's endpoints answer.
    let addr = operator.metrics_addr();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let deadline = std::time::Instant::now() + azs_csp_testkit::cluster::TIMEOUT;
        loop {
            match azs_csp_testkit::process::http_get(addr, path) {
                Ok((200, _)) => break,
                other => assert!(
                    std::time::Instant::now() < deadline,
                    "GET {path}: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Deleting: the operator (still with the ServiceAccount) releases its finalizer.
    partner
        .api::<CustomerSubscription>()
        .delete("fabrikam", &DeleteParams::default())
        .await
        .expect("delete the CustomerSubscription");
    azs_csp_testkit::cluster::wait_gone(&partner.api::<CustomerSubscription>(), "fabrikam").await;
    partner
        .api::<Registration>()
        .delete("contoso-stack", &DeleteParams::default())
        .await
        .expect("delete the Registration");
    azs_csp_testkit::cluster::wait_gone(&partner.api::<Registration>(), "contoso-stack").await;

    assert!(
        operator.is_running(),
        "the operator exited:\n{}",
        operator.logs()
    );
    let logs = operator.logs();
    // RBAC refusals name the user ("... is forbidden: User \"system:serviceaccount:...\" cannot").
    assert!(
        !logs.contains("forbidden: User"),
        "RBAC refused the operator something:\n{logs}"
    );
    // This operator wrote the statuses (not another one that may run against the cluster).
    for name in ["contoso-stack", "fabrikam"] {
        assert!(
            logs.lines()
                .any(|l| l.contains("status written") && l.contains(name)),
            "no status write for {name} in the operator log:\n{logs}"
        );
    }

    // The token reaches exactly as far as the mode says: cluster-wide list and watch of both
    // kinds in cluster mode (what the operator does without --watch-namespace), none otherwise.
    let token_client = {
        let kubeconfig = Kubeconfig::read_from(kubeconfig.path()).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    };
    let everywhere = Api::<Registration>::all(token_client.clone());
    let list = everywhere
        .list_metadata(&ListParams::default().limit(1))
        .await;
    let watch = can_watch_everywhere(Api::<CustomerSubscription>::all(token_client)).await;
    if namespaced {
        assert!(
            list.is_err() && !watch,
            "namespaced mode must not reach the cluster"
        );
    } else {
        list.expect("cluster-wide list with the chart's ServiceAccount");
        assert!(watch, "cluster-wide watch with the chart's ServiceAccount");
    }
}

/// Whether a watch across all namespaces is accepted (a refusal may come as the request's
/// error or as the stream's first event).
async fn can_watch_everywhere(api: Api<CustomerSubscription>) -> bool {
    use futures::StreamExt;
    let params = kube::api::WatchParams::default().timeout(1);
    match api.watch_metadata(&params, "0").await {
        Err(_) => false,
        Ok(stream) => !matches!(
            stream.boxed().next().await,
            Some(Err(_)) | Some(Ok(kube::api::WatchEvent::Error(_)))
        ),
    }
}

#[tokio::test]
async fn the_operator_runs_with_the_chart_service_account_watching_one_namespace() {
    operator_with_the_chart_service_account(true).await;
}

#[tokio::test]
async fn the_operator_runs_with_the_chart_service_account_watching_the_cluster() {
    operator_with_the_chart_service_account(false).await;
}

/// The payload of a JWT, unverified (the API server issued it to this test).
fn jwt_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// Each azure variant of hack/chart-variants.txt installs for real; its ServiceAccount may
/// patch CustomerSubscriptions (the azure-detach finalizer) and nothing new besides, no
/// Secret or ConfigMap included; and with workload identity the API server issues it the
/// token Entra ID exchanges (audience api://AzureADTokenExchange, subject the ServiceAccount).
#[tokio::test]
async fn the_azure_variants_install_and_grant_what_azure_mode_uses() {
    apply_crds();
    let names: Vec<String> = variants("x", "y")
        .into_iter()
        .map(|v| v.name)
        .filter(|n| n.starts_with("azure-"))
        .collect();
    assert!(names.len() >= 4, "azure variants: {names:?}");
    for name in names {
        let release_ns = TestNamespace::new("chart-az").await;
        let watched = TestNamespace::new("chart-az-w").await;
        let variant = variants(&watched.name, &watched.name)
            .into_iter()
            .find(|v| v.name == name)
            .unwrap();
        let fullname = format!("azs-csp-{}", release_ns.name);
        let mut sets = variant.sets.clone();
        sets.push("crds.install=false".into());
        sets.push(format!("fullnameOverride={fullname}"));
        let _release = Release::install(RELEASE, &release_ns.name, &sets);

        let deployment = release_ns
            .api::<Deployment>()
            .get(&fullname)
            .await
            .expect("the chart's Deployment");
        let pod = deployment.spec.unwrap().template;
        let args = pod.spec.unwrap().containers.remove(0).args.unwrap();
        assert!(
            args.contains(&"--mode=azure".to_string()),
            "{name}: {args:?}"
        );
        let workload_identity = args.contains(&"--azure-credential=workload-identity".to_string());
        let service_account = release_ns
            .api::<ServiceAccount>()
            .get(&fullname)
            .await
            .expect("the chart's ServiceAccount");
        let client_annotation = service_account
            .metadata
            .annotations
            .unwrap_or_default()
            .get("azure.workload.identity/client-id")
            .cloned();
        assert_eq!(
            client_annotation.as_deref(),
            workload_identity.then_some(CLIENT_ID),
            "{name}: client-id annotation"
        );

        let sa = format!("system:serviceaccount:{}:{fullname}", release_ns.name);
        let w = Some(watched.name.as_str());
        let r = Some(release_ns.name.as_str());
        let catalog = format!("configmaps/{fullname}-catalog");
        for (verb, resource, namespace, allowed) in [
            ("patch", "customersubscriptions.csp.azurestack.io", w, true),
            ("watch", "customersubscriptions.csp.azurestack.io", w, true),
            (
                "patch",
                "customersubscriptions.csp.azurestack.io:status",
                w,
                true,
            ),
            ("patch", "registrations.csp.azurestack.io", w, true),
            ("create", "events.events.k8s.io", w, true),
            (
                "delete",
                "customersubscriptions.csp.azurestack.io",
                w,
                false,
            ),
            (
                "create",
                "customersubscriptions.csp.azurestack.io",
                w,
                false,
            ),
            (
                "update",
                "customersubscriptions.csp.azurestack.io",
                w,
                false,
            ),
            ("get", "secrets", r, false),
            ("get", "secrets", w, false),
            ("get", catalog.as_str(), r, false),
            ("list", "configmaps", r, false),
            ("create", "serviceaccounts/token", r, false),
        ] {
            assert_eq!(
                can_i(&sa, verb, resource, namespace),
                allowed,
                "{name}: can {sa} {verb} {resource} in {namespace:?}?"
            );
        }

        if workload_identity {
            // What the kubelet projects (or the webhook asks it to): a token for Entra ID.
            let request: TokenRequest = serde_json::from_value(json!({"spec": {
                "audiences": ["api://AzureADTokenExchange"], "expirationSeconds": 3600,
            }}))
            .unwrap();
            let issued: TokenRequest = release_ns
                .api::<ServiceAccount>()
                .create_subresource("token", &fullname, &PostParams::default(), &request)
                .await
                .expect("TokenRequest for the chart's ServiceAccount");
            let token = issued
                .status
                .and_then(|s| s.token)
                .expect("a token is issued");
            let claims = jwt_claims(&token);
            assert_eq!(
                claims["aud"],
                json!(["api://AzureADTokenExchange"]),
                "{name}"
            );
            // The subject a federated credential in Entra ID must name (README).
            assert_eq!(claims["sub"], sa, "{name}");
            assert!(claims["iss"].is_string(), "{name}: {claims}");
        }
    }
}

/// `azs-csp-operator emulate` of this build on a free loopback port; killed when dropped.
struct Emulator {
    child: std::process::Child,
    url: String,
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Emulator {
    fn start(catalog: &str) -> Self {
        use std::io::BufRead;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("catalog.yaml"), catalog).expect("catalog");
        let tls = dir.path().join("tls");
        let mut child = Command::new(env!("CARGO_BIN_EXE_azs-csp-operator"))
            .arg("emulate")
            .arg("--catalog")
            .arg(dir.path().join("catalog.yaml"))
            .args(["--listen", "127.0.0.1:0", "--tls-dir"])
            .arg(&tls)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the emulator");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = sender.send(line);
            }
        });
        let line = lines
            .recv_timeout(azs_csp_testkit::cluster::TIMEOUT)
            .expect("the emulator says where it listens");
        let url = line
            .strip_prefix("emulator listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .trim_end_matches('/')
            .to_string();
        Self {
            child,
            url,
            ca_file: tls.join("ca.crt"),
            _dir: dir,
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pod the chart's Deployment describes, as a local process would see it: its args and
/// literal variables with every mounted path moved under `root`, where each volume is
/// materialised as the kubelet would (a projected ServiceAccount token from TokenRequest with
/// the volume's audience and lifetime, ConfigMap items from the API). Returns (args, env,
/// the tokens written).
async fn materialise_pod(
    namespace: &TestNamespace,
    deployment: &Deployment,
    root: &Path,
) -> (Vec<String>, Vec<(String, String)>, Vec<String>) {
    use k8s_openapi::api::core::v1::ConfigMap;
    let pod = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("a pod template");
    let container = &pod.containers[0];
    let service_account = pod.service_account_name.clone().expect("a ServiceAccount");
    let mut moved: Vec<(String, PathBuf)> = vec![];
    let mut tokens = vec![];
    for mount in container.volume_mounts.clone().unwrap_or_default() {
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .expect("the mount's volume");
        let dir = root.join(&mount.name);
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(projected) = &volume.projected {
            for source in projected.sources.iter().flatten() {
                let projection = source
                    .service_account_token
                    .as_ref()
                    .expect("only ServiceAccount token projections");
                let request: TokenRequest = serde_json::from_value(json!({"spec": {
                    "audiences": [projection.audience.clone().expect("an audience")],
                    "expirationSeconds": projection.expiration_seconds,
                }}))
                .unwrap();
                let issued: TokenRequest = namespace
                    .api::<ServiceAccount>()
                    .create_subresource("token", &service_account, &PostParams::default(), &request)
                    .await
                    .expect("TokenRequest as the kubelet makes it");
                let token = issued.status.and_then(|s| s.token).expect("a token");
                std::fs::write(dir.join(&projection.path), &token).unwrap();
                tokens.push(token);
            }
        } else if let Some(source) = &volume.config_map {
            let config_map = namespace
                .api::<ConfigMap>()
                .get(&source.name)
                .await
                .expect("the mounted ConfigMap");
            let data = config_map.data.unwrap_or_default();
            for item in source.items.iter().flatten() {
                std::fs::write(dir.join(&item.path), &data[&item.key]).unwrap();
            }
        } else {
            panic!("volume {} is not materialised by this test", mount.name);
        }
        moved.push((mount.mount_path.clone(), dir));
    }
    let relocate = |text: &str| {
        moved.iter().fold(text.to_string(), |text, (path, dir)| {
            text.replace(path.as_str(), dir.to_str().unwrap())
        })
    };
    let args = container
        .args
        .iter()
        .flatten()
        .filter(|a| *a != "run" && !a.starts_with("--metrics-addr"))
        .map(|a| relocate(a))
        .collect();
    let env = container
        .env
        .iter()
        .flatten()
        .filter_map(|e| e.value.as_ref().map(|v| (e.name.clone(), relocate(v))))
        .collect();
    (args, env, tokens)
}

/// Azure mode end to end with nothing but what the chart renders: the chart installed with
/// workload identity and no webhook, pointed at the emulator (ARM and Entra ID, its CA from a
/// ConfigMap); the operator runs out of the cluster with the Deployment's args and variables,
/// the chart's ServiceAccount for the API and its projected token as the federated assertion
/// that the emulator exchanges for an ARM token. A tenant is attached in Azure and detached
/// through the azure-detach finalizer; no token reaches the log.
#[tokio::test]
async fn the_operator_attaches_tenants_in_azure_with_the_chart_service_account_federated() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let _one_at_a_time = E2E.lock().await;
    apply_crds();
    let release_ns = TestNamespace::new("chart-azrel").await;
    let partner = TestNamespace::new("chart-azpartner").await;
    let _release_finalizers = ReleaseFinalizers {
        namespace: partner.name.clone(),
    };
    let fullname = format!("azs-csp-{}", release_ns.name);
    let subject = format!("system:serviceaccount:{}:{fullname}", release_ns.name);
    let issuer: Value = serde_json::from_str(&run(kubectl().args([
        "get",
        "--raw",
        "/.well-known/openid-configuration",
    ])))
    .expect("the cluster's OpenID configuration");
    let issuer = issuer["issuer"].as_str().expect("an issuer").to_string();
    // The issuer's keys, as Entra ID fetches them: the emulator checks the signature with them.
    let jwks = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        jwks.path(),
        run(kubectl().args(["get", "--raw", "/openid/v1/jwks"])),
    )
    .unwrap();

    // Azure as the emulator plays it: the registration, its subscriptions, and the chart's
    // ServiceAccount federated to the application CLIENT_ID.
    let registration_subscription = "6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c";
    let customer = "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a";
    let customer_tenant = "7a1b2c3d-0000-4000-8000-000000000003";
    let cloud = random_guid();
    let emulator = Emulator::start(&format!(
        r#"subscriptions:
- {{id: {registration_subscription}, tenantId: {TENANT_ID}, state: Enabled, offer: CSP, billingPartnerId: "4412345"}}
- {{id: {customer}, tenantId: {customer_tenant}, state: Enabled, offer: CSP, billingPartnerId: "4412345"}}
multitenancyApprovals:
- {{subscriptionId: {registration_subscription}, resourceGroup: azurestack, registrationName: azurestack-5f1c2d3e}}
registrations:
- {{subscriptionId: {registration_subscription}, resourceGroup: azurestack, name: azurestack-5f1c2d3e, cloudId: {cloud}, billingModel: PayAsYouUse}}
servicePrincipals:
- tenantId: {TENANT_ID}
  clientId: {CLIENT_ID}
  federatedCredentials: [{{issuer: "{issuer}", subject: "{subject}", jwksFile: "{}"}}]
"#,
        jwks.path().display()
    ));
    let ca = std::fs::read_to_string(&emulator.ca_file).expect("the emulator's CA");
    let _: ConfigMap = release_ns
        .create(
            &serde_json::to_string(
                &json!({"metadata": {"name": "emulator-ca"}, "data": {"ca.crt": ca}}),
            )
            .unwrap(),
        )
        .await;

    let _release = Release::install(
        RELEASE,
        &release_ns.name,
        &[
            "crds.install=false".into(),
            format!("fullnameOverride={fullname}"),
            format!("watchNamespaces={{{}}}", partner.name),
            "mode=azure".into(),
            format!("azure.clientId={CLIENT_ID}"),
            format!("azure.tenantId={TENANT_ID}"),
            "azure.workloadIdentity.webhook=false".into(),
            format!("azure.arm.endpoint={}", emulator.url),
            format!("azure.authorityHost={}", emulator.url),
            "azure.caConfigMap.name=emulator-ca".into(),
        ],
    );
    let deployment = release_ns
        .api::<Deployment>()
        .get(&fullname)
        .await
        .expect("the chart's Deployment");
    let pod_root = tempfile::tempdir().unwrap();
    let (args, env, mut tokens) = materialise_pod(&release_ns, &deployment, pod_root.path()).await;
    assert!(args.contains(&"--mode=azure".to_string()), "{args:?}");

    let api_token = {
        let request: TokenRequest =
            serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 900}}))
                .unwrap();
        let issued: TokenRequest = release_ns
            .api::<ServiceAccount>()
            .create_subresource("token", &fullname, &PostParams::default(), &request)
            .await
            .expect("TokenRequest for the chart's ServiceAccount");
        issued.status.and_then(|s| s.token).expect("a token")
    };
    let kubeconfig = token_kubeconfig(&api_token);
    tokens.push(api_token);
    let mut operator_env: Vec<(&str, &str)> = env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .filter(|(k, _)| *k != "RUST_LOG")
        .collect();
    operator_env.push(("KUBECONFIG", kubeconfig.path().to_str().unwrap()));
    operator_env.push(("POD_NAME", POD_NAME));
    operator_env.push(("POD_NAMESPACE", release_ns.name.as_str()));
    let operator_args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut operator = start_operator_with_env(&operator_args, &operator_env);

    let _: Registration = partner
        .create(&format!(
            r#"
apiVersion: csp.azurestack.io/v1alpha1
kind: Registration
metadata: {{name: contoso-stack}}
spec:
  subscriptionId: {registration_subscription}
  resourceGroup: azurestack
  registrationName: azurestack-5f1c2d3e
  cloudId: {cloud}
  billingModel: PayAsYouUse
"#
        ))
        .await;
    let _: CustomerSubscription = partner
        .create(&format!(
            r#"
apiVersion: csp.azurestack.io/v1alpha1
kind: CustomerSubscription
metadata: {{name: fabrikam}}
spec:
  registrationRef: {{name: contoso-stack}}
  subscriptionId: {customer}
  tenantId: {customer_tenant}
"#
        ))
        .await;
    wait_registration_reason(&partner, "contoso-stack", "Registered").await;
    wait_customer_reason(&partner, "fabrikam", "Attached").await;
    let attached = partner
        .api::<CustomerSubscription>()
        .get("fabrikam")
        .await
        .expect("the CustomerSubscription");
    assert!(
        attached
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == "csp.azurestack.io/azure-detach"),
        "the azure-detach finalizer is set (patch on customersubscriptions): {:?}",
        attached.metadata
    );
    let status = serde_json::to_value(&attached.status).unwrap();
    assert!(
        status["azure"]["requestId"].is_string(),
        "Azure's request id is kept: {status}"
    );

    // Deleting detaches the tenant in Azure, then the operator drops its finalizer.
    partner
        .api::<CustomerSubscription>()
        .delete("fabrikam", &DeleteParams::default())
        .await
        .expect("delete the CustomerSubscription");
    azs_csp_testkit::cluster::wait_gone(&partner.api::<CustomerSubscription>(), "fabrikam").await;
    partner
        .api::<Registration>()
        .delete("contoso-stack", &DeleteParams::default())
        .await
        .expect("delete the Registration");
    azs_csp_testkit::cluster::wait_gone(&partner.api::<Registration>(), "contoso-stack").await;

    assert!(
        operator.is_running(),
        "the operator exited:\n{}",
        operator.logs()
    );
    let logs = operator.logs();
    assert!(
        !logs.contains("forbidden: User"),
        "RBAC refused the operator something:\n{logs}"
    );
    for token in &tokens {
        assert!(
            !logs.contains(token.as_str()),
            "a ServiceAccount token is in the operator log"
        );
    }
}
