//! ARM for the emulator (DESIGN.md §10): `Microsoft.AzureStack` registrations (from the
//! catalog) and their customerSubscriptions (in memory) as the published REST spec declares
//! them, the subscription list and the cloud metadata the Azure CLI needs, bearer checks and
//! write throttling.
//!
//! Authorization: a caller's principal acts only on the registrations its catalog entry's
//! `registrations` scopes reach (all of them when it has none), as an Azure role assignment
//! on a subscription, resource group or registration would allow; anything else is 403
//! `AuthorizationFailed`. The check comes after authentication and before anything else, as
//! ARM's is, so it does not reveal whether the registration exists.
//!
//! Paths are matched case-insensitively, as ARM does. Everything under `/subscriptions/{id}`
//! comes through [`dispatch`], which picks the resource provider; the stamp's admin providers
//! (`Microsoft.Commerce.Admin`, `Microsoft.Subscriptions.Admin`, DESIGN.md §9) are answered
//! by [`super::usage`] after the bearer check.

use std::collections::{BTreeMap, HashMap};

use axum::{
    Json,
    body::Bytes,
    extract::{Query, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{
    Shared, entra,
    throttle::{self, Admission},
};
use crate::{
    api::{
        CustomerSubscription, CustomerSubscriptionSpec, Registration, RegistrationRef,
        RegistrationSpec,
    },
    guid::{Guid, GuidText},
    policy::{CustomerFacts, Reason, evaluate_customer},
    resolver::{Catalog, CatalogRegistration, RegistrationKey, ServicePrincipal},
};

/// The api-versions of `Microsoft.AzureStack` the published spec declares for these calls.
pub const API_VERSIONS: [&str; 3] = ["2017-06-01", "2020-06-01-preview", "2022-06-01"];
/// Items per page of a customerSubscriptions list.
pub const PAGE_SIZE: usize = 100;
const PROVIDER: &str = "Microsoft.AzureStack";
const CUSTOMER_SUBSCRIPTION_TYPE: &str = "Microsoft.AzureStack/registrations/customerSubscriptions";
const REGISTRATION_TYPE: &str = "Microsoft.AzureStack/registrations";
/// The cloud's name in its metadata (`az cloud register` takes its own).
pub const CLOUD_NAME: &str = "AzsCspEmulator";
pub const REMAINING_WRITES_HEADER: &str = "x-ms-ratelimit-remaining-subscription-writes";

/// A tenant added to a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCustomer {
    /// The customer subscription as the PUT spelt it (ARM keeps the name it was given).
    pub name: String,
    pub tenant_id: Option<Guid>,
    pub etag: String,
}

/// The customerSubscriptions of every registration, by subscription GUID (in the order of
/// their lower-case text).
#[derive(Debug, Default)]
pub struct ArmState {
    pub customers: HashMap<RegistrationKey, BTreeMap<Guid, StoredCustomer>>,
}

/// An ARM error answer: `{"error":{"code","message"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ArmError {
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }
}

impl IntoResponse for ArmError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            headers.insert(REMAINING_WRITES_HEADER, HeaderValue::from(0));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Bearer error=\"invalid_token\", error_description=\"The access token is missing or invalid.\"",
                ),
            );
        }
        response
    }
}

/// The status of an error whose code is one of the seed's (DESIGN.md §1).
pub fn status_of(reason: Reason) -> StatusCode {
    match reason {
        Reason::RegistrationNotFound | Reason::CustomerSubscriptionNotFound => {
            StatusCode::NOT_FOUND
        }
        Reason::MetadataResolverBadGatewayError => StatusCode::BAD_GATEWAY,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Who is calling, from a valid bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant_id: String,
    pub client_id: String,
}

/// The audiences ARM accepts: its own URL, with or without the trailing slash.
fn accepts_audience(base_url: &str, audience: &str) -> bool {
    audience.trim_end_matches('/') == base_url.trim_end_matches('/')
}

/// Checks the `Authorization: Bearer` header: a token of this emulator's Entra ID, unexpired,
/// for this ARM, from the issuer of its own tenant.
pub fn authenticate(emulator: &super::Emulator, headers: &HeaderMap) -> Result<Caller, ArmError> {
    let unauthorized =
        |code: &str, message: String| ArmError::new(StatusCode::UNAUTHORIZED, code, message);
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.".to_owned(),
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or_else(|| {
            unauthorized(
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is not a Bearer token."
                    .to_owned(),
            )
        })?;
    let claims = emulator.tokens.verify(token.trim()).map_err(|e| {
        unauthorized(
            "InvalidAuthenticationToken",
            format!("The access token is invalid ({e})."),
        )
    })?;
    if !accepts_audience(&emulator.base_url, &claims.aud) {
        return Err(unauthorized(
            "InvalidAuthenticationTokenAudience",
            format!(
                "The access token has been obtained for the wrong audience or resource '{}'. It should exactly match with one of the allowed audiences '{}', '{}/'.",
                claims.aud, emulator.base_url, emulator.base_url
            ),
        ));
    }
    if claims.iss != entra::issuer_of(&emulator.base_url, &claims.tid) {
        return Err(unauthorized(
            "InvalidAuthenticationTokenTenant",
            format!(
                "The access token is from the wrong issuer '{}'.",
                claims.iss
            ),
        ));
    }
    Ok(Caller {
        tenant_id: claims.tid,
        client_id: claims.appid,
    })
}

/// `GET /metadata/endpoints?api-version=…`: the cloud's endpoints, in the shape each
/// api-version has: `2015-01-01` Azure Stack's (what Azure Stack tooling reads), up to
/// `2022-09-01` the list of clouds, from `2022-09-01` on (what `az cloud register
/// --endpoint-resource-manager` asks for) this cloud alone.
pub async fn metadata_endpoints(
    State(emulator): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let base = format!("{}/", emulator.base_url);
    let Some(api_version) = query.get("api-version") else {
        return missing_api_version().into_response();
    };
    if api_version == "2015-01-01" {
        return Json(json!({
            "galleryEndpoint": base,
            "graphEndpoint": base,
            "portalEndpoint": base,
            "authentication": {"loginEndpoint": base, "audiences": [base]},
        }))
        .into_response();
    }
    let cloud = json!({
        "name": CLOUD_NAME,
        "portal": base,
        "resourceManager": base,
        "gallery": base,
        "graph": base,
        "graphAudience": base,
        "authentication": {
            "loginEndpoint": base,
            "audiences": [base],
            "tenant": "common",
            "identityProvider": "AAD",
        },
        "suffixes": {},
    });
    // ISO dates compare as text.
    if api_version.as_str() < "2022-09-01" {
        Json(json!([cloud])).into_response()
    } else {
        Json(cloud).into_response()
    }
}

fn missing_api_version() -> ArmError {
    ArmError::new(
        StatusCode::BAD_REQUEST,
        "MissingApiVersionParameter",
        "The api-version query parameter (?api-version=) is required for all requests.",
    )
}

/// `GET /subscriptions?api-version=…`: the catalog's subscriptions of the caller's tenant.
pub async fn list_subscriptions(
    State(emulator): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let caller = match authenticate(&emulator, &headers) {
        Ok(caller) => caller,
        Err(error) => return error.into_response(),
    };
    if !query.contains_key("api-version") {
        return missing_api_version().into_response();
    }
    let tenant = Guid::parse(&caller.tenant_id);
    let mut value: Vec<Value> = emulator
        .catalog()
        .subscriptions()
        .filter(|s| s.tenant_id.is_some() && s.tenant_id == tenant)
        .map(|s| subscription_json(&s.id.to_string(), &caller.tenant_id, s.state.as_str()))
        .collect();
    value.sort_by(|a, b| {
        a["subscriptionId"]
            .as_str()
            .cmp(&b["subscriptionId"].as_str())
    });
    let count = value.len();
    Json(json!({"value": value, "count": {"type": "Total", "value": count}})).into_response()
}

fn subscription_json(id: &str, tenant: &str, state: &str) -> Value {
    json!({
        "id": format!("/subscriptions/{id}"),
        "subscriptionId": id,
        "tenantId": tenant,
        "displayName": format!("Subscription {id}"),
        "state": state,
        "subscriptionPolicies": {
            "locationPlacementId": "Public_2014-09-01",
            "quotaId": "CSP_2015-05-01",
            "spendingLimit": "Off",
        },
        "authorizationSource": "RoleBased",
        "managedByTenants": [],
    })
}

/// What a path under `/subscriptions/{sid}` names (segments compared case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target<'a> {
    Subscription,
    /// A resource group: one that holds a registration of the catalog.
    ResourceGroup {
        group: &'a str,
    },
    Provider,
    RegistrationsOfSubscription,
    RegistrationsOfGroup {
        group: &'a str,
    },
    Registration {
        group: &'a str,
        name: &'a str,
    },
    Customers {
        group: &'a str,
        name: &'a str,
    },
    Customer {
        group: &'a str,
        name: &'a str,
        customer: &'a str,
    },
}

/// Parses the segments after `/subscriptions/{sid}`; `None` when ARM knows no such path.
pub fn parse_target<'a>(segments: &[&'a str]) -> Option<Target<'a>> {
    let is = |segment: &str, word: &str| segment.eq_ignore_ascii_case(word);
    match segments {
        [] => Some(Target::Subscription),
        [rg, group] if is(rg, "resourceGroups") => Some(Target::ResourceGroup { group }),
        [p, ns] if is(p, "providers") && is(ns, PROVIDER) => Some(Target::Provider),
        [p, ns, r] if is(p, "providers") && is(ns, PROVIDER) && is(r, "registrations") => {
            Some(Target::RegistrationsOfSubscription)
        }
        [rg, group, p, ns, r, rest @ ..]
            if is(rg, "resourceGroups")
                && is(p, "providers")
                && is(ns, PROVIDER)
                && is(r, "registrations") =>
        {
            match rest {
                [] => Some(Target::RegistrationsOfGroup { group }),
                [name] => Some(Target::Registration { group, name }),
                [name, c] if is(c, "customerSubscriptions") => {
                    Some(Target::Customers { group, name })
                }
                [name, c, customer] if is(c, "customerSubscriptions") => Some(Target::Customer {
                    group,
                    name,
                    customer,
                }),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Everything under `/subscriptions/{sid}/…`.
pub async fn dispatch(
    State(emulator): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let response = match handle(&emulator, &method, &path, &headers, &query, &body) {
        Ok(response) => response,
        Err(error) => {
            tracing::info!(
                %method,
                path,
                status = error.status.as_u16(),
                code = error.code,
                retry_after = error.retry_after,
                "ARM request refused"
            );
            return error.into_response();
        }
    };
    tracing::info!(%method, path, status = response.status().as_u16(), "ARM request");
    response
}

fn handle(
    emulator: &super::Emulator,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Result<Response, ArmError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let [_subscriptions, subscription, rest @ ..] = segments.as_slice() else {
        return Err(ArmError::not_found(format!("No route for {path}.")));
    };
    let caller = authenticate(emulator, headers)?;
    if let Some(api) = super::usage::AdminApi::of(rest) {
        return super::usage::answer(
            emulator,
            api,
            method,
            path,
            subscription,
            query,
            chrono::Utc::now(),
        );
    }
    let target = parse_target(rest).ok_or_else(|| {
        ArmError::new(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            format!("The resource type could not be found for {path}."),
        )
    })?;
    let Some(api_version) = query.get("api-version") else {
        return Err(missing_api_version());
    };
    let catalog = emulator.catalog();
    // Microsoft.Resources answers these, with api-versions of its own.
    match target {
        Target::Subscription => return subscription_answer(&catalog, method, subscription),
        Target::ResourceGroup { group } => {
            return resource_group_answer(&catalog, &caller, method, path, subscription, group);
        }
        _ => {}
    }
    if !API_VERSIONS.contains(&api_version.as_str()) {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "NoRegisteredProviderFound",
            format!(
                "No registered resource provider found for api version '{api_version}'. The supported api-versions are '{}'.",
                API_VERSIONS.join(", ")
            ),
        ));
    }
    let catalog = catalog.as_ref();
    authorize(catalog, &caller, method, path, subscription, &target)?;
    match (method, target) {
        (&Method::GET, Target::Provider) => Ok(Json(provider_json(subscription)).into_response()),
        (&Method::GET, Target::RegistrationsOfSubscription) => Ok(Json(json!({
            "value": registrations_json(catalog, &caller, subscription, None)
        }))
        .into_response()),
        (&Method::GET, Target::RegistrationsOfGroup { group }) => Ok(Json(json!({
            "value": registrations_json(catalog, &caller, subscription, Some(group))
        }))
        .into_response()),
        (&Method::GET, Target::Registration { group, name }) => {
            let registration = find_registration(catalog, subscription, group, name)?;
            Ok(Json(registration_json(registration)).into_response())
        }
        (&Method::GET, Target::Customers { group, name }) => {
            let registration = find_registration(catalog, subscription, group, name)?;
            let skip = query
                .get("$skiptoken")
                .and_then(|s| s.parse::<usize>().ok())
                .unwrap_or(0);
            Ok(Json(list_customers(emulator, registration, api_version, skip)).into_response())
        }
        (
            &Method::GET,
            Target::Customer {
                group,
                name,
                customer,
            },
        ) => {
            let registration = find_registration(catalog, subscription, group, name)?;
            let state = lock(emulator);
            let stored = Guid::parse(customer)
                .and_then(|id| state.customers.get(&registration.key())?.get(&id).cloned())
                .ok_or_else(|| customer_not_found(registration, customer))?;
            Ok(Json(customer_json(registration, &stored)).into_response())
        }
        (
            &Method::PUT,
            Target::Customer {
                group,
                name,
                customer,
            },
        ) => {
            let remaining = admit_write(emulator, &caller, subscription)?;
            let registration = find_registration(catalog, subscription, group, name)?;
            let stored = put_customer(emulator, catalog, registration, customer, body)?;
            Ok(with_remaining(
                Json(customer_json(registration, &stored)).into_response(),
                remaining,
            ))
        }
        (
            &Method::DELETE,
            Target::Customer {
                group,
                name,
                customer,
            },
        ) => {
            let remaining = admit_write(emulator, &caller, subscription)?;
            let registration = find_registration(catalog, subscription, group, name)?;
            let mut state = lock(emulator);
            let removed = Guid::parse(customer).and_then(|id| {
                state
                    .customers
                    .get_mut(&registration.key())
                    .and_then(|customers| customers.remove(&id))
            });
            match removed {
                Some(_) => Ok(with_remaining(StatusCode::OK.into_response(), remaining)),
                None => Err(customer_not_found(registration, customer)),
            }
        }
        (method, _) => Err(ArmError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("The {method} method is not supported for {path}."),
        )),
    }
}

/// The catalog principal a token was issued to; `None` once a reload removed it (its tokens
/// still authenticate until they expire, as Entra ID's do, but hold no role).
fn principal_of<'c>(catalog: &'c Catalog, caller: &Caller) -> Option<&'c ServicePrincipal> {
    catalog
        .service_principals()
        .iter()
        .find(|p| p.tenant_id == caller.tenant_id && p.client_id == caller.client_id)
}

/// The Azure RBAC action a request on a registration performs.
fn action_of(method: &Method, target: &Target<'_>) -> &'static str {
    match (method, target) {
        (&Method::GET, Target::Registration { .. }) => "Microsoft.AzureStack/registrations/read",
        (&Method::PUT, Target::Customer { .. }) => {
            "Microsoft.AzureStack/registrations/customerSubscriptions/write"
        }
        (&Method::DELETE, Target::Customer { .. }) => {
            "Microsoft.AzureStack/registrations/customerSubscriptions/delete"
        }
        (_, Target::Customer { .. } | Target::Customers { .. }) => {
            "Microsoft.AzureStack/registrations/customerSubscriptions/read"
        }
        _ => "Microsoft.AzureStack/registrations/read",
    }
}

/// 403 `AuthorizationFailed`, in ARM's words, unless the caller's principal holds a role on
/// the registration a request names. Lists and the provider are filtered, not refused.
fn authorize(
    catalog: &Catalog,
    caller: &Caller,
    method: &Method,
    path: &str,
    subscription: &str,
    target: &Target<'_>,
) -> Result<(), ArmError> {
    let (Target::Registration { group, name }
    | Target::Customers { group, name }
    | Target::Customer { group, name, .. }) = target
    else {
        return Ok(());
    };
    let key = RegistrationKey::new(subscription, group, name);
    if principal_of(catalog, caller).is_some_and(|p| p.may_manage(&key)) {
        return Ok(());
    }
    Err(authorization_failed(
        caller,
        action_of(method, target),
        path,
    ))
}

/// ARM's 403 for a caller without a role that allows `action` at `scope`.
fn authorization_failed(caller: &Caller, action: &str, scope: &str) -> ArmError {
    ArmError::new(
        StatusCode::FORBIDDEN,
        "AuthorizationFailed",
        format!(
            "The client '{client}' with object id '{client}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
            client = caller.client_id,
            scope = scope.trim_end_matches('/'),
        ),
    )
}

fn lock(emulator: &super::Emulator) -> std::sync::MutexGuard<'_, ArmState> {
    // A panic while holding the lock leaves whole entries behind: the state stays usable.
    emulator
        .arm
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn with_remaining(mut response: Response, remaining: u32) -> Response {
    response
        .headers_mut()
        .insert(REMAINING_WRITES_HEADER, HeaderValue::from(remaining));
    response
}

/// One token of the caller's write bucket on this subscription, or 429.
fn admit_write(
    emulator: &super::Emulator,
    caller: &Caller,
    subscription: &str,
) -> Result<u32, ArmError> {
    let admission = emulator
        .throttle
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .admit(&caller.client_id, subscription, Instant::now());
    match admission {
        Admission::Allowed { remaining } => Ok(remaining),
        Admission::Throttled { retry_after } => {
            let seconds = throttle::retry_after_seconds(retry_after);
            Err(ArmError {
                retry_after: Some(seconds),
                ..ArmError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequests",
                    format!(
                        "The request is being throttled: too many writes by client {} on subscription {subscription}. Retry after {seconds} seconds.",
                        caller.client_id
                    ),
                )
            })
        }
    }
}

/// `GET /subscriptions/{s}/resourceGroups/{g}`, which `az resource create` reads for the
/// location of a resource it creates. Reading a group takes a role on the group or above it.
fn resource_group_answer(
    catalog: &Catalog,
    caller: &Caller,
    method: &Method,
    path: &str,
    subscription: &str,
    group: &str,
) -> Result<Response, ArmError> {
    if method != Method::GET {
        return Err(ArmError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("The emulator holds resource groups fixed; {method} is not supported."),
        ));
    }
    let wanted = GuidText::parse(subscription);
    let allowed = principal_of(catalog, caller).is_some_and(|p| {
        p.registrations.as_ref().is_none_or(|scopes| {
            scopes.iter().any(|scope| {
                GuidText::parse(&scope.subscription_id) == wanted
                    && scope.name.is_none()
                    && scope
                        .resource_group
                        .as_ref()
                        .is_none_or(|g| g.eq_ignore_ascii_case(group))
            })
        })
    });
    if !allowed {
        return Err(authorization_failed(
            caller,
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            path,
        ));
    }
    let found = catalog.registrations().iter().find(|r| {
        GuidText::parse(&r.subscription_id) == wanted
            && r.resource_group.eq_ignore_ascii_case(group)
    });
    let Some(registration) = found else {
        return Err(ArmError::new(
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
            format!("Resource group '{group}' could not be found."),
        ));
    };
    Ok(Json(json!({
        "id": format!("/subscriptions/{}/resourceGroups/{}", registration.subscription_id, registration.resource_group),
        "name": registration.resource_group,
        "type": "Microsoft.Resources/resourceGroups",
        "location": "global",
        "properties": {"provisioningState": "Succeeded"},
    }))
    .into_response())
}

fn subscription_answer(
    catalog: &Catalog,
    method: &Method,
    subscription: &str,
) -> Result<Response, ArmError> {
    if method != Method::GET {
        return Err(ArmError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("The {method} method is not supported for a subscription."),
        ));
    }
    let found = catalog.subscription(subscription).ok_or_else(|| {
        ArmError::new(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            format!("The subscription '{subscription}' could not be found."),
        )
    })?;
    Ok(Json(subscription_json(
        &found.id.to_string(),
        &found.tenant_id.map(|t| t.to_string()).unwrap_or_default(),
        found.state.as_str(),
    ))
    .into_response())
}

/// The provider's resource types and api-versions (what `az resource` looks up).
fn provider_json(subscription: &str) -> Value {
    let types = ["registrations", "registrations/customerSubscriptions"].map(|t| {
        json!({
            "resourceType": t,
            "locations": ["global"],
            "apiVersions": API_VERSIONS.iter().rev().collect::<Vec<_>>(),
        })
    });
    json!({
        "id": format!("/subscriptions/{subscription}/providers/{PROVIDER}"),
        "namespace": PROVIDER,
        "registrationState": "Registered",
        "resourceTypes": types,
    })
}

fn find_registration<'c>(
    catalog: &'c Catalog,
    subscription: &str,
    group: &str,
    name: &str,
) -> Result<&'c CatalogRegistration, ArmError> {
    let key = RegistrationKey::new(subscription, group, name);
    catalog
        .registrations()
        .iter()
        .find(|r| r.key() == key)
        .ok_or_else(|| {
            ArmError::new(
                StatusCode::NOT_FOUND,
                Reason::RegistrationNotFound.as_str(),
                format!(
                    "The registration {key} does not exist. Check the subscription, the resource group and the registration name."
                ),
            )
        })
}

fn customer_not_found(registration: &CatalogRegistration, customer: &str) -> ArmError {
    ArmError::new(
        StatusCode::NOT_FOUND,
        Reason::CustomerSubscriptionNotFound.as_str(),
        format!(
            "The customer subscription {customer} is not added to registration {}.",
            registration_id(registration)
        ),
    )
}

pub fn registration_id(registration: &CatalogRegistration) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/{PROVIDER}/registrations/{}",
        registration.subscription_id, registration.resource_group, registration.name
    )
}

fn registration_json(registration: &CatalogRegistration) -> Value {
    json!({
        "id": registration_id(registration),
        "name": registration.name,
        "type": REGISTRATION_TYPE,
        "location": "global",
        // Stable: the registration never changes while the emulator runs.
        "etag": registration.object_id,
        "properties": {
            "objectId": registration.object_id,
            "cloudId": registration.cloud_id,
            "billingModel": registration.billing_model.as_str(),
        },
    })
}

/// The registrations of a subscription or group that the caller may read, as ARM lists only
/// the resources a caller's roles reach.
fn registrations_json(
    catalog: &Catalog,
    caller: &Caller,
    subscription: &str,
    group: Option<&str>,
) -> Vec<Value> {
    let principal = principal_of(catalog, caller);
    let wanted = GuidText::parse(subscription);
    catalog
        .registrations()
        .iter()
        .filter(|r| GuidText::parse(&r.subscription_id) == wanted)
        .filter(|r| group.is_none_or(|g| r.resource_group.eq_ignore_ascii_case(g)))
        .filter(|r| principal.is_some_and(|p| p.may_manage(&r.key())))
        .map(registration_json)
        .collect()
}

fn customer_json(registration: &CatalogRegistration, stored: &StoredCustomer) -> Value {
    let mut properties = serde_json::Map::new();
    if let Some(tenant) = &stored.tenant_id {
        properties.insert("tenantId".to_owned(), json!(tenant));
    }
    json!({
        "id": format!("{}/customerSubscriptions/{}", registration_id(registration), stored.name),
        "name": stored.name,
        "type": CUSTOMER_SUBSCRIPTION_TYPE,
        "etag": stored.etag,
        "properties": properties,
    })
}

fn list_customers(
    emulator: &super::Emulator,
    registration: &CatalogRegistration,
    api_version: &str,
    skip: usize,
) -> Value {
    let state = lock(emulator);
    let all = state.customers.get(&registration.key());
    let total = all.map_or(0, BTreeMap::len);
    let value: Vec<Value> = all
        .into_iter()
        .flat_map(BTreeMap::values)
        .skip(skip)
        .take(PAGE_SIZE)
        .map(|stored| customer_json(registration, stored))
        .collect();
    let mut page = json!({ "value": value });
    if skip + PAGE_SIZE < total {
        page["nextLink"] = json!(format!(
            "{}{}/customerSubscriptions?api-version={api_version}&%24skiptoken={}",
            emulator.base_url,
            registration_id(registration),
            skip + PAGE_SIZE
        ));
    }
    page
}

#[derive(Deserialize, Default)]
struct PutBody {
    #[serde(default)]
    properties: Option<PutProperties>,
}

#[derive(Deserialize, Default)]
struct PutProperties {
    #[serde(default, rename = "tenantId")]
    tenant_id: Option<String>,
}

/// Decides a PUT with the operator's own rules (`policy`) against the catalog, and stores
/// the tenant when they pass. A tenant has one customer subscription per registration: a
/// PUT of another subscription of the same tenant replaces it, as Azure does.
fn put_customer(
    emulator: &super::Emulator,
    catalog: &Catalog,
    registration: &CatalogRegistration,
    customer: &str,
    body: &[u8],
) -> Result<StoredCustomer, ArmError> {
    let body: PutBody = if body.iter().all(u8::is_ascii_whitespace) {
        PutBody::default()
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ArmError::new(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContent",
                format!("The request content was invalid and could not be deserialized: {e}."),
            )
        })?
    };
    let tenant_id = body.properties.and_then(|p| p.tenant_id);
    let decision = decide(catalog, registration, customer, tenant_id.clone());
    if decision.reason != Reason::Attached {
        return Err(ArmError::new(
            status_of(decision.reason),
            decision.reason.as_str(),
            arm_wording(&decision.message),
        ));
    }
    let Some(eligible) = decision.eligible else {
        return Err(ArmError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "The decision named no subscription.",
        ));
    };
    let mut state = lock(emulator);
    let customers = state.customers.entry(registration.key()).or_default();
    if let Some(tenant) = eligible.tenant_id {
        customers.retain(|id, stored| {
            *id == eligible.subscription_id || stored.tenant_id != Some(tenant)
        });
    }
    let stored = StoredCustomer {
        name: customer.to_owned(),
        tenant_id: eligible.tenant_id,
        etag: super::new_guid(),
    };
    customers.insert(eligible.subscription_id, stored.clone());
    Ok(stored)
}

/// The operator's rule evaluation for an ARM PUT: the catalog registration as a Registration,
/// the request as a CustomerSubscription, and the catalog as the resolver.
fn decide(
    catalog: &Catalog,
    registration: &CatalogRegistration,
    customer: &str,
    tenant_id: Option<String>,
) -> crate::policy::CustomerDecision {
    let registration_object = Registration::new(
        &registration.name,
        RegistrationSpec {
            subscription_id: registration.subscription_id.clone(),
            resource_group: registration.resource_group.clone(),
            registration_name: Some(registration.name.clone()),
            cloud_id: registration.cloud_id.clone(),
            billing_model: registration.billing_model,
            agreement_number: None,
            ms_asset_tag: None,
            prune_unmanaged: None,
            usage_source: None,
        },
    );
    let customer_object = CustomerSubscription::new(
        customer,
        CustomerSubscriptionSpec {
            registration_ref: RegistrationRef {
                name: registration.name.clone(),
            },
            subscription_id: customer.to_owned(),
            tenant_id,
        },
    );
    let approval = Ok(catalog.is_approved(&registration.key()));
    let registration_subscription = Ok(catalog.subscription(&registration.subscription_id));
    let customer_subscription = Ok(catalog.subscription(customer));
    evaluate_customer(&CustomerFacts {
        customer: &customer_object,
        registration: Some(&registration_object),
        approval: &approval,
        registration_subscription: &registration_subscription,
        customer_subscription: &customer_subscription,
    })
}

/// The rules speak of a CustomerSubscription's spec; an ARM caller wrote a path and a body.
fn arm_wording(message: &str) -> String {
    message
        .replace("spec.subscriptionId", "the customer subscription name")
        .replace("spec.tenantId", "properties.tenantId")
}

#[cfg(test)]
#[path = "arm_tests.rs"]
mod tests;
