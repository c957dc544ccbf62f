//! JWT verification (and, in dev mode, minting). SPEC §8: claims `sub`, `exp`, optional
//! `username`, `avatar_url`. HS256 with a shared secret, or RS256/ES256 with a public key.
//!
//! This module only says who a token belongs to and until when; what the user may do is the
//! session's business.

use confab_codec::{ErrorCode, Timestamp, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

/// Who a verified token belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub user_id: UserId,
    pub username: Option<String>,
    pub avatar_url: Option<String>,
    /// The token's `exp`.
    pub expires_at: Timestamp,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was given: `UNAUTHORIZED`, close 4003.
    #[error("missing token: pass ?token=, Authorization: Bearer, or a bearer.<token> subprotocol")]
    Missing,
    /// The token's `exp` has passed: `TOKEN_EXPIRED`, close 4001.
    #[error("token expired")]
    Expired,
    /// Bad signature, algorithm, audience, issuer or claims: `TOKEN_INVALID`, close 4003.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// A valid token for another user than the endpoint's (seed 003's `/api/v1/ws/{userId}`):
    /// `FORBIDDEN`, close 4004.
    #[error("this endpoint belongs to another user")]
    OtherUser,
}

impl AuthError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Missing => ErrorCode::Unauthorized,
            Self::Expired => ErrorCode::TokenExpired,
            Self::Invalid(_) => ErrorCode::TokenInvalid,
            Self::OtherUser => ErrorCode::Forbidden,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    avatar_url: Option<String>,
}

/// What `mint` signs: the claims, and the audience and issuer this server checks, if any.
/// (Decoding reads no `aud`/`iss` into `Claims`: `Validation` checks them, and an `aud` may be
/// a list.)
#[derive(Serialize)]
struct Minted<'a> {
    #[serde(flatten)]
    claims: Claims,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
}

/// How tokens are checked.
#[derive(Debug, Clone)]
pub enum KeyConfig {
    /// HS256 with a shared secret (the dev default).
    Secret(String),
    /// RS256 or ES256 with a PEM public key.
    PublicKey { algorithm: Algorithm, pem: Vec<u8> },
}

/// Verifies tokens; mints them only when built with a secret (dev mode uses that).
pub struct Auth {
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    validation: Validation,
    /// What minted tokens carry, so that they pass this server's own checks.
    audience: Option<String>,
    issuer: Option<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("algorithms", &self.validation.algorithms).finish_non_exhaustive()
    }
}

impl Auth {
    /// `audience` and `issuer`, when set, must match the token's `aud` / `iss`.
    pub fn new(key: &KeyConfig, audience: Option<&str>, issuer: Option<&str>) -> Result<Self, String> {
        let (decoding, encoding, algorithm) = match key {
            KeyConfig::Secret(s) => {
                (DecodingKey::from_secret(s.as_bytes()), Some(EncodingKey::from_secret(s.as_bytes())), Algorithm::HS256)
            }
            KeyConfig::PublicKey { algorithm: a @ Algorithm::RS256, pem } => {
                (DecodingKey::from_rsa_pem(pem).map_err(|e| format!("jwt public key: {e}"))?, None, *a)
            }
            KeyConfig::PublicKey { algorithm: a @ Algorithm::ES256, pem } => {
                (DecodingKey::from_ec_pem(pem).map_err(|e| format!("jwt public key: {e}"))?, None, *a)
            }
            KeyConfig::PublicKey { algorithm, .. } => return Err(format!("unsupported JWT algorithm {algorithm:?}")),
        };
        // One algorithm only: a token cannot pick a weaker one (or `none`) for itself.
        let mut validation = Validation::new(algorithm);
        validation.leeway = 0;
        // A configured audience or issuer must be present, not merely match when present.
        let mut required = vec!["exp", "sub"];
        match audience {
            Some(a) => {
                validation.set_audience(&[a]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(i) = issuer {
            validation.set_issuer(&[i]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(Self {
            decoding,
            encoding,
            validation,
            audience: audience.map(str::to_owned),
            issuer: issuer.map(str::to_owned),
        })
    }

    /// Verifies a token and says who it belongs to.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                other => AuthError::Invalid(format!("{other:?}")),
            })?;
        let c = data.claims;
        let user_id = UserId::parse(&c.sub).map_err(|r| AuthError::Invalid(format!("sub: {r}")))?;
        Ok(Identity {
            user_id,
            username: c.username,
            avatar_url: c.avatar_url,
            expires_at: Timestamp::from_millis(c.exp.saturating_mul(1000)),
        })
    }

    /// Mints an HS256 token (dev mode's `/dev/token`, `confab token`, tests). `None` without a
    /// secret.
    pub fn mint(&self, user_id: &UserId, username: Option<&str>, expires_at_s: i64) -> Option<String> {
        let claims = Claims {
            sub: user_id.to_string(),
            exp: expires_at_s,
            username: username.map(str::to_owned),
            avatar_url: None,
        };
        let claims = Minted { claims, aud: self.audience.as_deref(), iss: self.issuer.as_deref() };
        let key = self.encoding.as_ref()?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now_s() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
    }

    #[test]
    fn minted_tokens_verify_and_carry_the_claims() {
        let auth = Auth::new(&KeyConfig::Secret("s3cret".into()), None, None).unwrap();
        let alice = UserId::parse("alice").unwrap();
        let token = auth.mint(&alice, Some("Alice"), now_s() + 60).unwrap();
        let id = auth.verify(&token).unwrap();
        assert_eq!((id.user_id, id.username.as_deref()), (alice, Some("Alice")));
    }

    #[test]
    fn expired_wrong_key_and_unsigned_tokens_are_refused() {
        let auth = Auth::new(&KeyConfig::Secret("s3cret".into()), None, None).unwrap();
        let other = Auth::new(&KeyConfig::Secret("other".into()), None, None).unwrap();
        let u = UserId::parse("u").unwrap();
        assert_eq!(auth.verify(&auth.mint(&u, None, now_s() - 5).unwrap()), Err(AuthError::Expired));
        assert!(matches!(auth.verify(&other.mint(&u, None, now_s() + 60).unwrap()), Err(AuthError::Invalid(_))));
        // alg: none, hand-made: {"alg":"none","typ":"JWT"}.{"sub":"u","exp":9999999999}.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1IiwiZXhwIjo5OTk5OTk5OTk5fQ.";
        assert!(matches!(auth.verify(none), Err(AuthError::Invalid(_))));
        assert!(matches!(auth.verify("garbage"), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn es256_tokens_verify_with_the_public_key_and_nothing_else() {
        let key = rcgen::KeyPair::generate().unwrap(); // ECDSA P-256
        let public = KeyConfig::PublicKey { algorithm: Algorithm::ES256, pem: key.public_key_pem().into_bytes() };
        let auth = Auth::new(&public, None, None).unwrap();
        let signing = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
        let claims = serde_json::json!({"sub": "alice", "exp": now_s() + 60, "username": "Alice"});
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &signing).unwrap();
        let id = auth.verify(&token).unwrap();
        assert_eq!((id.user_id.as_str(), id.username.as_deref()), ("alice", Some("Alice")));
        // An HS256 token signed with the public key's bytes (the classic confusion) is refused.
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(key.public_key_pem().as_bytes()),
        )
        .unwrap();
        assert!(matches!(auth.verify(&hs), Err(AuthError::Invalid(_))));
        assert!(auth.mint(&id.user_id, None, now_s() + 60).is_none(), "a public key cannot mint");
    }

    #[test]
    fn audience_and_issuer_are_enforced_when_configured() {
        let auth = Auth::new(&KeyConfig::Secret("k".into()), Some("confab"), Some("winkr")).unwrap();
        let u = UserId::parse("u").unwrap();
        // Minted tokens carry both (`confab token` with --jwt-audience/--jwt-issuer).
        assert_eq!(auth.verify(&auth.mint(&u, None, now_s() + 60).unwrap()).map(|i| i.user_id), Ok(u.clone()));
        let other = Auth::new(&KeyConfig::Secret("k".into()), Some("other"), Some("winkr")).unwrap();
        assert!(matches!(auth.verify(&other.mint(&u, None, now_s() + 60).unwrap()), Err(AuthError::Invalid(_))));
        let key = EncodingKey::from_secret(b"k");
        let token = |aud: &str, iss: &str| {
            let claims = serde_json::json!({"sub": "u", "exp": now_s() + 60, "aud": aud, "iss": iss});
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
        };
        assert_eq!(auth.verify(&token("confab", "winkr")).map(|i| i.user_id), Ok(u));
        assert!(matches!(auth.verify(&token("other", "winkr")), Err(AuthError::Invalid(_))));
        assert!(matches!(auth.verify(&token("confab", "evil")), Err(AuthError::Invalid(_))));
    }
}
