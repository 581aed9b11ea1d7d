//! The rules of accounts and tokens, free of I/O: validation, roles and scopes, refresh tokens, claims.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use platform::auth::{AUDIENCE, Claims, ISSUER};
use platform::error::{FieldViolation, Violations};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Lifetime of an access token, in seconds.
pub const ACCESS_TOKEN_TTL_SECS: i64 = 900;
/// Lifetime of a refresh token, in microseconds (30 days).
pub const REFRESH_TOKEN_TTL_MICROS: i64 = 30 * 24 * 3600 * 1_000_000;
/// How long a refresh token is kept after it expired, in microseconds (a week), before it is deleted. Until then
/// a replay of it still revokes its family, as a spent token presented again does; after, it is refused as
/// unknown, which it could not be used past its expiry anyway. Without a limit every rotation (one per access
/// token's life, a quarter of an hour, for every signed-in client) would stay for ever.
pub const EXPIRED_REFRESH_TOKEN_RETENTION_MICROS: i64 = 7 * 24 * 3600 * 1_000_000;
/// How long an ended session is listed (ListRevokedSessions), in microseconds (a day): verifiers remember it for
/// [`platform::auth::REVOCATION_MEMORY`], which outlasts every access token of the session.
pub const REVOKED_SESSION_RETENTION_MICROS: i64 = 24 * 3600 * 1_000_000;
/// Most ended sessions in one page of ListRevokedSessions (also the default: its callers want them all).
pub const MAX_REVOKED_SESSIONS_PAGE: i64 = 1000;
/// The `token_type` of every token pair.
pub const TOKEN_TYPE: &str = "Bearer";

/// Longest accepted email address, in characters (RFC 5321's path limit).
pub const MAX_EMAIL_CHARS: usize = 254;
/// Shortest accepted password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest accepted password, in characters.
pub const MAX_PASSWORD_CHARS: usize = 128;
/// Longest accepted display name, in characters after trimming.
pub const MAX_DISPLAY_NAME_CHARS: usize = 100;

/// The role every registered account has.
pub const ROLE_CUSTOMER: &str = "customer";
/// The role of administrators: every scope, and the administration of accounts (see [`crate::staff`] for the
/// other staff roles).
pub const ROLE_ADMIN: &str = "admin";

/// Scopes of the customer role.
pub const CUSTOMER_SCOPES: &[&str] = &[
    "cart:write",
    "orders:read",
    "orders:write",
    "payment:write",
    "notifications:read",
    "reviews:write",
    "alerts:write",
];
/// Scopes the admin role adds to the customer's.
pub const ADMIN_SCOPES: &[&str] = &[
    "catalog:write",
    "inventory:write",
    "inventory:reserve",
    "discounts:write",
    "shipping:write",
    "tax:write",
    "ledger:read",
    "ledger:write",
    "refund:write",
    "shipment:write",
    "users:admin",
    "support:agent",
    "newsletter:send",
    "analytics:read",
    "analytics:admin",
    "orders:admin",
    "returns:write",
    "notifications:admin",
    "events:admin",
    "accounts:admin",
];

/// Lifetime of a service token, in seconds.
pub const SERVICE_TOKEN_TTL_SECS: i64 = 300;

/// The role of service tokens.
pub const ROLE_SERVICE: &str = "service";

/// What each service may do to others with its own token (client-credentials grant). A service not listed
/// gets a token with no scopes: it can call only what any authenticated caller can.
pub const SERVICE_SCOPES: &[(&str, &[&str])] = &[
    (
        "orders",
        &["inventory:reserve", "payment:write", "payment:refund", "orders:admin", "cart:write", "shipment:cancel"],
    ),
    ("payments", &["ledger:write"]),
    ("refunds", &["ledger:write", "payment:refund"]),
    ("notifications", &["orders:read"]),
];

/// The scopes of service `client_id`.
pub fn service_scopes(client_id: &str) -> &'static [&'static str] {
    SERVICE_SCOPES.iter().find(|(name, _)| *name == client_id).map_or(&[], |(_, scopes)| scopes)
}

/// The claims of a service token for `client_id`.
pub fn service_claims(client_id: &str, now_secs: i64) -> Claims {
    Claims {
        iss: ISSUER.to_owned(),
        aud: AUDIENCE.to_owned(),
        sub: format!("service:{client_id}"),
        exp: now_secs + SERVICE_TOKEN_TTL_SECS,
        iat: now_secs,
        nbf: now_secs,
        jti: uuid::Uuid::now_v7().to_string(),
        sid: String::new(),
        scope: service_scopes(client_id).join(" "),
        roles: vec![ROLE_SERVICE.to_owned()],
        email_verified: false,
    }
}

/// Whether a presented client secret is the expected one. Both are hashed first, so the comparison takes
/// the same time wherever they differ.
pub fn secret_matches(presented: &str, expected: &str) -> bool {
    use sha2::{Digest, Sha256};
    !expected.is_empty() && Sha256::digest(presented.as_bytes()) == Sha256::digest(expected.as_bytes())
}

/// An email address as stored and compared: trimmed and lower-cased.
pub fn normalize_email(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// Why a normalised email address is not acceptable, if it is not.
pub fn email_problem(email: &str) -> Option<&'static str> {
    if email.is_empty() {
        return Some("must not be empty");
    }
    if email.chars().count() > MAX_EMAIL_CHARS {
        return Some("must be at most 254 characters");
    }
    if email.chars().any(char::is_whitespace) {
        return Some("must not contain spaces");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Some("must be an email address like name@example.com");
    };
    if local.is_empty() || domain.contains('@') {
        return Some("must be an email address like name@example.com");
    }
    if !domain.contains('.') || domain.split('.').any(str::is_empty) {
        return Some("must have a domain like example.com");
    }
    None
}

/// Why a password is not acceptable, if it is not. Passwords are taken as typed (never trimmed).
pub fn password_problem(password: &str) -> Option<&'static str> {
    let chars = password.chars().count();
    (!(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars)).then_some("must be 8 to 128 characters")
}

/// The display name as stored (trimmed), or why it is not acceptable.
pub fn normalize_display_name(raw: &str) -> Result<String, &'static str> {
    let name = raw.trim();
    let chars = name.chars().count();
    if !(1..=MAX_DISPLAY_NAME_CHARS).contains(&chars) {
        return Err("must be 1 to 100 characters");
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(name.to_owned())
}

/// The locale of users who did not choose one.
pub const DEFAULT_LOCALE: &str = "en";

/// A BCP 47 language tag as stored ("en", "de-AT", "zh-Hant-TW"): the language lower-cased, a region
/// upper-cased, `_` read as `-`; empty means [`DEFAULT_LOCALE`]. Only the shape is checked, not that the
/// language exists: messages fall back to a language they have.
pub fn normalize_locale(raw: &str) -> Result<String, &'static str> {
    const PROBLEM: &str = "must be a language tag such as \"en\" or \"de-AT\"";
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(DEFAULT_LOCALE.to_owned());
    }
    if raw.len() > 35 {
        return Err(PROBLEM);
    }
    let mut parts = Vec::new();
    for (i, part) in raw.split(['-', '_']).enumerate() {
        let alphabetic = part.chars().all(|c| c.is_ascii_alphabetic());
        let part = match (i, part.len()) {
            (0, 2..=3) if alphabetic => part.to_ascii_lowercase(),
            (0, _) => return Err(PROBLEM),
            (_, 2) if alphabetic => part.to_ascii_uppercase(),
            (_, 4) if alphabetic => {
                let mut script = part.to_ascii_lowercase();
                script[..1].make_ascii_uppercase();
                script
            }
            (_, 1..=8) if part.chars().all(|c| c.is_ascii_alphanumeric()) => part.to_ascii_lowercase(),
            _ => return Err(PROBLEM),
        };
        parts.push(part);
    }
    Ok(parts.join("-"))
}

/// A validated registration: normalised email, display name and locale, and the password as typed.
#[derive(Clone, PartialEq, Eq)]
pub struct NewAccount {
    /// Normalised email.
    pub email: String,
    /// The password, to be hashed.
    pub password: String,
    /// Trimmed display name.
    pub display_name: String,
    /// Normalised language tag.
    pub locale: String,
}

impl std::fmt::Debug for NewAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAccount")
            .field("email", &self.email)
            .field("display_name", &self.display_name)
            .field("locale", &self.locale)
            .finish_non_exhaustive()
    }
}

/// Validates every field of a registration at once; the error names each invalid field.
pub fn validate_registration(
    email: &str,
    password: &str,
    display_name: &str,
    locale: &str,
) -> Result<NewAccount, Vec<FieldViolation>> {
    let mut violations = Violations::new();
    let email = normalize_email(email);
    if let Some(problem) = email_problem(&email) {
        violations.add("email", problem);
    }
    if let Some(problem) = password_problem(password) {
        violations.add("password", problem);
    }
    let display_name = normalize_display_name(display_name).unwrap_or_else(|problem| {
        violations.add("display_name", problem);
        String::new()
    });
    let locale = normalize_locale(locale).unwrap_or_else(|problem| {
        violations.add("locale", problem);
        String::new()
    });
    violations.finish()?;
    Ok(NewAccount { email, password: password.to_owned(), display_name, locale })
}

/// How long a password-reset token works, in microseconds (an hour).
pub const PASSWORD_RESET_TTL_MICROS: i64 = 3600 * 1_000_000;
/// The shortest gap between two reset mails to one account, in microseconds (two minutes): anyone may ask for
/// a reset of any address, so asking again and again must not flood its mailbox.
pub const PASSWORD_RESET_RESEND_MICROS: i64 = 120 * 1_000_000;

/// How long an email-verification token works, in microseconds (a day: the mail may be read the next morning).
pub const EMAIL_VERIFICATION_TTL_MICROS: i64 = 24 * 3600 * 1_000_000;
/// The shortest gap between two verification mails to one account, in microseconds (two minutes).
pub const EMAIL_VERIFICATION_RESEND_MICROS: i64 = 120 * 1_000_000;

/// Checks a password change: the current password given, the new one acceptable and different.
pub fn validate_password_change(current: &str, new: &str) -> Result<(), Vec<FieldViolation>> {
    let mut violations = Violations::new();
    violations.check(current.is_empty(), "current_password", "is required");
    if let Some(problem) = password_problem(new) {
        violations.add("new_password", problem);
    } else {
        violations.check(new == current, "new_password", "must differ from the current password");
    }
    violations.finish()
}

/// Checks a password reset's confirmation: a token, and an acceptable new password.
pub fn validate_password_reset(token: &str, new: &str) -> Result<(), Vec<FieldViolation>> {
    let mut violations = Violations::new();
    violations.check(token.trim().is_empty(), "token", "is required");
    if let Some(problem) = password_problem(new) {
        violations.add("new_password", problem);
    }
    violations.finish()
}

/// How long an email-change token works, in microseconds (a day, as for verification).
pub const EMAIL_CHANGE_TTL_MICROS: i64 = 24 * 3600 * 1_000_000;
/// How long the token mailed to the old address undoes an email change, in microseconds (a week).
pub const EMAIL_CHANGE_REVERT_TTL_MICROS: i64 = 7 * 24 * 3600 * 1_000_000;
/// The shortest gap between two mails of an email change to one new address, in microseconds (two minutes).
pub const EMAIL_CHANGE_RESEND_MICROS: i64 = 120 * 1_000_000;

/// Checks an address an account at `current_email` is to move to, named `field`: acceptable, and not the
/// current one. Returns it normalised.
pub fn validate_new_address(field: &str, current_email: &str, new_email: &str) -> Result<String, FieldViolation> {
    let new_email = normalize_email(new_email);
    if let Some(problem) = email_problem(&new_email) {
        return Err(FieldViolation::new(field, problem));
    }
    if new_email == current_email {
        return Err(FieldViolation::new(field, "is the account's address already"));
    }
    Ok(new_email)
}

/// Checks a request to move the account at `current_email` to `new_email`: an acceptable address other than
/// the current one, and a password to prove. Returns the new address normalised.
pub fn validate_email_change(
    current_email: &str,
    new_email: &str,
    password: &str,
) -> Result<String, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let new_email = validate_new_address("new_email", current_email, new_email).map_err(|v| violations.push(v)).ok();
    if password.is_empty() {
        violations.push(FieldViolation::new("password", "is required"));
    }
    match new_email {
        Some(new_email) if violations.is_empty() => Ok(new_email),
        _ => Err(violations),
    }
}

/// What a stored reset token says to its bearer at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTokenState {
    /// It sets a password.
    Usable,
    /// It set a password already, or another token of the account did.
    Used,
    /// Its hour is over.
    Expired,
}

/// The state of a reset token that expires at `expires_at` and was spent at `used_at`, if it was.
pub fn reset_token_state(expires_at: i64, used_at: Option<i64>, now: i64) -> ResetTokenState {
    match used_at {
        Some(_) => ResetTokenState::Used,
        None if expires_at <= now => ResetTokenState::Expired,
        None => ResetTokenState::Usable,
    }
}

/// Roles as stored: space-separated.
pub fn format_roles(roles: &[&str]) -> String {
    roles.join(" ")
}

/// Stored roles as a list.
pub fn parse_roles(stored: &str) -> Vec<String> {
    stored.split_whitespace().map(str::to_owned).collect()
}

/// A new opaque token (a refresh token, a password-reset token): 32 random bytes, base64url without padding.
pub fn new_opaque_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The stored form of an opaque token (and of an API key's secret): SHA-256, lower-case hex. They carry 256 bits
/// of entropy, so a fast hash is enough (no password-style stretching needed).
pub fn hash_opaque_token(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The page size of a ListRevokedSessions request: [`MAX_REVOKED_SESSIONS_PAGE`] when unset (0), at most that.
pub fn revoked_sessions_page_size(requested: i32) -> Result<i64, FieldViolation> {
    platform::paging::page_size_within(requested, MAX_REVOKED_SESSIONS_PAGE, MAX_REVOKED_SESSIONS_PAGE)
}

/// The page token after an ended session: its time and id (ties in time are ordered by id).
pub fn revoked_sessions_page_token(revoke_time: i64, session_id: &str) -> String {
    format!("{revoke_time}.{session_id}")
}

/// The ended session a ListRevokedSessions page token names (`None` for the first page).
pub fn parse_revoked_sessions_page_token(token: &str) -> Result<Option<(i64, &str)>, FieldViolation> {
    if token.is_empty() {
        return Ok(None);
    }
    let refused = || FieldViolation::new("page_token", "is not a token this service issued");
    let (time, id) = token.split_once('.').ok_or_else(refused)?;
    let time = time.parse::<i64>().map_err(|_| refused())?;
    let id = platform::paging::id_token(id).map_err(|_| refused())?;
    Ok(Some((time, id)))
}

/// The claims of an access token for `user_id` with `roles` in session `session_id` (its refresh-token family),
/// issued at `now_secs`; `email_verified` tells whether the account's address is verified by then.
pub fn access_claims(user_id: &str, roles: &[String], email_verified: bool, session_id: &str, now_secs: i64) -> Claims {
    Claims {
        iss: ISSUER.to_owned(),
        aud: AUDIENCE.to_owned(),
        sub: user_id.to_owned(),
        exp: now_secs + ACCESS_TOKEN_TTL_SECS,
        iat: now_secs,
        nbf: now_secs,
        jti: uuid::Uuid::now_v7().to_string(),
        sid: session_id.to_owned(),
        scope: crate::staff::scopes_for(roles).join(" "),
        roles: roles.to_vec(),
        email_verified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_tokens_carry_their_service_scopes() {
        let claims = service_claims("payments", 1_000);
        assert_eq!((claims.sub.as_str(), claims.exp - claims.iat), ("service:payments", SERVICE_TOKEN_TTL_SECS));
        assert!(claims.has_scope("ledger:write") && !claims.has_scope("catalog:write"));
        assert_eq!(claims.roles, ["service"]);
        assert_eq!(service_claims("nobody", 0).scope, "");
        assert!(secret_matches("s3cret-s3cret", "s3cret-s3cret"));
        assert!(!secret_matches("s3cret-s3creX", "s3cret-s3cret"));
        assert!(!secret_matches("", ""));
    }

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(normalize_email("  Alice@Example.COM "), "alice@example.com");
    }

    #[test]
    fn email_validation() {
        for good in ["a@b.co", "first.last+tag@mail.example.org"] {
            assert_eq!(email_problem(good), None, "{good}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        for bad in ["", "alice", "@example.com", "a@b@c.com", "a@localhost", "a b@c.com", "a@.com", "a@b.", &long] {
            assert!(email_problem(bad).is_some(), "{bad:?} was accepted");
        }
        let exactly = format!("{}@example.com", "a".repeat(MAX_EMAIL_CHARS - "@example.com".len()));
        assert_eq!(email_problem(&exactly), None);
    }

    #[test]
    fn password_length_counts_characters() {
        assert!(password_problem("1234567").is_some());
        assert!(password_problem("12345678").is_none());
        assert!(password_problem(&"x".repeat(128)).is_none());
        assert!(password_problem(&"x".repeat(129)).is_some());
        // Eight characters, sixteen bytes.
        assert!(password_problem("éééééééé").is_none());
        assert!(password_problem(&"é".repeat(128)).is_none());
    }

    #[test]
    fn password_changes_name_each_bad_field() {
        assert_eq!(validate_password_change("old-password", "new-password"), Ok(()));
        let fields = |r: Result<(), Vec<FieldViolation>>| {
            r.expect_err("refused").into_iter().map(|v| v.field).collect::<Vec<_>>()
        };
        assert_eq!(fields(validate_password_change("", "short")), ["current_password", "new_password"]);
        assert_eq!(fields(validate_password_change("same-password", "same-password")), ["new_password"]);
        assert_eq!(validate_password_reset("token", "new-password"), Ok(()));
        assert_eq!(fields(validate_password_reset(" ", &"x".repeat(129))), ["token", "new_password"]);
    }

    #[test]
    fn reset_tokens_work_once_within_their_hour() {
        assert_eq!(reset_token_state(100, None, 99), ResetTokenState::Usable);
        assert_eq!(reset_token_state(100, None, 100), ResetTokenState::Expired);
        assert_eq!(reset_token_state(100, Some(50), 60), ResetTokenState::Used);
        assert_eq!(reset_token_state(100, Some(50), 200), ResetTokenState::Used, "spent says more than expired");
    }

    #[test]
    fn locales_are_language_tags() {
        assert_eq!(normalize_locale(""), Ok("en".to_owned()));
        assert_eq!(normalize_locale(" DE "), Ok("de".to_owned()));
        assert_eq!(normalize_locale("de_at"), Ok("de-AT".to_owned()));
        assert_eq!(normalize_locale("zh-hant-tw"), Ok("zh-Hant-TW".to_owned()));
        for bad in ["e", "english", "en-", "de-AT!", "1a", &"en-x".repeat(10)] {
            assert!(normalize_locale(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn display_names_are_trimmed() {
        assert_eq!(normalize_display_name("  Alice  "), Ok("Alice".to_owned()));
        assert!(normalize_display_name("   ").is_err());
        assert!(normalize_display_name(&"n".repeat(101)).is_err());
        assert!(normalize_display_name(&"n".repeat(100)).is_ok());
        assert!(normalize_display_name("a\u{0}b").is_err());
    }

    #[test]
    fn registration_names_every_bad_field() {
        let fields: Vec<String> = validate_registration("nope", "short", " ", "x")
            .expect_err("invalid")
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["email", "password", "display_name", "locale"]);
        let ok = validate_registration(" Bob@Example.com", "correct horse", " Bob ", "").expect("valid");
        assert_eq!(ok.locale, "en");
        assert_eq!((ok.email.as_str(), ok.display_name.as_str()), ("bob@example.com", "Bob"));
    }

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let a = new_opaque_token();
        let b = new_opaque_token();
        assert_ne!(a, b);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).expect("base64url").len(), 32);
        let hash = hash_opaque_token(&a);
        assert_eq!(hash.len(), 64);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(hash, hash_opaque_token(&a));
        assert_eq!(hash_opaque_token("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn ended_sessions_are_listed_until_their_tokens_expired_everywhere() {
        let memory = i64::try_from(platform::auth::REVOCATION_MEMORY.as_secs()).expect("secs");
        assert!(ACCESS_TOKEN_TTL_SECS + platform::auth::LEEWAY_SECS as i64 <= memory, "verifiers forget too soon");
        assert!(memory * 1_000_000 < REVOKED_SESSION_RETENTION_MICROS, "a verifier's first poll finds them gone");
    }

    #[test]
    fn revoked_session_pages_resume_after_their_last_session() {
        let token = revoked_sessions_page_token(1_700_000_000_000_001, "0190-ab");
        assert_eq!(parse_revoked_sessions_page_token(&token), Ok(Some((1_700_000_000_000_001, "0190-ab"))));
        assert_eq!(parse_revoked_sessions_page_token(""), Ok(None));
        for bad in ["12", "x.0190", "12.' OR 1=1", "-"] {
            assert_eq!(parse_revoked_sessions_page_token(bad).expect_err(bad).field, "page_token");
        }
        assert_eq!(revoked_sessions_page_size(0), Ok(MAX_REVOKED_SESSIONS_PAGE));
        assert_eq!(revoked_sessions_page_size(5), Ok(5));
        assert_eq!(revoked_sessions_page_size(1_000_000), Ok(MAX_REVOKED_SESSIONS_PAGE));
        assert_eq!(revoked_sessions_page_size(-1).expect_err("negative").field, "page_size");
    }

    #[test]
    fn claims_live_fifteen_minutes() {
        let claims = access_claims("u1", &parse_roles("customer"), true, "session-1", 1_000);
        assert_eq!((claims.iss.as_str(), claims.aud.as_str(), claims.sub.as_str()), (ISSUER, AUDIENCE, "u1"));
        assert_eq!(claims.sid, "session-1");
        assert_eq!((claims.iat, claims.nbf, claims.exp), (1_000, 1_000, 1_900));
        assert!(claims.has_scope("cart:write") && !claims.has_scope("catalog:write"));
        assert_eq!(claims.roles, ["customer"]);
        assert!(claims.email_verified);
        assert!(!access_claims("u1", &parse_roles("customer"), false, "s", 1_000).email_verified);
        assert_eq!(uuid::Uuid::parse_str(&claims.jti).expect("uuid").get_version_num(), 7);
    }

    #[test]
    fn an_email_change_needs_another_acceptable_address_and_the_password() {
        assert_eq!(
            validate_email_change("ann@example.com", " New@Example.COM ", "pw").as_deref(),
            Ok("new@example.com")
        );
        let fields = |r: Result<String, Vec<FieldViolation>>| -> Vec<String> {
            r.expect_err("refused").into_iter().map(|v| v.field).collect()
        };
        assert_eq!(fields(validate_email_change("ann@example.com", "ANN@example.com", "pw")), ["new_email"]);
        assert_eq!(fields(validate_email_change("ann@example.com", "no at sign", "")), ["new_email", "password"]);
        assert_eq!(fields(validate_email_change("ann@example.com", "", "pw")), ["new_email"]);
        assert_eq!(fields(validate_email_change("ann@example.com", "new@example.com", "")), ["password"]);
    }
}
