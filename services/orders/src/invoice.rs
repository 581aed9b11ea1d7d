//! Invoices and credit notes, free of I/O: what they are, how they are numbered, and the share of an invoice's
//! tax a refund gives back.
//!
//! An order's invoice is written once its stock is sold, just before the move that confirms it
//! ([`crate::store::Store::issue_invoice`]); a refund's credit note when the payment's `payment.refunded` event
//! arrives ([`crate::events`]). Each kind is numbered without gaps in a series per calendar year (UTC), in the
//! transaction that writes the document.

use platform::error::FieldViolation;

use crate::domain::Address;
use crate::tax::{OrderTax, TaxPart};

/// What a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An order's invoice: what it charged.
    Invoice,
    /// A refund's credit note: what was given back of an invoiced order.
    CreditNote,
}

impl Kind {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invoice => "invoice",
            Self::CreditNote => "credit_note",
        }
    }

    /// From storage.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "invoice" => Some(Self::Invoice),
            "credit_note" => Some(Self::CreditNote),
            _ => None,
        }
    }

    /// The start of its numbers.
    fn prefix(self) -> &'static str {
        match self {
            Self::Invoice => "INV",
            Self::CreditNote => "CN",
        }
    }
}

/// The series a document of `kind` issued at `issue_time` (microseconds since the epoch) is numbered in: one per
/// kind and calendar year (UTC), e.g. "INV-2026".
pub fn series(kind: Kind, issue_time: i64) -> String {
    let (year, _, _) = platform::time::date_of_micros(issue_time);
    format!("{}-{year}", kind.prefix())
}

/// The `n`th number of `series`: "INV-2026-000042". Six digits sort in order up to a million documents a year;
/// more still number without gaps, only wider.
pub fn number(series: &str, n: i64) -> String {
    format!("{series}-{n:06}")
}

/// Who issues the shop's invoices, as each document names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuer {
    /// The legal name (`name`) and postal address.
    pub address: Address,
    /// The VAT identification number; empty: none.
    pub vat_id: String,
}

/// The demo shop's issuer (`mercato up --demo`): a made-up company, and a VAT id of the right shape.
pub fn demo_issuer() -> Issuer {
    Issuer {
        address: Address {
            name: "Mercato Demo GmbH".into(),
            line1: "Beispielstr. 1".into(),
            line2: String::new(),
            city: "Berlin".into(),
            region: String::new(),
            postal_code: "10115".into(),
            country: "DE".into(),
        },
        vat_id: "DE000000000".into(),
    }
}

/// A VAT identification number as kept: without spaces, dots or dashes, in upper case; empty stays empty.
/// Two letters (the country, "EL" for Greece) and 2 to 12 letters or digits, as the EU's numbers and others
/// (GB, CH, NO) are written.
pub fn normalize_vat_id(field: &str, raw: &str) -> Result<String, FieldViolation> {
    let id: String = raw.chars().filter(|c| !matches!(c, ' ' | '.' | '-')).collect::<String>().to_ascii_uppercase();
    // Split only ASCII: a byte index may fall inside another character.
    let well_formed = id.is_ascii() && {
        let (prefix, rest) = id.split_at(id.len().min(2));
        prefix.len() == 2
            && prefix.bytes().all(|b| b.is_ascii_uppercase())
            && (2..=12).contains(&rest.len())
            && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    };
    if id.is_empty() || well_formed {
        Ok(id)
    } else {
        Err(FieldViolation::new(field, "must be two letters and 2 to 12 letters or digits, e.g. \"DE123456789\""))
    }
}

/// An invoice or a credit note as stored; what it shares with its order (items, address, payment) is read
/// from the order, which never changes those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    /// "INV-2026-000001" or "CN-2026-000001".
    pub number: String,
    /// Invoice or credit note.
    pub kind: Kind,
    /// The order it is for.
    pub order_id: String,
    /// The customer who placed the order.
    pub customer_id: String,
    /// A credit note: the invoice it corrects; empty on an invoice.
    pub corrected_invoice: String,
    /// A credit note: the refund it documents; empty on an invoice.
    pub refund_id: String,
    /// ISO 4217.
    pub currency: String,
    /// An invoice: the order's total; a credit note: the amount given back.
    pub total_minor: i64,
    /// The tax the total includes; None when the order's country had no rate.
    pub tax: Option<OrderTax>,
    /// Microseconds since the epoch.
    pub issue_time: i64,
    /// Who issued it, as set then; None when the shop had not said.
    pub issuer: Option<Issuer>,
}

/// `value × numerator / denominator` rounded half up, for non-negative numbers and a positive denominator.
pub(crate) fn share(value: i64, numerator: i64, denominator: i64) -> i64 {
    let exact =
        (2 * i128::from(value) * i128::from(numerator) + i128::from(denominator)) / (2 * i128::from(denominator));
    // At most `value` when numerator ≤ denominator, which fits in an i64.
    i64::try_from(exact).unwrap_or(value)
}

/// The tax a refund of `refund_minor` gives back of an invoice of `total_minor` that included `tax`.
///
/// All of it is `refund × tax / total`, rounded half up: what the payments service books back to the tax owed
/// for the same refund, so a credit note and the ledger agree to the cent. The reduced part (and the reduced part
/// of what was given back) is its own share rounded half up; the standard part is the rest.
pub fn credit_note_tax(tax: &OrderTax, total_minor: i64, refund_minor: i64) -> OrderTax {
    let refund = refund_minor.clamp(0, total_minor.max(0));
    if total_minor <= 0 {
        return OrderTax { name: tax.name.clone(), standard: None, reduced: None };
    }
    let all_tax = share(tax.amount_minor(), refund, total_minor).min(tax.amount_minor());
    let reduced = tax.reduced.map(|part| {
        let taxable_minor =
            if tax.standard.is_some() { share(part.taxable_minor, refund, total_minor).min(refund) } else { refund };
        let amount_minor =
            if tax.standard.is_some() { share(part.amount_minor, refund, total_minor).min(all_tax) } else { all_tax };
        TaxPart { rate_basis_points: part.rate_basis_points, taxable_minor, amount_minor }
    });
    let (reduced_taxable, reduced_tax) = reduced.map_or((0, 0), |p| (p.taxable_minor, p.amount_minor));
    let standard = tax.standard.map(|part| TaxPart {
        rate_basis_points: part.rate_basis_points,
        taxable_minor: refund - reduced_taxable,
        amount_minor: all_tax - reduced_tax,
    });
    OrderTax { name: tax.name.clone(), standard, reduced }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(rate_basis_points: u32, taxable_minor: i64, amount_minor: i64) -> TaxPart {
        TaxPart { rate_basis_points, taxable_minor, amount_minor }
    }

    /// The invoice of the hand-checked German order: 53.60 in all, 27.41 at 19% (4.38) and 26.19 at 7% (1.71).
    fn german() -> OrderTax {
        OrderTax { name: "MwSt.".into(), standard: Some(part(1900, 2741, 438)), reduced: Some(part(700, 2619, 171)) }
    }

    #[test]
    fn numbers_run_per_kind_and_year() {
        // 2026-12-31T23:59:59Z and a second later.
        let (last, first) = (1_798_761_599_000_000, 1_798_761_600_000_000);
        assert_eq!(series(Kind::Invoice, last), "INV-2026");
        assert_eq!(series(Kind::Invoice, first), "INV-2027");
        assert_eq!(series(Kind::CreditNote, last), "CN-2026");
        assert_eq!(number("INV-2026", 42), "INV-2026-000042");
        assert_eq!(number("CN-2027", 1_234_567), "CN-2027-1234567");
        for kind in [Kind::Invoice, Kind::CreditNote] {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::parse("receipt"), None);
    }

    #[test]
    fn vat_ids_are_kept_in_one_spelling_and_checked() {
        assert_eq!(normalize_vat_id("vat_id", " de 123.456-789 "), Ok("DE123456789".to_owned()));
        assert_eq!(normalize_vat_id("vat_id", "gb123456789"), Ok("GB123456789".to_owned()));
        assert_eq!(normalize_vat_id("vat_id", ""), Ok(String::new()), "none");
        for wrong in ["D", "DE1", "1E12345", "DE1234567890123", "DE12345/6", "DÉ123456"] {
            assert_eq!(normalize_vat_id("vat_id", wrong).map_err(|v| v.field), Err("vat_id".to_owned()), "{wrong}");
        }
    }

    #[test]
    fn a_full_refund_gives_back_all_the_tax() {
        assert_eq!(credit_note_tax(&german(), 5360, 5360), german());
    }

    #[test]
    fn a_partial_refund_gives_back_its_share_as_the_ledger_does() {
        // 10.00 of 53.60: all the tax 6.09 × 10 / 53.60 = 1.136 → 1.14 (the ledger's share); the reduced part
        // 1.71 × 10 / 53.60 = 0.319 → 0.32 of 26.19 × 10 / 53.60 = 4.886 → 4.89; the standard part the rest.
        let note = credit_note_tax(&german(), 5360, 1000);
        assert_eq!(note.standard, Some(part(1900, 511, 82)));
        assert_eq!(note.reduced, Some(part(700, 489, 32)));
        assert_eq!(note.amount_minor(), 114);
        assert_eq!(note.name, "MwSt.");
    }

    #[test]
    fn one_part_takes_all_of_the_share() {
        let standard_only = OrderTax { name: "VAT".into(), standard: Some(part(2000, 1200, 200)), reduced: None };
        assert_eq!(credit_note_tax(&standard_only, 1200, 600).standard, Some(part(2000, 600, 100)));
        let reduced_only = OrderTax { name: "VAT".into(), standard: None, reduced: Some(part(500, 2100, 100)) };
        let note = credit_note_tax(&reduced_only, 2100, 700);
        // 1.00 × 7 / 21 = 0.333 → 0.33.
        assert_eq!((note.standard, note.reduced), (None, Some(part(500, 700, 33))));
    }

    #[test]
    fn a_refund_never_gives_back_more_than_was_charged() {
        assert_eq!(credit_note_tax(&german(), 5360, 9999), german());
        assert_eq!(credit_note_tax(&german(), 5360, -5).amount_minor(), 0);
        assert_eq!(credit_note_tax(&german(), 0, 100).amount_minor(), 0);
    }
}
