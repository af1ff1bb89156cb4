"""Microsoft's generated Python client for Microsoft.AzureStack, with azure-identity, against the
emulator (DESIGN.md section 10): create, get, list (paged) and delete customer subscriptions,
read the registration, and see the documented error codes. Run by tests/emulator.rs; the
environment names the emulator and the catalog entries; REQUESTS_CA_BUNDLE trusts its CA."""

import os
import sys

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.mgmt.azurestack import AzureStackManagementClient
from azure.mgmt.azurestack.models import CustomerSubscription

env = os.environ
url = env["EMULATOR_URL"]
group = env["RESOURCE_GROUP"]
registration = env["REGISTRATION_NAME"]
customer = env["CUSTOMER_SUBSCRIPTION"]
customer_tenant = env["CUSTOMER_TENANT"]
extra = env["EXTRA_SUBSCRIPTIONS"].split(",")


def check(condition, what):
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


# Instance discovery would ask login.microsoftonline.com about this authority: turn it off.
credential = ClientSecretCredential(
    env["TENANT_ID"],
    env["CLIENT_ID"],
    env["CLIENT_SECRET"],
    authority=url,
    disable_instance_discovery=True,
)
client = AzureStackManagementClient(
    credential,
    env["REGISTRATION_SUBSCRIPTION"],
    base_url=url,
    credential_scopes=[url + "/.default"],
)

found = client.registrations.get(group, registration)
check(found.billing_model == "PayAsYouUse", f"registration billing model {found.billing_model}")
check(found.cloud_id == env["CLOUD_ID"], f"registration cloud id {found.cloud_id}")

created = client.customer_subscriptions.create(
    group, registration, customer, CustomerSubscription(tenant_id=customer_tenant)
)
check(created.name == customer, f"create answered {created.name}")
check(created.tenant_id == customer_tenant, f"create answered tenant {created.tenant_id}")

got = client.customer_subscriptions.get(group, registration, customer)
check(got.tenant_id == customer_tenant, f"get answered tenant {got.tenant_id}")

for subscription in extra:
    client.customer_subscriptions.create(
        group, registration, subscription, CustomerSubscription()
    )
listed = [c.name for c in client.customer_subscriptions.list(group, registration)]
check(len(listed) == 1 + len(extra), f"list followed nextLink to {len(listed)} items")
check(customer in listed, "list includes the first one")

try:
    client.customer_subscriptions.create(
        group, registration, env["OTHER_PARTNER_SUBSCRIPTION"], CustomerSubscription()
    )
    check(False, "a subscription of another partner is refused")
except HttpResponseError as error:
    check(error.status_code == 400, f"refused with {error.status_code}")
    check(error.error.code == "BadCustomerSubscriptionId", f"error code {error.error.code}")

client.customer_subscriptions.delete(group, registration, customer)
try:
    client.customer_subscriptions.get(group, registration, customer)
    check(False, "get after delete fails")
except ResourceNotFoundError as error:
    check(error.error.code == "CustomerSubscriptionNotFound", f"get after delete: {error.error.code}")
try:
    client.customer_subscriptions.delete(group, registration, customer)
    check(False, "a second delete answers 404")
except ResourceNotFoundError as error:
    check(error.status_code == 404, "a second delete answers 404")

try:
    client.registrations.get(group, "no-such-registration")
    check(False, "an unknown registration is not found")
except ResourceNotFoundError as error:
    check(error.error.code == "RegistrationNotFound", f"unknown registration: {error.error.code}")

print("PASS")
