//! Tax rates, free of I/O: how staff describe one, and how much tax an order's total includes.
//!
//! The shop's prices include tax, so a rate changes no price: an order shows the tax contained in what it
//! charged, at its shipping country's rate when placed.

use platform::error::FieldViolation;

/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 40;
/// The highest rate, in basis points (100%).
pub const MAX_RATE_BASIS_POINTS: u32 = 10_000;
/// Basis points in one whole (100%).
const WHOLE: i128 = 10_000;

/// A country's tax rate as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaxRate {
    /// ISO 3166-1 alpha-2, upper case.
    pub country: String,
    /// What receipts call it, e.g. "VAT".
    pub name: String,
    /// Hundredths of a percent: 1900 is 19%.
    pub rate_basis_points: u32,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// Microseconds since the epoch.
    pub update_time: i64,
}

/// The tax an order's total includes, at one rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncludedTax {
    /// The rate's name when the order was placed.
    pub name: String,
    /// The rate when the order was placed, in basis points.
    pub rate_basis_points: u32,
    /// The tax, in the total's minor units.
    pub amount_minor: i64,
}

/// A country code as stored and looked up: trimmed and upper case, checked as every address's country.
pub fn normalize_country(field: &str, raw: &str) -> Result<String, FieldViolation> {
    let country = raw.trim().to_ascii_uppercase();
    platform::address::check_country(field, &country)?;
    Ok(country)
}

/// The rate staff set for `country`, first set at `create_time` and written at `now`, or every field that is
/// wrong.
pub fn validate(
    country: &str,
    name: &str,
    rate_basis_points: u32,
    create_time: i64,
    now: i64,
) -> Result<TaxRate, Vec<FieldViolation>> {
    let mut v = Vec::new();
    let country = normalize_country("country", country).map_err(|e| v.push(e)).ok();
    let name = name.trim();
    if name.is_empty() {
        v.push(FieldViolation::new("tax_rate.name", "is required, e.g. \"VAT\""));
    } else if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        v.push(FieldViolation::new(
            "tax_rate.name",
            format!("must be at most {MAX_NAME_CHARS} characters on one line"),
        ));
    }
    if rate_basis_points > MAX_RATE_BASIS_POINTS {
        v.push(FieldViolation::new(
            "tax_rate.rate_basis_points",
            format!("must be at most {MAX_RATE_BASIS_POINTS} (100%); 1900 is 19%"),
        ));
    }
    match country {
        Some(country) if v.is_empty() => {
            Ok(TaxRate { country, name: name.to_owned(), rate_basis_points, create_time, update_time: now })
        }
        _ => Err(v),
    }
}

/// The tax included in `gross_minor` (a total, tax included) at `rate`: gross × rate / (1 + rate), rounded half
/// up to the minor unit. A negative gross (never an order's) includes none.
pub fn included(rate: &TaxRate, gross_minor: i64) -> IncludedTax {
    let rate_bp = i128::from(rate.rate_basis_points);
    let denominator = WHOLE + rate_bp;
    let gross = i128::from(gross_minor.max(0));
    // Half up: add half the denominator before dividing (all in i128: no overflow for any i64 gross).
    let amount = (2 * gross * rate_bp + denominator) / (2 * denominator);
    IncludedTax {
        name: rate.name.clone(),
        rate_basis_points: rate.rate_basis_points,
        // Never more than the gross, which fits in an i64.
        amount_minor: i64::try_from(amount).unwrap_or(gross_minor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(bp: u32) -> TaxRate {
        TaxRate { country: "DE".into(), name: "MwSt.".into(), rate_basis_points: bp, create_time: 1, update_time: 1 }
    }

    #[test]
    fn the_tax_in_a_total_is_rounded_half_up() {
        // 119.00 at 19% holds 19.00.
        assert_eq!(included(&rate(1900), 11_900).amount_minor, 1_900);
        // 10.00 at 19%: 1.5966 → 1.60.
        assert_eq!(included(&rate(1900), 1_000).amount_minor, 160);
        // 1.07 at 7%: exactly 0.07.
        assert_eq!(included(&rate(700), 107).amount_minor, 7);
        // 0.21 at 5%: exactly 0.01; 0.01 at 100%: 0.005 → 0.01 (half up).
        assert_eq!(included(&rate(500), 21).amount_minor, 1);
        assert_eq!(included(&rate(10_000), 1).amount_minor, 1);
        assert_eq!(included(&rate(0), 5_000).amount_minor, 0);
        assert_eq!(included(&rate(1900), 0).amount_minor, 0);
        assert_eq!(included(&rate(1900), -5).amount_minor, 0);
        // The largest total still fits.
        assert_eq!(included(&rate(10_000), i64::MAX).amount_minor, i64::MAX / 2 + 1);
        let tax = included(&rate(2000), 12_000);
        assert_eq!((tax.name.as_str(), tax.rate_basis_points, tax.amount_minor), ("MwSt.", 2000, 2_000));
    }

    #[test]
    fn a_rate_is_checked_field_by_field() {
        let rate = validate(" de ", " VAT ", 1900, 5, 9).expect("valid");
        assert_eq!(
            rate,
            TaxRate {
                country: "DE".into(),
                name: "VAT".into(),
                rate_basis_points: 1900,
                create_time: 5,
                update_time: 9
            }
        );
        assert!(validate("DE", "Zero", 0, 1, 1).is_ok());
        assert!(validate("DE", "All", 10_000, 1, 1).is_ok());

        let fields = |r: Result<TaxRate, Vec<FieldViolation>>| -> Vec<String> {
            r.expect_err("invalid").into_iter().map(|v| v.field).collect()
        };
        assert_eq!(fields(validate("XX1", "VAT", 1900, 1, 1)), ["country"]);
        assert_eq!(fields(validate("DE", "  ", 1900, 1, 1)), ["tax_rate.name"]);
        assert_eq!(fields(validate("DE", &"x".repeat(41), 1900, 1, 1)), ["tax_rate.name"]);
        assert_eq!(fields(validate("DE", "V\nAT", 1900, 1, 1)), ["tax_rate.name"]);
        assert!(validate("DE", &"é".repeat(40), 1900, 1, 1).is_ok());
        assert_eq!(fields(validate("", "", 10_001, 1, 1)), ["country", "tax_rate.name", "tax_rate.rate_basis_points"]);
    }
}
