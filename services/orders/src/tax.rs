//! Tax rates, free of I/O: how staff describe one, and how much tax an order's total includes.
//!
//! The shop's prices include tax, so a rate changes no price: an order shows the tax contained in what it
//! charged, at its shipping country's rates when placed: the standard one, and the reduced one for products in
//! the reduced class (the catalog's `tax_class`) where the country has one.

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
    /// The rate of products in the reduced class; None: they pay the standard rate.
    pub reduced_rate_basis_points: Option<u32>,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// Microseconds since the epoch.
    pub update_time: i64,
}

/// What an order's total includes at one rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaxPart {
    /// The rate, in basis points.
    pub rate_basis_points: u32,
    /// What was charged at this rate, tax included, in the total's minor units.
    pub taxable_minor: i64,
    /// The tax in it.
    pub amount_minor: i64,
}

/// The tax an order's total includes, at its shipping country's rates when it was placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderTax {
    /// The rate's name, e.g. "VAT".
    pub name: String,
    /// The part at the standard rate; None when every product was in the reduced class.
    pub standard: Option<TaxPart>,
    /// The part at the reduced rate; None when no product was, or the country has no reduced rate.
    pub reduced: Option<TaxPart>,
}

impl OrderTax {
    /// Its parts: the standard one first.
    pub fn parts(&self) -> impl Iterator<Item = TaxPart> {
        self.standard.into_iter().chain(self.reduced)
    }

    /// All the tax.
    pub fn amount_minor(&self) -> i64 {
        self.parts().map(|p| p.amount_minor).sum()
    }
}

/// A country code as stored and looked up: trimmed and upper case, checked as every address's country.
pub fn normalize_country(field: &str, raw: &str) -> Result<String, FieldViolation> {
    let country = raw.trim().to_ascii_uppercase();
    platform::address::check_country(field, &country)?;
    Ok(country)
}

/// A tax rate as staff send it, before it is checked ([`validate`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Draft {
    /// As typed.
    pub country: String,
    /// What receipts call it.
    pub name: String,
    /// The standard rate.
    pub rate_basis_points: u32,
    /// The reduced rate, if the country has one.
    pub reduced_rate_basis_points: Option<u32>,
}

fn check_rate(field: &str, rate_basis_points: u32, v: &mut Vec<FieldViolation>) {
    if rate_basis_points > MAX_RATE_BASIS_POINTS {
        v.push(FieldViolation::new(field, format!("must be at most {MAX_RATE_BASIS_POINTS} (100%); 1900 is 19%")));
    }
}

/// The rate staff set, first set at `create_time` and written at `now`, or every field that is wrong.
pub fn validate(draft: Draft, create_time: i64, now: i64) -> Result<TaxRate, Vec<FieldViolation>> {
    let mut v = Vec::new();
    let country = normalize_country("country", &draft.country).map_err(|e| v.push(e)).ok();
    let name = draft.name.trim();
    if name.is_empty() {
        v.push(FieldViolation::new("tax_rate.name", "is required, e.g. \"VAT\""));
    } else if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        v.push(FieldViolation::new(
            "tax_rate.name",
            format!("must be at most {MAX_NAME_CHARS} characters on one line"),
        ));
    }
    check_rate("tax_rate.rate_basis_points", draft.rate_basis_points, &mut v);
    if let Some(reduced) = draft.reduced_rate_basis_points {
        check_rate("tax_rate.reduced_rate.rate_basis_points", reduced, &mut v);
    }
    match country {
        Some(country) if v.is_empty() => Ok(TaxRate {
            country,
            name: name.to_owned(),
            rate_basis_points: draft.rate_basis_points,
            reduced_rate_basis_points: draft.reduced_rate_basis_points,
            create_time,
            update_time: now,
        }),
        _ => Err(v),
    }
}

/// `numerator / denominator` rounded half up, for non-negative numbers (in i128: no overflow for any i64 inputs).
fn div_half_up(numerator: i128, denominator: i128) -> i128 {
    (2 * numerator + denominator) / (2 * denominator)
}

/// The tax included in `taxable_minor` (tax included) at `rate_basis_points`: taxable × rate / (1 + rate),
/// rounded half up to the minor unit.
fn part(rate_basis_points: u32, taxable_minor: i64) -> TaxPart {
    let rate = i128::from(rate_basis_points);
    let amount = div_half_up(i128::from(taxable_minor.max(0)) * rate, WHOLE + rate);
    TaxPart {
        rate_basis_points,
        taxable_minor,
        // Never more than the taxable amount, which fits in an i64.
        amount_minor: i64::try_from(amount).unwrap_or(taxable_minor),
    }
}

/// The tax included in an order's `total_minor` at `rate`, where `reduced_minor` of the items' `items_minor`
/// (before any discount) is for products in the reduced class.
///
/// A discount and shipping are shared out like the items: the total splits between the two rates in proportion
/// to what the items at each cost (the reduced part rounded half up, the standard part the rest), as tax
/// authorities that tax shipping with the goods it carries expect.
pub fn included(rate: &TaxRate, total_minor: i64, items_minor: i64, reduced_minor: i64) -> OrderTax {
    let reduced_rate = rate.reduced_rate_basis_points.filter(|r| *r != rate.rate_basis_points);
    let (standard, reduced) = match reduced_rate {
        // Without a reduced rate of its own, the country taxes every product at the standard rate.
        Some(reduced_rate) if reduced_minor > 0 && items_minor > 0 => {
            let share =
                div_half_up(i128::from(total_minor.max(0)) * i128::from(reduced_minor), i128::from(items_minor));
            let reduced_taxable = i64::try_from(share).unwrap_or(total_minor).min(total_minor);
            let standard_taxable = total_minor - reduced_taxable;
            (
                (standard_taxable > 0).then(|| part(rate.rate_basis_points, standard_taxable)),
                Some(part(reduced_rate, reduced_taxable)),
            )
        }
        _ => (Some(part(rate.rate_basis_points, total_minor)), None),
    };
    OrderTax { name: rate.name.clone(), standard, reduced }
}

/// The demo shop's rates (`mercato up --demo`): the standard and reduced VAT of the countries its demo
/// customers are likely in.
pub fn demo_rates(now: i64) -> Vec<TaxRate> {
    let rate = |country: &str, name: &str, standard, reduced| TaxRate {
        country: country.to_owned(),
        name: name.to_owned(),
        rate_basis_points: standard,
        reduced_rate_basis_points: Some(reduced),
        create_time: now,
        update_time: now,
    };
    vec![
        rate("AT", "USt.", 2000, 1000),
        rate("DE", "MwSt.", 1900, 700),
        rate("FR", "TVA", 2000, 550),
        rate("NL", "BTW", 2100, 900),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(bp: u32, reduced: Option<u32>) -> TaxRate {
        TaxRate {
            country: "DE".into(),
            name: "MwSt.".into(),
            rate_basis_points: bp,
            reduced_rate_basis_points: reduced,
            create_time: 1,
            update_time: 1,
        }
    }

    /// (rate, taxable, amount) of each part.
    fn parts(tax: &OrderTax) -> Vec<(u32, i64, i64)> {
        tax.parts().map(|p| (p.rate_basis_points, p.taxable_minor, p.amount_minor)).collect()
    }

    fn one_rate(bp: u32, total: i64) -> i64 {
        included(&rate(bp, None), total, total, 0).amount_minor()
    }

    #[test]
    fn the_tax_in_a_total_is_rounded_half_up() {
        // 119.00 at 19% holds 19.00.
        assert_eq!(one_rate(1900, 11_900), 1_900);
        // 10.00 at 19%: 1.5966 → 1.60.
        assert_eq!(one_rate(1900, 1_000), 160);
        // 1.07 at 7%: exactly 0.07.
        assert_eq!(one_rate(700, 107), 7);
        // 0.21 at 5%: exactly 0.01; 0.01 at 100%: 0.005 → 0.01 (half up).
        assert_eq!(one_rate(500, 21), 1);
        assert_eq!(one_rate(10_000, 1), 1);
        assert_eq!(one_rate(0, 5_000), 0);
        assert_eq!(one_rate(1900, 0), 0);
        assert_eq!(one_rate(1900, -5), 0);
        // The largest total still fits.
        assert_eq!(one_rate(10_000, i64::MAX), i64::MAX / 2 + 1);
        let tax = included(&rate(2000, None), 12_000, 12_000, 0);
        assert_eq!((tax.name.as_str(), parts(&tax)), ("MwSt.", vec![(2000, 12_000, 2_000)]));
    }

    #[test]
    fn a_total_splits_between_the_rates_as_the_items_do() {
        let de = rate(1900, Some(700));
        // Tea 29.00 (7%) and a mug 10.00 (19%), 4.90 shipping, 3.90 off: 40.00 charged. The reduced part is
        // 40.00 × 29 / 39 = 29.74; the standard part the rest, 10.26.
        let tax = included(&de, 4_000, 3_900, 2_900);
        assert_eq!(parts(&tax), vec![(1900, 1_026, 164), (700, 2_974, 195)]);
        assert_eq!(tax.amount_minor(), 359);
        assert_eq!(tax.parts().map(|p| p.taxable_minor).sum::<i64>(), 4_000, "the parts add up to the total");
        // Only reduced products: one part, at the reduced rate.
        assert_eq!(parts(&included(&de, 1_070, 1_070, 1_070)), vec![(700, 1_070, 70)]);
        // No reduced products, or a country without a reduced rate (or the same): one part at the standard rate.
        assert_eq!(parts(&included(&de, 1_190, 1_190, 0)), vec![(1900, 1_190, 190)]);
        assert_eq!(parts(&included(&rate(1900, None), 1_190, 1_190, 1_190)), vec![(1900, 1_190, 190)]);
        assert_eq!(parts(&included(&rate(1900, Some(1900)), 1_190, 1_190, 500)), vec![(1900, 1_190, 190)]);
        // A zero reduced rate (zero-rated food) still shows its part.
        assert_eq!(parts(&included(&rate(2000, Some(0)), 1_200, 1_200, 600)), vec![(2000, 600, 100), (0, 600, 0)]);
        // Half a cent goes to the reduced part: 0.03 × 1 / 2 = 0.015 → 0.02.
        assert_eq!(parts(&included(&de, 3, 2, 1)), vec![(1900, 1, 0), (700, 2, 0)]);
    }

    fn draft(country: &str, name: &str, bp: u32, reduced: Option<u32>) -> Draft {
        Draft { country: country.into(), name: name.into(), rate_basis_points: bp, reduced_rate_basis_points: reduced }
    }

    #[test]
    fn a_rate_is_checked_field_by_field() {
        let rate = validate(draft(" de ", " VAT ", 1900, Some(700)), 5, 9).expect("valid");
        assert_eq!(
            rate,
            TaxRate {
                country: "DE".into(),
                name: "VAT".into(),
                rate_basis_points: 1900,
                reduced_rate_basis_points: Some(700),
                create_time: 5,
                update_time: 9
            }
        );
        assert!(validate(draft("DE", "Zero", 0, Some(0)), 1, 1).is_ok());
        assert!(validate(draft("DE", "All", 10_000, None), 1, 1).is_ok());

        let fields = |r: Result<TaxRate, Vec<FieldViolation>>| -> Vec<String> {
            r.expect_err("invalid").into_iter().map(|v| v.field).collect()
        };
        assert_eq!(fields(validate(draft("XX1", "VAT", 1900, None), 1, 1)), ["country"]);
        assert_eq!(fields(validate(draft("DE", "  ", 1900, None), 1, 1)), ["tax_rate.name"]);
        assert_eq!(fields(validate(draft("DE", &"x".repeat(41), 1900, None), 1, 1)), ["tax_rate.name"]);
        assert_eq!(fields(validate(draft("DE", "V\nAT", 1900, None), 1, 1)), ["tax_rate.name"]);
        assert!(validate(draft("DE", &"é".repeat(40), 1900, None), 1, 1).is_ok());
        assert_eq!(
            fields(validate(draft("", "", 10_001, Some(10_001)), 1, 1)),
            ["country", "tax_rate.name", "tax_rate.rate_basis_points", "tax_rate.reduced_rate.rate_basis_points"]
        );
    }
}
