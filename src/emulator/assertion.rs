//! Client assertions of federated credentials (workload identity): a JWT from another issuer,
//! typically a Kubernetes ServiceAccount token from TokenRequest, that Entra ID exchanges for
//! an access token (DESIGN.md §10).
//!
//! An assertion is accepted when its `iss` and `sub` are exactly those of one of the
//! principal's federated credentials, its `aud` holds `api://AzureADTokenExchange`, and it is
//! within `nbf`..`exp` (with Entra ID's five minutes of skew). When that credential names a
//! `jwksFile`, its signature must also verify against one of the file's keys: a JWKS document
//! (what a cluster serves at `/openid/v1/jwks`) or a PEM RSA public key (the API server's
//! `--service-account-key-file`). The file is read at each exchange, so a rotated key is
//! picked up without a reload; exchanges are rare (a client keeps its token for an hour).
//! Without `jwksFile` the signature is not checked: the subject alone is trusted, which is
//! what a test of a client that cannot reach a real issuer needs.

use std::path::{Path, PathBuf};

use jsonwebtoken::{AlgorithmFamily, DecodingKey, Validation, jwk::JwkSet};
use serde::Deserialize;

use super::entra::{FEDERATED_AUDIENCE, TokenError};
use crate::resolver::{FederatedCredential, ServicePrincipal};

/// Clock skew tolerated on assertions' `exp` and `nbf`, as Entra ID does.
const LEEWAY_SECONDS: i64 = 300;

/// The claims of a client assertion that Entra ID checks.
#[derive(Deserialize, Debug, Default)]
struct AssertionClaims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    nbf: Option<i64>,
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, wanted: &str) -> bool {
        match self {
            Audience::One(aud) => aud == wanted,
            Audience::Many(auds) => auds.iter().any(|aud| aud == wanted),
        }
    }
}

/// Why an issuer's keys could not be read.
#[derive(thiserror::Error, Debug)]
pub enum IssuerKeyError {
    #[error("cannot read the issuer keys {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is neither a JWKS document nor a PEM public key ({reason})")]
    Format { path: PathBuf, reason: String },
}

/// One public key of an issuer, with the key ID a JWKS gave it.
pub struct IssuerKey {
    pub kid: Option<String>,
    pub key: DecodingKey,
}

/// The keys in a `jwksFile`: a JWKS document (keys it cannot use, e.g. of an unknown type,
/// are skipped) or one PEM RSA public key.
pub fn read_issuer_keys(path: &Path) -> Result<Vec<IssuerKey>, IssuerKeyError> {
    let bytes = std::fs::read(path).map_err(|source| IssuerKeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let format = |reason: String| IssuerKeyError::Format {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.trim_ascii_start().starts_with(b"{") {
        let set: JwkSet = serde_json::from_slice(&bytes).map_err(|e| format(e.to_string()))?;
        let keys: Vec<IssuerKey> = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let key = DecodingKey::from_jwk(jwk).ok()?;
                Some(IssuerKey {
                    kid: jwk.common.key_id.clone(),
                    key,
                })
            })
            .collect();
        if keys.is_empty() {
            return Err(format("the JWKS holds no usable signing key".to_owned()));
        }
        return Ok(keys);
    }
    let text = std::str::from_utf8(&bytes).map_err(|e| format(e.to_string()))?;
    let key = rsa_public_key_from_pem(text).map_err(format)?;
    Ok(vec![IssuerKey { kid: None, key }])
}

/// A PEM RSA public key, `PUBLIC KEY` (SubjectPublicKeyInfo, what `openssl pkey -pubout`
/// writes) or `RSA PUBLIC KEY` (PKCS#1).
fn rsa_public_key_from_pem(text: &str) -> Result<DecodingKey, String> {
    use base64::Engine;
    use rsa::{pkcs1::EncodeRsaPublicKey, pkcs8::DecodePublicKey};
    let text = text.trim();
    let (label, body) = text
        .strip_prefix("-----BEGIN ")
        .and_then(|rest| rest.split_once("-----"))
        .ok_or("no PEM BEGIN line")?;
    let body = body
        .split_once(&format!("-----END {label}-----"))
        .map(|(body, _)| body)
        .ok_or_else(|| format!("no END line for {label}"))?;
    let base64: String = body.split_whitespace().collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(base64)
        .map_err(|e| format!("bad base64 in {label}: {e}"))?;
    match label {
        "RSA PUBLIC KEY" => Ok(DecodingKey::from_rsa_der(&der)),
        "PUBLIC KEY" => {
            let key = rsa::RsaPublicKey::from_public_key_der(&der)
                .map_err(|e| format!("not an RSA public key: {e}"))?;
            let pkcs1 = key.to_pkcs1_der().map_err(|e| e.to_string())?;
            Ok(DecodingKey::from_rsa_der(pkcs1.as_bytes()))
        }
        other => Err(format!("a PEM {other} is no public key")),
    }
}

/// Whether `assertion` is signed by one of `keys`: the key its `kid` names when a key has
/// that ID, else any of them. Only asymmetric algorithms count (never `none` or HMAC, whose
/// "key" would be public).
fn signed_by(assertion: &str, keys: &[IssuerKey]) -> bool {
    let Ok(header) = jsonwebtoken::decode_header(assertion) else {
        return false;
    };
    if !matches!(
        header.alg.family(),
        AlgorithmFamily::Rsa | AlgorithmFamily::Ec | AlgorithmFamily::Ed
    ) {
        return false;
    }
    let named = header
        .kid
        .as_deref()
        .filter(|kid| keys.iter().any(|k| k.kid.as_deref() == Some(*kid)));
    let mut validation = Validation::new(header.alg);
    // The claims are checked by the caller with Entra ID's own error codes.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    keys.iter()
        .filter(|k| named.is_none_or(|kid| k.kid.as_deref() == Some(kid)))
        .filter(|k| k.key.family() == header.alg.family())
        .any(|k| jsonwebtoken::decode::<serde_json::Value>(assertion, &k.key, &validation).is_ok())
}

/// Checks a client assertion for `principal` at `now` (Unix seconds); relative `jwksFile`
/// paths start at `catalog_dir`.
pub fn check_assertion(
    principal: &ServicePrincipal,
    assertion: &str,
    now: i64,
    catalog_dir: &Path,
) -> Result<(), TokenError> {
    let claims: AssertionClaims = jsonwebtoken::dangerous::insecure_decode(assertion)
        .map(|data| data.claims)
        .map_err(|e| {
            TokenError::invalid_client(
                50027,
                format!("The client assertion is not a valid JWT ({e})."),
            )
        })?;
    let (Some(issuer), Some(subject)) = (claims.iss.as_deref(), claims.sub.as_deref()) else {
        return Err(TokenError::invalid_client(
            50027,
            "The client assertion has no iss or no sub claim.",
        ));
    };
    let Some(credential) = principal
        .federated_credentials
        .iter()
        .find(|c| c.issuer == issuer && c.subject == subject)
    else {
        return Err(TokenError::invalid_client(
            70021,
            format!(
                "No matching federated identity record found for presented assertion. Assertion Issuer: '{issuer}'. Assertion Subject: '{subject}'."
            ),
        ));
    };
    check_signature(credential, assertion, catalog_dir)?;
    if !claims
        .aud
        .as_ref()
        .is_some_and(|aud| aud.contains(FEDERATED_AUDIENCE))
    {
        return Err(TokenError::invalid_client(
            700212,
            format!(
                "No matching federated identity record found for presented assertion audience; it must be '{FEDERATED_AUDIENCE}'."
            ),
        ));
    }
    match claims.exp {
        Some(exp) if exp + LEEWAY_SECONDS > now => {}
        _ => {
            return Err(TokenError::invalid_client(
                700024,
                "Client assertion is not within its valid time range (expired or no exp claim).",
            ));
        }
    }
    if claims.nbf.is_some_and(|nbf| nbf - LEEWAY_SECONDS > now) {
        return Err(TokenError::invalid_client(
            700024,
            "Client assertion is not within its valid time range (not yet valid).",
        ));
    }
    Ok(())
}

fn check_signature(
    credential: &FederatedCredential,
    assertion: &str,
    catalog_dir: &Path,
) -> Result<(), TokenError> {
    let Some(file) = &credential.jwks_file else {
        return Ok(());
    };
    let keys = read_issuer_keys(&catalog_dir.join(file)).map_err(|error| {
        // The operator of the emulator must fix the catalog; the client only learns that its
        // assertion could not be checked.
        tracing::warn!(issuer = %credential.issuer, %error, "cannot read a federated credential's keys");
        TokenError::invalid_client(
            700027,
            format!(
                "The keys of issuer '{}' cannot be read, so the client assertion's signature cannot be verified.",
                credential.issuer
            ),
        )
    })?;
    if signed_by(assertion, &keys) {
        Ok(())
    } else {
        Err(TokenError::invalid_client(
            700027,
            "Client assertion contains an invalid signature.",
        ))
    }
}

#[cfg(test)]
#[path = "assertion_tests.rs"]
mod tests;
