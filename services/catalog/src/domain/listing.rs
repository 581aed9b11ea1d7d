//! How ListProducts sorts, filters and pages: the `order_by` it accepts (AIP-132), its price bounds, and page
//! tokens that carry the order they were issued for and the sort key of the last product shown (keyset paging).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use platform::error::FieldViolation;

/// What products can be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortField {
    /// When the product was created.
    CreateTime,
    /// The price's amount in minor units (a shop with several currencies sorts by the number alone).
    Price,
    /// The name, ignoring case.
    Name,
    /// The reviews' average rating, then how many there are ([`rating_sort_key`]): `rating desc` is the best
    /// rated first, the most reviewed first among equals, products without reviews last.
    Rating,
}

/// The SQL of [`rating_sort_key`] over a product's columns; migration 0011 indexes it (with the id), and a query
/// must spell it exactly so for the index to serve.
const RATING_SORT_SQL: &str = "(CASE WHEN rating_count = 0 THEN 0 \
     ELSE ((rating_sum * 200 + rating_count) / (2 * rating_count)) * 1000000000 + rating_count END)";

/// A product's key in the rating order: its average rating in hundredths (rounded half up, as shown), times
/// 10^9, plus its number of reviews (below 10^9 in any shop), so equal averages go by how many reviews back them.
/// 0 without reviews. [`RATING_SORT_SQL`] computes the same in the database.
pub fn rating_sort_key(count: i64, sum: i64) -> i64 {
    if count <= 0 {
        return 0;
    }
    ((sum * 200 + count) / (2 * count)) * 1_000_000_000 + count
}

impl SortField {
    const ALL: [SortField; 4] = [SortField::CreateTime, SortField::Price, SortField::Name, SortField::Rating];

    /// The name `order_by` uses.
    pub fn name(self) -> &'static str {
        match self {
            SortField::CreateTime => "create_time",
            SortField::Price => "price",
            SortField::Name => "name",
            SortField::Rating => "rating",
        }
    }

    /// The SQL expression sorted on (each has an index, with the id).
    pub fn expression(self) -> &'static str {
        match self {
            SortField::CreateTime => "create_time",
            SortField::Price => "price_amount_minor",
            SortField::Name => "name_key",
            SortField::Rating => RATING_SORT_SQL,
        }
    }
}

/// The order of a listing: a field and a direction; products that tie go by id in the same direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProductOrder {
    /// What is compared.
    pub field: SortField,
    /// Largest first.
    pub descending: bool,
}

impl Default for ProductOrder {
    fn default() -> Self {
        Self::NEWEST
    }
}

impl ProductOrder {
    /// The default: the newest first.
    pub const NEWEST: ProductOrder = ProductOrder { field: SortField::CreateTime, descending: true };

    /// Reads `order_by`: empty for the newest first, else one field (`create_time`, `price`, `name` or `rating`), then
    /// optionally `asc` (the default) or `desc`, e.g. `price desc`.
    pub fn parse(order_by: &str) -> Result<Self, FieldViolation> {
        let words: Vec<&str> = order_by.split_whitespace().collect();
        let bad = || {
            let fields = SortField::ALL.map(SortField::name).join(", ");
            FieldViolation::new("order_by", format!("must be one of {fields}, optionally followed by asc or desc"))
        };
        let (field, direction) = match words.as_slice() {
            [] => return Ok(Self::NEWEST),
            [field] => (*field, "asc"),
            [field, direction] => (*field, *direction),
            _ => return Err(bad()),
        };
        let field = SortField::ALL.into_iter().find(|f| f.name() == field).ok_or_else(bad)?;
        let descending = match direction.to_ascii_lowercase().as_str() {
            "asc" => false,
            "desc" => true,
            _ => return Err(bad()),
        };
        Ok(Self { field, descending })
    }

    /// How a page token names the order.
    fn code(self) -> String {
        format!("{} {}", self.field.name(), if self.descending { "desc" } else { "asc" })
    }
}

/// A product's value in the field sorted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortKey {
    /// A time or an amount.
    Int(i64),
    /// A name, lower-cased as the database lowers it.
    Text(String),
}

/// Where a page of products ends: the order it was listed in, and the sort key and id of its last product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The listing's order; a token is only good for the order it was issued for.
    pub order: ProductOrder,
    /// The last product's sort key.
    pub key: SortKey,
    /// The last product's id (breaks ties).
    pub id: String,
}

impl Cursor {
    /// The opaque page token for this cursor.
    pub fn encode(&self) -> String {
        let key = match &self.key {
            SortKey::Int(n) => format!("i{n}"),
            SortKey::Text(text) => format!("t{text}"),
        };
        // The key last: a name may hold any character.
        URL_SAFE_NO_PAD.encode(format!("{}\n{}\n{key}", self.order.code(), self.id))
    }

    /// Reads a page token for a listing in `order`; the empty token is the first page (`None`). A token of
    /// another order is refused: its key means something else.
    pub fn decode(token: &str, order: ProductOrder) -> Result<Option<Self>, FieldViolation> {
        if token.is_empty() {
            return Ok(None);
        }
        let bad = || FieldViolation::new("page_token", "is not a token returned by ListProducts");
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let mut parts = text.splitn(3, '\n');
        let (Some(code), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        if code != order.code() {
            return Err(FieldViolation::new("page_token", "was issued for another order_by; keep it the same"));
        }
        if id.is_empty() || id.len() > 64 {
            return Err(bad());
        }
        let key = match (order.field, key.split_at_checked(1)) {
            (SortField::Name, Some(("t", name))) => SortKey::Text(name.to_owned()),
            (SortField::CreateTime | SortField::Price | SortField::Rating, Some(("i", n))) => {
                SortKey::Int(n.parse().map_err(|_| bad())?)
            }
            _ => return Err(bad()),
        };
        Ok(Some(Self { order, key, id: id.to_owned() }))
    }
}

/// The price bounds of a listing, in minor units, `0` meaning none: `(min, max)` as given, or why not.
pub fn price_bounds(min: i64, max: i64) -> Result<(Option<i64>, Option<i64>), Vec<FieldViolation>> {
    let mut violations = Vec::new();
    if min < 0 {
        violations.push(FieldViolation::new("min_price_minor", "must not be negative"));
    }
    if max < 0 {
        violations.push(FieldViolation::new("max_price_minor", "must not be negative"));
    } else if max > 0 && max < min {
        violations.push(FieldViolation::new("max_price_minor", "must not be below min_price_minor"));
    }
    if !violations.is_empty() {
        return Err(violations);
    }
    Ok(((min > 0).then_some(min), (max > 0).then_some(max)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_by_names_one_field_and_a_direction() {
        assert_eq!(ProductOrder::parse(""), Ok(ProductOrder::NEWEST));
        assert_eq!(ProductOrder::parse("price"), Ok(ProductOrder { field: SortField::Price, descending: false }));
        assert_eq!(
            ProductOrder::parse(" price  DESC "),
            Ok(ProductOrder { field: SortField::Price, descending: true })
        );
        assert_eq!(ProductOrder::parse("name asc"), Ok(ProductOrder { field: SortField::Name, descending: false }));
        assert_eq!(ProductOrder::parse("rating desc"), Ok(ProductOrder { field: SortField::Rating, descending: true }));
        for bad in ["cost", "price up", "price desc, name", "price,name", "create_time desc extra"] {
            assert_eq!(ProductOrder::parse(bad).expect_err(bad).field, "order_by", "{bad:?}");
        }
    }

    #[test]
    fn page_tokens_round_trip_for_their_own_order_only() {
        let by_name = ProductOrder { field: SortField::Name, descending: false };
        let cursor = Cursor { order: by_name, key: SortKey::Text("tea: green\nsencha".into()), id: "0190-abc".into() };
        let token = cursor.encode();
        assert!(!token.contains("tea"), "opaque");
        assert_eq!(Cursor::decode(&token, by_name), Ok(Some(cursor)));
        assert_eq!(Cursor::decode("", by_name), Ok(None));
        let other = Cursor::decode(&token, ProductOrder::NEWEST).expect_err("another order");
        assert!(other.description.contains("another order_by"), "{other:?}");
        let newest = Cursor { order: ProductOrder::NEWEST, key: SortKey::Int(1_700_000_000_000_001), id: "p-1".into() };
        assert_eq!(Cursor::decode(&newest.encode(), ProductOrder::NEWEST), Ok(Some(newest)));
        let mixed = URL_SAFE_NO_PAD.encode("name asc\np-1\ni12");
        for garbage in ["!!!", "bm9jb2xvbg", &mixed, &URL_SAFE_NO_PAD.encode([0xff, 0xfe, b'\n'])] {
            assert_eq!(Cursor::decode(garbage, by_name).expect_err(garbage).field, "page_token", "{garbage}");
        }
    }

    #[test]
    fn the_rating_order_goes_by_the_average_shown_then_by_how_many_reviews() {
        assert_eq!(rating_sort_key(0, 0), 0, "no reviews: last in `rating desc`");
        let two_fives = rating_sort_key(2, 10);
        let one_five = rating_sort_key(1, 5);
        let many_fours = rating_sort_key(1000, 4000);
        assert!(two_fives > one_five && one_five > many_fours && many_fours > rating_sort_key(1, 1));
        assert_eq!(rating_sort_key(8, 33), 413 * 1_000_000_000 + 8, "4.125 is 4.13, as shown");
        // 4.134 and 4.126 both show 4.13: the one with more reviews goes first.
        assert!(rating_sort_key(500, 2067) > rating_sort_key(499, 2059));
        let by_rating = ProductOrder { field: SortField::Rating, descending: true };
        let cursor = Cursor { order: by_rating, key: SortKey::Int(two_fives), id: "p-2".into() };
        assert_eq!(Cursor::decode(&cursor.encode(), by_rating), Ok(Some(cursor)));
    }

    #[test]
    fn price_bounds_are_optional_and_ordered() {
        assert_eq!(price_bounds(0, 0), Ok((None, None)));
        assert_eq!(price_bounds(500, 0), Ok((Some(500), None)));
        assert_eq!(price_bounds(500, 500), Ok((Some(500), Some(500))));
        let fields =
            |r: Result<_, Vec<FieldViolation>>| r.expect_err("bad").into_iter().map(|v| v.field).collect::<Vec<_>>();
        assert_eq!(fields(price_bounds(-1, -1)), ["min_price_minor", "max_price_minor"]);
        assert_eq!(fields(price_bounds(900, 500)), ["max_price_minor"]);
    }
}
