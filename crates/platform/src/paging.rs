//! Pages of a listing, the same in every service: `page_size` as Google's API Improvement Proposals say
//! (AIP-158: unset means the default, larger than the maximum means the maximum, negative is an error), a
//! page cut from a read of one row more, and page tokens: the id of the last item of the previous page, or, for
//! listings ordered by a number first ([`KeyCursor`]), that number and the id.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::FieldViolation;

/// Page size when a listing asks for none.
pub const DEFAULT_PAGE_SIZE: i64 = 20;
/// The largest page a listing returns.
pub const MAX_PAGE_SIZE: i64 = 100;

/// The page size to use for a requested `page_size`: [`DEFAULT_PAGE_SIZE`] when unset (0), at most
/// [`MAX_PAGE_SIZE`].
pub fn page_size(requested: i32) -> Result<i64, FieldViolation> {
    page_size_within(requested, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
}

/// [`page_size`] for a listing with a default and a maximum of its own (larger rows, or an internal poller
/// that reads many at once): `default` when unset (0), at most `max`.
pub fn page_size_within(requested: i32, default: i64, max: i64) -> Result<i64, FieldViolation> {
    match i64::from(requested) {
        n if n < 0 => Err(FieldViolation::new("page_size", "must not be negative")),
        0 => Ok(default),
        n => Ok(n.min(max)),
    }
}

/// Checks a page token that is the id of the last item of the previous page (empty for the first page): ids
/// are letters, digits and `-`, at most 64 of them.
pub fn id_token(token: &str) -> Result<&str, FieldViolation> {
    if token.len() > 64 || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(FieldViolation::new("page_token", "is not a token this service issued"));
    }
    Ok(token)
}

/// The page size and the id the page starts after, for a listing paged by id: both checked, every violation of
/// the two reported together.
pub fn id_page(page_size: i32, page_token: &str) -> Result<(i64, &str), Vec<FieldViolation>> {
    match (self::page_size(page_size), id_token(page_token)) {
        (Ok(limit), Ok(after)) => Ok((limit, after)),
        (limit, after) => Err(limit.err().into_iter().chain(after.err()).collect()),
    }
}

/// Where a page of a listing ordered by a number, then by id, ends (newest first by create time, fewest units
/// available first, ...): the last row's number and id. Its page token is opaque to clients (URL-safe base64 of
/// `key:id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCursor {
    /// The last row's sort key.
    pub key: i64,
    /// The last row's id, which breaks ties.
    pub id: String,
}

impl KeyCursor {
    /// The page token that continues after this row.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.key, self.id))
    }

    /// The cursor a page token stands for; `None` for the empty token (the first page). A token this module did
    /// not make is INVALID_ARGUMENT on `page_token`.
    pub fn decode(token: &str) -> Result<Option<Self>, FieldViolation> {
        if token.is_empty() {
            return Ok(None);
        }
        let bad = || FieldViolation::new("page_token", "is not a token this service issued");
        let text =
            URL_SAFE_NO_PAD.decode(token).ok().and_then(|bytes| String::from_utf8(bytes).ok()).ok_or_else(bad)?;
        let (key, id) = text.split_once(':').ok_or_else(bad)?;
        let key = key.parse().map_err(|_| bad())?;
        if id.is_empty() || id.len() > 64 {
            return Err(bad());
        }
        Ok(Some(Self { key, id: id.to_owned() }))
    }
}

/// One page of a listing read with one row more than `limit` (whether another page follows): the first `limit`
/// rows, and the token of the next page, `token` of the page's last row, or empty on the last page.
pub fn page<T>(mut rows: Vec<T>, limit: i64, token: impl FnOnce(&T) -> String) -> (Vec<T>, String) {
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_page_token = match rows.last() {
        Some(last) if more => token(last),
        _ => String::new(),
    };
    (rows, next_page_token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_cursors_survive_their_token_and_refuse_others() {
        for cursor in [KeyCursor { key: 42, id: "0190-abc".into() }, KeyCursor { key: -7, id: "a:b".into() }] {
            assert_eq!(KeyCursor::decode(&cursor.encode()), Ok(Some(cursor)));
        }
        assert_eq!(KeyCursor::decode(""), Ok(None));
        let too_long = URL_SAFE_NO_PAD.encode(format!("1:{}", "x".repeat(65)));
        for bad in [
            "!!",
            &URL_SAFE_NO_PAD.encode("no-colon"),
            &URL_SAFE_NO_PAD.encode("x:id"),
            &URL_SAFE_NO_PAD.encode("3:"),
            &too_long,
        ] {
            assert_eq!(KeyCursor::decode(bad).expect_err(bad).field, "page_token");
        }
    }

    #[test]
    fn page_sizes_follow_aip_158() {
        assert_eq!(page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(7), Ok(7));
        assert_eq!(page_size(1000), Ok(MAX_PAGE_SIZE));
        assert_eq!(page_size(-1).expect_err("negative").field, "page_size");
        assert_eq!(page_size_within(0, 50, 200), Ok(50));
        assert_eq!(page_size_within(500, 50, 200), Ok(200));
        assert_eq!(page_size_within(-5, 50, 200).expect_err("negative").field, "page_size");
    }

    #[test]
    fn a_page_ends_with_the_token_of_its_last_row_when_more_follow() {
        let token = |n: &i32| n.to_string();
        assert_eq!(page(vec![1, 2, 3], 2, token), (vec![1, 2], "2".to_owned()), "the extra row: another page");
        assert_eq!(page(vec![1, 2], 2, token), (vec![1, 2], String::new()), "exactly a page: the last");
        assert_eq!(page(Vec::<i32>::new(), 2, token), (vec![], String::new()));
    }

    #[test]
    fn an_id_page_names_both_bad_fields() {
        assert_eq!(id_page(0, "0190-abc"), Ok((DEFAULT_PAGE_SIZE, "0190-abc")));
        let both = id_page(-1, "' OR 1=1").expect_err("both bad");
        assert_eq!(both.iter().map(|v| v.field.as_str()).collect::<Vec<_>>(), ["page_size", "page_token"]);
    }

    #[test]
    fn id_tokens_are_ids() {
        assert_eq!(id_token(""), Ok(""));
        assert_eq!(id_token("0190-abc"), Ok("0190-abc"));
        assert!(id_token("' OR 1=1").is_err());
        assert!(id_token(&"a".repeat(65)).is_err());
    }
}
