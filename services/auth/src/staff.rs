//! Staff roles and the rules of account administration, pure: which roles exist and what each grants, how a
//! requested set of roles is checked, and the filters of the account listing.

use platform::error::{FieldViolation, Violations};

use crate::domain::{ADMIN_SCOPES, CUSTOMER_SCOPES, MAX_EMAIL_CHARS, ROLE_ADMIN, ROLE_CUSTOMER};

/// The staff roles short of administrator, and the scopes each adds to the customer's: a shop gives each
/// person what their job needs, not everything.
pub const STAFF_ROLES: &[(&str, &[&str])] = &[
    // Products, prices, images, categories, stock, discount codes and shipping rates.
    ("catalog", &["catalog:write", "inventory:write", "discounts:write", "shipping:write"]),
    // Every order, the shipments that carry them, and the returns that come back.
    ("fulfilment", &["orders:admin", "shipment:write", "returns:write"]),
    // The books, refunds, tax rates and the sales reports.
    ("finance", &["ledger:read", "refund:write", "tax:write", "analytics:read"]),
    // Tickets, the FAQ and the newsletter, the customers' profiles and orders to answer them, and their returns.
    ("support", &["support:agent", "newsletter:send", "users:admin", "orders:admin", "returns:write"]),
];

/// Every role an account can have, in the order they are stored and shown.
pub fn all_roles() -> impl Iterator<Item = &'static str> {
    [ROLE_CUSTOMER, ROLE_ADMIN].into_iter().chain(STAFF_ROLES.iter().map(|(role, _)| *role))
}

/// The scopes granted to someone with `roles`, without duplicates, in a stable order. Unknown roles grant
/// nothing; every role includes what a customer may do, and admin everything.
pub fn scopes_for(roles: &[String]) -> Vec<&'static str> {
    let has = |role: &str| roles.iter().any(|r| r == role);
    let mut scopes: Vec<&'static str> = Vec::new();
    let mut grant = |granted: &[&'static str]| {
        for scope in granted {
            if !scopes.contains(scope) {
                scopes.push(scope);
            }
        }
    };
    if all_roles().any(has) {
        grant(CUSTOMER_SCOPES);
    }
    for (role, granted) in STAFF_ROLES {
        if has(role) {
            grant(granted);
        }
    }
    if has(ROLE_ADMIN) {
        grant(ADMIN_SCOPES);
    }
    scopes
}

/// The roles to store for a request naming `requested`: each known (else the violation names `roles[i]`),
/// duplicates dropped, "customer" always included, in [`all_roles`] order.
pub fn checked_roles(requested: &[String]) -> Result<Vec<&'static str>, Vec<FieldViolation>> {
    let mut violations = Violations::default();
    for (i, role) in requested.iter().enumerate() {
        if !all_roles().any(|known| known == role.trim()) {
            let known: Vec<&str> = all_roles().collect();
            violations.add(format!("roles[{i}]"), format!("is not a role; roles are {}", known.join(", ")));
        }
    }
    violations.finish()?;
    Ok(all_roles().filter(|known| *known == ROLE_CUSTOMER || requested.iter().any(|r| r.trim() == *known)).collect())
}

/// Whether going from roles `before` to `after` takes a role away (then the account's sessions end, so the
/// scopes it granted stop working now rather than when the tokens expire).
pub fn takes_a_role_away(before: &[String], after: &[&str]) -> bool {
    before.iter().any(|role| !after.contains(&role.as_str()))
}

/// The filters of an account listing, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFilter {
    /// Accounts whose email starts with this (lower-cased), as a LIKE pattern with `\` escaping; `%` for all.
    pub email_pattern: String,
    /// Accounts with this role; empty for all.
    pub role: String,
}

/// The filters of a ListUsers request: an email prefix (lower-cased as stored emails are) and a known role.
pub fn user_filter(email_prefix: &str, role: &str) -> Result<UserFilter, Vec<FieldViolation>> {
    let mut violations = Violations::default();
    let prefix = email_prefix.trim().to_lowercase();
    if prefix.chars().count() > MAX_EMAIL_CHARS {
        violations.add("email", format!("must be at most {MAX_EMAIL_CHARS} characters"));
    }
    let role = role.trim();
    if !role.is_empty() && !all_roles().any(|known| known == role) {
        violations.add("role", "is not a role");
    }
    violations.finish()?;
    Ok(UserFilter { email_pattern: format!("{}%", escape_like(&prefix)), role: role.to_owned() })
}

/// `text` matched literally inside a LIKE pattern escaped with `\`.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn each_role_grants_its_scopes_and_a_customers() {
        assert_eq!(scopes_for(&roles(&["customer"])), CUSTOMER_SCOPES);
        let support = scopes_for(&roles(&["customer", "support"]));
        assert!(support.contains(&"support:agent") && support.contains(&"cart:write"), "{support:?}");
        assert!(!support.contains(&"ledger:write") && !support.contains(&"accounts:admin"), "{support:?}");
        let both = scopes_for(&roles(&["customer", "support", "fulfilment"]));
        assert_eq!(both.iter().filter(|s| **s == "orders:admin").count(), 1, "no scope twice: {both:?}");
        let admin = scopes_for(&roles(&["customer", "admin"]));
        assert!(STAFF_ROLES.iter().flat_map(|(_, s)| s.iter()).all(|s| admin.contains(s)), "admin holds all");
        assert!(admin.contains(&"accounts:admin"));
        assert_eq!(admin.len(), CUSTOMER_SCOPES.len() + ADMIN_SCOPES.len());
        assert_eq!(crate::domain::format_roles(&["customer", "admin"]), "customer admin");
        assert!(scopes_for(&roles(&["owner"])).is_empty(), "an unknown role grants nothing");
    }

    #[test]
    fn requested_roles_are_checked_and_always_keep_customer() {
        assert_eq!(checked_roles(&roles(&["support", "admin", "support"])), Ok(vec!["customer", "admin", "support"]));
        assert_eq!(checked_roles(&[]), Ok(vec!["customer"]));
        let refused = checked_roles(&roles(&["catalog", "owner"])).expect_err("unknown role");
        assert_eq!(refused[0].field, "roles[1]");
        assert!(refused[0].description.contains("fulfilment"), "names the roles there are");
    }

    #[test]
    fn only_a_role_taken_away_counts() {
        let before = roles(&["customer", "support"]);
        assert!(!takes_a_role_away(&before, &["customer", "support", "catalog"]));
        assert!(takes_a_role_away(&before, &["customer", "catalog"]));
    }

    #[test]
    fn filters_are_literal_prefixes_and_known_roles() {
        let filter = user_filter(" Ann_%\\@", "support").expect("valid");
        assert_eq!(filter.email_pattern, "ann\\_\\%\\\\@%");
        assert_eq!(user_filter("", "").expect("all").email_pattern, "%");
        assert_eq!(user_filter("", "owner").expect_err("unknown")[0].field, "role");
        assert_eq!(user_filter(&"a".repeat(255), "").expect_err("long")[0].field, "email");
    }
}
