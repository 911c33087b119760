//! Token keys: how tokens are verified (HS256 secret, or RS256/ES256 public key) and minted
//! (`vigil token`, tests, the demo).

use std::path::Path;
use std::time::Duration;

use aggregates::types::{HospitalId, Role, UserId};
use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};

use super::{Audience, AuthError, Claims, Identity};
use crate::config::{JwtAlgorithm, JwtSettings};

/// Shortest HS256 secret accepted: RFC 7518 §3.2 requires a key at least as long as the hash
/// output (256 bits).
pub const MIN_SECRET_LEN: usize = 32;

/// Clock skew tolerated on `exp` and `nbf` (RFC 7519 §4.1.4-5 allow "some small leeway"), so
/// a token minted on a host whose clock is a little off is not refused. Kept small: both are
/// security boundaries.
pub const EXPIRY_LEEWAY_SECS: u64 = 5;

/// Why the configured keys are unusable. Reported once at start-up.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("VIGIL_JWT_SECRET is required for HS256 (or run without DATABASE_URL to use the generated one)")]
    MissingSecret,
    #[error("the JWT secret must be at least {MIN_SECRET_LEN} bytes long")]
    ShortSecret,
    #[error("{0} requires VIGIL_JWT_PUBLIC_KEY (a PEM file)")]
    MissingPublicKey(&'static str),
    #[error("minting {0} tokens requires VIGIL_JWT_PRIVATE_KEY (a PEM file)")]
    MissingPrivateKey(&'static str),
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid key: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

/// Verification (and optionally signing) keys with the validation rules that go with them.
#[derive(Clone)]
pub struct JwtKeys {
    algorithm: Algorithm,
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    validation: Validation,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("JwtKeys")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

fn read_pem(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The algorithm, the verifying key and, when Vigil may mint, the signing key.
type KeySet = (Algorithm, DecodingKey, Option<EncodingKey>);

/// HS256 from the configured secret, else the generated one; refused when short.
fn secret_keys(settings: &JwtSettings, generated_secret: Option<&str>) -> Result<KeySet, KeyError> {
    let secret = settings
        .secret
        .as_deref()
        .or(generated_secret)
        .ok_or(KeyError::MissingSecret)?;
    if secret.len() < MIN_SECRET_LEN {
        return Err(KeyError::ShortSecret);
    }
    Ok((
        Algorithm::HS256,
        DecodingKey::from_secret(secret.as_bytes()),
        Some(EncodingKey::from_secret(secret.as_bytes())),
    ))
}

/// RS256 or ES256 from PEM files: the public key is required, the private one only lets
/// Vigil mint tokens itself.
fn pem_keys(settings: &JwtSettings) -> Result<KeySet, KeyError> {
    let (algorithm, name) = if settings.algorithm == JwtAlgorithm::Rs256 {
        (Algorithm::RS256, "RS256")
    } else {
        (Algorithm::ES256, "ES256")
    };
    let public = settings
        .public_key
        .as_deref()
        .ok_or(KeyError::MissingPublicKey(name))?;
    let public = read_pem(public)?;
    let decoding = if algorithm == Algorithm::RS256 {
        DecodingKey::from_rsa_pem(&public)?
    } else {
        DecodingKey::from_ec_pem(&public)?
    };
    let encoding = match settings.private_key.as_deref() {
        None => None,
        Some(path) => {
            let private = read_pem(path)?;
            Some(if algorithm == Algorithm::RS256 {
                EncodingKey::from_rsa_pem(&private)?
            } else {
                EncodingKey::from_ec_pem(&private)?
            })
        }
    };
    Ok((algorithm, decoding, encoding))
}

/// The checks every token passes: expiry (with leeway), `nbf` when present, and a
/// configured issuer or audience as a required, matching claim.
fn validation(algorithm: Algorithm, issuer: Option<&str>, audience: Option<&str>) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = EXPIRY_LEEWAY_SECS;
    // jsonwebtoken leaves `nbf` unchecked by default; RFC 7519 §4.1.5 says a token must not
    // be accepted before it. Checked only when present (it is an optional claim).
    validation.validate_nbf = true;
    // jsonwebtoken checks `iss` and `aud` only when a token carries them: a configured
    // issuer or audience must also be a required claim, or omitting it would pass.
    let mut required = vec!["exp", "sub"];
    match issuer {
        Some(iss) => {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        None => validation.iss = None,
    }
    match audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

impl JwtKeys {
    /// Builds keys from settings. `generated_secret` is the zero-config secret kept in the
    /// data dir, used only when no secret is configured.
    pub fn from_settings(
        settings: &JwtSettings,
        generated_secret: Option<&str>,
    ) -> Result<Self, KeyError> {
        let (algorithm, decoding, encoding) = match settings.algorithm {
            JwtAlgorithm::Hs256 => secret_keys(settings, generated_secret)?,
            JwtAlgorithm::Rs256 | JwtAlgorithm::Es256 => pem_keys(settings)?,
        };
        Ok(Self {
            algorithm,
            decoding,
            encoding,
            validation: validation(
                algorithm,
                settings.issuer.as_deref(),
                settings.audience.as_deref(),
            ),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
        })
    }

    /// HS256 keys from a secret, with no issuer or audience checks (tests, tools).
    pub fn from_secret(secret: &str) -> Result<Self, KeyError> {
        let settings = JwtSettings {
            algorithm: JwtAlgorithm::Hs256,
            secret: Some(secret.to_owned()),
            public_key: None,
            private_key: None,
            issuer: None,
            audience: None,
        };
        Self::from_settings(&settings, None)
    }

    /// Verifies a token and returns who it belongs to.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let data = decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| self.explain(token, e.kind()))?;
        let claims = data.claims;
        let expires_at = DateTime::<Utc>::from_timestamp(claims.exp, 0)
            .ok_or_else(|| AuthError::Invalid("`exp` out of range".into()))?;
        Ok(Identity {
            user: claims.sub,
            hospital: claims.hospital,
            role: claims.role,
            expires_at,
        })
    }

    /// Says what is wrong with a refused token. jsonwebtoken's own kinds can mislead: an
    /// unsigned token (`alg: none`) fails to parse its header, and a negative `exp` does not
    /// parse as a NumericDate and is reported as missing; both are told apart here by
    /// looking at the (unverified) header and claims, which are used for the message only.
    fn explain(&self, token: &str, kind: &ErrorKind) -> AuthError {
        let expected = self.algorithm_name();
        let invalid = |detail: String| AuthError::Invalid(detail);
        if let Some(alg) = unverified_part(token, 0).and_then(|h| h.get("alg").cloned()) {
            let alg = alg.as_str().unwrap_or_default().to_owned();
            if alg.eq_ignore_ascii_case("none") {
                return invalid(format!(
                    "unsigned token (`alg: none`) refused: tokens must be signed with {expected}"
                ));
            }
            if alg != expected {
                return invalid(format!(
                    "wrong algorithm: the token is signed with `{alg}`, this server accepts only {expected}"
                ));
            }
        }
        match kind {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => {
                invalid("the token is not valid yet (its `nbf` is in the future)".into())
            }
            ErrorKind::InvalidSignature => invalid("bad signature".into()),
            ErrorKind::InvalidAlgorithm => invalid("wrong algorithm".into()),
            ErrorKind::InvalidIssuer => invalid("wrong issuer".into()),
            ErrorKind::InvalidAudience => invalid("wrong audience".into()),
            ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
                match unverified_part(token, 1).and_then(|c| c.get(claim.as_str()).cloned()) {
                    Some(value) if matches!(claim.as_str(), "exp" | "nbf") => invalid(format!(
                        "claim `{claim}` must be a NumericDate (seconds since the epoch, not negative), got {value}"
                    )),
                    Some(value) => invalid(format!("claim `{claim}` has an invalid value: {value}")),
                    None => invalid(format!("missing claim `{claim}`")),
                }
            }
            ErrorKind::Json(err) => {
                // Claims are deserialized before they are validated: name a missing claim as
                // the validation would.
                let claims = unverified_part(token, 1).unwrap_or_default();
                match ["exp", "sub", "hospital", "role"]
                    .into_iter()
                    .find(|claim| !claims.contains_key(*claim))
                {
                    Some(claim) if !claims.is_empty() => {
                        invalid(format!("missing claim `{claim}`"))
                    }
                    _ => invalid(format!("bad claims: {err}")),
                }
            }
            _ => invalid("malformed token".into()),
        }
    }

    fn algorithm_name(&self) -> &'static str {
        match self.algorithm {
            Algorithm::RS256 => "RS256",
            Algorithm::ES256 => "ES256",
            _ => "HS256",
        }
    }

    /// Mints a token for `user` of `hospital` with `role`, valid for `ttl`.
    pub fn mint(
        &self,
        user: &UserId,
        hospital: &HospitalId,
        role: Role,
        ttl: Duration,
    ) -> Result<String, KeyError> {
        let now = Utc::now().timestamp();
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
        self.mint_claims(&Claims {
            sub: user.clone(),
            hospital: hospital.clone(),
            role,
            exp: now.saturating_add(ttl),
            iat: Some(now),
            iss: self.issuer.clone(),
            aud: self.audience.clone().map(Audience::One),
        })
    }

    /// Signs arbitrary claims (tests use it to mint expired or foreign tokens).
    pub fn mint_claims(&self, claims: &Claims) -> Result<String, KeyError> {
        let name = self.algorithm_name();
        let key = self
            .encoding
            .as_ref()
            .ok_or(KeyError::MissingPrivateKey(name))?;
        Ok(encode(&Header::new(self.algorithm), claims, key)?)
    }
}

/// The JSON object in segment `index` of a compact JWT (0 the header, 1 the claims), decoded
/// without any verification: only for error messages.
fn unverified_part(
    token: &str,
    index: usize,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    use base64::Engine;
    let segment = token.split('.').nth(index)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Loads the zero-config HS256 secret from `<data_dir>/jwt-secret`, creating it (random, 256
/// bits, readable only by its owner) on first use.
pub fn load_or_create_secret(data_dir: &Path) -> std::io::Result<String> {
    use rand::RngCore;
    use std::io::Write;
    let path = data_dir.join("jwt-secret");
    match std::fs::read_to_string(&path) {
        Ok(secret) if secret.trim().len() >= MIN_SECRET_LEN => return Ok(secret.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(data_dir)?;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret = hex::encode(bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path)?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn required(validation: &Validation) -> Vec<&str> {
        let mut claims: Vec<&str> = validation
            .required_spec_claims
            .iter()
            .map(String::as_str)
            .collect();
        claims.sort_unstable();
        claims
    }

    #[test]
    fn a_configured_issuer_and_audience_become_required_claims() {
        let validation = validation(Algorithm::HS256, Some("idp"), Some("vigil"));
        assert_eq!(required(&validation), ["aud", "exp", "iss", "sub"]);
        assert!(validation.validate_aud);
        assert!(validation.validate_nbf);
    }

    #[test]
    fn without_issuer_or_audience_only_expiry_and_subject_are_required() {
        let validation = validation(Algorithm::HS256, None, None);
        assert_eq!(required(&validation), ["exp", "sub"]);
        assert!(validation.iss.is_none());
        assert!(!validation.validate_aud);
    }
}
