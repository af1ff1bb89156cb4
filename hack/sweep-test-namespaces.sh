#!/usr/bin/env bash
# Cleans up the namespaces that killed integration test runs (Ctrl-C, timeouts) leave behind.
# Test namespaces carry the label azs-csp-operator.test=true (tests/common/mod.rs,
# TestNamespace). When a run dies, the operator process that would remove the finalizer
# csp.azurestack.io/registration-protection from their Registrations (and, in azure mode,
# csp.azurestack.io/azure-detach from their CustomerSubscriptions) dies with it, so a
# deleted test namespace stays Terminating forever (and keeps kube-controller-manager and
# the API server busy retrying it). This script, run by hack/test.sh before the tests:
#   - removes those finalizers (and only them) from the objects of every Terminating test
#     namespace, so that the namespace deletion can finish;
#   - deletes test namespaces that are not Terminating but older than
#     $SWEEP_STALE_AFTER_SECONDS (default 3600), and removes the finalizer in them too.
#     A test namespace lives as long as one test (well under a minute), so an hour-old one
#     is a leftover of a run that was killed before it could delete it. Younger ones are
#     left alone: a concurrent test run on the same cluster may own them.
# Only namespaces with the test label are touched. Nothing to sweep costs one list call and
# prints nothing; otherwise it prints one line with the counts. Never fails because of
# something it cannot clean (a warning on stderr instead): a sweep must not stop a test run.
#
# Usage: hack/sweep-test-namespaces.sh [KUBECTL_COMMAND...]
#   The kubectl command to use, e.g. `kubectl` (with $KUBECONFIG); by default the same one
#   hack/test.sh uses: `kubectl` when $KUBECONFIG is set, else hack/kubectl (local cluster).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LABEL="azs-csp-operator.test=true"
# The operator's finalizers, each on its kind.
FINALIZERS=(
  "registrations.csp.azurestack.io csp.azurestack.io/registration-protection"
  "customersubscriptions.csp.azurestack.io csp.azurestack.io/azure-detach"
)
STALE_AFTER="${SWEEP_STALE_AFTER_SECONDS:-3600}"
[[ "$STALE_AFTER" =~ ^[0-9]+$ ]] || die "SWEEP_STALE_AFTER_SECONDS must be a number of seconds"

if [ $# -gt 0 ]; then
  kubectl_cmd=("$@")
elif [ -n "${KUBECONFIG:-}" ]; then
  kubectl_cmd=(kubectl)
else
  kubectl_cmd=("$HACK_DIR/kubectl")
fi
k() { "${kubectl_cmd[@]}" --request-timeout=20s "$@"; }
warn() { log "sweep-test-namespaces: warning: $*"; }

# One list call. Prints "terminating NAME" or "stale NAME" per namespace to sweep.
if ! namespaces_json="$(k get namespaces -l "$LABEL" -o json)"; then
  warn "cannot list the test namespaces; not sweeping"
  exit 0
fi
# The label test is belt and braces: the list call already selected on it.
# shellcheck disable=SC2016 # a jq program, not a shell expansion
to_sweep="$(jq -r --argjson stale_after "$STALE_AFTER" '
  now as $now
  | .items[].metadata
  | select(.labels["azs-csp-operator.test"] == "true")
  | if .deletionTimestamp then "terminating \(.name)"
    elif ($now - (.creationTimestamp | fromdateiso8601)) > $stale_after then "stale \(.name)"
    else empty end
' <<<"$namespaces_json")" || {
  warn "cannot parse the namespace list; not sweeping"
  exit 0
}
[ -n "$to_sweep" ] || exit 0

terminating=0 stale=0 deleted=0 finalizers=0 failures=0
declare -A sweep_ns=()
while read -r kind name; do
  case "$kind" in
    terminating) terminating=$((terminating + 1)) ;;
    stale)
      stale=$((stale + 1))
      # --wait=false: the namespace controller deletes the content; the finalizers are
      # removed below, after which the deletion can finish.
      if k delete namespace "$name" --wait=false >/dev/null; then
        deleted=$((deleted + 1))
      else
        warn "cannot delete the stale test namespace $name"
        failures=$((failures + 1))
        continue
      fi
      ;;
  esac
  sweep_ns["$name"]=1
done <<<"$to_sweep"

# The objects that carry an operator finalizer, in the namespaces being swept, as
# "RESOURCE NAMESPACE NAME INDEX FINALIZER" (INDEX: its position in metadata.finalizers).
# No CRD installed means no such objects: nothing to remove.
remove=""
for ns in "${!sweep_ns[@]}"; do
  for entry in "${FINALIZERS[@]}"; do
    read -r resource finalizer <<<"$entry"
    if ! objects_json="$(k get "$resource" -n "$ns" -o json 2>/dev/null)"; then
      continue
    fi
    # shellcheck disable=SC2016 # a jq program, not a shell expansion
    remove+="$(jq -r --arg finalizer "$finalizer" --arg resource "$resource" '
      .items[].metadata
      | ((.finalizers // []) | index($finalizer)) as $index
      | select($index != null)
      | "\($resource) \(.namespace) \(.name) \($index) \($finalizer)"
    ' <<<"$objects_json")"$'\n' || warn "cannot parse the $resource of $ns"
  done
done

while read -r resource ns name index finalizer; do
  [ -n "$ns" ] || continue
  # JSON patch: "test" makes it a no-op failure, not a wrong removal, if the list changed
  # since the read (e.g. a live operator removed the finalizer meanwhile). Other
  # finalizers are kept.
  patch="[{\"op\":\"test\",\"path\":\"/metadata/finalizers/$index\",\"value\":\"$finalizer\"},{\"op\":\"remove\",\"path\":\"/metadata/finalizers/$index\"}]"
  if k patch "$resource" "$name" -n "$ns" --type=json -p "$patch" >/dev/null 2>&1; then
    finalizers=$((finalizers + 1))
  elif current="$(k get "$resource" "$name" -n "$ns" -o jsonpath='{.metadata.finalizers}' 2>/dev/null)" &&
    [[ "$current" == *"\"$finalizer\""* ]]; then
    warn "cannot remove the finalizer $finalizer from $resource $ns/$name"
    failures=$((failures + 1))
  fi # else: gone or finalizer already removed by someone else
done <<<"$remove"

summary="swept $((terminating + deleted)) leftover test namespaces ($terminating Terminating, $deleted deleted as older than ${STALE_AFTER}s): removed $finalizers finalizers"
[ "$failures" -eq 0 ] || summary+="; $failures failures (see the warnings above)"
log "$summary"
exit 0
