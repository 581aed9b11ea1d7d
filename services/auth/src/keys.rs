//! Signing key material: Ed25519 keys, their stored form (PKCS#8 DER), their public form (JWK, RFC 8037) and
//! signing access tokens with them (EdDSA, `kid` in the header).

use api::auth::Jwk;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use platform::auth::Claims;
use sha2::{Digest, Sha256};

use crate::error::Error;

/// A key as stored in `signing_keys`.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredKey {
    /// Key id (the RFC 7638 JWK thumbprint of the public key).
    pub kid: String,
    /// PKCS#8 DER of the private key, standard base64.
    pub private_key_pkcs8: String,
    /// The raw public key, base64url without padding.
    pub public_key: String,
    /// When the key was made, microseconds since the epoch.
    pub create_time: i64,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// An Ed25519 key that signs access tokens.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    key: ed25519_dalek::SigningKey,
    encoding: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, Error> {
        Self::from_dalek(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng))
    }

    fn from_dalek(key: ed25519_dalek::SigningKey) -> Result<Self, Error> {
        let der = key.to_pkcs8_der().map_err(|e| Error::Key(format!("encoding PKCS#8: {e}")))?;
        let encoding = EncodingKey::from_ed_der(der.as_bytes());
        let kid = thumbprint(&public_x(&key));
        Ok(Self { kid, key, encoding })
    }

    /// The key from its PKCS#8 DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, Error> {
        let key =
            ed25519_dalek::SigningKey::from_pkcs8_der(der).map_err(|e| Error::Key(format!("decoding PKCS#8: {e}")))?;
        Self::from_dalek(key)
    }

    /// The key from its stored form; refuses a row whose kid or public key does not match the private key.
    pub fn from_stored(stored: &StoredKey) -> Result<Self, Error> {
        let der = STANDARD
            .decode(stored.private_key_pkcs8.as_bytes())
            .map_err(|e| Error::Key(format!("key {}: private key is not base64: {e}", stored.kid)))?;
        let key = Self::from_pkcs8_der(&der)?;
        if key.kid != stored.kid || public_x(&key.key) != stored.public_key {
            return Err(Error::Key(format!(
                "key {}: stored public key or kid does not match the private key",
                stored.kid
            )));
        }
        Ok(key)
    }

    /// The stored form of the key, created at `create_time` (microseconds).
    pub fn to_stored(&self, create_time: i64) -> Result<StoredKey, Error> {
        let der = self.key.to_pkcs8_der().map_err(|e| Error::Key(format!("encoding PKCS#8: {e}")))?;
        Ok(StoredKey {
            kid: self.kid.clone(),
            private_key_pkcs8: STANDARD.encode(der.as_bytes()),
            public_key: public_x(&self.key),
            create_time,
        })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (OKP, Ed25519, EdDSA, use sig).
    pub fn jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".to_owned(),
            crv: "Ed25519".to_owned(),
            x: public_x(&self.key),
            kid: self.kid.clone(),
            alg: "EdDSA".to_owned(),
            r#use: "sig".to_owned(),
        }
    }

    /// A signed JWT (EdDSA, this key's `kid` in the header) carrying `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, Error> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| Error::Key(format!("signing: {e}")))
    }
}

/// The public key in a JWK's `x` form: raw bytes, base64url without padding.
fn public_x(key: &ed25519_dalek::SigningKey) -> String {
    URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes())
}

/// The RFC 7638 thumbprint of an Ed25519 public key (RFC 8037 §2): SHA-256 over the canonical JSON of the
/// required members, base64url without padding.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// The keys of the service: the one that signs, and every key it publishes in its JWKS.
#[derive(Debug, Clone)]
pub struct Keyring {
    /// The key that signs new tokens.
    pub active: SigningKey,
    /// Every trusted public key (the active one included).
    pub jwks: Vec<Jwk>,
}

impl Keyring {
    /// A keyring from the stored keys, oldest first: the oldest signs, all are published. `None` when empty.
    pub fn from_stored(stored: &[StoredKey]) -> Result<Option<Self>, Error> {
        let keys = stored.iter().map(SigningKey::from_stored).collect::<Result<Vec<_>, _>>()?;
        let jwks = keys.iter().map(SigningKey::jwk).collect();
        Ok(keys.into_iter().next().map(|active| Self { active, jwks }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn rfc8037_thumbprint() {
        // RFC 8037, appendix A.3.
        assert_eq!(
            thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn keys_survive_their_stored_form() {
        let key = SigningKey::generate().expect("key");
        let stored = key.to_stored(42).expect("stored");
        let back = SigningKey::from_stored(&stored).expect("loads");
        assert_eq!(back.kid(), key.kid());
        assert_eq!(back.jwk(), key.jwk());
        let mut tampered = stored.clone();
        tampered.kid = "other".into();
        assert!(SigningKey::from_stored(&tampered).is_err());
        let mut garbage = stored;
        garbage.private_key_pkcs8 = "not base64!".into();
        assert!(SigningKey::from_stored(&garbage).is_err());
    }

    #[tokio::test]
    async fn signed_tokens_verify_against_the_jwk() {
        let key = SigningKey::generate().expect("key");
        let jwk = key.jwk();
        assert_eq!(
            (jwk.kty.as_str(), jwk.crv.as_str(), jwk.alg.as_str(), jwk.r#use.as_str()),
            ("OKP", "Ed25519", "EdDSA", "sig")
        );
        let claims =
            crate::domain::access_claims("u1", &["customer".to_owned()], false, "s1", platform::time::now_secs());
        let token = key.sign(&claims).expect("signs");
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!((header.alg, header.kid.as_deref()), (Algorithm::EdDSA, Some(key.kid())));
        let verifier = platform::auth::TokenVerifier::new(Arc::new(platform::auth::StaticKeySource(vec![jwk])));
        assert_eq!(verifier.verify(&token).await.expect("verifies"), claims);
    }

    #[test]
    fn the_oldest_key_signs() {
        let a = SigningKey::generate().expect("key");
        let b = SigningKey::generate().expect("key");
        let stored = [a.to_stored(1).expect("a"), b.to_stored(2).expect("b")];
        let ring = Keyring::from_stored(&stored).expect("ok").expect("some");
        assert_eq!(ring.active.kid(), a.kid());
        assert_eq!(ring.jwks.len(), 2);
        assert!(Keyring::from_stored(&[]).expect("ok").is_none());
    }
}
