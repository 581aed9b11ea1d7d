//! The catalog's rules, free of I/O: what a valid product is, how listings sort and page ([`listing`]), stock
//! arithmetic, reservation requests and their state machine, and update masks.
//!
//! Field names in violations are proto field paths (`product.price.currency`, `items[1].quantity`), so
//! clients can point at the offending input.

pub mod categories;
pub mod images;
pub mod listing;
pub mod reviews;
pub mod stock;
pub mod variants;

pub use listing::{Cursor, ProductOrder, SortField, SortKey};
pub use variants::ProductOption;

use platform::error::FieldViolation;

pub use platform::paging::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, page_size};

/// Largest stock count: the wire type is `int32`.
pub const MAX_STOCK: i64 = i32::MAX as i64;
/// Longest search text accepted by ListProducts.
pub const MAX_QUERY_CHARS: usize = 200;
/// Longest reason of a stock adjustment.
pub const MAX_REASON_CHARS: usize = 500;
/// Longest reservation id.
pub const MAX_RESERVATION_ID_CHARS: usize = 100;
/// Most lines in one reservation.
pub const MAX_RESERVATION_ITEMS: usize = 100;

/// A price: minor units of an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    /// Upper-case currency code, e.g. `EUR`.
    pub currency: String,
    /// Amount in minor units (cents for EUR).
    pub amount_minor: i64,
}

/// Product fields as a client sent them, not yet validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductInput {
    /// Stock keeping unit.
    pub sku: String,
    /// Name shown to customers.
    pub name: String,
    /// Longer text shown to customers.
    pub description: String,
    /// Unit price; required.
    pub price: Option<Price>,
    /// Category slug.
    pub category: String,
    /// Whether customers see the product.
    pub active: bool,
    /// Which of a country's tax rates applies; None when the request named no tax class there is.
    pub tax_class: Option<TaxClass>,
    /// The base product's id when this is a variant; empty otherwise.
    pub variant_of: String,
    /// What tells it from the other products of its group.
    pub options: Vec<ProductOption>,
}

/// Which of a country's tax rates a product's price includes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TaxClass {
    /// The standard rate.
    #[default]
    Standard,
    /// The reduced rate, where the country has one.
    Reduced,
}

impl TaxClass {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Reduced => "reduced",
        }
    }

    /// From its stored form; anything else is standard (the table's CHECK allows nothing else).
    pub fn parse(stored: &str) -> Self {
        if stored == "reduced" { Self::Reduced } else { Self::Standard }
    }
}

/// Product fields that passed [`validate_product`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductFields {
    /// Stock keeping unit, unique across the catalog.
    pub sku: String,
    /// Name shown to customers.
    pub name: String,
    /// Longer text shown to customers.
    pub description: String,
    /// Unit price.
    pub price: Price,
    /// Category slug.
    pub category: String,
    /// Whether customers see the product.
    pub active: bool,
    /// Which of a country's tax rates applies.
    pub tax_class: TaxClass,
    /// The base product's id when this is a variant; empty otherwise ([`variants`] keeps the group rules).
    pub variant_of: String,
    /// What tells it from the other products of its group (names and values trimmed).
    pub options: Vec<ProductOption>,
}

impl From<ProductFields> for ProductInput {
    fn from(f: ProductFields) -> Self {
        Self {
            sku: f.sku,
            name: f.name,
            description: f.description,
            price: Some(f.price),
            category: f.category,
            active: f.active,
            tax_class: Some(f.tax_class),
            variant_of: f.variant_of,
            options: f.options,
        }
    }
}

fn is_sku(s: &str) -> bool {
    (1..=64).contains(&s.chars().count())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn is_slug(s: &str) -> bool {
    (1..=50).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Checks every field of a product; violations are named `product.<field>`.
pub fn validate_product(input: ProductInput) -> Result<ProductFields, Vec<FieldViolation>> {
    let mut v = Vec::new();
    if !is_sku(&input.sku) {
        v.push(FieldViolation::new("product.sku", "must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'"));
    }
    let name_chars = input.name.chars().count();
    if input.name.trim().is_empty() || name_chars > 200 {
        v.push(FieldViolation::new("product.name", "must be 1 to 200 characters and not blank"));
    }
    if input.description.chars().count() > 5000 {
        v.push(FieldViolation::new("product.description", "must be at most 5000 characters"));
    }
    if !is_slug(&input.category) {
        v.push(FieldViolation::new("product.category", "must be a slug of 1 to 50 characters of a-z, 0-9 or '-'"));
    }
    match &input.price {
        None => v.push(FieldViolation::new("product.price", "is required")),
        Some(price) => {
            if let Err(e) = platform::money::check_currency("product.price.currency", &price.currency) {
                v.push(e);
            }
            if price.amount_minor < 0 {
                v.push(FieldViolation::new("product.price.amount_minor", "must not be negative"));
            }
        }
    }
    if input.tax_class.is_none() {
        v.push(FieldViolation::new("product.tax_class", "must be TAX_CLASS_STANDARD or TAX_CLASS_REDUCED"));
    }
    if !input.variant_of.is_empty()
        && let Err(e) = platform::error::check_id("product.variant_of", &input.variant_of)
    {
        v.push(e);
    }
    v.extend(variants::check_options(&input.options));
    match (input.price, input.tax_class) {
        (Some(price), Some(tax_class)) if v.is_empty() => Ok(ProductFields {
            sku: input.sku,
            name: input.name,
            description: input.description,
            price,
            category: input.category,
            active: input.active,
            tax_class,
            variant_of: input.variant_of,
            options: input
                .options
                .into_iter()
                .map(|o| ProductOption { name: o.name.trim().to_owned(), value: o.value.trim().to_owned() })
                .collect(),
        }),
        _ => Err(v),
    }
}

/// The field paths an update mask may name.
pub const UPDATABLE_PATHS: &[&str] = &[
    "sku",
    "name",
    "description",
    "price",
    "price.currency",
    "price.amount_minor",
    "category",
    "active",
    "tax_class",
    "variant_of",
    "options",
];

/// Checks that an update mask names at least one field and only fields that can change.
pub fn check_update_mask(paths: &[String]) -> Result<(), Vec<FieldViolation>> {
    platform::error::check_update_mask(paths, UPDATABLE_PATHS)
}

/// Applies the fields of `input` named by `paths` to `current` and validates the result.
pub fn apply_update_mask(
    current: &ProductFields,
    input: &ProductInput,
    paths: &[String],
) -> Result<ProductFields, Vec<FieldViolation>> {
    check_update_mask(paths)?;
    let mut next = ProductInput::from(current.clone());
    // A masked price with no price in the request means "no value": validation then reports it.
    let new_price = input.price.clone().unwrap_or(Price { currency: String::new(), amount_minor: 0 });
    for path in paths {
        match path.as_str() {
            "sku" => next.sku = input.sku.clone(),
            "name" => next.name = input.name.clone(),
            "description" => next.description = input.description.clone(),
            "category" => next.category = input.category.clone(),
            "active" => next.active = input.active,
            "tax_class" => next.tax_class = input.tax_class,
            "variant_of" => next.variant_of = input.variant_of.clone(),
            "options" => next.options = input.options.clone(),
            "price" => next.price = input.price.clone(),
            "price.currency" => {
                if let Some(p) = next.price.as_mut() {
                    p.currency = new_price.currency.clone();
                }
            }
            "price.amount_minor" => {
                if let Some(p) = next.price.as_mut() {
                    p.amount_minor = new_price.amount_minor;
                }
            }
            _ => {}
        }
    }
    validate_product(next)
}

/// Checks the free-text search of ListProducts.
pub fn validate_query(query: &str) -> Result<(), FieldViolation> {
    if query.chars().count() > MAX_QUERY_CHARS {
        return Err(FieldViolation::new("query", format!("must be at most {MAX_QUERY_CHARS} characters")));
    }
    Ok(())
}

/// The stock of one product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stock {
    /// Units in the warehouse.
    pub on_hand: i64,
    /// Units held by reservations.
    pub reserved: i64,
}

impl Stock {
    /// Units that can still be reserved.
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

/// Why a stock adjustment cannot be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdjustError {
    /// On hand would fall below what is reserved (or below zero).
    BelowReserved,
    /// On hand would exceed [`MAX_STOCK`].
    TooLarge,
}

/// Checks the delta and reason of an adjustment.
pub fn validate_adjustment(delta: i32, reason: &str) -> Result<(), Vec<FieldViolation>> {
    let mut v = Vec::new();
    if delta == 0 {
        v.push(FieldViolation::new("delta", "must not be zero"));
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        v.push(FieldViolation::new("reason", format!("must be at most {MAX_REASON_CHARS} characters")));
    }
    if v.is_empty() { Ok(()) } else { Err(v) }
}

/// The stock after adding `delta` units to on hand.
pub fn adjust(stock: Stock, delta: i64) -> Result<Stock, AdjustError> {
    let on_hand = stock.on_hand.saturating_add(delta);
    if on_hand < stock.reserved || on_hand < 0 {
        return Err(AdjustError::BelowReserved);
    }
    if on_hand > MAX_STOCK {
        return Err(AdjustError::TooLarge);
    }
    Ok(Stock { on_hand, reserved: stock.reserved })
}

/// One validated line of a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveItem {
    /// Product id.
    pub product_id: String,
    /// Units, at least 1.
    pub quantity: i64,
}

/// Checks a reservation request and returns its items sorted by product id, so that concurrent
/// reservations lock inventory rows in the same order (no deadlocks on PostgreSQL).
pub fn validate_reservation(
    reservation_id: &str,
    items: &[(String, i32)],
) -> Result<Vec<ReserveItem>, Vec<FieldViolation>> {
    let mut v = Vec::new();
    if let Err(e) = validate_reservation_id(reservation_id) {
        v.push(e);
    }
    if items.is_empty() {
        v.push(FieldViolation::new("items", "must hold at least one item"));
    }
    if items.len() > MAX_RESERVATION_ITEMS {
        v.push(FieldViolation::new("items", format!("must hold at most {MAX_RESERVATION_ITEMS} items")));
    }
    for (i, (product_id, quantity)) in items.iter().enumerate() {
        if product_id.is_empty() {
            v.push(FieldViolation::new(format!("items[{i}].product_id"), "is required"));
        } else if items[..i].iter().any(|(p, _)| p == product_id) {
            v.push(FieldViolation::new(format!("items[{i}].product_id"), "appears more than once"));
        }
        if *quantity < 1 {
            v.push(FieldViolation::new(format!("items[{i}].quantity"), "must be at least 1"));
        }
    }
    if !v.is_empty() {
        return Err(v);
    }
    let mut out: Vec<ReserveItem> = items
        .iter()
        .map(|(product_id, quantity)| ReserveItem { product_id: product_id.clone(), quantity: i64::from(*quantity) })
        .collect();
    out.sort_by(|a, b| a.product_id.cmp(&b.product_id));
    Ok(out)
}

/// Checks a reservation id: 1 to 100 characters.
pub fn validate_reservation_id(id: &str) -> Result<(), FieldViolation> {
    if id.is_empty() || id.chars().count() > MAX_RESERVATION_ID_CHARS {
        return Err(FieldViolation::new(
            "reservation_id",
            format!("must be 1 to {MAX_RESERVATION_ID_CHARS} characters"),
        ));
    }
    Ok(())
}

/// The state of a reservation, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationStatus {
    /// Stock is held.
    Held,
    /// Stock was given back.
    Released,
    /// Stock was sold.
    Committed,
}

impl ReservationStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "HELD",
            Self::Released => "RELEASED",
            Self::Committed => "COMMITTED",
        }
    }

    /// Reads the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "HELD" => Some(Self::Held),
            "RELEASED" => Some(Self::Released),
            "COMMITTED" => Some(Self::Committed),
            _ => None,
        }
    }
}

/// What moving a reservation from `current` to `target` (RELEASED or COMMITTED) means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Held: do it.
    Apply,
    /// Already in the target state: nothing to do (idempotent repeat).
    AlreadyDone,
    /// Settled the other way: refuse.
    Refused,
}

/// Decides a settlement of a reservation that is `current`.
pub fn transition(current: ReservationStatus, target: ReservationStatus) -> Transition {
    match current {
        ReservationStatus::Held => Transition::Apply,
        c if c == target => Transition::AlreadyDone,
        _ => Transition::Refused,
    }
}

/// Below this many available units a product is low on stock (`inventory.low`).
pub const LOW_STOCK_THRESHOLD: i64 = 5;

/// Whether a change of available units from `before` to `after` crosses below `threshold`: the moment to say
/// so once, rather than on every change while it stays low.
pub fn fell_below(before: i64, after: i64, threshold: i64) -> bool {
    before >= threshold && after < threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_stock_is_reported_when_crossing_only() {
        assert!(fell_below(5, 4, 5));
        assert!(fell_below(10, 0, 5));
        assert!(!fell_below(4, 3, 5), "already low");
        assert!(!fell_below(10, 5, 5), "still at the threshold");
        assert!(!fell_below(3, 8, 5), "restocked");
    }

    fn good() -> ProductInput {
        ProductInput {
            sku: "COF-ETH-250".into(),
            name: "Ethiopia Yirgacheffe".into(),
            description: "Floral, citrus.".into(),
            price: Some(Price { currency: "EUR".into(), amount_minor: 1450 }),
            category: "coffee".into(),
            active: true,
            tax_class: Some(TaxClass::Standard),
            ..ProductInput::default()
        }
    }

    fn fields(violations: &[FieldViolation]) -> Vec<&str> {
        violations.iter().map(|v| v.field.as_str()).collect()
    }

    #[test]
    fn a_good_product_passes() {
        let f = validate_product(good()).expect("valid");
        assert_eq!(f.price.amount_minor, 1450);
    }

    #[test]
    fn every_bad_field_is_named() {
        let bad = ProductInput {
            sku: "has space".into(),
            name: "   ".into(),
            description: "x".repeat(5001),
            price: Some(Price { currency: "eur".into(), amount_minor: -1 }),
            category: "Coffee".into(),
            active: true,
            tax_class: None,
            variant_of: "x".repeat(65),
            options: vec![ProductOption { name: "Size".into(), value: " ".into() }],
        };
        let v = validate_product(bad).expect_err("invalid");
        assert_eq!(
            fields(&v),
            [
                "product.sku",
                "product.name",
                "product.description",
                "product.category",
                "product.price.currency",
                "product.price.amount_minor",
                "product.tax_class",
                "product.variant_of",
                "product.options[0].value"
            ]
        );
        let no_price = validate_product(ProductInput { price: None, ..good() }).expect_err("no price");
        assert_eq!(fields(&no_price), ["product.price"]);
    }

    #[test]
    fn sku_and_slug_limits() {
        assert!(is_sku(&"a".repeat(64)) && !is_sku(&"a".repeat(65)) && !is_sku(""));
        assert!(is_sku("A.b_c-9") && !is_sku("é"));
        assert!(is_slug("board-games") && !is_slug("board_games") && !is_slug(&"a".repeat(51)));
        assert!(validate_product(ProductInput { name: "é".repeat(200), ..good() }).is_ok());
        assert!(validate_product(ProductInput { name: "é".repeat(201), ..good() }).is_err());
    }

    #[test]
    fn update_mask_changes_only_named_fields() {
        let current = validate_product(good()).expect("valid");
        let input = ProductInput {
            sku: "NEW".into(),
            name: "New name".into(),
            price: Some(Price { currency: "USD".into(), amount_minor: 99 }),
            ..ProductInput::default()
        };
        let next = apply_update_mask(&current, &input, &["name".into(), "price.amount_minor".into()]).expect("ok");
        assert_eq!(next.name, "New name");
        assert_eq!(next.sku, current.sku);
        assert_eq!(next.price, Price { currency: "EUR".into(), amount_minor: 99 });
        assert!(!apply_update_mask(&current, &input, &["active".into()]).expect("ok").active);
        assert_eq!(current.tax_class, TaxClass::Standard);
        let reduced = ProductInput { tax_class: Some(TaxClass::Reduced), ..input.clone() };
        let next = apply_update_mask(&current, &reduced, &["tax_class".into()]).expect("ok");
        assert_eq!((next.tax_class, next.name.as_str()), (TaxClass::Reduced, current.name.as_str()));
        let kept = apply_update_mask(&next, &ProductInput::default(), &["name".into()]);
        assert_eq!(kept.map(|f| f.tax_class).map_err(|v| fields(&v).join(",")), Err("product.name".to_owned()));
        let unnamed = apply_update_mask(&next, &input, &["name".into()]).expect("ok");
        assert_eq!(unnamed.tax_class, TaxClass::Reduced, "kept unless named");
        let wrong = apply_update_mask(&current, &ProductInput::default(), &["tax_class".into()]).expect_err("none");
        assert_eq!(fields(&wrong), ["product.tax_class"]);
    }

    #[test]
    fn update_mask_moves_a_product_into_a_group_and_out() {
        let current = validate_product(good()).expect("valid");
        let size = |value: &str| vec![ProductOption { name: " Size".into(), value: format!("{value} ") }];
        let input = ProductInput { variant_of: "base-id".into(), options: size("L"), ..ProductInput::default() };
        let paths = ["variant_of".into(), "options".into()];
        let grouped = apply_update_mask(&current, &input, &paths).expect("ok");
        assert_eq!((grouped.variant_of.as_str(), grouped.name.as_str()), ("base-id", current.name.as_str()));
        assert_eq!(grouped.options, [ProductOption { name: "Size".into(), value: "L".into() }], "trimmed");
        let relabelled =
            apply_update_mask(&grouped, &ProductInput { options: size("XL"), ..input.clone() }, &paths[1..])
                .expect("ok");
        assert_eq!((relabelled.variant_of.as_str(), relabelled.options[0].value.as_str()), ("base-id", "XL"));
        let alone = apply_update_mask(&grouped, &ProductInput::default(), &paths[..1]).expect("ok");
        assert_eq!((alone.variant_of.as_str(), alone.options.len()), ("", 1), "leaves the group, keeps its options");
    }

    #[test]
    fn update_mask_rejects_empty_unknown_and_invalid() {
        let current = validate_product(good()).expect("valid");
        let input = ProductInput::default();
        assert_eq!(fields(&apply_update_mask(&current, &input, &[]).expect_err("empty")), ["update_mask"]);
        let unknown = apply_update_mask(&current, &input, &["id".into(), "name".into()]).expect_err("unknown");
        assert_eq!(fields(&unknown), ["update_mask"]);
        let blank = apply_update_mask(&current, &input, &["name".into()]).expect_err("blank name");
        assert_eq!(fields(&blank), ["product.name"]);
        let no_price = apply_update_mask(&current, &input, &["price".into()]).expect_err("price unset");
        assert_eq!(fields(&no_price), ["product.price"]);
        let currency = apply_update_mask(&current, &input, &["price.currency".into()]).expect_err("empty");
        assert_eq!(fields(&currency), ["product.price.currency"]);
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(1), Ok(1));
        assert_eq!(page_size(100), Ok(100));
        assert_eq!(page_size(101), Ok(100));
        assert_eq!(page_size(i32::MAX), Ok(100));
        assert_eq!(page_size(-1).map_err(|v| v.field), Err("page_size".to_owned()));
    }

    #[test]
    fn stock_arithmetic() {
        let stock = Stock { on_hand: 10, reserved: 4 };
        assert_eq!(stock.available(), 6);
        assert_eq!(adjust(stock, 5), Ok(Stock { on_hand: 15, reserved: 4 }));
        assert_eq!(adjust(stock, -6), Ok(Stock { on_hand: 4, reserved: 4 }));
        assert_eq!(adjust(stock, -7), Err(AdjustError::BelowReserved));
        assert_eq!(adjust(Stock { on_hand: 0, reserved: 0 }, -1), Err(AdjustError::BelowReserved));
        assert_eq!(adjust(Stock { on_hand: MAX_STOCK, reserved: 0 }, 1), Err(AdjustError::TooLarge));
        assert_eq!(fields(&validate_adjustment(0, "").expect_err("zero")), ["delta"]);
        assert!(validate_adjustment(-3, "damaged").is_ok());
        assert_eq!(fields(&validate_adjustment(1, &"r".repeat(501)).expect_err("long")), ["reason"]);
    }

    #[test]
    fn reservations_are_checked_and_sorted() {
        let items = vec![("b".to_owned(), 2), ("a".to_owned(), 1)];
        let ok = validate_reservation("order-1", &items).expect("valid");
        assert_eq!(ok.iter().map(|i| i.product_id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(fields(&validate_reservation("", &items).expect_err("no id")), ["reservation_id"]);
        assert_eq!(fields(&validate_reservation(&"x".repeat(101), &items).expect_err("long")), ["reservation_id"]);
        assert_eq!(fields(&validate_reservation("r", &[]).expect_err("empty")), ["items"]);
        let bad = vec![("a".to_owned(), 1), ("".to_owned(), 0), ("a".to_owned(), 2)];
        assert_eq!(
            fields(&validate_reservation("r", &bad).expect_err("bad items")),
            ["items[1].product_id", "items[1].quantity", "items[2].product_id"]
        );
    }

    #[test]
    fn reservation_state_machine() {
        use ReservationStatus::*;
        assert_eq!(transition(Held, Released), Transition::Apply);
        assert_eq!(transition(Held, Committed), Transition::Apply);
        assert_eq!(transition(Released, Released), Transition::AlreadyDone);
        assert_eq!(transition(Committed, Committed), Transition::AlreadyDone);
        assert_eq!(transition(Committed, Released), Transition::Refused);
        assert_eq!(transition(Released, Committed), Transition::Refused);
        for s in [Held, Released, Committed] {
            assert_eq!(ReservationStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(ReservationStatus::parse("held"), None);
    }
}
