use std::sync::LazyLock;

use base64::Engine;
use jsonwebtoken::{
    Algorithm, EncodingKey, Header,
    jwk::{Jwk, JwkSet},
};
use serde_json::json;

use super::*;
use crate::resolver::Catalog;

const TENANT: &str = "2b7e0c1d-0000-4000-8000-000000000001";
const CLIENT: &str = "3c8f1d2e-0000-4000-8000-000000000002";
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const SUBJECT: &str = "system:serviceaccount:azs-csp:azs-csp-operator";
const NOW: i64 = 1_800_000_000;

/// An RSA key pair: the private half signs, the public half is written in each key format.
struct KeyPair {
    signing: EncodingKey,
    pkcs1_public_der: Vec<u8>,
    spki_public_der: Vec<u8>,
}

impl KeyPair {
    fn generate() -> Self {
        use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
        use rsa::pkcs8::EncodePublicKey;
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("key");
        let public = private.to_public_key();
        Self {
            signing: EncodingKey::from_rsa_der(private.to_pkcs1_der().expect("der").as_bytes()),
            pkcs1_public_der: public.to_pkcs1_der().expect("der").into_vec(),
            spki_public_der: public.to_public_key_der().expect("der").into_vec(),
        }
    }

    fn sign(&self, kid: Option<&str>, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.signing).expect("jwt")
    }

    fn jwks(&self, kid: &str) -> String {
        let mut jwk = Jwk::from_encoding_key(&self.signing, Algorithm::RS256).expect("jwk");
        jwk.common.key_id = Some(kid.to_owned());
        serde_json::to_string(&JwkSet { keys: vec![jwk] }).expect("json")
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

// Two keys for every test (generating one takes a while): the issuer's and a forger's.
static ISSUER_KEY: LazyLock<KeyPair> = LazyLock::new(KeyPair::generate);
static FORGER_KEY: LazyLock<KeyPair> = LazyLock::new(KeyPair::generate);

fn claims(audience: &str, exp: i64) -> serde_json::Value {
    json!({"iss": ISSUER, "sub": SUBJECT, "aud": [audience], "exp": exp, "nbf": NOW - 10, "iat": NOW - 10})
}

/// A principal whose one federated credential trusts the keys in `file` (relative to the
/// catalog directory).
fn principal(file: &str) -> ServicePrincipal {
    let catalog = Catalog::parse(&format!(
        "servicePrincipals:\n- {{tenantId: {TENANT}, clientId: {CLIENT}, federatedCredentials: [{{issuer: '{ISSUER}', subject: '{SUBJECT}', jwksFile: {file}}}]}}\n"
    ))
    .expect("catalog");
    catalog.service_principals()[0].clone()
}

#[test]
fn signatures_are_verified_against_the_issuer_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write =
        |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write");
    write("jwks.json", &ISSUER_KEY.jwks("issuer-key"));
    write("sa.pub", &pem("PUBLIC KEY", &ISSUER_KEY.spki_public_der));
    write(
        "rsa.pub",
        &pem("RSA PUBLIC KEY", &ISSUER_KEY.pkcs1_public_der),
    );
    write("garbage.pem", "not a key");

    let good = ISSUER_KEY.sign(Some("issuer-key"), &claims(FEDERATED_AUDIENCE, NOW + 600));
    let no_kid = ISSUER_KEY.sign(None, &claims(FEDERATED_AUDIENCE, NOW + 600));
    let forged = FORGER_KEY.sign(Some("issuer-key"), &claims(FEDERATED_AUDIENCE, NOW + 600));
    let hmac = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(FEDERATED_AUDIENCE, NOW + 600),
        &EncodingKey::from_secret(b"anyone can make this"),
    )
    .expect("jwt");
    // The issuer's signature over other claims: a later exp pasted into a good token.
    let tampered = {
        let later = ISSUER_KEY.sign(Some("issuer-key"), &claims(FEDERATED_AUDIENCE, NOW + 9999));
        let [header, _, signature] = good.split('.').collect::<Vec<_>>()[..] else {
            panic!("three parts")
        };
        let payload = later.split('.').nth(1).expect("payload");
        format!("{header}.{payload}.{signature}")
    };
    let expired = ISSUER_KEY.sign(Some("issuer-key"), &claims(FEDERATED_AUDIENCE, NOW - 600));
    let wrong_audience = ISSUER_KEY.sign(
        Some("issuer-key"),
        &claims("https://kubernetes.default.svc.cluster.local", NOW + 600),
    );

    let cases: [(&str, &str, &str, Result<(), u32>); 12] = [
        ("jwks", "jwks.json", &good, Ok(())),
        ("jwks, token without kid", "jwks.json", &no_kid, Ok(())),
        ("SPKI PEM", "sa.pub", &good, Ok(())),
        ("PKCS#1 PEM", "rsa.pub", &no_kid, Ok(())),
        ("forged", "jwks.json", &forged, Err(700027)),
        ("forged against a PEM", "sa.pub", &forged, Err(700027)),
        ("HMAC", "jwks.json", &hmac, Err(700027)),
        ("tampered", "jwks.json", &tampered, Err(700027)),
        ("expired", "jwks.json", &expired, Err(700024)),
        ("wrong audience", "sa.pub", &wrong_audience, Err(700212)),
        ("missing key file", "missing.json", &good, Err(700027)),
        ("unreadable key file", "garbage.pem", &good, Err(700027)),
    ];
    for (name, file, assertion, want) in cases {
        let got = check_assertion(&principal(file), assertion, NOW, dir.path()).map_err(|e| {
            assert_eq!(e.error, "invalid_client", "{name}");
            e.code
        });
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn key_files_are_read_as_jwks_or_pem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keys");
    std::fs::write(&path, format!("  \n{}", ISSUER_KEY.jwks("a"))).expect("write");
    let keys = read_issuer_keys(&path).expect("jwks");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].kid.as_deref(), Some("a"));
    std::fs::write(&path, r#"{"keys": []}"#).expect("write");
    let error = read_issuer_keys(&path).err().expect("no key").to_string();
    assert!(error.contains("no usable signing key"), "{error}");
    std::fs::write(&path, pem("PUBLIC KEY", &ISSUER_KEY.spki_public_der)).expect("write");
    assert_eq!(read_issuer_keys(&path).expect("pem")[0].kid, None);
    let missing = read_issuer_keys(&dir.path().join("nope"))
        .err()
        .expect("missing");
    assert!(missing.to_string().contains("cannot read the issuer keys"));
}

#[test]
fn pem_files_that_hold_no_rsa_public_key_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("key.pem");
    for (text, want) in [
        (
            "-----BEGIN PUBLIC KEY-----\nAAAA\n".to_owned(),
            "no END line",
        ),
        (pem("PRIVATE KEY", b"x"), "no public key"),
        (pem("PUBLIC KEY", b"not DER"), "not an RSA public key"),
        (
            "-----BEGIN PUBLIC KEY-----\n!!\n-----END PUBLIC KEY-----\n".to_owned(),
            "bad base64",
        ),
    ] {
        std::fs::write(&path, &text).expect("write");
        let error = read_issuer_keys(&path).err().expect("refused").to_string();
        assert!(error.contains(want), "{want:?} not in {error:?}");
    }
}
