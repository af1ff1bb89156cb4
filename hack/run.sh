#!/usr/bin/env bash
# make run: the operator on the local cluster with the example catalog and manifests.
# The emulator (DESIGN.md section 10) plays the stamp's usage API with examples/stamp.yaml (two
# days of past usage) and a CloudEvents sink; contoso-stack reads its usage, and `usage report`
# is printed once it is ingested. MODE=azure: the emulator also plays Azure and the operator runs
# in azure mode against it; the tenants the emulator then holds are printed too.
# Ctrl-C stops the operator (and the emulator), and the cluster if this script started it.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

MODE="${MODE:-local}"
case "$MODE" in
  local | azure) ;;
  *) die "MODE must be local or azure, not '$MODE'" ;;
esac

started=""
operator_pid=""
emulator_pid=""
cleanup() {
  trap - EXIT INT TERM
  for pid in "$operator_pid" "$emulator_pid"; do
    if [ -n "$pid" ]; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  if [ -n "$started" ]; then
    log "stopping the cluster this run started"
    "$HACK_DIR/cluster-down.sh"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$HACK_DIR/build-control-plane.sh"
if ! "$HACK_DIR/cluster-status.sh" >/dev/null 2>&1; then
  "$HACK_DIR/cluster-up.sh"
  started=1
fi
export KUBECONFIG="$CLUSTER_DIR/kubeconfig"
k() { "$HACK_DIR/kubectl" "$@"; }

cargo build --locked
k apply --server-side -f crds/ >/dev/null
k wait --for condition=Established crd/registrations.csp.azurestack.io crd/customersubscriptions.csp.azurestack.io --timeout=60s >/dev/null

operator_log="$CLUSTER_DIR/logs/operator.log"
mkdir -p "$(dirname "$operator_log")"
# The example catalog's service principal (examples/catalog.yaml) in the emulator's Entra ID.
TENANT_ID=0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e
CLIENT_ID=9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a
emulator_dir="$CLUSTER_DIR/emulator"
mkdir -p "$emulator_dir"
emulator_log="$CLUSTER_DIR/logs/emulator.log"
target/debug/azs-csp-operator emulate --catalog examples/catalog.yaml --stamp examples/stamp.yaml \
  --listen 127.0.0.1:0 --tls-dir "$emulator_dir/tls" >"$emulator_dir/stdout" 2>"$emulator_log" &
emulator_pid=$!
emulator_url=""
for _ in $(seq 1 300); do
  emulator_url="$(sed -n 's/^emulator listening on //p' "$emulator_dir/stdout")"
  [ -n "$emulator_url" ] && break
  kill -0 "$emulator_pid" 2>/dev/null || die "the emulator stopped; see $emulator_log"
  sleep 0.1
done
[ -n "$emulator_url" ] || die "the emulator did not start; see $emulator_log"
log "emulator listening on $emulator_url (log $emulator_log)"
secret_file="$emulator_dir/client-secret"
(umask 077 && printf '%s' emulator-demo-secret >"$secret_file")
# The stamp's usage API and the sink are the emulator's; its Entra ID signs the operator in.
usage_flags=(--usage-sink "$emulator_url/events" --usage-ca-file "$emulator_dir/tls/ca.crt"
  --usage-credential client-secret --usage-tenant-id "$TENANT_ID" --usage-client-id "$CLIENT_ID"
  --usage-client-secret-file "$secret_file" --usage-authority-host "$emulator_url"
  --rate-card examples/rate-card.yaml --usage-interval 5s --usage-delay 0s)
if [ "$MODE" = azure ]; then
  AZURE_TENANT_ID="$TENANT_ID" AZURE_CLIENT_ID="$CLIENT_ID" AZURE_AUTHORITY_HOST="$emulator_url" \
    target/debug/azs-csp-operator run --mode azure --arm-endpoint "$emulator_url" \
    --azure-ca-file "$emulator_dir/tls/ca.crt" --azure-credential client-secret \
    --azure-client-secret-file "$secret_file" "${usage_flags[@]}" --metrics-addr 127.0.0.1:8080 >"$operator_log" 2>&1 &
else
  target/debug/azs-csp-operator run --catalog-file examples/catalog.yaml "${usage_flags[@]}" \
    --metrics-addr 127.0.0.1:8080 >"$operator_log" 2>&1 &
fi
operator_pid=$!
log "operator started (pid $operator_pid, log $operator_log)"

# Order matters where age decides: the original Registration and CustomerSubscription first.
k apply -f examples/registrations.yaml
k wait -n partner-contoso registration/contoso-stack --for=jsonpath='{.status.observedGeneration}' --timeout=60s >/dev/null
k apply -f examples/duplicate-registration.yaml -f examples/customer-subscriptions.yaml
k wait -n partner-contoso customersubscription/fabrikam --for=condition=Ready --timeout=60s >/dev/null
k apply -f examples/duplicate-customer-subscription.yaml
k wait -n partner-contoso azsreg,custsub --all --for=jsonpath='{.status.observedGeneration}' --timeout=60s >/dev/null
sleep 1 # let the Registrations count the last attachments
k get azs-csp -A
echo
# Usage: contoso-stack reads the stamp's two days of past usage (from 49 hours back, before the
# emulator's first record), then the chargeback table. The tenants were attached just now, so
# the past usage is the registration subscription's, as Azure bills it; their own hours follow.
start_time="$(date -u -d '-49 hours' +%Y-%m-%dT%H:00:00Z)"
k -n partner-contoso patch registration contoso-stack --type merge -p \
  "{\"spec\":{\"usageSource\":{\"endpoint\":\"$emulator_url\",\"providerSubscriptionId\":\"1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b\",\"startTime\":\"$start_time\"}}}" >/dev/null
now_hour="$(date -u +%Y-%m-%dT%H:00:00Z)"
for _ in $(seq 1 120); do
  through="$(k -n partner-contoso get registration contoso-stack -o jsonpath='{.status.usage.ingestedThrough}')"
  [[ -n "$through" && ! "$through" < "$now_hour" ]] && break
  sleep 1
done
log "usage ingested through ${through:-nothing yet}; azs-csp-operator usage report:"
target/debug/azs-csp-operator usage report
echo
if [ "$MODE" = azure ]; then
  token="$(curl -sS --cacert "$emulator_dir/tls/ca.crt" "$emulator_url/$TENANT_ID/oauth2/v2.0/token" \
    --data-urlencode grant_type=client_credentials --data-urlencode "client_id=$CLIENT_ID" \
    --data-urlencode client_secret@"$secret_file" --data-urlencode "scope=$emulator_url/.default" | jq -r .access_token)"
  registration=/subscriptions/6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c/resourceGroups/azurestack/providers/Microsoft.AzureStack/registrations/azurestack-5f1c2d3e
  log "tenants the emulator holds for $registration:"
  curl -sS --cacert "$emulator_dir/tls/ca.crt" -H "Authorization: Bearer $token" \
    "$emulator_url$registration/customerSubscriptions?api-version=2022-06-01" \
    | jq -r '.value[] | "  \(.name)  tenant \(.properties.tenantId // "-")"'
  echo
fi
log "the operator keeps running (log: $operator_log); try: kubectl --kubeconfig $KUBECONFIG -n partner-contoso describe custsub northwind"
log "press Ctrl-C to stop"
wait "$operator_pid"
