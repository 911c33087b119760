//! Asymmetric tokens (RS256, ES256) and issuer/audience checks: what an identity provider's
//! tokens must satisfy to be accepted, and the forgeries that must be refused.
//!
//! Keys are generated at test time with the `openssl` CLI, so no key material is committed.
//! Servers are given only the public key: verifying must never need the private one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aggregates::types::{HospitalId, Role, UserId};
use chrono::Utc;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;
use vigil::auth::{Audience, Claims, JwtKeys};
use vigil::config::{JwtAlgorithm, JwtSettings};

use crate::cli::{run, vigil, DataDir};
use crate::helpers::{assert_problem, spawn_app_with, ws, TestApp, TEST_SECRET};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::Value;

const H: &str = "st-marys";

/// A directory of generated keys, removed when dropped.
struct KeyDir(PathBuf);

/// A private key and its public half, as PEM files.
#[derive(Clone)]
struct KeyPair {
    private: PathBuf,
    public: PathBuf,
}

impl KeyDir {
    fn new() -> Self {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("keys-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("create the key dir");
        Self(path)
    }

    /// An RSA 2048 key pair (PKCS#8 private key).
    fn rsa(&self, name: &str) -> KeyPair {
        self.pair(
            name,
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        )
    }

    /// An EC P-256 key pair (PKCS#8 private key, as `EncodingKey::from_ec_pem` wants).
    fn ec(&self, name: &str) -> KeyPair {
        self.pair(
            name,
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        )
    }

    fn pair(&self, name: &str, genpkey: &[&str]) -> KeyPair {
        let private = self.0.join(format!("{name}.key"));
        let public = self.0.join(format!("{name}.pub"));
        let mut generate = vec!["genpkey"];
        generate.extend_from_slice(genpkey);
        generate.extend(["-out", path_str(&private)]);
        openssl(&generate);
        openssl(&[
            "pkey",
            "-in",
            path_str(&private),
            "-pubout",
            "-out",
            path_str(&public),
        ]);
        KeyPair { private, public }
    }
}

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Settings verifying `algorithm` tokens with `pair`'s public key (and minting with its
/// private key, for the test's own [`JwtKeys`]).
fn asymmetric(algorithm: JwtAlgorithm, pair: &KeyPair) -> JwtSettings {
    JwtSettings {
        algorithm,
        secret: None,
        public_key: Some(pair.public.clone()),
        private_key: Some(pair.private.clone()),
        issuer: None,
        audience: None,
    }
}

/// Minting (and verifying) keys for `algorithm` from `pair`.
fn keys_for(algorithm: JwtAlgorithm, pair: &KeyPair) -> JwtKeys {
    JwtKeys::from_settings(&asymmetric(algorithm, pair), None).expect("keys from PEM files")
}

/// A server configured with `jwt`, minus the private key.
async fn spawn_verifier(jwt: &JwtSettings) -> TestApp {
    let jwt = JwtSettings {
        private_key: None,
        ..jwt.clone()
    };
    spawn_app_with(move |s| s.jwt = jwt).await
}

fn mint(keys: &JwtKeys) -> String {
    keys.mint(
        &UserId::parse("nurse-amy").unwrap(),
        &HospitalId::parse(H).unwrap(),
        Role::Nurse,
        Duration::from_secs(3600),
    )
    .expect("mint")
}

/// Claims of a valid nurse token, with the given issuer and audience.
fn claims(iss: Option<&str>, aud: Option<&str>) -> Claims {
    let now = Utc::now().timestamp();
    Claims {
        sub: UserId::parse("nurse-amy").unwrap(),
        hospital: HospitalId::parse(H).unwrap(),
        role: Role::Nurse,
        exp: now + 3600,
        iat: Some(now),
        iss: iss.map(str::to_owned),
        aud: aud.map(|a| Audience::One(a.to_owned())),
    }
}

/// Asserts that `token` cannot raise an alert: 401 invalid_token. Returns the problem detail.
async fn assert_refused(app: &TestApp, token: &str, what: &str) -> String {
    let response = app
        .post(
            &format!("/api/hospitals/{H}/alerts"),
            token,
            json!({"severity": "high", "message": "Bed 4: BP 190/110"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
    let problem = assert_problem(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
    problem["detail"].as_str().unwrap_or_default().to_owned()
}

#[actix_web::test]
async fn an_rs256_token_is_accepted_by_a_server_holding_only_the_public_key() {
    // Arrange
    let keys_dir = KeyDir::new();
    let jwt = asymmetric(JwtAlgorithm::Rs256, &keys_dir.rsa("idp"));
    let app = spawn_verifier(&jwt).await;
    let token = mint(&JwtKeys::from_settings(&jwt, None).expect("RS256 keys"));

    // Act
    let raised = app.raise_alert(H, &token, "critical").await;

    // Assert
    assert_eq!(raised["events"][0]["position"], 1);
    let page = app.events(H, &token, 0).await;
    assert_eq!(page["events"][0]["metadata"]["user"], "nurse-amy");
}

#[actix_web::test]
async fn an_es256_token_is_accepted_by_an_es256_server() {
    let keys_dir = KeyDir::new();
    let jwt = asymmetric(JwtAlgorithm::Es256, &keys_dir.ec("idp"));
    let app = spawn_verifier(&jwt).await;
    let token = mint(&JwtKeys::from_settings(&jwt, None).expect("ES256 keys"));

    let raised = app.raise_alert(H, &token, "critical").await;

    assert_eq!(raised["events"][0]["position"], 1);
}

#[actix_web::test]
async fn an_rs256_server_refuses_tokens_signed_any_other_way() {
    // Arrange
    let keys_dir = KeyDir::new();
    let pair = keys_dir.rsa("idp");
    let app = spawn_verifier(&asymmetric(JwtAlgorithm::Rs256, &pair)).await;
    let public_pem = std::fs::read_to_string(&pair.public).expect("public key");
    let forgeries = [
        (
            "HS256 with some secret",
            mint(&JwtKeys::from_secret(TEST_SECRET).unwrap()),
        ),
        // The classic algorithm confusion: HMAC keyed with the server's own public key.
        (
            "HS256 keyed with the RS256 public key",
            mint(&JwtKeys::from_secret(&public_pem).unwrap()),
        ),
        (
            "RS256 from another key",
            mint(&keys_for(JwtAlgorithm::Rs256, &keys_dir.rsa("other"))),
        ),
        (
            "ES256",
            mint(&keys_for(JwtAlgorithm::Es256, &keys_dir.ec("ec"))),
        ),
    ];

    for (what, token) in forgeries {
        // Act + Assert
        assert_refused(&app, &token, what).await;
    }
    assert_eq!(app.event_count().await, 0, "nothing was persisted");
}

#[actix_web::test]
async fn a_configured_issuer_and_audience_are_required() {
    // Arrange: an HS256 server that accepts only tokens from https://idp.example for vigil.
    let jwt = JwtSettings {
        algorithm: JwtAlgorithm::Hs256,
        secret: Some(TEST_SECRET.to_owned()),
        public_key: None,
        private_key: None,
        issuer: Some("https://idp.example".to_owned()),
        audience: Some("vigil".to_owned()),
    };
    let app = spawn_verifier(&jwt).await;
    // Keys with the same secret but no issuer or audience of their own, to sign any claims.
    let unchecked = JwtKeys::from_secret(TEST_SECRET).unwrap();

    // Act + Assert: `mint` with the server's settings adds iss and aud, and is accepted.
    let accepted = mint(&JwtKeys::from_settings(&jwt, None).unwrap());
    app.raise_alert(H, &accepted, "high").await;

    for (iss, aud, mentions) in [
        (None, None, "iss"),
        (Some("https://evil.example"), Some("vigil"), "iss"),
        (None, Some("vigil"), "iss"),
        (Some("https://idp.example"), Some("another-app"), "aud"),
        (Some("https://idp.example"), None, "aud"),
    ] {
        let token = unchecked.mint_claims(&claims(iss, aud)).unwrap();
        let detail = assert_refused(&app, &token, &format!("iss {iss:?}, aud {aud:?}")).await;
        // "missing claim `iss`", "wrong issuer", "wrong audience", ...
        assert!(
            detail.contains(mentions),
            "iss {iss:?}, aud {aud:?}: `{detail}` names {mentions}"
        );
    }
    assert_eq!(
        app.event_count().await,
        1,
        "only the accepted token's alert"
    );
}

#[actix_web::test]
async fn vigil_token_mints_rs256_tokens_with_the_private_key() {
    // Arrange: a data dir path that cannot be created (below a regular file): an RS256 token
    // needs no HS256 secret, so the data dir must not matter.
    let keys_dir = KeyDir::new();
    let pair = keys_dir.rsa("idp");
    let data = DataDir::new();
    let blocker = data.path().join("not-a-dir");
    std::fs::write(&blocker, "").expect("blocker file");
    let token_args = |private: Option<&Path>| {
        let mut args = vec![
            "token".to_owned(),
            "--hospital".to_owned(),
            H.to_owned(),
            "--user".to_owned(),
            "dr-rao".to_owned(),
            "--role".to_owned(),
            "physician".to_owned(),
            "--jwt-algorithm".to_owned(),
            "RS256".to_owned(),
            "--jwt-public-key".to_owned(),
            path_str(&pair.public).to_owned(),
        ];
        if let Some(private) = private {
            args.extend(["--jwt-private-key".to_owned(), path_str(private).to_owned()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = vigil(data.path(), &args);
        cmd.env("VIGIL_DATA_DIR", blocker.join("data"));
        cmd
    };

    // Act
    let minted = run(token_args(Some(&pair.private))).await;
    let without_private_key = run(token_args(None)).await;

    // Assert: the token verifies with the public key alone...
    assert!(minted.status.success(), "vigil token: {}", minted.stderr);
    let verifier = JwtKeys::from_settings(
        &JwtSettings {
            private_key: None,
            ..asymmetric(JwtAlgorithm::Rs256, &pair)
        },
        None,
    )
    .unwrap();
    let identity = verifier
        .verify(minted.stdout.trim())
        .expect("a valid RS256 token");
    assert_eq!(identity.user.as_str(), "dr-rao");
    assert_eq!(identity.role, Role::Physician);
    // ...and without the private key `vigil token` says what is missing.
    assert!(!without_private_key.status.success());
    assert!(
        without_private_key
            .stderr
            .contains("requires VIGIL_JWT_PRIVATE_KEY"),
        "{}",
        without_private_key.stderr
    );
    assert!(!data.path().join("jwt-secret").exists());
}

/// A compact JWT with exactly `header` and `claims`, signed with `key` as `algorithm` (an
/// empty signature when `key` is `None`): lets a test put anything in the header, as an
/// attacker would.
fn forge(header: Value, claims: &Value, key: Option<(&EncodingKey, Algorithm)>) -> String {
    use base64::Engine;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let message = format!("{}.{}", b64(&header), b64(claims));
    let signature = match key {
        Some((key, algorithm)) => {
            jsonwebtoken::crypto::sign(message.as_bytes(), key, algorithm).expect("sign")
        }
        None => String::new(),
    };
    format!("{message}.{signature}")
}

/// The claims of a valid nurse token as JSON, with `extra` merged in.
fn nurse_claims(extra: Value) -> Value {
    let now = Utc::now().timestamp();
    let mut claims =
        json!({"sub": "nurse-amy", "hospital": H, "role": "nurse", "exp": now + 3600, "iat": now});
    if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        claims.extend(extra.clone());
    }
    claims
}

fn private_key(algorithm: Algorithm, pair: &KeyPair) -> EncodingKey {
    let pem = std::fs::read(&pair.private).expect("private key");
    match algorithm {
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::PS256 => {
            EncodingKey::from_rsa_pem(&pem).expect("RSA key")
        }
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).expect("Ed25519 key"),
        _ => EncodingKey::from_ec_pem(&pem).expect("EC key"),
    }
}

/// What REST, SSE and a WebSocket upgrade answer `token`: their three statuses.
async fn statuses_everywhere(app: &TestApp, token: &str) -> [u16; 3] {
    let rest = app
        .post(
            &format!("/api/hospitals/{H}/alerts"),
            token,
            json!({"severity": "high", "message": "Bed 4: BP 190/110"}),
        )
        .await
        .status()
        .as_u16();
    // SSE answers 200 with a stream once it has accepted the token: only the head is read.
    let sse = app
        .get(
            &format!("/api/hospitals/{H}/events/stream?topics=alerts"),
            token,
        )
        .await
        .status()
        .as_u16();
    let request = ws::request(app.port, &format!("/api/hospitals/{H}/ws"), Some(token));
    let websocket = match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("websocket upgrade: {other}"),
    };
    [rest, sse, websocket]
}

/// RFC 7519 §4.1.5: a token must not be accepted before its `nbf`, allowing the same small
/// leeway as `exp`, on every way in (REST, SSE, WebSocket) and with every algorithm.
#[actix_web::test]
async fn a_token_used_before_its_nbf_is_refused_on_rest_sse_and_websocket() {
    // Arrange: one server per algorithm, and its signing key.
    let keys_dir = KeyDir::new();
    let rsa = keys_dir.rsa("rsa");
    let ec = keys_dir.ec("ec");
    let hs256 = JwtSettings {
        algorithm: JwtAlgorithm::Hs256,
        secret: Some(TEST_SECRET.to_owned()),
        public_key: None,
        private_key: None,
        issuer: None,
        audience: None,
    };
    let setups = [
        (
            hs256,
            EncodingKey::from_secret(TEST_SECRET.as_bytes()),
            Algorithm::HS256,
        ),
        (
            asymmetric(JwtAlgorithm::Rs256, &rsa),
            private_key(Algorithm::RS256, &rsa),
            Algorithm::RS256,
        ),
        (
            asymmetric(JwtAlgorithm::Es256, &ec),
            private_key(Algorithm::ES256, &ec),
            Algorithm::ES256,
        ),
    ];
    let now = Utc::now().timestamp();
    for (settings, key, algorithm) in setups {
        let app = spawn_verifier(&settings).await;
        let token = |nbf: i64| {
            let header = json!({"alg": format!("{algorithm:?}"), "typ": "JWT"});
            forge(
                header,
                &nurse_claims(json!({ "nbf": nbf })),
                Some((&key, algorithm)),
            )
        };

        // Act
        let in_an_hour = statuses_everywhere(&app, &token(now + 3600)).await;
        let within_leeway = statuses_everywhere(&app, &token(now + 2)).await;
        let already_valid = statuses_everywhere(&app, &token(now - 60)).await;

        // Assert
        assert_eq!(in_an_hour, [401, 401, 401], "{algorithm:?}: nbf in an hour");
        assert_eq!(
            within_leeway,
            [201, 200, 101],
            "{algorithm:?}: nbf within the leeway"
        );
        assert_eq!(
            already_valid,
            [201, 200, 101],
            "{algorithm:?}: nbf in the past"
        );
        let detail = assert_refused(&app, &token(now + 3600), "nbf").await;
        assert!(
            detail.contains("nbf"),
            "{algorithm:?}: `{detail}` names nbf"
        );
    }
}

/// RFC 7519 §4.1.3: `aud` is a string or an array of strings; the token is for this server
/// when any element is the configured audience.
#[actix_web::test]
async fn an_audience_array_is_accepted_when_any_element_is_the_configured_audience() {
    // Arrange
    let jwt = JwtSettings {
        algorithm: JwtAlgorithm::Hs256,
        secret: Some(TEST_SECRET.to_owned()),
        public_key: None,
        private_key: None,
        issuer: None,
        audience: Some("vigil".to_owned()),
    };
    let app = spawn_verifier(&jwt).await;
    let key = EncodingKey::from_secret(TEST_SECRET.as_bytes());
    let token = |aud: Value| {
        forge(
            json!({"alg": "HS256", "typ": "JWT"}),
            &nurse_claims(json!({ "aud": aud })),
            Some((&key, Algorithm::HS256)),
        )
    };

    // Act + Assert
    for accepted in [
        json!("vigil"),
        json!(["vigil"]),
        json!(["billing", "vigil"]),
    ] {
        let response = app
            .post(
                &format!("/api/hospitals/{H}/alerts"),
                &token(accepted.clone()),
                json!({"severity": "high", "message": "Bed 4: BP 190/110"}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED, "aud {accepted}");
    }
    for refused in [json!(["billing"]), json!([]), json!("billing")] {
        let detail = assert_refused(&app, &token(refused.clone()), "aud").await;
        assert!(detail.contains("audience"), "aud {refused}: `{detail}`");
    }
    assert_eq!(app.event_count().await, 3);
}

/// An unsigned token and a negative `exp` are refused with a message saying what is wrong
/// (they used to read "bad claims" and "missing claim `exp`").
#[actix_web::test]
async fn unsigned_tokens_and_negative_expiries_are_refused_saying_what_is_wrong() {
    // Arrange
    let app = spawn_verifier(&JwtSettings {
        algorithm: JwtAlgorithm::Hs256,
        secret: Some(TEST_SECRET.to_owned()),
        public_key: None,
        private_key: None,
        issuer: None,
        audience: None,
    })
    .await;
    let key = EncodingKey::from_secret(TEST_SECRET.as_bytes());

    // Act + Assert
    for alg in ["none", "None", "NONE"] {
        let unsigned = forge(
            json!({"alg": alg, "typ": "JWT"}),
            &nurse_claims(json!({})),
            None,
        );
        let detail = assert_refused(&app, &unsigned, alg).await;
        assert!(detail.contains("alg: none"), "alg {alg}: `{detail}`");
    }
    let negative = forge(
        json!({"alg": "HS256", "typ": "JWT"}),
        &nurse_claims(json!({"exp": -1})),
        Some((&key, Algorithm::HS256)),
    );
    let detail = assert_refused(&app, &negative, "exp -1").await;
    assert!(
        detail.contains("`exp`") && detail.contains("NumericDate") && detail.contains("-1"),
        "`{detail}`"
    );
    let mut without_exp = nurse_claims(json!({}));
    without_exp.as_object_mut().unwrap().remove("exp");
    let without_exp = forge(
        json!({"alg": "HS256"}),
        &without_exp,
        Some((&key, Algorithm::HS256)),
    );
    let detail = assert_refused(&app, &without_exp, "no exp").await;
    assert!(detail.contains("missing claim `exp`"), "`{detail}`");
    let valid = app.keys.mint_claims(&claims(None, None)).unwrap();
    app.raise_alert(H, &valid, "high").await;
}

/// Key confusion, one case per way a forger could try: a key named by the header (`kid`,
/// `jku`, `x5u`, an embedded `jwk`), the HMAC-with-the-public-key confusion, `none`, and
/// every other algorithm family. All are refused by an RS256 server holding one public key.
#[actix_web::test]
async fn an_rs256_server_refuses_every_key_confusion() {
    // Arrange
    let keys_dir = KeyDir::new();
    let idp = keys_dir.rsa("idp");
    let app = spawn_verifier(&asymmetric(JwtAlgorithm::Rs256, &idp)).await;
    let attacker = keys_dir.rsa("attacker");
    let attacker_key = private_key(Algorithm::RS256, &attacker);
    let public_pem = std::fs::read(&idp.public).expect("public key");
    let p384 = keys_dir.pair(
        "p384",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
    );
    let ed25519 = keys_dir.pair("ed25519", &["-algorithm", "ED25519"]);
    let claims = nurse_claims(json!({}));
    let rs256 = |header: Value| forge(header, &claims, Some((&attacker_key, Algorithm::RS256)));
    let jwk = json!({"kty": "RSA", "kid": "idp", "n": "AQAB", "e": "AQAB"});
    let forgeries = [
        (
            "a foreign key named by kid",
            rs256(json!({"alg": "RS256", "kid": "idp"})),
        ),
        (
            "a foreign key at a jku URL",
            rs256(json!({"alg": "RS256", "jku": "https://evil.example/jwks.json"})),
        ),
        (
            "a foreign key at an x5u URL",
            rs256(json!({"alg": "RS256", "x5u": "https://evil.example/cert.pem"})),
        ),
        (
            "a foreign key embedded as jwk",
            rs256(json!({"alg": "RS256", "jwk": jwk})),
        ),
        (
            "HS256 keyed with the server's RSA public key",
            forge(
                json!({"alg": "HS256"}),
                &claims,
                Some((&EncodingKey::from_secret(&public_pem), Algorithm::HS256)),
            ),
        ),
        ("alg none", forge(json!({"alg": "none"}), &claims, None)),
        (
            "RS384 (same family, other hash) with the attacker's key",
            forge(
                json!({"alg": "RS384"}),
                &claims,
                Some((&attacker_key, Algorithm::RS384)),
            ),
        ),
        (
            "PS256 with the attacker's key",
            forge(
                json!({"alg": "PS256"}),
                &claims,
                Some((&attacker_key, Algorithm::PS256)),
            ),
        ),
        (
            "ES384",
            forge(
                json!({"alg": "ES384"}),
                &claims,
                Some((&private_key(Algorithm::ES384, &p384), Algorithm::ES384)),
            ),
        ),
        (
            "EdDSA",
            forge(
                json!({"alg": "EdDSA"}),
                &claims,
                Some((&private_key(Algorithm::EdDSA, &ed25519), Algorithm::EdDSA)),
            ),
        ),
        (
            "HS512 keyed with the public key",
            forge(
                json!({"alg": "HS512"}),
                &claims,
                Some((&EncodingKey::from_secret(&public_pem), Algorithm::HS512)),
            ),
        ),
    ];

    for (what, token) in forgeries {
        // Act + Assert: refused on every way in.
        assert_eq!(
            statuses_everywhere(&app, &token).await,
            [401, 401, 401],
            "{what}"
        );
    }
    assert_eq!(app.event_count().await, 0, "nothing was persisted");
}
