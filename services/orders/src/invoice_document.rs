//! An invoice or credit note as a page to print or keep (`GetInvoiceDocument`): HTML from one embedded template
//! (`templates/invoice.html`, every value escaped), its words in English or German.

use minijinja::{Environment, Value, context};
use platform::error::FieldViolation;
use platform::money::{format as money, format_rate};

use crate::domain::Address;
use crate::error::Error;
use crate::invoice::{Invoice, Kind};
use crate::store::Order;

/// The languages a document is written in; the first is the default.
pub const LANGUAGES: &[&str] = &["en", "de"];

const TEMPLATE: &str = include_str!("../templates/invoice.html");

/// The template, parsed once. A typo in it fails every request (and the tests) instead of leaving a blank on a
/// customer's invoice; the name's .html turns escaping on: names and addresses are the customers' and staff's words.
static TEMPLATES: std::sync::LazyLock<Result<Environment<'static>, minijinja::Error>> =
    std::sync::LazyLock::new(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.add_template("invoice.html", TEMPLATE)?;
        Ok(env)
    });

/// The words of a document in one language.
struct Words {
    invoice: &'static str,
    credit_note: &'static str,
    number: &'static str,
    date: &'static str,
    order: &'static str,
    corrects: &'static str,
    billed_to: &'static str,
    vat_id: &'static str,
    item: &'static str,
    sku: &'static str,
    quantity: &'static str,
    unit_price: &'static str,
    amount: &'static str,
    credited: &'static str,
    subtotal: &'static str,
    discount: &'static str,
    shipping: &'static str,
    total: &'static str,
    includes: &'static str,
    of: &'static str,
    prices_include_tax: &'static str,
}

const ENGLISH: Words = Words {
    invoice: "Invoice",
    credit_note: "Credit note",
    number: "Number",
    date: "Date",
    order: "Order",
    corrects: "Corrects invoice",
    billed_to: "Billed to",
    vat_id: "VAT ID",
    item: "Item",
    sku: "SKU",
    quantity: "Qty",
    unit_price: "Unit price",
    amount: "Amount",
    credited: "Amount credited",
    subtotal: "Subtotal",
    discount: "Discount",
    shipping: "Shipping",
    total: "Total",
    includes: "Includes",
    of: "of",
    prices_include_tax: "All prices include tax.",
};

const GERMAN: Words = Words {
    invoice: "Rechnung",
    credit_note: "Gutschrift",
    number: "Nummer",
    date: "Datum",
    order: "Bestellung",
    corrects: "Korrigiert Rechnung",
    billed_to: "Rechnungsempfänger",
    vat_id: "USt-IdNr.",
    item: "Artikel",
    sku: "Art.-Nr.",
    quantity: "Menge",
    unit_price: "Einzelpreis",
    amount: "Betrag",
    credited: "Gutgeschriebener Betrag",
    subtotal: "Zwischensumme",
    discount: "Rabatt",
    shipping: "Versand",
    total: "Gesamt",
    includes: "Darin enthalten",
    of: "auf",
    prices_include_tax: "Alle Preise enthalten die Umsatzsteuer.",
};

/// The language a request asks for: one of [`LANGUAGES`], from a tag in any case, a regional one ("de-AT")
/// taking its language; empty is the default.
pub fn language(field: &str, tag: &str) -> Result<&'static str, FieldViolation> {
    let tag = tag.trim().to_ascii_lowercase().replace('_', "-");
    if tag.is_empty() {
        return Ok(LANGUAGES[0]);
    }
    let language = tag.split('-').next().unwrap_or_default();
    LANGUAGES
        .iter()
        .copied()
        .find(|l| *l == language)
        .ok_or_else(|| FieldViolation::new(field, format!("must be one of {}", LANGUAGES.join(", "))))
}

/// An address as the lines a letter shows: name, street lines, postal code and city, region, country.
fn address_lines(a: &Address) -> Vec<String> {
    let city = [a.postal_code.as_str(), a.city.as_str()].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>();
    [a.name.clone(), a.line1.clone(), a.line2.clone(), city.join(" "), a.region.clone(), a.country.clone()]
        .into_iter()
        .filter(|line| !line.is_empty())
        .collect()
}

/// The page of `invoice`, whose order is `order`, in `language` (one of [`LANGUAGES`]).
pub fn render(invoice: &Invoice, order: &Order, language: &str) -> Result<String, Error> {
    let words = if language == "de" { &GERMAN } else { &ENGLISH };
    let currency = invoice.currency.as_str();
    let (year, month, day) = platform::time::date_of_micros(invoice.issue_time);
    let is_invoice = invoice.kind == Kind::Invoice;
    let items: Vec<Value> = if is_invoice {
        order
            .lines
            .iter()
            .map(|l| {
                context! {
                    name => &l.name,
                    sku => &l.sku,
                    quantity => l.quantity,
                    unit_price => money(currency, l.unit_price_minor),
                    total => money(currency, l.total_minor()),
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut charges = Vec::new();
    if is_invoice {
        charges.push(context! { label => words.subtotal, amount => money(currency, order.subtotal().amount_minor) });
        if order.discount_minor > 0 {
            let label = format!("{} {}", words.discount, order.discount_code);
            charges.push(context! { label => label.trim(), amount => money(currency, -order.discount_minor) });
        }
        if order.shipping_minor > 0 || !order.shipping_rate_name.is_empty() {
            let label = format!("{} {}", words.shipping, order.shipping_rate_name);
            charges.push(context! { label => label.trim(), amount => money(currency, order.shipping_minor) });
        }
    }
    let taxes: Vec<Value> = invoice
        .tax
        .iter()
        .flat_map(|tax| {
            tax.parts().map(|part| {
                context! {
                    name => &tax.name,
                    rate => format_rate(part.rate_basis_points),
                    taxable => money(currency, part.taxable_minor),
                    amount => money(currency, part.amount_minor),
                }
            })
        })
        .collect();
    let issuer = invoice.issuer.as_ref().map(|i| context! { lines => address_lines(&i.address), vat_id => &i.vat_id });
    let t = context! {
        title => if is_invoice { words.invoice } else { words.credit_note },
        number => words.number,
        date => words.date,
        order => words.order,
        corrects => words.corrects,
        billed_to => words.billed_to,
        vat_id => words.vat_id,
        item => words.item,
        sku => words.sku,
        quantity => words.quantity,
        unit_price => words.unit_price,
        amount => words.amount,
        credited => words.credited,
        total => words.total,
        includes => words.includes,
        of => words.of,
        prices_include_tax => words.prices_include_tax,
    };
    let page = context! {
        language,
        t,
        number => &invoice.number,
        date => format!("{year:04}-{month:02}-{day:02}"),
        order_id => &invoice.order_id,
        corrected_invoice => &invoice.corrected_invoice,
        issuer,
        billing => address_lines(&order.address),
        items,
        credited => !is_invoice,
        charges,
        total => money(currency, invoice.total_minor),
        taxes,
    };
    let env = TEMPLATES.as_ref().map_err(|e| minijinja::Error::new(e.kind(), e.to_string()))?;
    Ok(env.get_template("invoice.html")?.render(page)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_are_read_from_tags() {
        assert_eq!(language("language", ""), Ok("en"));
        assert_eq!(language("language", " DE-at "), Ok("de"));
        assert_eq!(language("language", "en_GB"), Ok("en"));
        assert_eq!(language("language", "fr").map_err(|v| v.field), Err("language".to_owned()));
    }

    #[test]
    fn addresses_read_as_a_letter_writes_them() {
        let a = Address {
            name: "Ada".into(),
            line1: "Hauptstr. 1".into(),
            line2: String::new(),
            city: "Berlin".into(),
            region: String::new(),
            postal_code: "10115".into(),
            country: "DE".into(),
        };
        assert_eq!(address_lines(&a), ["Ada", "Hauptstr. 1", "10115 Berlin", "DE"]);
    }
}
