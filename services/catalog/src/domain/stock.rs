//! Stock levels listed for restocking (`ListStockLevels`): fewest units available first, ties by product id,
//! optionally only those below a number of units; what a request may ask and where a page ends.

use platform::error::FieldViolation;

/// Where a page of stock levels ends: the available units (`key`) and the product id of its last line.
pub use platform::paging::KeyCursor as StockCursor;

/// A checked request for stock levels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockQuery {
    /// Only products with fewer units available than this; `None` for all.
    pub available_below: Option<i64>,
    /// Inactive products too.
    pub include_inactive: bool,
    /// After this line (the previous page's last).
    pub after: Option<StockCursor>,
    /// The page size.
    pub limit: i64,
}

/// Checks a ListStockLevels request: every bad field is named.
pub fn stock_query(
    page_size: i32,
    page_token: &str,
    available_below: i32,
    include_inactive: bool,
) -> Result<StockQuery, Vec<FieldViolation>> {
    let limit = super::page_size(page_size);
    let after = StockCursor::decode(page_token);
    let below = match available_below {
        n if n < 0 => Err(FieldViolation::new("available_below", "must not be negative")),
        0 => Ok(None),
        n => Ok(Some(i64::from(n))),
    };
    match (limit, after, below) {
        (Ok(limit), Ok(after), Ok(available_below)) => {
            Ok(StockQuery { available_below, include_inactive, after, limit })
        }
        (limit, after, below) => Err(limit.err().into_iter().chain(after.err()).chain(below.err()).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_name_every_bad_field() {
        let query = stock_query(0, "", 5, false).expect("valid");
        assert_eq!(query, StockQuery { available_below: Some(5), include_inactive: false, after: None, limit: 20 });
        assert_eq!(stock_query(500, "", 0, true).expect("valid").available_below, None, "0 lists all");
        let fields: Vec<String> =
            stock_query(-1, "bad token", -3, false).expect_err("bad").into_iter().map(|v| v.field).collect();
        assert_eq!(fields, ["page_size", "page_token", "available_below"]);
    }
}
