#!/usr/bin/env bash
# The end-to-end suite, the same on the local node (hack/e2e.sh) and on kind
# (hack/kind-e2e.sh): the chart installed as the README says, against a cluster whose node
# really runs its pods from $IMAGE (already present on the node: pullPolicy IfNotPresent).
#
#  1. helm install (CRDs by the chart, catalog from a ConfigMap) into a namespace that
#     enforces the restricted Pod Security Standard; the pod becomes Ready (its probes are
#     real), runs as 65532 with a read-only root file system, and reconciles the examples
#     through in-cluster config; `kubectl logs` shows JSON lines;
#  2. the integration scenarios of tests/operator.rs against this operator
#     (AZS_CSP_TEST_OPERATOR=external: the same test code, no operator process of its own),
#     before the examples are applied (they would be duplicates of the scenarios' objects);
#  3. helm upgrade to 2 replicas and a rolling restart: one leader at a time (the pods'
#     azs_csp_leader gauges and the Lease), no status write from a pod that never led, the
#     objects' field managers are the operator's;
#  4. deleting the leader pod: the other takes over (seconds measured);
#  5. helm uninstall: the CRDs and every Registration and CustomerSubscription remain.
#
# Environment: KUBECONFIG (required), IMAGE (repository:tag), KUBECTL, HELM (default: on
# PATH), E2E_INSPECT (a command printing `uid=.. gid=.. root=ro|rw` for a container ID; the
# process-level check is skipped without it), E2E_TESTS (cargo test filters for step 2,
# default below; E2E_TESTS=skip skips it).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

: "${KUBECONFIG:?KUBECONFIG must name the e2e cluster}"
IMAGE="${IMAGE:-azs-csp-operator:dev}"
kubectl="${KUBECTL:-kubectl}"
helm="${HELM:-helm}"
NS=azs-csp-system
RELEASE=azs-csp-operator
CATALOG_CONFIGMAP=$RELEASE-catalog # the chart's <fullname>-catalog
CHART=charts/azs-csp-operator
LEASE=azs-csp-operator
CATALOG_CONFIGMAP=$RELEASE-catalog # the chart's <fullname>-catalog
k() { "$kubectl" "$@"; }
for tool in "$kubectl" "$helm" jq curl cargo; do
  command -v "$tool" >/dev/null || die "the e2e suite needs $tool"
done

failures=0
fail() {
  log "FAIL: $*"
  failures=$((failures + 1))
}
pass() { log "ok: $*"; }

pods() { k -n "$NS" get pods -l "app.kubernetes.io/instance=$RELEASE" -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}'; }
# metric POD NAME: one sample of the pod's /metrics, through the API server's pod proxy.
# GETs of the API with curl (a kubectl process per sample is too slow to sample with): the
# server and client certificate of the kubeconfig's current context. (The API server
# pretty-prints JSON for a curl user agent, so curl names another: sed parses the answers.)
creds="$(mktemp -d)"
k config view --raw --minify --flatten -o json >"$creds/config"
jq -r '.clusters[0].cluster.server' "$creds/config" >"$creds/server"
jq -r '.clusters[0].cluster["certificate-authority-data"]' "$creds/config" | base64 -d >"$creds/ca"
jq -r '.users[0].user["client-certificate-data"]' "$creds/config" | base64 -d >"$creds/cert"
jq -r '.users[0].user["client-key-data"]' "$creds/config" | base64 -d >"$creds/key"
api_get() {
  curl -sf --max-time 5 -A azs-csp-e2e --cacert "$creds/ca" --cert "$creds/cert" --key "$creds/key" "$(cat "$creds/server")$1"
}
metrics_port=8080 # the chart's default metrics.port
metric() {
  api_get "/api/v1/namespaces/$NS/pods/$1:$metrics_port/proxy/metrics" 2>/dev/null |
    awk -v name="$2" '$1 == name {print $2; exit}'
}
# These two run many times a second: curl and sed, no kubectl or python process.
lease_holder() {
  api_get "/apis/coordination.k8s.io/v1/namespaces/$NS/leases/$LEASE" 2>/dev/null |
    sed -n 's/.*"holderIdentity":"\([^"]*\)".*/\1/p'
}
# The API server writes a pod's metadata with its name first.
pods_now() {
  api_get "/api/v1/namespaces/$NS/pods?labelSelector=app.kubernetes.io/instance%3D$RELEASE" 2>/dev/null |
    grep -o '"metadata":{"name":"[^"]*"' | sed 's/.*"name":"//; s/"$//'
}
# Ready reasons of the examples (in the namespaces the examples create), one
# "kind/ns/name reason" line each, sorted.
example_namespaces="$(awk '/^kind: Namespace/ {ns = 1} ns && $1 == "name:" {print $2; ns = 0}' examples/registrations.yaml | paste -sd'|')"
example_reasons() {
  k get registrations.csp.azurestack.io,customersubscriptions.csp.azurestack.io -A \
    -o jsonpath='{range .items[*]}{.kind}/{.metadata.namespace}/{.metadata.name} {.status.conditions[?(@.type=="Ready")].reason}{"\n"}{end}' |
    grep -E "^[^/]*/($example_namespaces)/" | sort
}

suite_started=$SECONDS

# --- 1. install ---
# The chart installs the CRDs; Helm refuses ones it does not own (make test's, say).
for crd in registrations.csp.azurestack.io customersubscriptions.csp.azurestack.io; do
  if k get crd "$crd" >/dev/null 2>&1 &&
    [ "$(k get crd "$crd" -o jsonpath='{.metadata.labels.app\.kubernetes\.io/managed-by}')" != Helm ]; then
    die "the cluster already has the CRD $crd, not installed by Helm (make test installs it): the suite installs the CRDs with the chart, so it needs a cluster without them (make cluster-down first; make e2e then starts a fresh one)"
  fi
done
k create namespace "$NS" --dry-run=client -o yaml | k apply -f - >/dev/null
k label namespace "$NS" --overwrite pod-security.kubernetes.io/enforce=restricted \
  pod-security.kubernetes.io/enforce-version=latest >/dev/null
t0=$SECONDS
"$helm" install "$RELEASE" "$CHART" --namespace "$NS" --create-namespace \
  --set-file catalog.data=examples/catalog.yaml \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=IfNotPresent \
  --wait --timeout 180s >/dev/null
k -n "$NS" wait pod -l "app.kubernetes.io/instance=$RELEASE" --for=condition=Ready --timeout=120s >/dev/null
ready_seconds=$((SECONDS - t0))
pod="$(pods | head -n1)"
log "helm install: pod $pod Ready after ${ready_seconds}s"
pass "the operator pod is Ready (readiness probe GET /readyz)"

[ "$(k -n "$NS" get pod "$pod" -o jsonpath='{.status.containerStatuses[0].restartCount}')" = 0 ] ||
  fail "the operator container restarted"
if k -n "$NS" run psa-probe --image="$IMAGE" --privileged --restart=Never --dry-run=server -o name >/dev/null 2>&1; then
  fail "namespace $NS admits a privileged pod: the restricted standard is not enforced"
else
  pass "namespace $NS enforces the restricted Pod Security Standard (a privileged pod is refused)"
fi
if [ -n "${E2E_INSPECT:-}" ]; then
  cid="$(k -n "$NS" get pod "$pod" -o jsonpath='{.status.containerStatuses[0].containerID}')"
  seen="$($E2E_INSPECT "$cid")"
  [ "$seen" = "uid=65532 gid=65532 root=ro" ] || fail "the container runs as '$seen', not 'uid=65532 gid=65532 root=ro'"
  [ "$seen" = "uid=65532 gid=65532 root=ro" ] && pass "the container process runs as 65532:65532 on a read-only root ($seen)"
fi
[ -z "$(k -n "$NS" get pod "$pod" -o jsonpath='{.spec.containers[0].env[?(@.name=="KUBECONFIG")].name}')" ] ||
  fail "the pod has a KUBECONFIG: not in-cluster config"

# --- 2. the integration scenarios against the in-cluster operator ---
if [ "${E2E_TESTS:-}" != skip ]; then
  log "tests/operator.rs against the in-cluster operator (AZS_CSP_TEST_OPERATOR=external)"
  # Every scenario that needs of the operator only its API behaviour, its log (read from
  # the pod through the API) and its catalog (each scenario writes its own into the chart's
  # ConfigMap, so the catalog-file scenario rewrites that instead): every reason, settled
  # objects not written again, re-evaluation (billing model, a late Registration, a revoked
  # approval), duplicates, deletion protection, verify. The others give the operator flags
  # of their own, a second ConfigMap or an http resolver, or watch its process: make test.
  default_tests="every_documented_reason settled_objects admission_rejects a_billing_model_flip
    revoking_the_approval_in_the_catalog_file a_registration_created_after duplicates_by
    deleting_a_referenced_registration verify_reports"
  # One at a time and before the examples are applied: the operator watches the whole
  # cluster, and the scenarios' objects (copies of the examples) in two namespaces at once
  # would be duplicates of each other (DuplicateCloudId).
  # shellcheck disable=SC2086  # cargo test's filter words
  if AZS_CSP_TEST_OPERATOR=external AZS_CSP_TEST_OPERATOR_PODS="$NS/app.kubernetes.io/instance=$RELEASE" \
    AZS_CSP_TEST_OPERATOR_CATALOG="$NS/$CATALOG_CONFIGMAP" \
    cargo test --locked --test operator -- --test-threads=1 \
    ${E2E_TESTS:-$default_tests} 2>&1 | tail -n 25 >&2; then
    pass "tests/operator.rs passed against the in-cluster operator"
  else
    fail "tests/operator.rs failed against the in-cluster operator"
  fi
  # A scenario that failed half-way may have left its own catalog: the examples need theirs.
  k -n "$NS" patch configmap "$CATALOG_CONFIGMAP" --type merge \
    -p "$(jq -n --rawfile catalog examples/catalog.yaml '{data: {"catalog.yaml": $catalog}}')" >/dev/null
  # The scenarios' namespaces go after the tests, asynchronously (finalizers first); while
  # their Registrations (the examples' cloud) remain, the examples' would be duplicates.
  deadline=$((SECONDS + 120))
  while [ -n "$(k get registrations.csp.azurestack.io -A --no-headers 2>/dev/null)" ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      fail "the scenarios' Registrations remain 120s after the tests: $(k get registrations.csp.azurestack.io -A --no-headers | head -3 | paste -sd';')"
      break
    fi
    sleep 1
  done
fi

# --- the examples, reconciled through in-cluster config ---
k apply -f examples/registrations.yaml >/dev/null
k apply -f examples/customer-subscriptions.yaml >/dev/null
deadline=$((SECONDS + 60))
until ! example_reasons | awk 'NF < 2 {bad=1} END {exit !bad}'; do
  [ "$SECONDS" -lt "$deadline" ] || break
  sleep 1
done
if example_reasons | awk 'NF < 2 {bad=1} END {exit !bad}'; then
  fail "the in-cluster operator did not reconcile every example within 60s: $(example_reasons | tr '\n' ';')"
else
  pass "the in-cluster operator (in-cluster config, catalog ConfigMap) reconciled $(example_reasons | wc -l) example objects"
fi
reasons_before="$(example_reasons)"

logs="$(k -n "$NS" logs "$pod")"
# Every line a JSON object (jq fails on a line that is not JSON at all).
if [ -n "$logs" ] && jq -se 'length > 0 and all(type == "object")' <<<"$logs" >/dev/null 2>&1; then
  pass "kubectl logs: $(wc -l <<<"$logs") JSON lines (logFormat=json)"
else
  fail "kubectl logs of $pod are not JSON lines: $(head -c 300 <<<"$logs")"
fi

# --- 3. two replicas, rolling restart: one leader at a time ---
"$helm" upgrade "$RELEASE" "$CHART" --namespace "$NS" --reuse-values --set replicaCount=2 --wait --timeout 180s >/dev/null
k -n "$NS" rollout status deployment "$RELEASE" --timeout=180s >/dev/null
samples="$(mktemp)"
# One line per sample: the pods reporting azs_csp_leader 1, then the Lease holder.
# The pods are asked side by side, so that one sample is one moment.
sample_dir="$(mktemp -d)"
sample_leaders() {
  local dir="$sample_dir" p
  while :; do
    rm -f "$dir"/*
    for p in $(pods_now); do
      { [ "$(metric "$p" azs_csp_leader)" = 1 ] && echo "$p" >"$dir/$p"; } &
    done
    lease_holder >"$dir/.holder" &
    wait
    printf '%s | %s\n' "$(cat "$dir"/* 2>/dev/null | sort | paste -sd' ')" "$(cat "$dir/.holder")" >>"$samples"
  done
}
sample_leaders &
sampler=$!
k -n "$NS" rollout restart deployment "$RELEASE" >/dev/null
k -n "$NS" rollout status deployment "$RELEASE" --timeout=180s >/dev/null
sleep 3 # a few samples of the settled state (not an assertion)
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
# Two leaders in one sample can be a sampling race (one released, the next acquired between
# two reads); in two samples in a row they are two writers.
doubles="$(awk -F' [|] ' 'split($1, a, " ") > 1 {n++; if (n >= 2) bad=1; next} {n=0} END {print bad+0}' "$samples")"
[ "$doubles" = 0 ] || fail "two pods reported leadership in consecutive samples: $(grep -E '^[^ |]+ [^ |]+ \|' "$samples" | head -3)"
holders="$(awk -F' [|] ' '{print $2}' "$samples" | uniq | paste -sd' ')"
log "rolling restart: $(wc -l <"$samples") samples; Lease holders in turn: $holders"
ever_led="$(awk -F' [|] ' '{print $1}' "$samples" | tr ' ' '\n' | sort -u | paste -sd' ')"
for p in $(pods); do
  writes="$(metric "$p" azs_csp_status_writes_total)"
  case " $ever_led " in
    *" $p "*) ;;
    *) [ "${writes:-0}" = 0 ] || fail "pod $p never led but wrote $writes statuses" ;;
  esac
done
[ "$doubles" = 0 ] && pass "rolling restart with 2 replicas: one leader at a time (Lease: $holders)"
managers="$(k get registrations.csp.azurestack.io -A -o jsonpath='{range .items[*]}{range .metadata.managedFields[*]}{.manager}{" "}{.subresource}{"\n"}{end}{end}' | sort -u)"
log "field managers of the Registrations: $(paste -sd';' <<<"$managers")"
awk '$2 == "status" && $1 !~ /^azs-csp-operator/ {bad=1} END {exit bad}' <<<"$managers" ||
  fail "a status of a Registration was written by someone other than the operator"
reasons_after="$(example_reasons)"
[ "$reasons_after" = "$reasons_before" ] ||
  fail "the examples' Ready reasons changed over the restart: $(diff <(echo "$reasons_before") <(echo "$reasons_after") | grep '^[<>]' | paste -sd';')"

# --- 4. deleting the leader pod ---
leader="$(lease_holder)"
[ -n "$leader" ] || fail "no Lease holder before deleting the leader"
t0=$SECONDS
started_ns="$(date +%s%N)"
k -n "$NS" delete pod "$leader" --wait=false >/dev/null
deadline=$((SECONDS + 60))
new=""
while [ "$SECONDS" -lt "$deadline" ]; do
  holder="$(lease_holder)"
  if [ -n "$holder" ] && [ "$holder" != "$leader" ] && [ "$(metric "$holder" azs_csp_leader)" = 1 ]; then
    new="$holder"
    break
  fi
  sleep 0.1
done
takeover_ms=$((($(date +%s%N) - started_ns) / 1000000))
if [ -n "$new" ]; then
  pass "deleting the leader $leader: $new took over after ${takeover_ms} ms"
else
  fail "no other pod took over within 60s of deleting the leader $leader"
fi
: "$t0"
k -n "$NS" rollout status deployment "$RELEASE" --timeout=120s >/dev/null

# --- 5. uninstall ---
regs_before="$(k get registrations.csp.azurestack.io -A --no-headers | wc -l)"
subs_before="$(k get customersubscriptions.csp.azurestack.io -A --no-headers | wc -l)"
"$helm" uninstall "$RELEASE" --namespace "$NS" --wait --timeout 120s >/dev/null
k get crd registrations.csp.azurestack.io customersubscriptions.csp.azurestack.io >/dev/null 2>&1 ||
  fail "helm uninstall deleted the CRDs"
regs_after="$(k get registrations.csp.azurestack.io -A --no-headers 2>/dev/null | wc -l)"
subs_after="$(k get customersubscriptions.csp.azurestack.io -A --no-headers 2>/dev/null | wc -l)"
if [ "$regs_after" = "$regs_before" ] && [ "$subs_after" = "$subs_before" ]; then
  pass "helm uninstall: the CRDs, $regs_after Registrations and $subs_after CustomerSubscriptions remain"
else
  fail "helm uninstall: Registrations $regs_before -> $regs_after, CustomerSubscriptions $subs_before -> $subs_after"
fi
rm -rf "$samples" "$sample_dir" "$creds"

log "e2e figures: pod Ready ${ready_seconds}s after helm install; takeover ${takeover_ms} ms; suite $((SECONDS - suite_started))s"
[ "$failures" -eq 0 ] || die "$failures e2e check(s) failed"
log "e2e suite passed"
