//! Variants: products grouped under a base product and told apart by their options (a T-shirt in sizes S, M and
//! L). Each variant is a whole product (its own sku, price, stock and images), so the cart, orders, stock and
//! deliveries need nothing new; what is new is the grouping, and its rules live here:
//!
//! - a group is a base (a product that names no other in `variant_of`) and the products naming it; a variant has
//!   no variants of its own, so groups are one level deep;
//! - every product of a group has options, the same names in the same order, and no two the same values (compared
//!   ignoring case: "M" and "m" are one size).

use platform::error::FieldViolation;
use serde::{Deserialize, Serialize};

/// Most options a product has (size, colour, material).
pub const MAX_OPTIONS: usize = 3;
/// Longest option name.
pub const MAX_OPTION_NAME_CHARS: usize = 40;
/// Longest option value.
pub const MAX_OPTION_VALUE_CHARS: usize = 100;

/// One option of a product: what is chosen and this product's value of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductOption {
    /// What is chosen, e.g. "Size".
    pub name: String,
    /// This product's value, e.g. "M".
    pub value: String,
}

/// Checks a product's options: at most [`MAX_OPTIONS`], names and values not blank and not too long, each name
/// once. Violations name `product.options[i].name` or `.value`.
pub fn check_options(options: &[ProductOption]) -> Vec<FieldViolation> {
    let mut v = Vec::new();
    if options.len() > MAX_OPTIONS {
        v.push(FieldViolation::new("product.options", format!("must hold at most {MAX_OPTIONS} options")));
    }
    for (i, option) in options.iter().enumerate() {
        if !fits(&option.name, MAX_OPTION_NAME_CHARS) {
            v.push(FieldViolation::new(
                format!("product.options[{i}].name"),
                format!("must be 1 to {MAX_OPTION_NAME_CHARS} characters and not blank"),
            ));
        } else if options[..i].iter().any(|o| same(&o.name, &option.name)) {
            v.push(FieldViolation::new(format!("product.options[{i}].name"), "appears more than once"));
        }
        if !fits(&option.value, MAX_OPTION_VALUE_CHARS) {
            v.push(FieldViolation::new(
                format!("product.options[{i}].value"),
                format!("must be 1 to {MAX_OPTION_VALUE_CHARS} characters and not blank"),
            ));
        }
    }
    v
}

fn fits(text: &str, max: usize) -> bool {
    !text.trim().is_empty() && text.chars().count() <= max
}

fn same(a: &str, b: &str) -> bool {
    platform::db::case_key(a.trim()) == platform::db::case_key(b.trim())
}

/// The key two products of a group may not share: the options' names and values, case-folded, in order. Empty
/// for a product without options (the store's unique index leaves those out).
pub fn options_key(options: &[ProductOption]) -> String {
    options
        .iter()
        .map(|o| format!("{}={}", platform::db::case_key(o.name.trim()), platform::db::case_key(o.value.trim())))
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

/// The options as people read them: "Size M, Colour red".
pub fn describe(options: &[ProductOption]) -> String {
    options.iter().map(|o| format!("{} {}", o.name, o.value)).collect::<Vec<_>>().join(", ")
}

/// The options as stored (a JSON array of `{name, value}`).
pub fn encode(options: &[ProductOption]) -> String {
    // Serialising plain strings cannot fail; an empty array is the fallback all the same.
    serde_json::to_string(options).unwrap_or_else(|_| "[]".to_owned())
}

/// The options from their stored form; `None` when the column holds something [`encode`] never writes.
pub fn decode(stored: &str) -> Option<Vec<ProductOption>> {
    serde_json::from_str(stored).ok()
}

/// What the store read of a product's group inside the transaction that writes the product (the base's row locked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupFacts {
    /// The product `variant_of` names: `Some(its own variant_of)`, or `None` when there is no such product.
    pub base: Option<Option<String>>,
    /// The options of another product of the group (all share their names), if the group has another.
    pub sibling_options: Option<Vec<ProductOption>>,
    /// Whether other products name this one as their base.
    pub has_variants: bool,
}

/// Checks that product `id`, named a variant of `variant_of` (empty: none) with `options`, keeps the group rules
/// (see the module's description). Violations name `product.variant_of` or `product.options`; values shared
/// with a sibling are the store's to find (ALREADY_EXISTS).
pub fn check_group(id: &str, variant_of: &str, options: &[ProductOption], facts: &GroupFacts) -> Vec<FieldViolation> {
    let mut v = Vec::new();
    let field = "product.variant_of";
    if !variant_of.is_empty() {
        match &facts.base {
            _ if variant_of == id => v.push(FieldViolation::new(field, "a product cannot be a variant of itself")),
            None => v.push(FieldViolation::new(field, format!("names no product: {variant_of} not found"))),
            Some(Some(base)) => v.push(FieldViolation::new(
                field,
                format!("names a variant (of {base}): a variant's base is the product the others name"),
            )),
            Some(None) if facts.has_variants => v.push(FieldViolation::new(
                field,
                "this product has variants of its own: make them variants of the new base first",
            )),
            Some(None) => {}
        }
    }
    if !v.is_empty() || (variant_of.is_empty() && !facts.has_variants) {
        return v;
    }
    if options.is_empty() {
        v.push(FieldViolation::new(
            "product.options",
            "a product of a group needs options that tell it from the others, e.g. a size",
        ));
        return v;
    }
    match &facts.sibling_options {
        Some(sibling) if sibling.is_empty() => v.push(FieldViolation::new(
            field,
            "names a product without options: give it the group's options (e.g. a size) first",
        )),
        Some(sibling) if !same_names(sibling, options) => v.push(FieldViolation::new(
            "product.options",
            format!("must name the group's options, in order: {}", names(sibling)),
        )),
        _ => {}
    }
    v
}

fn same_names(a: &[ProductOption], b: &[ProductOption]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(&x.name, &y.name))
}

fn names(options: &[ProductOption]) -> String {
    options.iter().map(|o| o.name.as_str()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Vec<ProductOption> {
        pairs.iter().map(|(n, v)| ProductOption { name: (*n).to_owned(), value: (*v).to_owned() }).collect()
    }

    fn fields(v: &[FieldViolation]) -> Vec<&str> {
        v.iter().map(|v| v.field.as_str()).collect()
    }

    fn base_with(options: &[(&str, &str)]) -> GroupFacts {
        GroupFacts { base: Some(None), sibling_options: Some(opts(options)), has_variants: false }
    }

    #[test]
    fn options_are_checked_field_by_field() {
        assert!(check_options(&opts(&[("Size", "M"), ("Colour", "red")])).is_empty());
        let bad = check_options(&opts(&[("Size", "M"), (" ", "x"), ("size", ""), ("Fit", &"x".repeat(101))]));
        assert_eq!(
            fields(&bad),
            [
                "product.options",
                "product.options[1].name",
                "product.options[2].name",
                "product.options[2].value",
                "product.options[3].value"
            ]
        );
        assert!(bad[2].description.contains("more than once"), "{bad:?}");
    }

    #[test]
    fn the_key_ignores_case_and_spaces_but_not_order() {
        let m = options_key(&opts(&[("Size", "M"), ("Colour", "Red")]));
        assert_eq!(m, options_key(&opts(&[("size ", "m"), ("COLOUR", " red")])));
        assert_ne!(m, options_key(&opts(&[("Colour", "Red"), ("Size", "M")])));
        assert_ne!(m, options_key(&opts(&[("Size", "L"), ("Colour", "Red")])));
        assert_eq!(options_key(&[]), "");
    }

    #[test]
    fn options_survive_their_stored_form() {
        let options = opts(&[("Size", "M"), ("Colour", "rot \"dunkel\"")]);
        assert_eq!(decode(&encode(&options)), Some(options.clone()));
        assert_eq!(decode("[]"), Some(Vec::new()));
        assert_eq!(decode("size=m"), None);
        assert_eq!(describe(&options), "Size M, Colour rot \"dunkel\"");
    }

    #[test]
    fn a_variant_names_a_base_with_the_same_option_names() {
        let l = opts(&[("Size", "L")]);
        assert!(check_group("v", "b", &l, &base_with(&[("Size", "M")])).is_empty());
        // Names compare as the key does.
        assert!(check_group("v", "b", &opts(&[("size", "XL")]), &base_with(&[("Size", "M")])).is_empty());
        let other_names = check_group("v", "b", &opts(&[("Colour", "red")]), &base_with(&[("Size", "M")]));
        assert_eq!(fields(&other_names), ["product.options"]);
        assert!(other_names[0].description.ends_with("in order: Size"), "{other_names:?}");
        let more = check_group("v", "b", &opts(&[("Size", "L"), ("Colour", "red")]), &base_with(&[("Size", "M")]));
        assert_eq!(fields(&more), ["product.options"]);
        assert_eq!(fields(&check_group("v", "b", &[], &base_with(&[("Size", "M")]))), ["product.options"]);
        let bare_base = check_group("v", "b", &l, &base_with(&[]));
        assert!(bare_base[0].description.contains("without options"), "{bare_base:?}");
    }

    #[test]
    fn groups_are_one_level_deep_and_name_a_product() {
        let l = opts(&[("Size", "L")]);
        let missing = GroupFacts { base: None, ..GroupFacts::default() };
        assert!(check_group("v", "b", &l, &missing)[0].description.contains("not found"));
        let of_variant = GroupFacts { base: Some(Some("a".into())), ..base_with(&[("Size", "M")]) };
        assert!(check_group("v", "b", &l, &of_variant)[0].description.contains("of a"));
        let itself = check_group("b", "b", &l, &base_with(&[("Size", "M")]));
        assert!(itself[0].description.contains("itself"), "{itself:?}");
        let base_itself = GroupFacts { has_variants: true, ..base_with(&[("Size", "M")]) };
        assert!(check_group("v", "b", &l, &base_itself)[0].description.contains("variants of its own"));
    }

    #[test]
    fn a_base_keeps_its_variants_option_names() {
        let with_variants =
            GroupFacts { base: None, sibling_options: Some(opts(&[("Size", "L")])), has_variants: true };
        assert!(check_group("b", "", &opts(&[("Size", "M")]), &with_variants).is_empty());
        assert_eq!(fields(&check_group("b", "", &[], &with_variants)), ["product.options"]);
        assert_eq!(fields(&check_group("b", "", &opts(&[("Fit", "slim")]), &with_variants)), ["product.options"]);
        // A product on its own may have options or not.
        let alone = GroupFacts::default();
        assert!(check_group("p", "", &[], &alone).is_empty());
        assert!(check_group("p", "", &opts(&[("Size", "M")]), &alone).is_empty());
    }
}
