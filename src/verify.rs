//! `azs-csp-operator verify`: is this customer subscription attached to this registration?

use kube::{Api, Client, ResourceExt, api::ListParams};

use crate::{
    api::{CustomerSubscription, Registration},
    controller::Error,
    guid::Guid,
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
    let wanted = Guid::parse(subscription_id)
        .map_or_else(|| subscription_id.to_string(), |id| id.to_string());
    customers
        .iter()
        .filter(|c| c.spec.registration_ref.name == registration_name)
        .filter(|c| c.spec.subscription_id.eq_ignore_ascii_case(&wanted))
        .find(|c| crate::controller::is_attached(c))
        .map(|c| Mapping {
            customer_subscription: c.name_any(),
            subscription_id: wanted.clone(),
            arm_resource_id: c.status.as_ref().and_then(|s| s.arm_resource_id.clone()),
            tenant_id: c.status.as_ref().and_then(|s| s.tenant_id.clone()),
        })
        .ok_or_else(|| Failure {
            reason: Reason::CustomerSubscriptionNotFound,
            message: format!(
                "Customer subscription {wanted} is not added to registration {namespace}/{registration_name} (no CustomerSubscription for it there is Ready)."
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
