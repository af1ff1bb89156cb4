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

# The value sets: hack/chart-variants.txt (tests/chart.rs reads it too). Each line: a name,
# then --set arguments; @NS1@ and @NS2@ stand for the two watched namespaces.
names=()
declare -A sets_of
while read -r name sets; do
  case "$name" in '' | '#'*) continue ;; esac
  names+=("$name")
  sets_of[$name]="$sets"
done <"$HACK_DIR/chart-variants.txt"

render() { # render NAME NAMESPACE OUT [NS1 NS2]: helm template with the variant's values
  local args=() set words sets="${sets_of[$1]}"
  sets="${sets//@NS1@/${4:-partner-a}}"
  sets="${sets//@NS2@/${5:-partner-b}}"
  read -ra words <<<"$sets"
  for set in "${words[@]}"; do args+=(--set "$set"); done
  "$helm" template "azs-csp-$1" "$chart" --namespace "$2" "${args[@]}" >"$3"
}

lint_args() { # lint_args NAME: the variant's --set arguments for the linters, one per line
  local set words sets="${sets_of[$1]}"
  sets="${sets//@NS1@/partner-a}"
  sets="${sets//@NS2@/partner-b}"
  read -ra words <<<"$sets"
  for set in "${words[@]}"; do printf '%s\n' --set "$set"; done
}

log "1/4 chart CRDs"
"$HACK_DIR/chart-crds.sh" --check

log "2/4 helm lint (Helm 3 and Helm 4)"
helm4="$("$HACK_DIR/tools.sh" path helm4)"
for name in "${names[@]}"; do
  mapfile -t args < <(lint_args "$name")
  for h in "$helm" "$helm4"; do
    "$h" lint --strict --namespace azs-csp-system "$chart" "${args[@]}" >"$work/lint.log" 2>&1 ||
      { cat "$work/lint.log" >&2; die "$("$h" version --short) lint failed for values $name"; }
  done
done

log "3/4 checkov"
checkov="$("$HACK_DIR/tools.sh" path checkov)"
mkdir -p "$work/checkov"
for name in "${names[@]}"; do
  render "$name" azs-csp-system "$work/checkov/$name.yaml"
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
for name in "${names[@]}"; do
  render "$name" default "$work/cluster/$name.yaml" default kube-public
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
