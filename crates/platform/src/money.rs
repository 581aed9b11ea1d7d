//! Money as people read it. Amounts are integers of minor units everywhere (cents for EUR, yen for JPY); this
//! turns them into text for mails and messages, with as many digits as the currency has.

/// Currencies whose minor unit is not a hundredth (ISO 4217 exponents); every other has 2.
const EXPONENTS: &[(&str, u32)] = &[
    ("BIF", 0),
    ("CLP", 0),
    ("DJF", 0),
    ("GNF", 0),
    ("ISK", 0),
    ("JPY", 0),
    ("KMF", 0),
    ("KRW", 0),
    ("PYG", 0),
    ("RWF", 0),
    ("UGX", 0),
    ("UYI", 0),
    ("VND", 0),
    ("VUV", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("XPF", 0),
    ("BHD", 3),
    ("IQD", 3),
    ("JOD", 3),
    ("KWD", 3),
    ("LYD", 3),
    ("OMR", 3),
    ("TND", 3),
    ("CLF", 4),
    ("UYW", 4),
];

/// Digits after the decimal point of `currency` (2 unless the table says otherwise).
pub fn currency_exponent(currency: &str) -> u32 {
    EXPONENTS.iter().find(|(code, _)| code.eq_ignore_ascii_case(currency)).map_or(2, |(_, e)| *e)
}

/// `EUR 19.99`, `JPY 500`, `KWD 1.250`, `EUR -0.05`: the code, then the amount with the currency's digits.
pub fn format(currency: &str, amount_minor: i64) -> String {
    let exponent = currency_exponent(currency);
    let sign = if amount_minor < 0 { "-" } else { "" };
    let minor = amount_minor.unsigned_abs();
    let code = currency.to_ascii_uppercase();
    if exponent == 0 {
        return format!("{code} {sign}{minor}");
    }
    let scale = 10u64.pow(exponent);
    let width = exponent as usize;
    format!("{code} {sign}{}.{:0width$}", minor / scale, minor % scale)
}

/// A tax rate in basis points as a percentage without trailing zeros: 1900 is `19%`, 1750 `17.5%`, 725 `7.25%`.
pub fn format_rate(basis_points: u32) -> String {
    let (whole, hundredths) = (basis_points / 100, basis_points % 100);
    match hundredths {
        0 => format!("{whole}%"),
        h if h % 10 == 0 => format!("{whole}.{}%", h / 10),
        h => format!("{whole}.{h:02}%"),
    }
}

/// Whether `code` looks like an ISO 4217 currency code as the platform stores them: three upper-case letters.
pub fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

/// [`is_currency_code`] as a violation of `field` that says what is expected.
pub fn check_currency(field: &str, code: &str) -> Result<(), crate::error::FieldViolation> {
    if is_currency_code(code) {
        return Ok(());
    }
    Err(crate::error::FieldViolation::new(field, "must be an ISO 4217 code of 3 upper-case letters, e.g. EUR"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tax_rates_read_as_percentages() {
        let shown: Vec<String> = [1900, 1750, 725, 705, 0, 10_000, 5].into_iter().map(format_rate).collect();
        assert_eq!(shown, ["19%", "17.5%", "7.25%", "7.05%", "0%", "100%", "0.05%"]);
    }

    fn money(currency: &str, amount_minor: i64) -> String {
        format(currency, amount_minor)
    }

    #[test]
    fn amounts_have_the_digits_of_their_currency() {
        assert_eq!(money("EUR", 1999), "EUR 19.99");
        assert_eq!(money("eur", 5), "EUR 0.05");
        assert_eq!(money("USD", 100_000), "USD 1000.00");
        assert_eq!(money("JPY", 500), "JPY 500");
        assert_eq!(money("KRW", 0), "KRW 0");
        assert_eq!(money("KWD", 1250), "KWD 1.250");
        assert_eq!(money("CLF", 12_345), "CLF 1.2345");
        assert_eq!(money("EUR", -5), "EUR -0.05");
        assert_eq!(money("EUR", i64::MIN), "EUR -92233720368547758.08");
        assert_eq!((currency_exponent("jpy"), currency_exponent("XYZ")), (0, 2));
    }

    #[test]
    fn currency_codes_are_three_upper_case_letters() {
        assert!(is_currency_code("EUR"));
        assert!(!is_currency_code("eur"));
        assert!(!is_currency_code("EU"));
        assert!(!is_currency_code("EURO"));
    }
}
