//! The rules of the FAQ: what an entry must hold, which of its fields an update may change, and how its
//! listing is ordered and paged (by category, then position, then id).

use platform::error::{FieldViolation, Violations};

use super::{lines, one_line};

/// Longest question, in characters.
pub const MAX_QUESTION: usize = 300;
/// Longest answer, in characters.
pub const MAX_ANSWER: usize = 10_000;
/// Longest category slug, in characters.
pub const MAX_CATEGORY: usize = 50;
/// Longest search text, in characters.
pub const MAX_QUERY: usize = 100;
/// The category of an entry written without one.
pub const DEFAULT_CATEGORY: &str = "general";
/// The fields an update mask may name.
pub const UPDATABLE_PATHS: &[&str] = &["question", "answer", "category", "position", "published"];

/// An entry's fields as a request gives them, unchecked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryInput {
    /// The question.
    pub question: String,
    /// The answer.
    pub answer: String,
    /// Its category's slug; empty means [`DEFAULT_CATEGORY`].
    pub category: String,
    /// Its place within the category.
    pub position: i32,
    /// Whether customers see it.
    pub published: bool,
}

/// An entry's fields, checked and trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFields {
    /// The question, one line.
    pub question: String,
    /// The answer; line breaks kept.
    pub answer: String,
    /// A slug: lower-case letters, digits and `-`.
    pub category: String,
    /// Zero or more; entries of a category are shown by ascending position.
    pub position: i32,
    /// Whether customers see it.
    pub published: bool,
}

/// Checks an entry; violations name the fields under `prefix` (`entry.` for the request's message).
pub fn validate_entry(input: &EntryInput, prefix: &str) -> Result<EntryFields, Vec<FieldViolation>> {
    let mut violations = Violations::new();
    let field = |name: &str| format!("{prefix}{name}");
    let question = one_line(&input.question, MAX_QUESTION).map_err(|why| violations.add(field("question"), why));
    let answer = lines(&input.answer, MAX_ANSWER).map_err(|why| violations.add(field("answer"), why));
    let category = match input.category.trim() {
        "" => DEFAULT_CATEGORY,
        slug => slug,
    };
    if !is_slug(category) {
        violations.add(
            field("category"),
            format!("must be a slug: lower-case letters, digits and '-', at most {MAX_CATEGORY}"),
        );
    }
    if input.position < 0 {
        violations.add(field("position"), "must not be negative");
    }
    let (Ok(question), Ok(answer)) = (question, answer) else { return Err(violations.into_vec()) };
    violations.finish()?;
    Ok(EntryFields {
        question,
        answer,
        category: category.to_owned(),
        position: input.position,
        published: input.published,
    })
}

/// Checks an update mask: at least one field, each one an update may change.
pub fn check_update_mask(paths: &[String]) -> Result<(), Vec<FieldViolation>> {
    platform::error::check_update_mask(paths, UPDATABLE_PATHS)
}

/// The entry `current` becomes when the fields `paths` names take their values from `input`, checked as a
/// whole. An empty mask, or one naming a field that cannot change, is refused.
pub fn apply_update_mask(
    current: &EntryFields,
    input: &EntryInput,
    paths: &[String],
) -> Result<EntryFields, Vec<FieldViolation>> {
    check_update_mask(paths)?;
    let named = |path: &str| paths.iter().any(|p| p == path);
    let next = EntryInput {
        question: if named("question") { input.question.clone() } else { current.question.clone() },
        answer: if named("answer") { input.answer.clone() } else { current.answer.clone() },
        category: if named("category") { input.category.clone() } else { current.category.clone() },
        position: if named("position") { input.position } else { current.position },
        published: if named("published") { input.published } else { current.published },
    };
    validate_entry(&next, "entry.")
}

/// Checks the free-text search of a listing.
pub fn validate_query(query: &str) -> Result<(), FieldViolation> {
    if query.chars().count() > MAX_QUERY {
        return Err(FieldViolation::new("query", format!("must be at most {MAX_QUERY} characters")));
    }
    Ok(())
}

/// Whether `text` is a category slug: lower-case letters, digits and `-`, at most [`MAX_CATEGORY`].
fn is_slug(text: &str) -> bool {
    text.len() <= MAX_CATEGORY && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Checks a category filter: empty (every category) or a slug.
pub fn validate_category_filter(category: &str) -> Result<(), FieldViolation> {
    if !is_slug(category) {
        return Err(FieldViolation::new("category", "must be a category's slug"));
    }
    Ok(())
}

/// Where a page of the FAQ ends: the sort key of its last entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaqCursor {
    /// The last entry's category.
    pub category: String,
    /// The last entry's position.
    pub position: i32,
    /// The last entry's id.
    pub id: String,
}

impl FaqCursor {
    /// The page token that continues after this entry (`category.position.id`: slugs and ids hold no dots).
    pub fn encode(&self) -> String {
        format!("{}.{}.{}", self.category, self.position, self.id)
    }

    /// The cursor a page token stands for; `None` for the first page.
    pub fn decode(token: &str) -> Result<Option<Self>, FieldViolation> {
        if token.is_empty() {
            return Ok(None);
        }
        let bad = || FieldViolation::new("page_token", "is not a token this service issued");
        let mut parts = token.splitn(3, '.');
        let (Some(category), Some(position), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        validate_category_filter(category).map_err(|_| bad())?;
        let position = position.parse::<i32>().map_err(|_| bad())?;
        if category.is_empty()
            || id.is_empty()
            || id.len() > 64
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(bad());
        }
        Ok(Some(Self { category: category.to_owned(), position, id: id.to_owned() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(violations: Vec<FieldViolation>) -> Vec<String> {
        violations.into_iter().map(|v| v.field).collect()
    }

    fn input(question: &str, answer: &str, category: &str) -> EntryInput {
        EntryInput { question: question.into(), answer: answer.into(), category: category.into(), ..Default::default() }
    }

    #[test]
    fn entries_need_a_question_an_answer_and_a_slug() {
        let ok =
            validate_entry(&input(" How long does shipping take? ", "Two to four days.\nLonger abroad.", ""), "entry.")
                .expect("valid");
        assert_eq!(
            (ok.question.as_str(), ok.answer.as_str(), ok.category.as_str()),
            ("How long does shipping take?", "Two to four days.\nLonger abroad.", DEFAULT_CATEGORY)
        );
        let bad = EntryInput { position: -1, ..input("a\nb", "", "Shipping & Returns") };
        assert_eq!(
            fields(validate_entry(&bad, "entry.").expect_err("bad")),
            ["entry.question", "entry.answer", "entry.category", "entry.position"]
        );
        let long = input(&"q".repeat(MAX_QUESTION + 1), &"a".repeat(MAX_ANSWER + 1), &"c".repeat(MAX_CATEGORY + 1));
        assert_eq!(fields(validate_entry(&long, "").expect_err("long")), ["question", "answer", "category"]);
    }

    #[test]
    fn update_masks_change_only_the_named_fields() {
        let current = validate_entry(&input("Q?", "A.", "shipping"), "").expect("valid");
        let change = EntryInput { published: true, position: 3, ..input("", "", "") };
        let next = apply_update_mask(&current, &change, &["published".into(), "position".into()]).expect("ok");
        assert_eq!((next.published, next.position, next.question.as_str()), (true, 3, "Q?"));
        assert_eq!(fields(apply_update_mask(&current, &change, &[]).expect_err("empty")), ["update_mask"]);
        assert_eq!(fields(apply_update_mask(&current, &change, &["id".into()]).expect_err("id")), ["update_mask"]);
        let blank = apply_update_mask(&current, &change, &["question".into()]).expect_err("blank question");
        assert_eq!(fields(blank), ["entry.question"]);
    }

    #[test]
    fn page_tokens_round_trip_and_refuse_anything_else() {
        let cursor = FaqCursor { category: "shipping".into(), position: 2, id: "0190-abc".into() };
        assert_eq!(FaqCursor::decode(&cursor.encode()), Ok(Some(cursor)));
        assert_eq!(FaqCursor::decode(""), Ok(None));
        for bad in ["abc", "shipping.x.id", "Shipping.1.id", "shipping.1.", "shipping.1.' OR 1=1"] {
            assert!(FaqCursor::decode(bad).is_err(), "{bad}");
        }
        assert!(validate_query(&"q".repeat(MAX_QUERY + 1)).is_err());
        assert!(validate_category_filter("returns").is_ok() && validate_category_filter("Returns").is_err());
    }
}
