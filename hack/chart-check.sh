#!/usr/bin/env bash
# Checks the Helm chart charts/azs-csp-operator (`make chart-check`; tests/chart.rs does the
# same from `cargo test`, plus an install and an end-to-end run):
#  1. its CRD copies are byte-identical to crds/ (hack/chart-crds.sh --check);
#  2. helm lint --strict with Helm 3 (the cached helm) and Helm 4 (hack/tools.sh), for each
#     set of values below (values.schema.json included);
#  3. checkov finds nothing in the rendered manifests (skips: charts/azs-csp-operator/.checkov.yaml);
#  4. with the local cluster up: kubeconform -strict against JSON schemas generated from the
#     API server's OpenAPI (hack/chart-schemas.sh), and `kubectl apply --server-side
#     --dry-run=server` (the API server validates against its exact schemas, CRDs included;
#     nothing is stored). Without a cluster these are skipped with a notice, unless
#     CHART_CHECK_REQUIRE_CLUSTER=1.
# Linters come from hack/tools.sh (installed into the cache on first use).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

chart="$REPO_ROOT/charts/azs-csp-operator"
helm="$BIN_DIR/helm"
[ -x "$helm" ] || die "helm is not built yet: run make control-plane"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# name|helm --set arguments (comma-separated, as helm takes them). @NS1@ and @NS2@ stand for
# two watched namespaces: partner-a/partner-b for the linters, and namespaces that exist in
# every cluster for the server-side dry-run (which needs them, and stores nothing).
variants=(
  "default|"
  "namespaced-ha|replicaCount=2,watchNamespaces={@NS1@,@NS2@}"
  "existing-catalog|catalog.existingConfigMap.name=my-catalog,catalog.existingConfigMap.namespace=@NS2@,crds.install=false"
  "http|resolver.type=http,http.url=https://metadata.example.com/api,http.tokenSecret.name=resolver-token,http.caConfigMap.name=resolver-ca"
  "http-ca-secret|resolver.type=http,http.url=https://metadata.example.com/api,http.caSecret.name=resolver-ca,image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
  "monitoring|metrics.serviceMonitor.enabled=true,metrics.serviceMonitor.labels.release=prometheus"
)

render() { # render NAME NAMESPACE SETS OUT [NS1 NS2]
  local sets=() values="$3"
  values="${values//@NS1@/${5:-partner-a}}"
  values="${values//@NS2@/${6:-partner-b}}"
  [ -n "$values" ] && sets=(--set "$values")
  "$helm" template "azs-csp-$1" "$chart" --namespace "$2" "${sets[@]}" >"$4"
}

log "1/4 chart CRDs"
"$HACK_DIR/chart-crds.sh" --check

log "2/4 helm lint (Helm 3 and Helm 4)"
helm4="$("$HACK_DIR/tools.sh" path helm4)"
for v in "${variants[@]}"; do
  name="${v%%|*}" sets="${v#*|}"
  sets="${sets//@NS1@/partner-a}"
  sets="${sets//@NS2@/partner-b}"
  args=()
  [ -n "$sets" ] && args=(--set "$sets")
  for h in "$helm" "$helm4"; do
    "$h" lint --strict --namespace azs-csp-system "$chart" "${args[@]}" >"$work/lint.log" 2>&1 ||
      { cat "$work/lint.log" >&2; die "$("$h" version --short) lint failed for values $name"; }
  done
done

log "3/4 checkov"
checkov="$("$HACK_DIR/tools.sh" path checkov)"
mkdir -p "$work/checkov"
for v in "${variants[@]}"; do
  render "${v%%|*}" azs-csp-system "${v#*|}" "$work/checkov/${v%%|*}.yaml"
done
"$checkov" --config-file "$chart/.checkov.yaml" -d "$work/checkov" ||
  die "checkov found problems (fix them, or justify a skip in values.yaml and .checkov.yaml)"

log "4/4 kubeconform and server-side dry-run against the local cluster"
if ! "$HACK_DIR/cluster-status.sh" >/dev/null 2>&1; then
  [ "${CHART_CHECK_REQUIRE_CLUSTER:-0}" = 1 ] && die "the local cluster is not running: make cluster-up"
  log "skipped: the local cluster is not running (make cluster-up)"
  exit 0
fi
kubeconform="$("$HACK_DIR/tools.sh" path kubeconform)"
"$HACK_DIR/chart-schemas.sh" "$work/schemas"
mkdir -p "$work/cluster"
for v in "${variants[@]}"; do
  render "${v%%|*}" default "${v#*|}" "$work/cluster/${v%%|*}.yaml" default kube-public
done
"$kubeconform" -strict -summary -skip ServiceMonitor \
  -schema-location "$work/schemas/{{ .Group }}/{{ .ResourceAPIVersion }}/{{ .ResourceKind }}.json" \
  "$work/cluster"/*.yaml
for f in "$work/cluster"/*.yaml; do
  case "$f" in */monitoring.yaml) continue ;; esac # the ServiceMonitor CRD is not installed here
  "$HACK_DIR/kubectl" apply --server-side --force-conflicts --field-manager=chart-check \
    --dry-run=server -f "$f" >"$work/dry-run.log" 2>&1 ||
    { cat "$work/dry-run.log" >&2; die "the API server refused $(basename "$f" .yaml)"; }
done
log "server-side dry-run accepted every variant"
log "chart OK"
