//! The cart's rules, free of I/O: valid lines and quantities, who may clear whose cart, and how a cart is
//! priced from what the catalog says about each of its products.
//!
//! Field names in violations are proto field names (`product_id`, `quantity`), so clients can point at the
//! offending input.

use std::collections::BTreeMap;

use platform::error::FieldViolation;

/// Fewest units of a product a line holds.
pub const MIN_QUANTITY: i32 = 1;
/// Most units of a product a line holds (also after adding to an existing line).
pub const MAX_QUANTITY: i32 = 99;
/// Most distinct products in one cart.
pub const MAX_LINES: i64 = 100;
/// Longest product (or customer) id accepted.
pub const MAX_ID_CHARS: usize = 100;

/// A price: minor units of an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    /// Upper-case currency code, e.g. `EUR`.
    pub currency: String,
    /// Amount in minor units (cents for EUR).
    pub amount_minor: i64,
}

/// Checks a product id: required, at most [`MAX_ID_CHARS`] characters.
pub fn validate_product_id(product_id: &str) -> Result<(), FieldViolation> {
    if product_id.is_empty() {
        return Err(FieldViolation::new("product_id", "is required"));
    }
    if product_id.chars().count() > MAX_ID_CHARS {
        return Err(FieldViolation::new("product_id", format!("must be at most {MAX_ID_CHARS} characters")));
    }
    Ok(())
}

/// Checks a line's quantity: [`MIN_QUANTITY`] to [`MAX_QUANTITY`].
pub fn validate_quantity(quantity: i32) -> Result<(), FieldViolation> {
    if !(MIN_QUANTITY..=MAX_QUANTITY).contains(&quantity) {
        return Err(FieldViolation::new("quantity", format!("must be {MIN_QUANTITY} to {MAX_QUANTITY}")));
    }
    Ok(())
}

/// Checks the product id and quantity of an AddItem or UpdateItem, reporting both at once.
pub fn validate_line(product_id: &str, quantity: i32) -> Result<(), Vec<FieldViolation>> {
    let violations: Vec<FieldViolation> =
        [validate_product_id(product_id).err(), validate_quantity(quantity).err()].into_iter().flatten().collect();
    if violations.is_empty() { Ok(()) } else { Err(violations) }
}

/// The violation when adding `adding` units to a line that already holds `current` would pass the maximum.
pub fn merge_violation(current: i32, adding: i32) -> FieldViolation {
    FieldViolation::new(
        "quantity",
        format!(
            "the cart already holds {current} of this product; adding {adding} would pass the limit of \
             {MAX_QUANTITY} per line"
        ),
    )
}

/// Whose cart a ClearCart empties: the caller's own when `requested` is empty or names the caller, another
/// customer's only for callers allowed to act for others (`orders:admin`). `Err` carries why not.
pub fn clear_target(caller: &str, may_act_for_others: bool, requested: &str) -> Result<String, ClearRefusal> {
    if requested.is_empty() || requested == caller {
        return Ok(caller.to_owned());
    }
    if requested.chars().count() > MAX_ID_CHARS {
        return Err(ClearRefusal::Invalid(FieldViolation::new(
            "customer_id",
            format!("must be at most {MAX_ID_CHARS} characters"),
        )));
    }
    if !may_act_for_others {
        return Err(ClearRefusal::Denied);
    }
    Ok(requested.to_owned())
}

/// Why [`clear_target`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClearRefusal {
    /// The customer id is malformed.
    Invalid(FieldViolation),
    /// The caller may only clear their own cart.
    Denied,
}

/// A line as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The product.
    pub product_id: String,
    /// The sku when the product was last added.
    pub sku: String,
    /// The name when the product was last added.
    pub name: String,
    /// Units.
    pub quantity: i32,
}

/// A product the catalog sells now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Current sku.
    pub sku: String,
    /// Current name.
    pub name: String,
    /// Current unit price.
    pub price: Price,
    /// Units that can still be reserved.
    pub in_stock: i64,
}

/// What the catalog says about a product right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// Active and for sale.
    OnSale(Listing),
    /// Known to the catalog but not for sale (inactive).
    Inactive,
    /// Unknown to the catalog.
    Missing,
}

/// A line with its current price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    /// The product.
    pub product_id: String,
    /// Current sku, or the stored one when the product is no longer sold.
    pub sku: String,
    /// Current name, or the stored one when the product is no longer sold.
    pub name: String,
    /// Units.
    pub quantity: i32,
    /// Current unit price; `None` when the product is no longer sold.
    pub unit_price: Option<Price>,
    /// `unit_price` times `quantity`; `None` when the product is no longer sold.
    pub line_total: Option<Price>,
    /// For sale and in stock for `quantity`.
    pub available: bool,
}

/// A cart with current prices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PricedCart {
    /// The lines, in stored order.
    pub lines: Vec<PricedLine>,
    /// Sum of the available lines' totals, one per currency, by currency code.
    pub totals: Vec<Price>,
    /// Units over every line.
    pub item_count: i32,
}

/// Prices each line with what the catalog says about its product. Lines that are not available (not for
/// sale, not enough stock, or an amount too large to represent) count in no total.
pub fn price_cart(lines: Vec<(Line, Offer)>) -> PricedCart {
    let mut totals: BTreeMap<String, i64> = BTreeMap::new();
    let mut item_count: i32 = 0;
    let mut priced = Vec::with_capacity(lines.len());
    for (line, offer) in lines {
        item_count = item_count.saturating_add(line.quantity);
        let priced_line = match offer {
            Offer::OnSale(listing) => {
                let line_total = listing.price.amount_minor.checked_mul(i64::from(line.quantity));
                let sum =
                    line_total.and_then(|t| totals.get(&listing.price.currency).copied().unwrap_or(0).checked_add(t));
                let available = i64::from(line.quantity) <= listing.in_stock && sum.is_some();
                if let (true, Some(sum)) = (available, sum) {
                    totals.insert(listing.price.currency.clone(), sum);
                }
                PricedLine {
                    product_id: line.product_id,
                    sku: listing.sku,
                    name: listing.name,
                    quantity: line.quantity,
                    line_total: line_total
                        .map(|amount_minor| Price { currency: listing.price.currency.clone(), amount_minor }),
                    unit_price: Some(listing.price),
                    available,
                }
            }
            Offer::Inactive | Offer::Missing => PricedLine {
                product_id: line.product_id,
                sku: line.sku,
                name: line.name,
                quantity: line.quantity,
                unit_price: None,
                line_total: None,
                available: false,
            },
        };
        priced.push(priced_line);
    }
    PricedCart {
        lines: priced,
        totals: totals.into_iter().map(|(currency, amount_minor)| Price { currency, amount_minor }).collect(),
        item_count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, quantity: i32) -> Line {
        Line { product_id: id.into(), sku: format!("SKU-{id}"), name: format!("old {id}"), quantity }
    }

    fn on_sale(id: &str, currency: &str, cents: i64, in_stock: i64) -> Offer {
        Offer::OnSale(Listing {
            sku: format!("SKU-{id}"),
            name: format!("new {id}"),
            price: Price { currency: currency.into(), amount_minor: cents },
            in_stock,
        })
    }

    fn eur(amount_minor: i64) -> Price {
        Price { currency: "EUR".into(), amount_minor }
    }

    #[test]
    fn quantities_and_ids() {
        assert!(validate_quantity(1).is_ok() && validate_quantity(99).is_ok());
        for bad in [0, -1, 100, i32::MIN, i32::MAX] {
            assert_eq!(validate_quantity(bad).map_err(|v| v.field), Err("quantity".to_owned()), "{bad}");
        }
        assert!(validate_product_id("p").is_ok() && validate_product_id(&"é".repeat(100)).is_ok());
        assert!(validate_product_id("").is_err() && validate_product_id(&"p".repeat(101)).is_err());
        let both = validate_line("", 0).expect_err("both bad");
        assert_eq!(both.iter().map(|v| v.field.as_str()).collect::<Vec<_>>(), ["product_id", "quantity"]);
        assert!(validate_line("p", 5).is_ok());
        let merge = merge_violation(97, 5);
        assert_eq!(merge.field, "quantity");
        assert!(merge.description.contains("97") && merge.description.contains("99"), "{}", merge.description);
    }

    #[test]
    fn only_order_admins_clear_other_carts() {
        assert_eq!(clear_target("a", false, ""), Ok("a".to_owned()));
        assert_eq!(clear_target("a", false, "a"), Ok("a".to_owned()));
        assert_eq!(clear_target("a", false, "b"), Err(ClearRefusal::Denied));
        assert_eq!(clear_target("admin", true, "b"), Ok("b".to_owned()));
        assert!(matches!(clear_target("admin", true, &"b".repeat(101)), Err(ClearRefusal::Invalid(_))));
    }

    #[test]
    fn an_empty_cart_costs_nothing() {
        assert_eq!(price_cart(Vec::new()), PricedCart::default());
    }

    #[test]
    fn totals_are_per_currency_and_only_over_available_lines() {
        let cart = price_cart(vec![
            (line("a", 2), on_sale("a", "EUR", 1450, 10)),
            (line("b", 1), on_sale("b", "USD", 999, 1)),
            (line("c", 3), on_sale("c", "EUR", 100, 50)),
            (line("d", 5), on_sale("d", "EUR", 700, 4)),
            (line("e", 1), Offer::Inactive),
            (line("f", 4), Offer::Missing),
        ]);
        assert_eq!(cart.totals, vec![eur(2900 + 300), Price { currency: "USD".into(), amount_minor: 999 }]);
        assert_eq!(cart.item_count, 2 + 1 + 3 + 5 + 1 + 4);
        let available: Vec<bool> = cart.lines.iter().map(|l| l.available).collect();
        assert_eq!(available, [true, true, true, false, false, false]);
        let a = &cart.lines[0];
        assert_eq!(
            (a.name.as_str(), a.unit_price.clone(), a.line_total.clone()),
            ("new a", Some(eur(1450)), Some(eur(2900)))
        );
        // Short of stock: priced, but not counted.
        assert_eq!(cart.lines[3].line_total, Some(eur(3500)));
        // No longer sold: the stored name, no price.
        let e = &cart.lines[4];
        assert_eq!((e.name.as_str(), e.sku.as_str(), &e.unit_price, &e.line_total), ("old e", "SKU-e", &None, &None));
    }

    #[test]
    fn amounts_too_large_are_not_available() {
        let cart = price_cart(vec![
            (line("a", 2), on_sale("a", "EUR", i64::MAX / 2 + 1, 10)),
            (line("b", 1), on_sale("b", "EUR", i64::MAX, 10)),
            (line("c", 1), on_sale("c", "EUR", 1, 10)),
        ]);
        assert!(!cart.lines[0].available && cart.lines[0].line_total.is_none());
        assert!(cart.lines[1].available);
        assert!(!cart.lines[2].available, "the sum would overflow");
        assert_eq!(cart.totals, vec![eur(i64::MAX)]);
    }
}
