#!/usr/bin/env bash
# Azure's own command-line client against the emulator (DESIGN.md section 10), configured for a
# custom cloud as a partner would: register the cloud from its ARM endpoint's metadata, log in
# with a service principal, then add, read, list and remove a customer subscription, and see
# ARM's error codes, also the 403 of a principal without a role on the registration. Run by
# tests/emulator.rs; the environment names the emulator, the catalog entries, the `az` to run
# and an empty AZURE_CONFIG_DIR. Few invocations: each costs a second.
set -euo pipefail

: "${AZ:?}" "${EMULATOR_URL:?}" "${AZURE_CONFIG_DIR:?}" "${REQUESTS_CA_BUNDLE:?}"
registration="/subscriptions/$REGISTRATION_SUBSCRIPTION/resourceGroups/$RESOURCE_GROUP/providers/Microsoft.AzureStack/registrations/$REGISTRATION_NAME"
customer="$registration/customerSubscriptions/$CUSTOMER_SUBSCRIPTION"
api="2022-06-01"

check() { # check WHAT GOT WANT
  if [ "$2" != "$3" ]; then
    printf 'FAILED: %s: got %q, want %q\n' "$1" "$2" "$3" >&2
    exit 1
  fi
  printf 'ok: %s\n' "$1"
}

# The call must fail, and its error output name this ARM error code.
fails_with() { # fails_with WHAT CODE COMMAND...
  local what="$1" code="$2" output
  shift 2
  if output="$("$@" 2>&1)"; then
    printf 'FAILED: %s succeeded:\n%s\n' "$what" "$output" >&2
    exit 1
  fi
  case "$output" in
    *"$code"*) printf 'ok: %s (%s)\n' "$what" "$code" ;;
    *) printf 'FAILED: %s: no %s in:\n%s\n' "$what" "$code" "$output" >&2; exit 1 ;;
  esac
}

# The trailing slash is how Azure Stack's documentation writes the endpoint; the CLI then asks
# for //metadata/endpoints, which ARM (and so the emulator) reads as /metadata/endpoints.
"$AZ" cloud register --name AzsCspEmulator --endpoint-resource-manager "$EMULATOR_URL/" >/dev/null
"$AZ" cloud set --name AzsCspEmulator >/dev/null 2>&1
check "the cloud's login endpoint came from its metadata" \
  "$("$AZ" cloud show --query endpoints.activeDirectory -o tsv)" "$EMULATOR_URL/"

check "az login --service-principal finds the registration's subscription" \
  "$("$AZ" login --service-principal --username "$CLIENT_ID" --password "$CLIENT_SECRET" \
      --tenant "$TENANT_ID" --query '[].id' -o tsv)" "$REGISTRATION_SUBSCRIPTION"

check "az resource create answers the tenant" \
  "$("$AZ" resource create --id "$customer" --api-version "$api" \
      --properties "{\"tenantId\": \"$CUSTOMER_TENANT\"}" --query properties.tenantId -o tsv)" \
  "$CUSTOMER_TENANT"
check "az resource show reads it back" \
  "$("$AZ" resource show --id "$customer" --api-version "$api" --query name -o tsv)" \
  "$CUSTOMER_SUBSCRIPTION"
check "az rest lists it" \
  "$("$AZ" rest --method get --url "$registration/customerSubscriptions?api-version=$api" \
      --query 'value[].name' -o tsv)" "$CUSTOMER_SUBSCRIPTION"
fails_with "a subscription of another partner is refused" BadCustomerSubscriptionId \
  "$AZ" rest --method put --url "$registration/customerSubscriptions/$OTHER_PARTNER_SUBSCRIPTION?api-version=$api" \
  --body '{"properties": {}}'
"$AZ" resource delete --id "$customer" --api-version "$api"
fails_with "az resource show after the delete" CustomerSubscriptionNotFound \
  "$AZ" resource show --id "$customer" --api-version "$api"

# A principal that authenticates but holds no role on the registration: ARM's 403.
"$AZ" login --service-principal --username "$NO_ROLE_CLIENT_ID" --password "$NO_ROLE_CLIENT_SECRET" \
  --tenant "$TENANT_ID" >/dev/null
fails_with "a principal without a role on the registration" AuthorizationFailed \
  "$AZ" resource show --id "$customer" --api-version "$api"
echo PASS
