//! Postal addresses (`mercato.orders.v1.Address`, the shape checkout and address books share): trimmed and
//! checked the same way wherever one is taken.

use api::mercato::orders::v1::Address;

use crate::error::FieldViolation;

/// Longest value of any field of an address, in characters.
pub const MAX_FIELD_CHARS: usize = 200;

/// Trims `address` and checks it: name, line1, city, postal_code and country are required, the country is
/// two ASCII letters (upper-cased), and no field is longer than [`MAX_FIELD_CHARS`]. Violations name the
/// fields under `field` (e.g. `shipping_address.city`); a missing address is a violation of `field` itself.
pub fn validate(field: &str, address: Option<Address>) -> Result<Address, Vec<FieldViolation>> {
    let Some(a) = address else {
        return Err(vec![FieldViolation::new(field, "is required")]);
    };
    let trim = |s: String| s.trim().to_owned();
    let a = Address {
        name: trim(a.name),
        line1: trim(a.line1),
        line2: trim(a.line2),
        city: trim(a.city),
        region: trim(a.region),
        postal_code: trim(a.postal_code),
        country: a.country.trim().to_ascii_uppercase(),
    };
    let mut violations = Vec::new();
    let parts = [
        ("name", &a.name, true),
        ("line1", &a.line1, true),
        ("line2", &a.line2, false),
        ("city", &a.city, true),
        ("region", &a.region, false),
        ("postal_code", &a.postal_code, true),
    ];
    for (part, value, required) in parts {
        if required && value.is_empty() {
            violations.push(FieldViolation::new(format!("{field}.{part}"), "is required"));
        } else if value.chars().count() > MAX_FIELD_CHARS {
            violations
                .push(FieldViolation::new(format!("{field}.{part}"), format!("is longer than {MAX_FIELD_CHARS}")));
        }
    }
    if a.country.is_empty() {
        violations.push(FieldViolation::new(format!("{field}.country"), "is required"));
    } else if let Err(v) = check_country(&format!("{field}.country"), &a.country) {
        violations.push(v);
    }
    if violations.is_empty() { Ok(a) } else { Err(violations) }
}

/// Whether `code` looks like an ISO 3166-1 alpha-2 country code: two upper-case ASCII letters (the list of
/// assigned codes changes; the platform checks the shape).
pub fn is_country_code(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase())
}

/// [`is_country_code`] as a violation of `field` that says what is expected.
pub fn check_country(field: &str, code: &str) -> Result<(), FieldViolation> {
    if is_country_code(code) {
        return Ok(());
    }
    Err(FieldViolation::new(field, "must be an ISO 3166-1 alpha-2 code such as \"DE\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_trimmed_and_checked_under_the_given_field() {
        let ok = validate(
            "address",
            Some(Address {
                name: " Ada ".into(),
                line1: "1 Main St".into(),
                city: "Berlin".into(),
                postal_code: "10115".into(),
                country: "de".into(),
                ..Address::default()
            }),
        )
        .expect("valid");
        assert_eq!((ok.name.as_str(), ok.country.as_str()), ("Ada", "DE"));
        let long = Address { line2: "x".repeat(MAX_FIELD_CHARS + 1), ..ok.clone() };
        let fields: Vec<_> = validate("a", Some(long)).expect_err("long").into_iter().map(|v| v.field).collect();
        assert_eq!(fields, ["a.line2"]);
        let bad = validate("a", Some(Address { country: "D1".into(), ..ok })).expect_err("bad country");
        assert_eq!(bad[0].field, "a.country");
        assert_eq!(validate("address", None).expect_err("missing")[0].field, "address");
    }
}
