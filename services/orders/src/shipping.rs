//! Shipping rates, free of I/O: how staff describe one, which rates serve an order, and what the order is
//! charged for shipping.
//!
//! A shop with no rates at all charges no shipping (a fresh install sells at once); once it has rates, every
//! order must be served by an enabled one, in its currency, to its country.

use platform::error::FieldViolation;
use platform::money;

use crate::domain::Price;

/// Shortest rate id.
pub const MIN_ID_CHARS: usize = 2;
/// Longest rate id.
pub const MAX_ID_CHARS: usize = 40;
/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 80;
/// Most countries one rate lists (there are 249 assigned codes).
pub const MAX_COUNTRIES: usize = 250;
/// The fields UpdateShippingRate may change.
pub const UPDATABLE_PATHS: &[&str] = &["name", "countries", "price", "free_from", "disabled"];
/// The field of CreateOrder and PreviewOrder that names a rate.
pub const CHECKOUT_FIELD: &str = "shipping_rate_id";
/// The field a refusal names when no rate serves the order's destination.
pub const COUNTRY_FIELD: &str = "shipping_address.country";

/// A shipping rate as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippingRate {
    /// Lower case: letters, digits, '-'.
    pub id: String,
    /// What customers see.
    pub name: String,
    /// ISO 3166-1 alpha-2 codes, upper case, sorted, without repeats; empty: every country.
    pub countries: Vec<String>,
    /// What it costs (0: free), and so the currency of the orders it serves.
    pub price: Price,
    /// Free when the items cost at least this (minor units of the price's currency); None: never.
    pub free_from_minor: Option<i64>,
    /// Switched off by staff.
    pub disabled: bool,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// Microseconds since the epoch.
    pub update_time: i64,
}

/// A rate as staff send it, before it is checked ([`validate`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Draft {
    /// As typed.
    pub id: String,
    /// What customers see.
    pub name: String,
    /// As typed.
    pub countries: Vec<String>,
    /// Required.
    pub price: Option<Price>,
    /// None: never free.
    pub free_from: Option<Price>,
    /// Switched off.
    pub disabled: bool,
}

/// A rate id as stored and looked up: trimmed and lower case, 2 to 40 letters, digits or '-'.
pub fn normalize_id(field: &str, raw: &str) -> Result<String, FieldViolation> {
    let id = raw.trim().to_ascii_lowercase();
    let chars = id.chars().count();
    let allowed = id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !(MIN_ID_CHARS..=MAX_ID_CHARS).contains(&chars) || !allowed {
        return Err(FieldViolation::new(
            field,
            format!("must be {MIN_ID_CHARS} to {MAX_ID_CHARS} lower-case letters, digits or '-'"),
        ));
    }
    Ok(id)
}

/// The countries as stored: upper case, sorted, each once; every code that is not one is named by its index.
fn countries(raw: &[String], v: &mut Vec<FieldViolation>) -> Vec<String> {
    if raw.len() > MAX_COUNTRIES {
        v.push(FieldViolation::new("shipping_rate.countries", format!("must list at most {MAX_COUNTRIES} countries")));
    }
    let mut codes = Vec::with_capacity(raw.len());
    for (i, code) in raw.iter().enumerate() {
        let code = code.trim().to_ascii_uppercase();
        match platform::address::check_country(&format!("shipping_rate.countries[{i}]"), &code) {
            Ok(()) => codes.push(code),
            Err(e) => v.push(e),
        }
    }
    codes.sort();
    codes.dedup();
    codes
}

/// A rate from what staff sent, created at `create_time` and written at `now`, or every field that is wrong.
fn check(draft: Draft, create_time: i64, now: i64) -> Result<ShippingRate, Vec<FieldViolation>> {
    let mut v = Vec::new();
    let id = normalize_id("shipping_rate.id", &draft.id).map_err(|e| v.push(e)).ok();
    let name = draft.name.trim().to_owned();
    if name.is_empty() {
        v.push(FieldViolation::new("shipping_rate.name", "is required"));
    } else if name.chars().count() > MAX_NAME_CHARS {
        v.push(FieldViolation::new("shipping_rate.name", format!("must be at most {MAX_NAME_CHARS} characters")));
    }
    let countries = countries(&draft.countries, &mut v);
    match &draft.price {
        None => v.push(FieldViolation::new("shipping_rate.price", "is required (zero for free shipping)")),
        Some(price) => {
            if let Err(e) = money::check_currency("shipping_rate.price.currency", &price.currency) {
                v.push(e);
            }
            if price.amount_minor < 0 {
                v.push(FieldViolation::new("shipping_rate.price.amount_minor", "must not be negative"));
            }
        }
    }
    if let Some(free_from) = &draft.free_from {
        if let Err(e) = money::check_currency("shipping_rate.free_from.currency", &free_from.currency) {
            v.push(e);
        }
        if draft.price.as_ref().is_some_and(|p| p.currency != free_from.currency) {
            v.push(FieldViolation::new("shipping_rate.free_from.currency", "must be price's currency"));
        }
        if free_from.amount_minor <= 0 {
            v.push(FieldViolation::new("shipping_rate.free_from.amount_minor", "must be more than 0"));
        }
    }
    match (id, draft.price, v.is_empty()) {
        (Some(id), Some(price), true) => Ok(ShippingRate {
            id,
            name,
            countries,
            price,
            free_from_minor: draft.free_from.map(|f| f.amount_minor),
            disabled: draft.disabled,
            create_time,
            update_time: now,
        }),
        _ => Err(v),
    }
}

/// A new rate from what staff sent at `now`, or every field that is wrong.
pub fn validate(draft: Draft, now: i64) -> Result<ShippingRate, Vec<FieldViolation>> {
    check(draft, now, now)
}

/// Checks an update mask: at least one field, and only [`UPDATABLE_PATHS`].
pub fn check_update_mask(paths: &[String]) -> Result<(), Vec<FieldViolation>> {
    platform::error::check_update_mask(paths, UPDATABLE_PATHS)
}

/// `current` with the fields of `draft` named by `paths`, checked as a whole (a new price's currency must
/// match the free-from amount kept), as of `now`.
pub fn apply_update(
    current: &ShippingRate,
    draft: &Draft,
    paths: &[String],
    now: i64,
) -> Result<ShippingRate, Vec<FieldViolation>> {
    check_update_mask(paths)?;
    let mut next = Draft {
        id: current.id.clone(),
        name: current.name.clone(),
        countries: current.countries.clone(),
        price: Some(current.price.clone()),
        free_from: current
            .free_from_minor
            .map(|amount_minor| Price { currency: current.price.currency.clone(), amount_minor }),
        disabled: current.disabled,
    };
    for path in paths {
        match path.as_str() {
            "name" => next.name.clone_from(&draft.name),
            "countries" => next.countries.clone_from(&draft.countries),
            "price" => next.price.clone_from(&draft.price),
            "free_from" => next.free_from.clone_from(&draft.free_from),
            "disabled" => next.disabled = draft.disabled,
            _ => {}
        }
    }
    check(next, current.create_time, now)
}

/// The rates a fresh `mercato up --demo` ships with (the demo catalog is priced in euros): standard, free from
/// EUR 50.00, and express, to every country.
pub fn demo_rates(now: i64) -> Vec<ShippingRate> {
    let eur = |amount_minor| Price { currency: "EUR".to_owned(), amount_minor };
    let rate = |id: &str, name: &str, price, free_from_minor| ShippingRate {
        id: id.to_owned(),
        name: name.to_owned(),
        countries: Vec::new(),
        price: eur(price),
        free_from_minor,
        disabled: false,
        create_time: now,
        update_time: now,
    };
    vec![
        rate("standard", "Standard (3-5 working days)", 490, Some(5000)),
        rate("express", "Express (next working day)", 990, None),
    ]
}

/// What an order is charged for shipping, and by which rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipping {
    /// The rate.
    pub rate_id: String,
    /// Its name when charged.
    pub name: String,
    /// Minor units of the order's currency; 0 when free.
    pub amount_minor: i64,
}

impl ShippingRate {
    /// Whether the rate is offered for orders in `currency` to `country`.
    pub fn serves(&self, country: &str, currency: &str) -> bool {
        !self.disabled
            && self.price.currency == currency
            && (self.countries.is_empty() || self.countries.iter().any(|c| c == country))
    }

    /// What it charges an order whose items cost `items_minor` (after a discount).
    pub fn charge(&self, items_minor: i64) -> Shipping {
        let free = self.free_from_minor.is_some_and(|from| items_minor >= from);
        Shipping {
            rate_id: self.id.clone(),
            name: self.name.clone(),
            amount_minor: if free { 0 } else { self.price.amount_minor },
        }
    }
}

/// Every rate that serves an order to `country` whose items cost `items` (after a discount), cheapest first,
/// then by id.
pub fn options(rates: &[ShippingRate], country: &str, items: &Price) -> Vec<Shipping> {
    let mut options: Vec<Shipping> =
        rates.iter().filter(|r| r.serves(country, &items.currency)).map(|r| r.charge(items.amount_minor)).collect();
    options.sort_by(|a, b| a.amount_minor.cmp(&b.amount_minor).then_with(|| a.rate_id.cmp(&b.rate_id)));
    options
}

/// Why an order cannot be shipped as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No rate with the id asked for.
    Unknown,
    /// The rate asked for is switched off.
    Disabled,
    /// The rate asked for does not ship to this country.
    OtherCountry(String),
    /// The rate asked for is for orders in this other currency.
    OtherCurrency(String),
    /// The shop has rates, but none ships to this country in this currency.
    NoRate {
        /// The order's destination.
        country: String,
        /// The order's currency.
        currency: String,
    },
}

impl Refusal {
    /// The violation that tells the customer why: of `shipping_rate_id`, or of the address's country when no
    /// rate serves it.
    pub fn violation(&self) -> FieldViolation {
        match self {
            Self::Unknown => FieldViolation::new(CHECKOUT_FIELD, "is not a shipping rate of this shop"),
            Self::Disabled => FieldViolation::new(CHECKOUT_FIELD, "is not offered at the moment"),
            Self::OtherCountry(country) => FieldViolation::new(CHECKOUT_FIELD, format!("does not ship to {country}")),
            Self::OtherCurrency(currency) => {
                FieldViolation::new(CHECKOUT_FIELD, format!("is for orders in {currency}"))
            }
            Self::NoRate { country, currency } => FieldViolation::new(
                COUNTRY_FIELD,
                format!("{country} is not a country this shop ships orders in {currency} to"),
            ),
        }
    }
}

/// The shipping an order to `country` whose items cost `items` (after a discount) is charged: the rate
/// `asked` for, or the cheapest that serves it. None when the shop has no rates at all (it charges no
/// shipping).
pub fn choose(
    rates: &[ShippingRate],
    asked: Option<&str>,
    country: &str,
    items: &Price,
) -> Result<Option<Shipping>, Refusal> {
    if let Some(id) = asked {
        let rate = rates.iter().find(|r| r.id == id).ok_or(Refusal::Unknown)?;
        if rate.disabled {
            return Err(Refusal::Disabled);
        }
        if rate.price.currency != items.currency {
            return Err(Refusal::OtherCurrency(rate.price.currency.clone()));
        }
        if !rate.serves(country, &items.currency) {
            return Err(Refusal::OtherCountry(country.to_owned()));
        }
        return Ok(Some(rate.charge(items.amount_minor)));
    }
    if rates.is_empty() {
        return Ok(None);
    }
    options(rates, country, items)
        .into_iter()
        .next()
        .map(Some)
        .ok_or_else(|| Refusal::NoRate { country: country.to_owned(), currency: items.currency.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(amount_minor: i64) -> Price {
        Price { currency: "EUR".into(), amount_minor }
    }

    fn fields(violations: &[FieldViolation]) -> Vec<&str> {
        violations.iter().map(|v| v.field.as_str()).collect()
    }

    fn draft(id: &str, countries: &[&str], price: Price) -> Draft {
        Draft {
            id: id.into(),
            name: format!("{id} shipping"),
            countries: countries.iter().map(|c| (*c).to_owned()).collect(),
            price: Some(price),
            ..Draft::default()
        }
    }

    fn rate(id: &str, countries: &[&str], price: Price) -> ShippingRate {
        validate(draft(id, countries, price), 1_000).expect("valid")
    }

    #[test]
    fn a_new_rate_is_kept_in_one_spelling() {
        let made = validate(draft(" Standard-EU ", &["de", " AT", "DE"], eur(490)), 5).expect("valid");
        assert_eq!(
            (made.id.as_str(), made.countries.as_slice()),
            ("standard-eu", ["AT", "DE"].map(String::from).as_slice())
        );
        assert_eq!((made.name.as_str(), made.create_time, made.update_time), ("Standard-EU  shipping", 5, 5));
        for bad in ["", "x", "has space", "ünder", "x".repeat(41).as_str()] {
            assert_eq!(normalize_id("id", bad).expect_err(bad).field, "id", "{bad:?}");
        }
    }

    #[test]
    fn a_new_rate_names_every_wrong_field() {
        let wrong = Draft {
            id: "?".into(),
            name: " ".into(),
            countries: vec!["DE".into(), "Germany".into()],
            price: Some(Price { currency: "eur".into(), amount_minor: -1 }),
            free_from: Some(Price { currency: "USD".into(), amount_minor: 0 }),
            disabled: false,
        };
        assert_eq!(
            fields(&validate(wrong, 5).expect_err("wrong")),
            [
                "shipping_rate.id",
                "shipping_rate.name",
                "shipping_rate.countries[1]",
                "shipping_rate.price.currency",
                "shipping_rate.price.amount_minor",
                "shipping_rate.free_from.currency",
                "shipping_rate.free_from.amount_minor"
            ]
        );
        let priceless = Draft { price: None, ..draft("std", &[], eur(0)) };
        assert_eq!(fields(&validate(priceless, 5).expect_err("no price")), ["shipping_rate.price"]);
    }

    #[test]
    fn a_rate_is_free_from_its_threshold() {
        let standard = ShippingRate { free_from_minor: Some(5000), ..rate("standard", &[], eur(490)) };
        assert_eq!(standard.charge(4999).amount_minor, 490);
        assert_eq!(standard.charge(5000).amount_minor, 0);
        assert_eq!(rate("pickup", &[], eur(0)).charge(1).amount_minor, 0);
    }

    #[test]
    fn the_cheapest_rate_serving_the_order_is_chosen_unless_one_is_asked_for() {
        let rates = [
            rate("express", &["DE"], eur(990)),
            rate("standard", &["DE", "AT"], eur(490)),
            rate("world", &[], eur(1990)),
            rate("us", &[], Price { currency: "USD".into(), amount_minor: 100 }),
            ShippingRate { disabled: true, ..rate("cheap", &[], eur(1)) },
        ];
        let chosen = |asked, country| choose(&rates, asked, country, &eur(3000));
        assert_eq!(chosen(None, "DE").expect("ok").map(|s| s.rate_id), Some("standard".to_owned()));
        assert_eq!(chosen(None, "FR").expect("ok").map(|s| s.rate_id), Some("world".to_owned()));
        let express = chosen(Some("express"), "DE").expect("ok").expect("a rate");
        assert_eq!((express.name.as_str(), express.amount_minor), ("express shipping", 990));
        assert_eq!(chosen(Some("express"), "FR"), Err(Refusal::OtherCountry("FR".into())));
        assert_eq!(chosen(Some("us"), "DE"), Err(Refusal::OtherCurrency("USD".into())));
        assert_eq!(chosen(Some("cheap"), "DE"), Err(Refusal::Disabled));
        assert_eq!(chosen(Some("nope"), "DE"), Err(Refusal::Unknown));
        let ids: Vec<_> = options(&rates, "DE", &eur(3000)).into_iter().map(|s| s.rate_id).collect();
        assert_eq!(ids, ["standard", "express", "world"]);
    }

    #[test]
    fn a_shop_without_rates_charges_nothing_and_one_with_rates_refuses_what_none_serves() {
        assert_eq!(choose(&[], None, "DE", &eur(100)), Ok(None));
        assert_eq!(choose(&[], Some("standard"), "DE", &eur(100)), Err(Refusal::Unknown));
        let only_de = [rate("standard", &["DE"], eur(490))];
        let refused = choose(&only_de, None, "FR", &eur(100)).expect_err("not served");
        let violation = refused.violation();
        assert_eq!(
            (violation.field.as_str(), violation.description.as_str()),
            ("shipping_address.country", "FR is not a country this shop ships orders in EUR to")
        );
        let usd = Price { currency: "USD".into(), amount_minor: 100 };
        assert_eq!(
            choose(&only_de, None, "DE", &usd),
            Err(Refusal::NoRate { country: "DE".into(), currency: "USD".into() })
        );
    }

    #[test]
    fn an_update_changes_the_named_fields_and_checks_the_whole() {
        let current = ShippingRate { free_from_minor: Some(5000), ..rate("standard", &["DE"], eur(490)) };
        let paths = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let change = Draft { countries: vec!["fr".into()], disabled: true, ..draft("ignored", &[], eur(1)) };
        let next = apply_update(&current, &change, &paths(&["countries", "disabled"]), 77).expect("ok");
        assert_eq!(
            (next.countries.as_slice(), next.disabled, next.update_time),
            (["FR".to_owned()].as_slice(), true, 77)
        );
        assert_eq!((next.id.as_str(), &next.price, next.free_from_minor), ("standard", &eur(490), Some(5000)));
        let dollars = Draft { price: Some(Price { currency: "USD".into(), amount_minor: 500 }), ..Draft::default() };
        assert_eq!(
            fields(&apply_update(&current, &dollars, &paths(&["price"]), 77).expect_err("currencies")),
            ["shipping_rate.free_from.currency"]
        );
        let both = apply_update(&current, &dollars, &paths(&["price", "free_from"]), 77).expect("free_from cleared");
        assert_eq!((both.price.currency.as_str(), both.free_from_minor), ("USD", None));
        assert_eq!(fields(&apply_update(&current, &change, &paths(&["id"]), 77).expect_err("id")), ["update_mask"]);
    }
}
