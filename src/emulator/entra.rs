//! Microsoft Entra ID as far as Azure's clients need it for an application (DESIGN.md §10):
//! the v2.0 token endpoint (client credentials with a secret or a client assertion), the
//! tenant's OpenID metadata and its signing keys. Tokens are RS256 JWTs.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use axum::{
    Json,
    extract::{self, State, rejection::FormRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation,
    jwk::{Jwk, JwkSet, PublicKeyUse},
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Shared, assertion::check_assertion, new_guid};
use crate::{
    guid::GuidText,
    resolver::{Catalog, ServicePrincipal},
};

/// How long an issued access token is valid.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Entra ID's audience for federated credentials (workload identity tokens carry it).
pub const FEDERATED_AUDIENCE: &str = "api://AzureADTokenExchange";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

#[derive(thiserror::Error, Debug)]
pub enum KeyError {
    #[error("cannot make the token signing key: {0}")]
    Generate(String),
    #[error("cannot {action} the token signing key {path}: {source}")]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is no RSA private key (PKCS#1 DER): {reason}; delete it to make a new one")]
    Unreadable { path: PathBuf, reason: String },
}

/// The file of the TLS directory that keeps the token signing key (PKCS#1 DER), so that
/// tokens outlive a restart as the CA does: clients cache them for an hour.
pub const SIGNING_KEY_FILE: &str = "token-signing.der";

/// The tenant-independent signing key and what is published of it.
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    jwks: JwkSet,
}

/// The claims of the access tokens this issuer signs (those ARM reads).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub sub: String,
    pub oid: String,
    pub tid: String,
    pub appid: String,
    pub azp: String,
    pub idtyp: String,
    pub ver: String,
    pub uti: String,
}

impl TokenIssuer {
    /// A fresh 2048-bit RSA key (a second or so: run it off the async threads).
    pub fn generate() -> Result<Self, KeyError> {
        Self::from_key(&new_key()?)
    }

    /// The key kept in `dir` ([`SIGNING_KEY_FILE`]), or a new one written there; `true` when
    /// it is new. Blocks: run it off the async threads.
    pub fn load_or_generate(dir: &Path) -> Result<(Self, bool), KeyError> {
        use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
        let path = dir.join(SIGNING_KEY_FILE);
        let file_error = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| KeyError::File {
                action,
                path,
                source,
            }
        };
        match std::fs::read(&path) {
            Ok(der) => {
                let key =
                    rsa::RsaPrivateKey::from_pkcs1_der(&der).map_err(|e| KeyError::Unreadable {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                Ok((Self::from_key(&key)?, false))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key = new_key()?;
                let der = key
                    .to_pkcs1_der()
                    .map_err(|e| KeyError::Generate(e.to_string()))?;
                super::tls::write_file(&path, der.as_bytes(), true)
                    .map_err(file_error("write", &path))?;
                Ok((Self::from_key(&key)?, true))
            }
            Err(error) => Err(file_error("read", &path)(error)),
        }
    }

    fn from_key(private: &rsa::RsaPrivateKey) -> Result<Self, KeyError> {
        use base64::Engine;
        use rsa::{
            pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey},
            traits::PublicKeyParts,
        };
        let private_der = private
            .to_pkcs1_der()
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        let public_der = private
            .to_public_key()
            .to_pkcs1_der()
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        let encoding = EncodingKey::from_rsa_der(private_der.as_bytes());
        let decoding = DecodingKey::from_rsa_der(public_der.as_bytes());
        // Derived from the key, so that a kept key keeps its ID.
        let modulus = private.n().to_bytes_be();
        let kid = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(&modulus[..modulus.len().min(20)]);
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Ok(Self {
            encoding,
            decoding,
            kid,
            jwks: JwkSet { keys: vec![jwk] },
        })
    }

    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// An access token for `principal` to `audience`, issued at `now` (Unix seconds).
    pub fn issue(
        &self,
        issuer: &str,
        principal: &ServicePrincipal,
        audience: &str,
        now: i64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = AccessClaims {
            aud: audience.to_owned(),
            iss: issuer.to_owned(),
            iat: now,
            nbf: now,
            exp: now + TOKEN_LIFETIME.as_secs() as i64,
            sub: principal.client_id.clone(),
            oid: principal.client_id.clone(),
            tid: principal.tenant_id.clone(),
            appid: principal.client_id.clone(),
            azp: principal.client_id.clone(),
            idtyp: "app".to_owned(),
            ver: "2.0".to_owned(),
            uti: new_guid(),
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
    }

    /// The claims of a token this issuer signed and that has not expired; audience and issuer
    /// are the caller's to check.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss"]);
        validation.validate_nbf = true;
        jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &validation).map(|t| t.claims)
    }
}

fn new_key() -> Result<rsa::RsaPrivateKey, KeyError> {
    rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
        .map_err(|e| KeyError::Generate(e.to_string()))
}

/// The issuer of a tenant's tokens, as its OpenID metadata states it.
pub fn issuer_of(base_url: &str, tenant: &str) -> String {
    format!("{base_url}/{tenant}/v2.0")
}

/// An Entra ID error answer: `{"error", "error_description", "error_codes", ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    pub status: StatusCode,
    pub error: &'static str,
    pub code: u32,
    pub description: String,
}

impl TokenError {
    pub(super) fn invalid_client(code: u32, description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            code,
            description: description.into(),
        }
    }

    fn invalid_request(error: &'static str, code: u32, description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error,
            code,
            description: description.into(),
        }
    }
}

impl IntoResponse for TokenError {
    fn into_response(self) -> Response {
        let trace_id = new_guid();
        let body = json!({
            "error": self.error,
            "error_description": format!("AADSTS{}: {} Trace ID: {trace_id}", self.code, self.description),
            "error_codes": [self.code],
            "timestamp": chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string(),
            "trace_id": trace_id,
            "correlation_id": new_guid(),
        });
        (self.status, Json(body)).into_response()
    }
}

/// The resource a token is asked for: the `scope` `{resource}/.default` (v2.0), else the
/// v1 `resource` field. A resource that ends in `/` keeps it (`https://host//.default` asks
/// for `https://host/`).
fn requested_resource(form: &HashMap<String, String>) -> Result<String, TokenError> {
    if let Some(scope) = form.get("scope") {
        return scope
            .split_whitespace()
            .find_map(|s| s.strip_suffix("/.default"))
            .filter(|resource| !resource.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                TokenError::invalid_request(
                    "invalid_scope",
                    1002012,
                    format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
                )
            });
    }
    match form.get("resource") {
        Some(resource) if !resource.is_empty() => Ok(resource.clone()),
        _ => Err(TokenError::invalid_request(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        )),
    }
}

/// Decides a token request: the principal it authenticates and the audience of its token.
/// Relative paths in the catalog (a federated credential's `jwksFile`) start at `catalog_dir`.
pub fn authenticate<'c>(
    catalog: &'c Catalog,
    catalog_dir: &Path,
    tenant: &str,
    form: &HashMap<String, String>,
    now: i64,
) -> Result<(&'c ServicePrincipal, String), TokenError> {
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some(other) => {
            return Err(TokenError::invalid_request(
                "unsupported_grant_type",
                70003,
                format!(
                    "The app requested an unsupported grant type '{other}'; the emulator issues client_credentials tokens only."
                ),
            ));
        }
        None => {
            return Err(TokenError::invalid_request(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            ));
        }
    }
    let Some(client_id) = form.get("client_id") else {
        return Err(TokenError::invalid_request(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        ));
    };
    let (wanted_tenant, wanted_client) = (GuidText::parse(tenant), GuidText::parse(client_id));
    let principal = catalog
        .service_principals()
        .iter()
        .find(|p| {
            GuidText::parse(&p.tenant_id) == wanted_tenant
                && GuidText::parse(&p.client_id) == wanted_client
        })
        .ok_or_else(|| {
            TokenError::invalid_client(
                700016,
                format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'."),
            )
        })?;
    let resource = requested_resource(form)?;
    if let Some(secret) = form.get("client_secret") {
        if principal.client_secret.as_deref() != Some(secret.as_str()) {
            return Err(TokenError::invalid_client(
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
            ));
        }
    } else if let Some(assertion) = form.get("client_assertion") {
        if form.get("client_assertion_type").map(String::as_str) != Some(ASSERTION_TYPE) {
            return Err(TokenError::invalid_request(
                "invalid_request",
                50027,
                format!("client_assertion_type must be {ASSERTION_TYPE}."),
            ));
        }
        check_assertion(principal, assertion, now, catalog_dir)?;
    } else {
        return Err(TokenError::invalid_client(
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ));
    }
    Ok((principal, resource))
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub async fn token(
    State(emulator): State<Shared>,
    extract::Path(tenant): extract::Path<String>,
    form: Result<axum::Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let Ok(axum::Form(form)) = form else {
        return TokenError::invalid_request(
            "invalid_request",
            900144,
            "The request body must be application/x-www-form-urlencoded.",
        )
        .into_response();
    };
    let now = chrono::Utc::now().timestamp();
    let catalog = emulator.catalog();
    let (principal, audience) =
        match authenticate(&catalog, emulator.catalog_dir(), &tenant, &form, now) {
            Ok(found) => found,
            Err(error) => {
                // Never the secret or the assertion: only who asked and why it failed.
                tracing::info!(
                    %tenant,
                    client_id = form.get("client_id").map(String::as_str).unwrap_or(""),
                    error = error.error,
                    code = error.code,
                    "token refused"
                );
                return error.into_response();
            }
        };
    let issuer = issuer_of(&emulator.base_url, &principal.tenant_id);
    match emulator.tokens.issue(&issuer, principal, &audience, now) {
        Ok(access_token) => {
            tracing::info!(tenant, client_id = %principal.client_id, %audience, "token issued");
            let lifetime = TOKEN_LIFETIME.as_secs();
            Json(json!({
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": access_token,
            }))
            .into_response()
        }
        Err(error) => {
            tracing::error!(%error, "signing a token failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot sign the token").into_response()
        }
    }
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`.
pub async fn openid_configuration(
    State(emulator): State<Shared>,
    extract::Path(tenant): extract::Path<String>,
) -> Response {
    let base = &emulator.base_url;
    Json(json!({
        "issuer": issuer_of(base, &tenant),
        "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
        "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "tenant_region_scope": "EU",
        "cloud_instance_name": "azs-csp-operator.emulator",
    }))
    .into_response()
}

/// `GET /{tenant}/discovery/v2.0/keys`.
pub async fn jwks(State(emulator): State<Shared>) -> Response {
    Json(emulator.tokens.jwks()).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use super::*;

    const TENANT: &str = "2b7e0c1d-0000-4000-8000-000000000001";
    const CLIENT: &str = "3c8f1d2e-0000-4000-8000-000000000002";
    const ISSUER: &str = "https://kubernetes.default.svc";
    const SUBJECT: &str = "system:serviceaccount:azs-csp:azs-csp-operator";
    const NOW: i64 = 1_800_000_000;

    // One key for every test: generating one takes a while.
    static ISSUER_KEY: LazyLock<TokenIssuer> =
        LazyLock::new(|| TokenIssuer::generate().expect("key"));

    fn catalog() -> Catalog {
        Catalog::parse(&format!(
            r#"
servicePrincipals:
- tenantId: {TENANT}
  clientId: {CLIENT}
  clientSecret: right
  federatedCredentials:
  - {{issuer: "{ISSUER}", subject: "{SUBJECT}"}}
"#
        ))
        .expect("catalog")
    }

    /// A JWT with these claims under a key nobody checks: the credential names no jwksFile.
    fn assertion(claims: serde_json::Value) -> String {
        let key = EncodingKey::from_secret(b"not checked");
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("jwt")
    }

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn token_requests() {
        let good_assertion = assertion(json!({
            "iss": ISSUER, "sub": SUBJECT, "aud": [FEDERATED_AUDIENCE], "exp": NOW + 600, "nbf": NOW - 10,
        }));
        let expired = assertion(json!({
            "iss": ISSUER, "sub": SUBJECT, "aud": FEDERATED_AUDIENCE, "exp": NOW - 600,
        }));
        let other_subject = assertion(json!({
            "iss": ISSUER, "sub": "system:serviceaccount:x:y", "aud": FEDERATED_AUDIENCE, "exp": NOW + 600,
        }));
        let wrong_audience = assertion(json!({
            "iss": ISSUER, "sub": SUBJECT, "aud": "https://kubernetes.default.svc", "exp": NOW + 600,
        }));
        let scope = "https://127.0.0.1:8443/.default";
        let base = [
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT),
            ("scope", scope),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            pairs
        };
        let leak = |s: &String| -> &'static str { Box::leak(s.clone().into_boxed_str()) };
        type Want = Result<&'static str, (&'static str, u32)>;
        type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, Want);
        let cases: Vec<Case<'_>> = vec![
            (
                "secret",
                TENANT,
                with(&[("client_secret", "right"), ("client_info", "1")]),
                Ok("https://127.0.0.1:8443"),
            ),
            (
                "tenant in upper case, resource with a trailing slash",
                leak(&TENANT.to_uppercase()),
                vec![
                    ("grant_type", "client_credentials"),
                    ("client_id", CLIENT),
                    ("scope", "https://127.0.0.1:8443//.default"),
                    ("client_secret", "right"),
                ],
                Ok("https://127.0.0.1:8443/"),
            ),
            (
                "v1 resource",
                TENANT,
                vec![
                    ("grant_type", "client_credentials"),
                    ("client_id", CLIENT),
                    ("resource", "https://127.0.0.1:8443/"),
                    ("client_secret", "right"),
                ],
                Ok("https://127.0.0.1:8443/"),
            ),
            (
                "wrong secret",
                TENANT,
                with(&[("client_secret", "wrong")]),
                Err(("invalid_client", 7000215)),
            ),
            (
                "unknown client",
                TENANT,
                vec![
                    ("grant_type", "client_credentials"),
                    ("client_id", TENANT),
                    ("scope", scope),
                    ("client_secret", "right"),
                ],
                Err(("invalid_client", 700016)),
            ),
            (
                "other tenant",
                CLIENT,
                with(&[("client_secret", "right")]),
                Err(("invalid_client", 700016)),
            ),
            (
                "no credential",
                TENANT,
                with(&[]),
                Err(("invalid_client", 7000218)),
            ),
            (
                "password grant",
                TENANT,
                vec![
                    ("grant_type", "password"),
                    ("client_id", CLIENT),
                    ("scope", scope),
                ],
                Err(("unsupported_grant_type", 70003)),
            ),
            (
                "scope without .default",
                TENANT,
                vec![
                    ("grant_type", "client_credentials"),
                    ("client_id", CLIENT),
                    ("scope", "openid"),
                    ("client_secret", "right"),
                ],
                Err(("invalid_scope", 1002012)),
            ),
            (
                "federated assertion",
                TENANT,
                with(&[
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", leak(&good_assertion)),
                ]),
                Ok("https://127.0.0.1:8443"),
            ),
            (
                "expired assertion",
                TENANT,
                with(&[
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", leak(&expired)),
                ]),
                Err(("invalid_client", 700024)),
            ),
            (
                "assertion of another subject",
                TENANT,
                with(&[
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", leak(&other_subject)),
                ]),
                Err(("invalid_client", 70021)),
            ),
            (
                "assertion for another audience",
                TENANT,
                with(&[
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", leak(&wrong_audience)),
                ]),
                Err(("invalid_client", 700212)),
            ),
            (
                "assertion that is no JWT",
                TENANT,
                with(&[
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", "abc"),
                ]),
                Err(("invalid_client", 50027)),
            ),
        ];
        let catalog = catalog();
        for (name, tenant, pairs, want) in cases {
            let got = authenticate(&catalog, Path::new("."), tenant, &form(&pairs), NOW)
                .map(|(principal, audience)| {
                    assert_eq!(principal.client_id, CLIENT, "{name}");
                    audience
                })
                .map_err(|e| (e.error, e.code));
            assert_eq!(got, want.map(str::to_owned), "{name}");
        }
    }

    #[test]
    fn the_signing_key_is_kept_in_the_tls_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, made) = TokenIssuer::load_or_generate(dir.path()).expect("new key");
        assert!(made);
        let catalog = catalog();
        let principal = &catalog.service_principals()[0];
        let now = chrono::Utc::now().timestamp();
        let token = first
            .issue(
                "https://127.0.0.1:1/t/v2.0",
                principal,
                "https://127.0.0.1:1",
                now,
            )
            .expect("token");
        let (again, made) = TokenIssuer::load_or_generate(dir.path()).expect("kept key");
        assert!(!made);
        assert_eq!(again.jwks(), first.jwks(), "the same key under the same ID");
        assert!(again.verify(&token).is_ok(), "a token outlives the restart");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SIGNING_KEY_FILE))
                .expect("key file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "readable by its owner only");
        }
        std::fs::write(dir.path().join(SIGNING_KEY_FILE), b"garbage").expect("write");
        let error = TokenIssuer::load_or_generate(dir.path())
            .err()
            .expect("refused");
        assert!(
            error.to_string().contains("delete it to make a new one"),
            "{error}"
        );
    }

    #[test]
    fn issued_tokens_verify_and_carry_the_audience() {
        let catalog = catalog();
        let principal = &catalog.service_principals()[0];
        let now = chrono::Utc::now().timestamp();
        let issuer = issuer_of("https://127.0.0.1:1", TENANT);
        let token = ISSUER_KEY
            .issue(&issuer, principal, "https://127.0.0.1:1/", now)
            .expect("token");
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.kid, ISSUER_KEY.jwks().keys[0].common.key_id);
        let claims = ISSUER_KEY.verify(&token).expect("valid");
        assert_eq!(claims.aud, "https://127.0.0.1:1/");
        assert_eq!(claims.tid, TENANT);
        assert_eq!(claims.appid, CLIENT);
        assert_eq!(claims.iss, issuer);

        let expired = ISSUER_KEY
            .issue(&issuer, principal, "https://127.0.0.1:1/", now - 7200)
            .expect("token");
        assert!(ISSUER_KEY.verify(&expired).is_err(), "expired");
        let mut tampered = token.clone();
        tampered.replace_range(tampered.len() - 4.., "AAAA");
        assert!(ISSUER_KEY.verify(&tampered).is_err(), "bad signature");
    }
}
