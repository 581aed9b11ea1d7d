//! What a review is (a rating of one to five stars, an optional title and text, the name shown with it), how an
//! update mask changes one, whether it shows at once or waits for staff, and how a product's reviews add up to its
//! rating.

use platform::config::ReviewModeration;
use platform::error::FieldViolation;

/// Fewest stars.
pub const MIN_RATING: i32 = 1;
/// Most stars.
pub const MAX_RATING: i32 = 5;
/// Longest title.
pub const MAX_TITLE_CHARS: usize = 120;
/// Longest text.
pub const MAX_BODY_CHARS: usize = 4000;
/// Longest name shown with a review.
pub const MAX_AUTHOR_NAME_CHARS: usize = 60;
/// The fields an update mask may name.
pub const UPDATABLE_PATHS: &[&str] = &["rating", "title", "body", "author_name"];

/// What the author of a review writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewFields {
    /// Stars, [`MIN_RATING`] to [`MAX_RATING`].
    pub rating: i32,
    /// A headline on one line, trimmed; may be empty.
    pub title: String,
    /// The text, trimmed; may be empty, may span lines.
    pub body: String,
    /// The name shown with it, trimmed; may be empty.
    pub author_name: String,
}

/// Whether `text` has control characters other than line breaks and tabs (a title or name has none at all).
fn has_controls(text: &str, lines_allowed: bool) -> bool {
    text.chars().any(|c| c.is_control() && !(lines_allowed && matches!(c, '\n' | '\r' | '\t')))
}

/// Checks the fields of a review; violations are named `review.<field>`.
pub fn validate(fields: ReviewFields) -> Result<ReviewFields, Vec<FieldViolation>> {
    let title = fields.title.trim().to_owned();
    let body = fields.body.trim().to_owned();
    let author_name = fields.author_name.trim().to_owned();
    let mut violations = Vec::new();
    if !(MIN_RATING..=MAX_RATING).contains(&fields.rating) {
        violations.push(FieldViolation::new("review.rating", "must be 1 to 5 stars"));
    }
    if title.chars().count() > MAX_TITLE_CHARS || has_controls(&title, false) {
        violations.push(FieldViolation::new("review.title", "must be at most 120 characters on one line"));
    }
    if body.chars().count() > MAX_BODY_CHARS || has_controls(&body, true) {
        violations.push(FieldViolation::new("review.body", "must be at most 4000 characters of text"));
    }
    if author_name.chars().count() > MAX_AUTHOR_NAME_CHARS || has_controls(&author_name, false) {
        violations.push(FieldViolation::new("review.author_name", "must be at most 60 characters on one line"));
    }
    if violations.is_empty() {
        Ok(ReviewFields { rating: fields.rating, title, body, author_name })
    } else {
        Err(violations)
    }
}

/// Applies the fields of `input` named by `paths` to `current` and checks the result.
pub fn apply_update_mask(
    current: &ReviewFields,
    input: &ReviewFields,
    paths: &[String],
) -> Result<ReviewFields, Vec<FieldViolation>> {
    platform::error::check_update_mask(paths, UPDATABLE_PATHS)?;
    let mut next = current.clone();
    for path in paths {
        match path.as_str() {
            "rating" => next.rating = input.rating,
            "title" => next.title = input.title.clone(),
            "body" => next.body = input.body.clone(),
            "author_name" => next.author_name = input.author_name.clone(),
            _ => {}
        }
    }
    validate(next)
}

/// Checks the star filter of a listing: 0 for none, else 1 to 5.
pub fn check_max_rating(max_rating: i32) -> Result<i32, FieldViolation> {
    if max_rating == 0 || (MIN_RATING..=MAX_RATING).contains(&max_rating) {
        Ok(max_rating)
    } else {
        Err(FieldViolation::new("max_rating", "must be 1 to 5 stars, or 0 for all"))
    }
}

/// Whether a review its author has just written or changed is published: at once, unless the shop moderates
/// (then it waits for staff, even when they had published it before the change).
pub fn published_when_written(moderation: ReviewModeration) -> bool {
    moderation == ReviewModeration::Off
}

/// What a review of `rating` stars adds to its product's totals: (reviews, stars), nothing while unpublished.
pub fn counted(published: bool, rating: i32) -> (i64, i64) {
    if published { (1, i64::from(rating)) } else { (0, 0) }
}

/// The average of `count` ratings that add up to `sum`, rounded to two decimals (half up); 0 without any.
pub fn average(count: i64, sum: i64) -> f64 {
    if count <= 0 {
        return 0.0;
    }
    // In hundredths, rounded in integers, so 4.125 is 4.13 whatever the float.
    let hundredths = (sum * 100 * 2 + count) / (2 * count);
    hundredths as f64 / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(rating: i32, title: &str, body: &str, author_name: &str) -> ReviewFields {
        ReviewFields { rating, title: title.into(), body: body.into(), author_name: author_name.into() }
    }

    fn names(r: Result<ReviewFields, Vec<FieldViolation>>) -> Vec<String> {
        r.expect_err("bad").into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn a_review_has_one_to_five_stars_and_bounded_text() {
        assert_eq!(
            validate(fields(5, " Lovely ", " Smooth.\nWould buy again. ", " Ada ")),
            Ok(fields(5, "Lovely", "Smooth.\nWould buy again.", "Ada"))
        );
        assert_eq!(validate(fields(1, "", "", "")), Ok(fields(1, "", "", "")), "stars alone are a review");
        assert_eq!(names(validate(fields(0, "", "", ""))), ["review.rating"]);
        assert_eq!(names(validate(fields(6, "", "", ""))), ["review.rating"]);
        assert_eq!(
            names(validate(fields(3, &"t".repeat(121), &"b".repeat(4001), &"n".repeat(61)))),
            ["review.title", "review.body", "review.author_name"]
        );
        assert_eq!(
            names(validate(fields(3, "Two\nlines", "tab\tand\r\nbreaks", "Ada\u{7}"))),
            ["review.title", "review.author_name"]
        );
        assert_eq!(names(validate(fields(3, "", "bell\u{7}", ""))), ["review.body"]);
        assert!(validate(fields(3, &"é".repeat(120), "", &"ü".repeat(60))).is_ok(), "characters, not bytes");
    }

    #[test]
    fn an_update_changes_only_the_named_fields() {
        let current = fields(4, "Good", "Nice tea.", "Ada");
        let input = fields(2, "Meh", "", "");
        let paths = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(apply_update_mask(&current, &input, &paths(&["rating"])), Ok(fields(2, "Good", "Nice tea.", "Ada")));
        assert_eq!(
            apply_update_mask(&current, &input, &paths(&["title", "body", "author_name"])),
            Ok(fields(4, "Meh", "", ""))
        );
        assert_eq!(
            apply_update_mask(&current, &input, &paths(&["product_id"])).expect_err("no")[0].field,
            "update_mask"
        );
        let zero = fields(0, "", "", "");
        assert_eq!(names(apply_update_mask(&current, &zero, &paths(&["rating"]))), ["review.rating"]);
    }

    #[test]
    fn the_star_filter_is_none_or_one_to_five() {
        assert_eq!(check_max_rating(0), Ok(0));
        assert_eq!(check_max_rating(2), Ok(2));
        for bad in [-1, 6] {
            assert_eq!(check_max_rating(bad).expect_err("bad").field, "max_rating");
        }
    }

    #[test]
    fn only_published_reviews_count_and_a_moderating_shop_publishes_none_as_written() {
        assert!(published_when_written(ReviewModeration::Off));
        assert!(!published_when_written(ReviewModeration::Pre));
        assert_eq!(counted(true, 4), (1, 4));
        assert_eq!(counted(false, 4), (0, 0));
    }

    #[test]
    fn the_average_is_rounded_to_two_decimals() {
        assert_eq!(average(0, 0), 0.0);
        assert_eq!(average(1, 4), 4.0);
        assert_eq!(average(3, 13), 4.33);
        assert_eq!(average(3, 14), 4.67);
        assert_eq!(average(8, 33), 4.13, "4.125 rounds up");
        assert_eq!(average(7, 7), 1.0);
    }
}
