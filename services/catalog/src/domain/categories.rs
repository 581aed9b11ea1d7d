//! What a described category is: its slug (the one products name), a name to show, a description and a
//! position; and how an update mask changes one.

use platform::error::FieldViolation;

/// Most categories an editor may describe (a shop has dozens; the listing is one answer).
pub const MAX_CATEGORIES: i64 = 200;
/// Longest name of a category.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest description of a category.
pub const MAX_DESCRIPTION_CHARS: usize = 2000;
/// The fields an update mask may name.
pub const UPDATABLE_PATHS: &[&str] = &["name", "description", "position"];

/// The editable fields of a described category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategoryFields {
    /// The name to show, trimmed.
    pub name: String,
    /// The description.
    pub description: String,
    /// Smaller first.
    pub position: i32,
}

/// Checks a slug given as `field`.
pub fn check_slug(field: &str, slug: &str) -> Result<(), FieldViolation> {
    if super::is_slug(slug) {
        Ok(())
    } else {
        Err(FieldViolation::new(field, "must be a slug of 1 to 50 characters of a-z, 0-9 or '-'"))
    }
}

/// Checks the fields of a category; violations are named `category.<field>`.
pub fn validate(fields: CategoryFields) -> Result<CategoryFields, Vec<FieldViolation>> {
    let name = fields.name.trim().to_owned();
    let mut violations = Vec::new();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        violations.push(FieldViolation::new("category.name", "must be 1 to 100 characters on one line"));
    }
    if fields.description.chars().count() > MAX_DESCRIPTION_CHARS {
        violations.push(FieldViolation::new("category.description", "must be at most 2000 characters"));
    }
    if violations.is_empty() { Ok(CategoryFields { name, ..fields }) } else { Err(violations) }
}

/// Applies the fields of `input` named by `paths` to `current` and checks the result.
pub fn apply_update_mask(
    current: &CategoryFields,
    input: &CategoryFields,
    paths: &[String],
) -> Result<CategoryFields, Vec<FieldViolation>> {
    platform::error::check_update_mask(paths, UPDATABLE_PATHS)?;
    let mut next = current.clone();
    for path in paths {
        match path.as_str() {
            "name" => next.name = input.name.clone(),
            "description" => next.description = input.description.clone(),
            "position" => next.position = input.position,
            _ => {}
        }
    }
    validate(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(name: &str, description: &str, position: i32) -> CategoryFields {
        CategoryFields { name: name.into(), description: description.into(), position }
    }

    #[test]
    fn categories_have_a_name_on_one_line_and_a_bounded_description() {
        assert_eq!(validate(fields("  Green tea ", "", 2)), Ok(fields("Green tea", "", 2)));
        let names = |r: Result<CategoryFields, Vec<FieldViolation>>| {
            r.expect_err("bad").into_iter().map(|v| v.field).collect::<Vec<_>>()
        };
        assert_eq!(names(validate(fields(" ", &"x".repeat(2001), 0))), ["category.name", "category.description"]);
        assert_eq!(names(validate(fields("Tea\nCoffee", "", 0))), ["category.name"]);
        assert!(check_slug("slug", "green-tea").is_ok());
        assert_eq!(check_slug("slug", "Green Tea").expect_err("bad").field, "slug");
    }

    #[test]
    fn an_update_changes_only_the_named_fields() {
        let current = fields("Tea", "Leaves.", 1);
        let input = fields("Teas", "", 5);
        let paths = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(apply_update_mask(&current, &input, &paths(&["position"])), Ok(fields("Tea", "Leaves.", 5)));
        assert_eq!(apply_update_mask(&current, &input, &paths(&["name", "description"])), Ok(fields("Teas", "", 1)));
        let err = apply_update_mask(&current, &input, &paths(&["slug"])).expect_err("not updatable");
        assert_eq!(err[0].field, "update_mask");
        assert!(apply_update_mask(&current, &input, &[]).is_err());
    }
}
