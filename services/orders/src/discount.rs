//! Discount codes, free of I/O: how staff describe one, whether it applies to an order, and what it takes off.
//!
//! A code's uses are counted where the order is placed ([`crate::store::Store::insert_order`]), in the same
//! transaction; [`discount_for`] checks the count read with the code first, so most refusals need no write.

use platform::error::FieldViolation;
use platform::money;

use crate::domain::{MAX_TEXT, Price};

/// Shortest code.
pub const MIN_CODE_CHARS: usize = 3;
/// Longest code.
pub const MAX_CODE_CHARS: usize = 32;
/// The fields UpdateDiscountCode may change.
pub const UPDATABLE_PATHS: &[&str] = &["description", "start_time", "end_time", "max_redemptions", "disabled"];
/// The field of CreateOrder that carries a code.
pub const CHECKOUT_FIELD: &str = "discount_code";
/// How many discount codes a customer may have refused within one hour (at checkout and in previews together)
/// before every code is refused until the hour is over: guessing is how a private code would be found, and a
/// customer mistyping one needs a few tries, not dozens.
pub const MAX_REFUSED_PER_HOUR: i64 = 10;
/// The hour those refusals are counted in, in microseconds.
const REFUSAL_WINDOW_MICROS: i64 = 3_600_000_000;

/// The start of the hour `now` falls in (microseconds since the epoch), by which refusals are counted.
pub fn refusal_window(now: i64) -> i64 {
    now - now.rem_euclid(REFUSAL_WINDOW_MICROS)
}

/// When the hour that starts at `window` is over.
pub fn refusal_window_end(window: i64) -> i64 {
    window + REFUSAL_WINDOW_MICROS
}

/// What a code takes off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Off {
    /// A percentage of the subtotal, 1 to 99, rounded down to the minor unit.
    Percent(i64),
    /// A fixed amount, for orders in its currency whose subtotal is larger.
    Amount(Price),
    /// The shipping: the order pays none, and its discount is what shipping would have cost.
    FreeShipping,
}

/// A discount code as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscountCode {
    /// Upper case.
    pub code: String,
    /// For staff.
    pub description: String,
    /// What it takes off.
    pub off: Off,
    /// The smallest subtotal it applies to (and so the currency), if any.
    pub minimum: Option<Price>,
    /// From when it can be used (microseconds).
    pub start_time: i64,
    /// Until when, exclusive; None: no end.
    pub end_time: Option<i64>,
    /// Most uses in all; 0: no limit.
    pub max_redemptions: i64,
    /// One use per customer.
    pub once_per_customer: bool,
    /// Switched off by staff.
    pub disabled: bool,
    /// Orders using it now.
    pub times_redeemed: i64,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// Microseconds since the epoch.
    pub update_time: i64,
}

/// A code as staff send it, before it is checked ([`validate`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Draft {
    /// As typed.
    pub code: String,
    /// For staff.
    pub description: String,
    /// 0 when amount_off is given.
    pub percent_off: i32,
    /// None when percent_off is given.
    pub amount_off: Option<Price>,
    /// Free shipping instead of money off the items.
    pub free_shipping: bool,
    /// None: any subtotal.
    pub minimum: Option<Price>,
    /// None: from now (at creation).
    pub start_time: Option<i64>,
    /// None: no end.
    pub end_time: Option<i64>,
    /// 0: no limit.
    pub max_redemptions: i32,
    /// One use per customer.
    pub once_per_customer: bool,
    /// Switched off.
    pub disabled: bool,
}

/// A code as stored and looked up: trimmed and upper case, 3 to 32 letters, digits, '-' or '_'.
pub fn normalize_code(field: &str, raw: &str) -> Result<String, FieldViolation> {
    let code = raw.trim().to_ascii_uppercase();
    let chars = code.chars().count();
    let allowed = code.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !(MIN_CODE_CHARS..=MAX_CODE_CHARS).contains(&chars) || !allowed {
        return Err(FieldViolation::new(
            field,
            format!("must be {MIN_CODE_CHARS} to {MAX_CODE_CHARS} letters, digits, '-' or '_'"),
        ));
    }
    Ok(code)
}

fn check_money(field: &str, price: &Price, v: &mut Vec<FieldViolation>) {
    if let Err(e) = money::check_currency(&format!("{field}.currency"), &price.currency) {
        v.push(e);
    }
    if price.amount_minor <= 0 {
        v.push(FieldViolation::new(format!("{field}.amount_minor"), "must be more than 0"));
    }
}

/// Checks what may change after creation (also at creation): the description, the period and the limit.
fn check_terms(draft: &Draft, start_time: i64, v: &mut Vec<FieldViolation>) {
    if draft.description.chars().count() > MAX_TEXT {
        v.push(FieldViolation::new("discount_code.description", format!("must be at most {MAX_TEXT} characters")));
    }
    if draft.end_time.is_some_and(|end| end <= start_time) {
        v.push(FieldViolation::new("discount_code.end_time", "must be after start_time"));
    }
    if draft.max_redemptions < 0 {
        v.push(FieldViolation::new("discount_code.max_redemptions", "must not be negative (0: no limit)"));
    }
}

/// A new code from what staff sent at `now`, or every field that is wrong.
pub fn validate(draft: Draft, now: i64) -> Result<DiscountCode, Vec<FieldViolation>> {
    let mut v = Vec::new();
    let code = normalize_code("discount_code.code", &draft.code).map_err(|e| v.push(e)).ok();
    let start_time = draft.start_time.unwrap_or(now);
    check_terms(&draft, start_time, &mut v);
    if draft.end_time.is_some_and(|end| end <= now) {
        v.push(FieldViolation::new("discount_code.end_time", "must be in the future"));
    }
    let off = match (draft.percent_off, &draft.amount_off, draft.free_shipping) {
        (0, None, false) => {
            v.push(FieldViolation::new("discount_code.percent_off", "or amount_off or free_shipping is required"));
            None
        }
        (0, None, true) => Some(Off::FreeShipping),
        (_, _, true) => {
            v.push(FieldViolation::new(
                "discount_code.free_shipping",
                "cannot be given with percent_off or amount_off: choose one",
            ));
            None
        }
        (percent, None, false) if !(1..=99).contains(&percent) => {
            v.push(FieldViolation::new("discount_code.percent_off", "must be 1 to 99"));
            None
        }
        (percent, None, false) => Some(Off::Percent(i64::from(percent))),
        (0, Some(amount), false) => {
            check_money("discount_code.amount_off", amount, &mut v);
            Some(Off::Amount(amount.clone()))
        }
        (_, Some(_), false) => {
            v.push(FieldViolation::new("discount_code.amount_off", "cannot be given with percent_off: choose one"));
            None
        }
    };
    if let Some(minimum) = &draft.minimum {
        check_money("discount_code.minimum_subtotal", minimum, &mut v);
        if let Some(Off::Amount(amount)) = &off
            && amount.currency != minimum.currency
        {
            v.push(FieldViolation::new("discount_code.minimum_subtotal.currency", "must be amount_off's currency"));
        }
    }
    match (code, off, v.is_empty()) {
        (Some(code), Some(off), true) => Ok(DiscountCode {
            code,
            description: draft.description.trim().to_owned(),
            off,
            minimum: draft.minimum,
            start_time,
            end_time: draft.end_time,
            max_redemptions: i64::from(draft.max_redemptions),
            once_per_customer: draft.once_per_customer,
            disabled: draft.disabled,
            times_redeemed: 0,
            create_time: now,
            update_time: now,
        }),
        _ => Err(v),
    }
}

/// Checks an update mask: at least one field, and only [`UPDATABLE_PATHS`].
pub fn check_update_mask(paths: &[String]) -> Result<(), Vec<FieldViolation>> {
    platform::error::check_update_mask(paths, UPDATABLE_PATHS)
}

/// `current` with the fields of `draft` named by `paths`, checked, as of `now`.
pub fn apply_update(
    current: &DiscountCode,
    draft: &Draft,
    paths: &[String],
    now: i64,
) -> Result<DiscountCode, Vec<FieldViolation>> {
    check_update_mask(paths)?;
    let mut next = current.clone();
    for path in paths {
        match path.as_str() {
            "description" => next.description = draft.description.trim().to_owned(),
            "start_time" => next.start_time = draft.start_time.unwrap_or(current.create_time),
            "end_time" => next.end_time = draft.end_time,
            "max_redemptions" => next.max_redemptions = i64::from(draft.max_redemptions),
            "disabled" => next.disabled = draft.disabled,
            _ => {}
        }
    }
    let mut v = Vec::new();
    let terms = Draft {
        description: next.description.clone(),
        end_time: next.end_time,
        max_redemptions: i32::try_from(next.max_redemptions).unwrap_or(-1),
        ..Draft::default()
    };
    check_terms(&terms, next.start_time, &mut v);
    if !v.is_empty() {
        return Err(v);
    }
    next.update_time = now;
    Ok(next)
}

/// Why a code does not apply to an order. Each is told to the customer as a violation of `discount_code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No such code.
    Unknown,
    /// Switched off by staff.
    Disabled,
    /// Its period has not begun.
    NotYet,
    /// Its period is over.
    Expired,
    /// Every use allowed is taken.
    UsedUp,
    /// A once-per-customer code this customer used before (by an order not failed or cancelled).
    UsedBefore,
    /// For orders in another currency.
    OtherCurrency(String),
    /// For larger orders: at least this.
    BelowMinimum(Price),
    /// A fixed amount not smaller than the subtotal: for orders of more than this.
    NotAboveAmount(Price),
}

impl Refusal {
    /// The violation of CreateOrder's `discount_code` that tells the customer why.
    pub fn violation(&self) -> FieldViolation {
        let why = match self {
            Self::Unknown => "is not a discount code of this shop".to_owned(),
            Self::Disabled => "can no longer be used".to_owned(),
            Self::NotYet => "cannot be used yet".to_owned(),
            Self::Expired => "has expired".to_owned(),
            Self::UsedUp => "has been used up".to_owned(),
            Self::UsedBefore => "has been used by you already (once per customer)".to_owned(),
            Self::OtherCurrency(currency) => format!("is for orders in {currency}"),
            Self::BelowMinimum(min) => {
                format!("applies to orders of at least {}", money::format(&min.currency, min.amount_minor))
            }
            Self::NotAboveAmount(amount) => {
                format!("applies to orders of more than {}", money::format(&amount.currency, amount.amount_minor))
            }
        };
        FieldViolation::new(CHECKOUT_FIELD, why)
    }
}

/// What `code` takes off the items of `subtotal` at `now` (less than the subtotal, so an order always costs
/// something; 0 for free shipping, which takes the shipping off once it is known: [`settle`]), or why it does
/// not apply. The use limit is checked against the count read with the code; the store checks it
/// again, with once-per-customer, where the use is counted.
pub fn discount_for(code: &DiscountCode, subtotal: &Price, now: i64) -> Result<i64, Refusal> {
    if code.disabled {
        return Err(Refusal::Disabled);
    }
    if now < code.start_time {
        return Err(Refusal::NotYet);
    }
    if code.end_time.is_some_and(|end| now >= end) {
        return Err(Refusal::Expired);
    }
    if code.max_redemptions > 0 && code.times_redeemed >= code.max_redemptions {
        return Err(Refusal::UsedUp);
    }
    if let Some(minimum) = &code.minimum {
        if minimum.currency != subtotal.currency {
            return Err(Refusal::OtherCurrency(minimum.currency.clone()));
        }
        if subtotal.amount_minor < minimum.amount_minor {
            return Err(Refusal::BelowMinimum(minimum.clone()));
        }
    }
    match &code.off {
        Off::Percent(percent) => {
            // In i128: a subtotal near i64::MAX times 99 does not fit in i64; the result is below the subtotal.
            let off = i128::from(subtotal.amount_minor) * i128::from(*percent) / 100;
            Ok(i64::try_from(off).unwrap_or(0))
        }
        Off::Amount(amount) if amount.currency != subtotal.currency => {
            Err(Refusal::OtherCurrency(amount.currency.clone()))
        }
        Off::Amount(amount) if amount.amount_minor >= subtotal.amount_minor => {
            Err(Refusal::NotAboveAmount(amount.clone()))
        }
        Off::Amount(amount) => Ok(amount.amount_minor),
        Off::FreeShipping => Ok(0),
    }
}

/// What an order costs once its shipping is known: (its discount, its total) for items of `subtotal_minor`,
/// `items_off` taken off them by a code, and `shipping_minor` for shipping, which a free-shipping code takes off
/// too (the order's discount is then the shipping). None when the total does not fit.
pub fn settle(subtotal_minor: i64, items_off: i64, free_shipping: bool, shipping_minor: i64) -> Option<(i64, i64)> {
    let discount = if free_shipping { items_off.checked_add(shipping_minor)? } else { items_off };
    let total = subtotal_minor.checked_add(shipping_minor)?.checked_sub(discount)?;
    Some((discount, total))
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

    fn percent(p: i32) -> Draft {
        Draft { code: " summer-10 ".into(), percent_off: p, ..Draft::default() }
    }

    fn code(off: Off) -> DiscountCode {
        let draft = match off {
            Off::Percent(p) => percent(i32::try_from(p).expect("small")),
            Off::Amount(amount) => Draft { code: "TENOFF".into(), amount_off: Some(amount), ..Draft::default() },
            Off::FreeShipping => Draft { code: "FREESHIP".into(), free_shipping: true, ..Draft::default() },
        };
        validate(draft, 1_000).expect("valid")
    }

    #[test]
    fn codes_are_kept_in_upper_case_and_checked() {
        assert_eq!(normalize_code("c", " Summer_10-x ").expect("ok"), "SUMMER_10-X");
        for bad in ["", "ab", "has space", "ÄPFEL", "x".repeat(33).as_str(), "semi;colon"] {
            assert_eq!(normalize_code("c", bad).expect_err(bad).field, "c", "{bad:?}");
        }
    }

    #[test]
    fn a_new_code_takes_a_percentage_or_an_amount_not_both() {
        let made = validate(percent(10), 5).expect("valid");
        assert_eq!((made.code.as_str(), &made.off, made.start_time), ("SUMMER-10", &Off::Percent(10), 5));
        assert_eq!(fields(&validate(percent(0), 5).expect_err("none")), ["discount_code.percent_off"]);
        assert_eq!(fields(&validate(percent(100), 5).expect_err("all")), ["discount_code.percent_off"]);
        let both = Draft { amount_off: Some(eur(500)), ..percent(10) };
        assert_eq!(fields(&validate(both, 5).expect_err("both")), ["discount_code.amount_off"]);
        let bad_amount = Draft { amount_off: Some(Price { currency: "eur".into(), amount_minor: 0 }), ..percent(0) };
        assert_eq!(
            fields(&validate(bad_amount, 5).expect_err("bad amount")),
            ["discount_code.amount_off.currency", "discount_code.amount_off.amount_minor"]
        );
    }

    #[test]
    fn free_shipping_is_a_kind_of_its_own() {
        let made = validate(Draft { code: "freeship".into(), free_shipping: true, ..Draft::default() }, 5);
        assert_eq!(made.expect("valid").off, Off::FreeShipping);
        let with_percent = Draft { free_shipping: true, ..percent(10) };
        assert_eq!(fields(&validate(with_percent, 5).expect_err("both")), ["discount_code.free_shipping"]);
        // It takes nothing off the items, and applies above its minimum like any code.
        let minimum = DiscountCode { minimum: Some(eur(3000)), ..code(Off::FreeShipping) };
        assert_eq!(discount_for(&minimum, &eur(3000), 2_000), Ok(0));
        assert_eq!(discount_for(&minimum, &eur(2999), 2_000), Err(Refusal::BelowMinimum(eur(3000))));
    }

    #[test]
    fn settling_takes_the_shipping_off_for_free_shipping_only() {
        // 50.00 of items, 4.90 shipping: a 5.00 discount, or free shipping.
        assert_eq!(settle(5_000, 500, false, 490), Some((500, 4_990)));
        assert_eq!(settle(5_000, 0, true, 490), Some((490, 5_000)));
        assert_eq!(settle(5_000, 0, true, 0), Some((0, 5_000)), "shipping free anyway: nothing off");
        assert_eq!(settle(i64::MAX, 0, false, 1), None);
    }

    #[test]
    fn a_new_code_names_every_wrong_term() {
        let draft = Draft {
            code: "x".into(),
            description: "d".repeat(201),
            amount_off: Some(eur(500)),
            minimum: Some(Price { currency: "USD".into(), amount_minor: 1000 }),
            start_time: Some(50),
            end_time: Some(40),
            max_redemptions: -1,
            ..Draft::default()
        };
        assert_eq!(
            fields(&validate(draft, 100).expect_err("wrong")),
            [
                "discount_code.code",
                "discount_code.description",
                "discount_code.end_time",
                "discount_code.max_redemptions",
                "discount_code.end_time",
                "discount_code.minimum_subtotal.currency"
            ]
        );
    }

    #[test]
    fn a_percentage_is_rounded_down_and_an_amount_is_taken_whole() {
        assert_eq!(discount_for(&code(Off::Percent(10)), &eur(1999), 2_000), Ok(199));
        assert_eq!(discount_for(&code(Off::Percent(99)), &eur(1), 2_000), Ok(0));
        assert_eq!(discount_for(&code(Off::Percent(99)), &eur(i64::MAX), 2_000), Ok(9_131_138_316_486_228_048));
        assert_eq!(discount_for(&code(Off::Amount(eur(500))), &eur(501), 2_000), Ok(500));
    }

    #[test]
    fn a_code_refuses_orders_it_was_not_made_for() {
        let amount = code(Off::Amount(eur(500)));
        assert_eq!(discount_for(&amount, &eur(500), 2_000), Err(Refusal::NotAboveAmount(eur(500))));
        let usd = Price { currency: "USD".into(), amount_minor: 5000 };
        assert_eq!(discount_for(&amount, &usd, 2_000), Err(Refusal::OtherCurrency("EUR".into())));
        let with_minimum = DiscountCode { minimum: Some(eur(5000)), ..code(Off::Percent(10)) };
        assert_eq!(discount_for(&with_minimum, &eur(4999), 2_000), Err(Refusal::BelowMinimum(eur(5000))));
        assert_eq!(discount_for(&with_minimum, &usd, 2_000), Err(Refusal::OtherCurrency("EUR".into())));
        assert_eq!(discount_for(&with_minimum, &eur(5000), 2_000), Ok(500));
        let message = Refusal::BelowMinimum(eur(5000)).violation();
        assert_eq!(
            (message.field.as_str(), message.description.as_str()),
            ("discount_code", "applies to orders of at least EUR 50.00")
        );
    }

    #[test]
    fn a_code_applies_only_in_its_period_while_enabled_and_not_used_up() {
        let base = DiscountCode { start_time: 1_000, end_time: Some(2_000), ..code(Off::Percent(10)) };
        assert_eq!(discount_for(&base, &eur(100), 999), Err(Refusal::NotYet));
        assert_eq!(discount_for(&base, &eur(100), 1_000), Ok(10));
        assert_eq!(discount_for(&base, &eur(100), 2_000), Err(Refusal::Expired));
        let off = DiscountCode { disabled: true, ..base.clone() };
        assert_eq!(discount_for(&off, &eur(100), 1_500), Err(Refusal::Disabled));
        let used = DiscountCode { max_redemptions: 3, times_redeemed: 3, ..base.clone() };
        assert_eq!(discount_for(&used, &eur(100), 1_500), Err(Refusal::UsedUp));
        let left = DiscountCode { times_redeemed: 2, ..used };
        assert_eq!(discount_for(&left, &eur(100), 1_500), Ok(10));
    }

    #[test]
    fn an_update_changes_the_named_terms_only_and_checks_them() {
        let current = DiscountCode { create_time: 10, start_time: 10, ..code(Off::Percent(10)) };
        let draft = Draft { description: "Xmas".into(), end_time: Some(5_000), disabled: true, ..Draft::default() };
        let paths = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let next = apply_update(&current, &draft, &paths(&["end_time", "disabled"]), 77).expect("ok");
        assert_eq!((next.end_time, next.disabled, next.description.as_str()), (Some(5_000), true, ""));
        assert_eq!((next.off, next.update_time), (current.off.clone(), 77));
        let early = Draft { end_time: Some(5), ..Draft::default() };
        assert_eq!(
            fields(&apply_update(&current, &early, &paths(&["end_time"]), 77).expect_err("early")),
            ["discount_code.end_time"]
        );
        assert_eq!(
            fields(&apply_update(&current, &draft, &paths(&["percent_off"]), 77).expect_err("fixed")),
            ["update_mask"]
        );
        assert_eq!(fields(&apply_update(&current, &draft, &[], 77).expect_err("empty")), ["update_mask"]);
    }
}
