//! Path templates of `google.api.http` rules: literals, `*`, `**`, variables `{field}`, `{a.b}` and
//! `{name=shelves/*}`, and a custom verb (`/v1/products/{id}/inventory:adjust`).
//!
//! Grammar (from google/api/http.proto):
//! ```text
//! Template = "/" Segments [ Verb ] ;  Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;  Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! Verb     = ":" LITERAL ;
//! ```

use percent_encoding::percent_decode_str;

/// One matchable segment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**`: the rest of the path (zero or more segments); only last.
    Rest,
}

/// A variable: the field path it binds and the range of segments it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Variable {
    field_path: String,
    start: usize,
    end: usize,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    source: String,
    segments: Vec<Segment>,
    variables: Vec<Variable>,
    verb: Option<String>,
    /// The literal segments the template starts with, joined by `/`: a path that does not start with them
    /// cannot match, which a route lookup learns without splitting the path (most routes fail there).
    literal_prefix: String,
}

/// A template that does not follow the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad path template {template:?}: {problem}")]
pub struct TemplateError {
    template: String,
    problem: &'static str,
}

impl PathTemplate {
    /// Parses a template.
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let fail = |problem| TemplateError { template: template.to_owned(), problem };
        let rest = template.strip_prefix('/').ok_or_else(|| fail("must start with /"))?;
        // The verb is a colon after the last segment, outside any braces.
        let (path, verb) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('}') && !rest[i..].contains('/') => {
                (&rest[..i], Some(rest[i + 1..].to_owned()))
            }
            _ => (rest, None),
        };
        let mut segments = Vec::new();
        let mut variables = Vec::new();
        let mut chars = path;
        while !chars.is_empty() {
            if let Some(after) = chars.strip_prefix('{') {
                let close = after.find('}').ok_or_else(|| fail("unclosed {"))?;
                let inner = &after[..close];
                let (field_path, sub) = inner.split_once('=').unwrap_or((inner, "*"));
                if field_path.is_empty() {
                    return Err(fail("empty variable"));
                }
                let start = segments.len();
                for part in sub.split('/') {
                    segments.push(parse_segment(part).ok_or_else(|| fail("bad segment in variable"))?);
                }
                variables.push(Variable { field_path: field_path.to_owned(), start, end: segments.len() });
                chars = &after[close + 1..];
            } else {
                let end = chars.find('/').unwrap_or(chars.len());
                segments.push(parse_segment(&chars[..end]).ok_or_else(|| fail("empty segment"))?);
                chars = &chars[end..];
            }
            chars = match chars.strip_prefix('/') {
                Some("") => return Err(fail("trailing /")),
                Some(next) => next,
                None if chars.is_empty() => chars,
                None => return Err(fail("expected / between segments")),
            };
        }
        if segments.iter().rev().skip(1).any(|s| *s == Segment::Rest) {
            return Err(fail("** must be the last segment"));
        }
        let literals: Vec<&str> = segments
            .iter()
            .map_while(|segment| match segment {
                Segment::Literal(literal) => Some(literal.as_str()),
                _ => None,
            })
            .collect();
        let literal_prefix = literals.join("/");
        Ok(Self { source: template.to_owned(), segments, variables, verb, literal_prefix })
    }

    /// The template as written, used as the route label in metrics and logs.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// How many literal segments the template has; more literals is a more specific route.
    pub fn literal_count(&self) -> usize {
        self.segments.iter().filter(|s| matches!(s, Segment::Literal(_))).count()
    }

    /// Field paths bound by the template's variables.
    pub fn field_paths(&self) -> impl Iterator<Item = &str> {
        self.variables.iter().map(|v| v.field_path.as_str())
    }

    /// Matches a request path (still percent-encoded) and returns `(field path, value)` per variable.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let rest = path.strip_prefix('/')?;
        let rest = match &self.verb {
            Some(verb) => rest.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => rest,
        };
        if !rest.starts_with(self.literal_prefix.as_str()) {
            return None;
        }
        // Every route's template is tried until one matches: the path is split into a list only once it did.
        let split = || rest.split('/').filter(|_| !rest.is_empty());
        let ends_with_rest = self.segments.last() == Some(&Segment::Rest);
        let fixed = self.segments.len() - usize::from(ends_with_rest);
        let count = split().count();
        if count < fixed || (!ends_with_rest && count != fixed) {
            return None;
        }
        for (segment, part) in self.segments.iter().zip(split()) {
            match segment {
                Segment::Literal(lit) if lit != part => return None,
                Segment::One if part.is_empty() => return None,
                _ => {}
            }
        }
        let parts: Vec<&str> = split().collect();
        let mut bound = Vec::with_capacity(self.variables.len());
        for var in &self.variables {
            let end = if var.end == self.segments.len() && ends_with_rest { parts.len() } else { var.end };
            let value = if end - var.start == 1 && !(ends_with_rest && var.end == self.segments.len()) {
                // A single-segment variable: everything is decoded, "%2F" included.
                percent_decode_str(parts[var.start]).decode_utf8().ok()?.into_owned()
            } else {
                // A multi-segment variable keeps "/" as the separator and decodes within segments.
                parts[var.start..end]
                    .iter()
                    .map(|p| percent_decode_str(p).decode_utf8().map(|s| s.replace('/', "%2F")))
                    .collect::<Result<Vec<_>, _>>()
                    .ok()?
                    .join("/")
            };
            bound.push((var.field_path.clone(), value));
        }
        Some(bound)
    }
}

fn parse_segment(part: &str) -> Option<Segment> {
    match part {
        "" => None,
        "*" => Some(Segment::One),
        "**" => Some(Segment::Rest),
        lit => Some(Segment::Literal(lit.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(template: &str) -> PathTemplate {
        PathTemplate::parse(template).expect("valid template")
    }

    fn bound(pairs: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }

    #[test]
    fn literals_and_variables() {
        assert_eq!(t("/v1/products").matches("/v1/products"), bound(&[]));
        assert_eq!(t("/v1/products").matches("/v1/products/x"), None);
        assert_eq!(t("/v1/products/{id}").matches("/v1/products/p-1"), bound(&[("id", "p-1")]));
        assert_eq!(t("/v1/products/{id}").matches("/v1/products/"), None);
        assert_eq!(t("/v1/products/{id}").matches("/v1/products/a%20b%2Fc"), bound(&[("id", "a b/c")]));
        assert_eq!(t("/v1/{a.b}/x").matches("/v1/7/x"), bound(&[("a.b", "7")]));
    }

    #[test]
    fn verbs() {
        let adjust = t("/v1/products/{product_id}/inventory:adjust");
        assert_eq!(adjust.matches("/v1/products/p1/inventory:adjust"), bound(&[("product_id", "p1")]));
        assert_eq!(adjust.matches("/v1/products/p1/inventory"), None);
        assert_eq!(t("/v1/orders/{id}:cancel").matches("/v1/orders/o:1:cancel"), bound(&[("id", "o:1")]));
        assert_eq!(t("/v1/orders/{id}").matches("/v1/orders/o:1"), bound(&[("id", "o:1")]));
    }

    #[test]
    fn wildcards() {
        let named = t("/v1/{name=shelves/*}/books");
        assert_eq!(named.matches("/v1/shelves/s1/books"), bound(&[("name", "shelves/s1")]));
        assert_eq!(named.matches("/v1/racks/s1/books"), None);
        let rest = t("/v1/files/{path=**}");
        assert_eq!(rest.matches("/v1/files/a/b/c"), bound(&[("path", "a/b/c")]));
        assert_eq!(rest.matches("/v1/files/a%2Fb/c"), bound(&[("path", "a%2Fb/c")]));
        assert_eq!(t("/v1/*/x").matches("/v1/anything/x"), bound(&[]));
    }

    #[test]
    fn the_literal_prefix_refuses_only_what_cannot_match() {
        assert_eq!(t("/v1/products").matches("/v1/productsx"), None);
        assert_eq!(t("/v1/products/{id}").matches("/v1/product/p-1"), None);
        // A `**` right after the literals may match no segment at all: the prefix has no trailing `/`.
        assert_eq!(t("/v1/files/{path=**}").matches("/v1/files"), bound(&[("path", "")]));
        // Literals inside a variable count too, and the verb is stripped first.
        assert_eq!(t("/v1/{name=shelves/*}:get").matches("/v1/shelves/s1:get"), bound(&[("name", "shelves/s1")]));
        assert_eq!(t("/v1/{name=shelves/*}:get").matches("/v1/racks/s1:get"), None);
        assert_eq!(t("/v1/x:go").matches("/v1/x:go"), bound(&[]));
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in ["v1/x", "/v1/{id", "/v1/**/x", "/v1//x", "/v1/x/", "/v1/{}"] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad} parsed");
        }
        assert_eq!(t("/v1/a/{b}/c").literal_count(), 3);
    }
}
