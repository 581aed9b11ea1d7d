//! API keys: their format, validation of a new key's request, and the claims a key's token carries. Pure.

use platform::auth::{AUDIENCE, Claims, ISSUER};
use platform::error::Violations;

use crate::domain;

/// Every key starts with this, so leaked keys are easy to find by secret scanners.
pub const KEY_PREFIX: &str = "mk_";
/// Characters of the secret shown as its prefix.
const SHOWN_PREFIX_CHARS: usize = 11;
/// Lifetime of a token exchanged for a key, in seconds. Short: the gateway re-exchanges often, which is what
/// makes a revocation take effect within seconds.
pub const KEY_TOKEN_TTL_SECS: i64 = 60;
/// Default lifetime of a key, in days.
pub const DEFAULT_TTL_DAYS: i32 = 90;
/// Longest lifetime of a key, in days.
pub const MAX_TTL_DAYS: i32 = 365;

/// A new key's secret: the prefix and 32 random bytes, base64url.
pub fn generate_secret() -> String {
    format!("{KEY_PREFIX}{}", platform::auth::generate_secret())
}

/// What is shown of a secret afterwards.
pub fn shown_prefix(secret: &str) -> String {
    secret.chars().take(SHOWN_PREFIX_CHARS).collect()
}

/// The stored hash of a secret.
pub fn hash(secret: &str) -> String {
    domain::hash_opaque_token(secret)
}

/// Checks a new key's request against the caller's scopes; returns its lifetime in days.
pub fn validate(name: &str, scopes: &[String], ttl_days: i32, caller: &Claims) -> Result<i32, Violations> {
    let mut v = Violations::new();
    let name_chars = name.trim().chars().count();
    v.check(name_chars == 0 || name_chars > 100, "name", "must be 1 to 100 characters");
    if scopes.is_empty() {
        v.add("scopes", "must name at least one scope");
    }
    for (i, scope) in scopes.iter().enumerate() {
        if !caller.has_scope(scope) {
            v.add(format!("scopes[{i}]"), format!("you do not hold the scope {scope:?}"));
        }
    }
    let ttl = if ttl_days == 0 { DEFAULT_TTL_DAYS } else { ttl_days };
    v.check(!(1..=MAX_TTL_DAYS).contains(&ttl), "ttl_days", "must be 1 to 365");
    if v.is_empty() { Ok(ttl) } else { Err(v) }
}

/// The claims of a token for a key of `user_id`: the key's scopes that the owner's roles still grant, and
/// whether the owner's address is verified.
pub fn key_claims(user_id: &str, roles: &[String], email_verified: bool, key_scopes: &str, now_secs: i64) -> Claims {
    let owner = crate::staff::scopes_for(roles);
    let scope = key_scopes.split(' ').filter(|s| owner.contains(s)).collect::<Vec<_>>().join(" ");
    Claims {
        iss: ISSUER.to_owned(),
        aud: AUDIENCE.to_owned(),
        sub: user_id.to_owned(),
        exp: now_secs + KEY_TOKEN_TTL_SECS,
        iat: now_secs,
        nbf: now_secs,
        jti: uuid::Uuid::now_v7().to_string(),
        sid: String::new(),
        scope,
        roles: roles.to_vec(),
        email_verified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(scopes: &str) -> Claims {
        Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: "u1".into(),
            exp: 0,
            iat: 0,
            nbf: 0,
            jti: "j".into(),
            sid: String::new(),
            scope: scopes.into(),
            roles: vec![],
            email_verified: false,
        }
    }

    #[test]
    fn keys_grant_only_what_their_owner_holds() {
        let c = caller("catalog:write cart:write");
        assert_eq!(validate("sync", &["catalog:write".into()], 0, &c).expect("ok"), DEFAULT_TTL_DAYS);
        let err = validate("", &["ledger:read".into()], 400, &c).expect_err("bad").into_vec();
        let fields: Vec<_> = err.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["name", "scopes[0]", "ttl_days"]);
        assert!(validate("x", &[], 1, &c).is_err());
    }

    #[test]
    fn a_demoted_owner_takes_the_scopes_away() {
        let customer = vec!["customer".to_owned()];
        let claims = key_claims("u1", &customer, true, "catalog:write cart:write", 100);
        assert_eq!(claims.scope, "cart:write");
        assert_eq!(claims.exp - claims.iat, KEY_TOKEN_TTL_SECS);
        assert!(claims.email_verified, "the owner's verification goes with the key's tokens");
    }

    #[test]
    fn secrets_are_long_random_and_recognisable() {
        let (a, b) = (generate_secret(), generate_secret());
        assert!(a.starts_with("mk_") && a.len() > 40 && a != b);
        assert_eq!(shown_prefix(&a).len(), 11);
        assert_ne!(hash(&a), hash(&b));
    }
}
