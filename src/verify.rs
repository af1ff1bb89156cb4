//! `azs-csp-operator verify`: is this customer subscription attached to this registration?
//! With `--in-azure` ARM is asked too, and both answers are reported.

use kube::{Api, Client, ResourceExt, api::ListParams};

use crate::{
    api::{CustomerSubscription, Registration},
    controller::Error,
    guid::{Guid, GuidText},
    policy::Reason,
};

/// A customer subscription attached (Ready=True) to a registration.
#[derive(Debug, PartialEq, Eq)]
pub struct Mapping {
    pub customer_subscription: String,
    pub subscription_id: String,
    pub arm_resource_id: Option<String>,
    pub tenant_id: Option<String>,
}

/// Why verification failed: the documented code and a sentence.
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
}

/// Decides the answer from the objects of the namespace.
pub fn verify(
    namespace: &str,
    registration_name: &str,
    registration: Option<&Registration>,
    customers: &[CustomerSubscription],
    subscription_id: &str,
) -> Result<Mapping, Failure> {
    if registration.is_none() {
        return Err(Failure {
            reason: Reason::RegistrationNotFound,
            message: format!("Registration {namespace}/{registration_name} does not exist."),
        });
    }
    let wanted = GuidText::parse(subscription_id);
    // A GUID is shown as parsed (lower case), other text as written.
    let shown = wanted
        .guid()
        .map_or_else(|| subscription_id.to_string(), |id| id.to_string());
    customers
        .iter()
        .filter(|c| c.spec.registration_ref.name == registration_name)
        .filter(|c| GuidText::parse(&c.spec.subscription_id) == wanted)
        .find(|c| crate::controller::is_attached(c))
        .map(|c| Mapping {
            customer_subscription: c.name_any(),
            subscription_id: shown.clone(),
            arm_resource_id: c.status.as_ref().and_then(|s| s.arm_resource_id.clone()),
            tenant_id: c.status.as_ref().and_then(|s| s.tenant_id.clone()),
        })
        .ok_or_else(|| Failure {
            reason: Reason::CustomerSubscriptionNotFound,
            message: format!(
                "Customer subscription {shown} is not added to registration {namespace}/{registration_name} (no CustomerSubscription for it there is Ready)."
            ),
        })
}

/// Reads the namespace's objects and verifies.
pub async fn run(
    client: Client,
    namespace: &str,
    registration_name: &str,
    subscription_id: &str,
) -> Result<Result<Mapping, Failure>, Error> {
    let registrations: Api<Registration> = Api::namespaced(client.clone(), namespace);
    let registration = registrations
        .get_opt(registration_name)
        .await
        .map_err(Error::Api)?;
    let customers: Api<CustomerSubscription> = Api::namespaced(client, namespace);
    let list = customers
        .list(&ListParams::default())
        .await
        .map_err(Error::Api)?;
    Ok(verify(
        namespace,
        registration_name,
        registration.as_ref(),
        &list.items,
        subscription_id,
    ))
}

/// Asks ARM whether the Registration `registration_name` of `namespace` holds the
/// subscription; the ARM id of the registration and the answer.
pub async fn ask_azure(
    client: Client,
    arm: &crate::azure::ArmClient,
    namespace: &str,
    registration_name: &str,
    subscription_id: &str,
) -> Result<Option<(String, AzureAnswer)>, Error> {
    let registrations: Api<Registration> = Api::namespaced(client, namespace);
    let Some(registration) = registrations
        .get_opt(registration_name)
        .await
        .map_err(Error::Api)?
    else {
        return Ok(None);
    };
    let wanted = Guid::parse(subscription_id)
        .map_or_else(|| subscription_id.to_string(), |id| id.to_string());
    let key = crate::policy::registration_key(&registration);
    let answer = arm.get_customer_subscription(&key, &wanted).await;
    Ok(Some((
        crate::policy::arm_resource_id(&registration),
        answer,
    )))
}

/// What ARM says about the customer subscription (`verify --in-azure`).
pub type AzureAnswer =
    Result<Option<crate::domain::arm::ArmCustomerSubscription>, crate::domain::arm::ArmError>;

/// The cluster's and ARM's answers side by side: the lines to print and whether they agree
/// that the subscription is attached.
pub fn compare(
    cluster: &Result<Mapping, Failure>,
    azure: &AzureAnswer,
    arm_id: &str,
) -> (bool, String) {
    match (cluster, azure) {
        (Ok(_), Ok(Some(found))) => (
            true,
            format!(
                "Azure: registration {arm_id} holds subscription {}{} (x-ms-request-id {}).",
                found.name,
                found
                    .tenant_id
                    .as_deref()
                    .map(|t| format!(" for tenant {t}"))
                    .unwrap_or_default(),
                found.request_id.as_deref().unwrap_or("none")
            ),
        ),
        (Ok(mapping), Ok(None)) => (
            false,
            format!(
                "Azure: CustomerSubscriptionNotFound: registration {arm_id} does not hold subscription {}, although CustomerSubscription {} says it is attached; the operator adds it again at its next resync.",
                mapping.subscription_id, mapping.customer_subscription
            ),
        ),
        (Err(_), Ok(Some(found))) => (
            false,
            format!(
                "Azure: registration {arm_id} holds subscription {}, which no Ready CustomerSubscription declares (an unmanaged tenant).",
                found.name
            ),
        ),
        (Err(_), Ok(None)) => (
            false,
            format!(
                "Azure: CustomerSubscriptionNotFound: registration {arm_id} does not hold it either."
            ),
        ),
        (_, Err(error)) => (false, format!("Azure: could not be asked: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::arm::{ArmCustomerSubscription, ArmError};

    #[test]
    fn both_answers_are_compared() {
        let attached = Ok(Mapping {
            customer_subscription: "fabrikam".into(),
            subscription_id: "s".into(),
            arm_resource_id: None,
            tenant_id: None,
        });
        let missing: Result<Mapping, Failure> = Err(Failure {
            reason: Reason::CustomerSubscriptionNotFound,
            message: "m".into(),
        });
        let held: AzureAnswer = Ok(Some(ArmCustomerSubscription {
            name: "s".into(),
            tenant_id: Some("t".into()),
            request_id: Some("r".into()),
        }));
        let rows = [
            (&attached, &held, true, "holds subscription s for tenant t"),
            (&attached, &Ok(None), false, "CustomerSubscriptionNotFound"),
            (&missing, &held, false, "unmanaged"),
            (&missing, &Ok(None), false, "does not hold it either"),
            (
                &attached,
                &Err(ArmError::Unreachable {
                    reason: "refused".into(),
                }),
                false,
                "refused",
            ),
        ];
        for (cluster, azure, agree, needle) in rows {
            let (got, text) = compare(cluster, azure, "/r");
            assert_eq!(got, agree, "{text}");
            assert!(text.contains(needle), "{text}");
        }
    }
}
