//! The rules of profiles and address books, free of I/O: what each field may hold, and how an update mask
//! applies a change.

use api::mercato::orders::v1::Address;
pub use platform::error::check_id as validate_id;
use platform::error::{FieldViolation, Violations, check_update_mask};

/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME: usize = 100;
/// Longest locale tag.
pub const MAX_LOCALE: usize = 35;
/// Longest address label, in characters.
pub const MAX_LABEL: usize = 50;
/// Most addresses one customer may save.
pub const MAX_ADDRESSES: i64 = 20;
/// Fields of a profile an update may name.
pub const PROFILE_PATHS: &[&str] = &["display_name", "phone", "locale"];
/// Fields of a saved address an update may name.
pub const ADDRESS_PATHS: &[&str] = &["label", "address", "is_default"];

/// The fields of a profile its owner changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileFields {
    /// Name shown to people.
    pub display_name: String,
    /// `+` and digits, or empty.
    pub phone: String,
    /// BCP 47 tag, or empty.
    pub locale: String,
}

/// The fields of a saved address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressFields {
    /// What the customer calls it.
    pub label: String,
    /// The address, checked.
    pub address: Address,
    /// Whether it is the default.
    pub is_default: bool,
}

/// The profile after applying the fields of `input` named by `paths` to `current`, checked. Violations name
/// the fields as `profile.<field>`.
pub fn update_profile(
    current: &ProfileFields,
    input: &ProfileFields,
    paths: &[String],
) -> Result<ProfileFields, Vec<FieldViolation>> {
    check_update_mask(paths, PROFILE_PATHS)?;
    let mut next = current.clone();
    let mut violations = Violations::new();
    for path in paths {
        match path.as_str() {
            "display_name" => match display_name(&input.display_name) {
                Ok(name) => next.display_name = name,
                Err(why) => violations.add("profile.display_name", why),
            },
            "phone" => match phone(&input.phone) {
                Ok(phone) => next.phone = phone,
                Err(why) => violations.add("profile.phone", why),
            },
            "locale" => match locale(&input.locale) {
                Ok(locale) => next.locale = locale,
                Err(why) => violations.add("profile.locale", why),
            },
            _ => {}
        }
    }
    violations.finish()?;
    Ok(next)
}

/// A display name, trimmed: 1 to [`MAX_DISPLAY_NAME`] characters, no control characters.
pub fn display_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        Err("is required".to_owned())
    } else if name.chars().count() > MAX_DISPLAY_NAME {
        Err(format!("is longer than {MAX_DISPLAY_NAME} characters"))
    } else if name.chars().any(char::is_control) {
        Err("must not contain control characters".to_owned())
    } else {
        Ok(name.to_owned())
    }
}

/// A phone number in international form, spaces removed: `+` and 7 to 15 digits (E.164); empty is allowed.
pub fn phone(phone: &str) -> Result<String, String> {
    let compact: String = phone.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() {
        return Ok(compact);
    }
    let digits = compact.strip_prefix('+').unwrap_or_default();
    if digits.len() < 7 || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
        return Err("must be in international form: \"+\" and 7 to 15 digits, e.g. \"+49 30 1234567\"".to_owned());
    }
    Ok(compact)
}

/// A BCP 47 language tag such as `de-AT`: letters, digits and `-`, starting with a 2 or 3 letter language;
/// empty is allowed.
pub fn locale(tag: &str) -> Result<String, String> {
    let tag = tag.trim();
    if tag.is_empty() {
        return Ok(String::new());
    }
    let language = tag.split('-').next().unwrap_or_default();
    let well_formed = tag.len() <= MAX_LOCALE
        && (2..=3).contains(&language.len())
        && language.bytes().all(|b| b.is_ascii_alphabetic())
        && tag.split('-').all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric()));
    if well_formed { Ok(tag.to_owned()) } else { Err("must be a language tag such as \"de\" or \"de-AT\"".to_owned()) }
}

/// A label, trimmed: up to [`MAX_LABEL`] characters, no control characters.
pub fn label(label: &str) -> Result<String, String> {
    let label = label.trim();
    if label.chars().count() > MAX_LABEL {
        Err(format!("is longer than {MAX_LABEL} characters"))
    } else if label.chars().any(char::is_control) {
        Err("must not contain control characters".to_owned())
    } else {
        Ok(label.to_owned())
    }
}

/// A new saved address, checked; violations name the fields as `address.<field>`.
pub fn new_address(
    label_text: &str,
    address: Option<Address>,
    is_default: bool,
) -> Result<AddressFields, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let label = label(label_text).map_err(|why| violations.push(FieldViolation::new("address.label", why)));
    let address = platform::address::validate("address.address", address).map_err(|v| violations.extend(v));
    match (label, address) {
        (Ok(label), Ok(address)) => Ok(AddressFields { label, address, is_default }),
        _ => Err(violations),
    }
}

/// The saved address after applying the fields of `input` named by `paths` to `current`, checked.
pub fn update_address(
    current: &AddressFields,
    input_label: &str,
    input_address: Option<Address>,
    input_default: bool,
    paths: &[String],
) -> Result<AddressFields, Vec<FieldViolation>> {
    check_update_mask(paths, ADDRESS_PATHS)?;
    let mut next = current.clone();
    let mut violations = Vec::new();
    for path in paths {
        match path.as_str() {
            "label" => match label(input_label) {
                Ok(label) => next.label = label,
                Err(why) => violations.push(FieldViolation::new("address.label", why)),
            },
            "address" => match platform::address::validate("address.address", input_address.clone()) {
                Ok(address) => next.address = address,
                Err(v) => violations.extend(v),
            },
            "is_default" => next.is_default = input_default,
            _ => {}
        }
    }
    if violations.is_empty() { Ok(next) } else { Err(violations) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| (*s).to_owned()).collect()
    }

    fn fields(violations: Vec<FieldViolation>) -> Vec<String> {
        violations.into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn a_profile_update_changes_only_the_named_fields() {
        let current = ProfileFields { display_name: "Ada".into(), phone: String::new(), locale: "en".into() };
        let input =
            ProfileFields { display_name: "  Ada L. ".into(), phone: "+49 30 1234567".into(), locale: "de".into() };
        let next = update_profile(&current, &input, &paths(&["display_name", "phone"])).expect("valid");
        assert_eq!(
            next,
            ProfileFields { display_name: "Ada L.".into(), phone: "+49301234567".into(), locale: "en".into() }
        );
        let bad = ProfileFields { display_name: " ".into(), phone: "030 1234".into(), locale: "x_y".into() };
        assert_eq!(
            fields(update_profile(&current, &bad, &paths(&["display_name", "phone", "locale"])).expect_err("bad")),
            ["profile.display_name", "profile.phone", "profile.locale"]
        );
        assert_eq!(fields(update_profile(&current, &input, &paths(&["email"])).expect_err("email")), ["update_mask"]);
        assert_eq!(fields(update_profile(&current, &input, &[]).expect_err("empty mask")), ["update_mask"]);
    }

    #[test]
    fn phones_are_international_and_locales_are_tags() {
        assert_eq!(phone(""), Ok(String::new()));
        assert_eq!(phone("+1 212 555 0100"), Ok("+12125550100".into()));
        for bad in ["12125550100", "+12", "+1234567890123456", "+49 (30) 123", "+0301234567"] {
            assert!(phone(bad).is_err(), "{bad}");
        }
        for good in ["", "de", "de-AT", "zh-Hant-TW", "gsw"] {
            assert!(locale(good).is_ok(), "{good}");
        }
        for bad in ["d", "de_AT", "deutsch", "de--AT", "1e"] {
            assert!(locale(bad).is_err(), "{bad}");
        }
    }

    fn berlin() -> Address {
        Address {
            name: "Ada".into(),
            line1: "Unter den Linden 1".into(),
            city: "Berlin".into(),
            postal_code: "10117".into(),
            country: "de".into(),
            ..Address::default()
        }
    }

    #[test]
    fn saved_addresses_are_checked_like_checkout_addresses() {
        let saved = new_address(" Home ", Some(berlin()), false).expect("valid");
        assert_eq!((saved.label.as_str(), saved.address.country.as_str()), ("Home", "DE"));
        let broken = Address { city: String::new(), ..berlin() };
        assert_eq!(
            fields(new_address(&"x".repeat(51), Some(broken), true).expect_err("bad")),
            ["address.label", "address.address.city"]
        );
        assert_eq!(fields(new_address("", None, false).expect_err("missing")), ["address.address"]);
    }

    #[test]
    fn an_address_update_changes_only_the_named_fields() {
        let current = new_address("Home", Some(berlin()), true).expect("valid");
        let next = update_address(&current, "Work", None, false, &paths(&["label", "is_default"])).expect("valid");
        assert_eq!((next.label.as_str(), next.is_default, next.address.city.as_str()), ("Work", false, "Berlin"));
        let moved = Address { city: "Potsdam".into(), postal_code: "14467".into(), ..berlin() };
        let next = update_address(&current, "", Some(moved), false, &paths(&["address"])).expect("valid");
        assert_eq!((next.label.as_str(), next.is_default, next.address.city.as_str()), ("Home", true, "Potsdam"));
        let none = update_address(&current, "", None, false, &paths(&["address"])).expect_err("cleared");
        assert_eq!(fields(none), ["address.address"]);
    }
}
