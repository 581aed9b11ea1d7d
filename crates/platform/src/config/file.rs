//! The optional settings file: TOML whose keys are the settings' names without `MERCATO_`, in lower case
//! (`smtp_url = "smtp://..."` is `MERCATO_SMTP_URL`). A table's keys join its name with `_`, so a service's
//! settings can sit together (`[catalog]` with `url = ...` is `MERCATO_CATALOG_URL`). Numbers and booleans are
//! written as TOML has them; an array of them is a comma-separated list (`cors_origins = ["https://a", ...]`).

use std::fmt::Write;

/// The variable naming the file; read from the environment only.
pub const VARIABLE: &str = "MERCATO_CONFIG";

/// One setting the file gives: the variable it stands for, and the key it was written as (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSetting {
    /// The variable, e.g. `MERCATO_CATALOG_URL`.
    pub variable: String,
    /// The key as the file spells it, e.g. `catalog.url`.
    pub key: String,
    /// The value as the variable would hold it.
    pub value: String,
}

/// The settings `text` gives, or why it cannot be read (TOML's own message, which names the line).
pub fn settings(text: &str) -> Result<Vec<FileSetting>, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string().trim_end().replace('\n', " "))?;
    let mut found = Vec::new();
    flatten(&table, &[], &mut found)?;
    Ok(found)
}

fn flatten(table: &toml::Table, path: &[&str], found: &mut Vec<FileSetting>) -> Result<(), String> {
    for (key, value) in table {
        let path: Vec<&str> = path.iter().copied().chain([key.as_str()]).collect();
        let dotted = path.join(".");
        if let toml::Value::Table(inner) = value {
            flatten(inner, &path, found)?;
            continue;
        }
        let value = match value {
            toml::Value::Array(items) => {
                let mut list = String::new();
                for (i, item) in items.iter().enumerate() {
                    let item =
                        scalar(item).ok_or_else(|| format!("`{dotted}` must list strings, numbers or booleans"))?;
                    if i > 0 {
                        list.push(',');
                    }
                    let _ = write!(list, "{item}");
                }
                list
            }
            other => scalar(other).ok_or_else(|| format!("`{dotted}` must be a string, a number or a boolean"))?,
        };
        let variable = format!("MERCATO_{}", path.join("_").to_ascii_uppercase());
        found.push(FileSetting { variable, key: dotted, value });
    }
    Ok(())
}

fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(n) => Some(n.to_string()),
        toml::Value::Float(x) => Some(x.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Datetime(_) | toml::Value::Array(_) | toml::Value::Table(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        settings(text).expect("valid").into_iter().map(|s| (s.variable, s.value)).collect()
    }

    #[test]
    fn keys_are_the_variables_without_their_prefix() {
        let text = r#"
            http_addr = "0.0.0.0:8080"
            notification_retention_days = 30
            checkout_requires_verified_email = true
            cors_origins = ["https://shop.example.com", "https://admin.example.com"]

            [catalog]
            url = "http://catalog:50053"
            database_url = "postgres://catalog@db/catalog"
        "#;
        let mut found = pairs(text);
        found.sort();
        let expected = [
            ("MERCATO_CATALOG_DATABASE_URL", "postgres://catalog@db/catalog"),
            ("MERCATO_CATALOG_URL", "http://catalog:50053"),
            ("MERCATO_CHECKOUT_REQUIRES_VERIFIED_EMAIL", "true"),
            ("MERCATO_CORS_ORIGINS", "https://shop.example.com,https://admin.example.com"),
            ("MERCATO_HTTP_ADDR", "0.0.0.0:8080"),
            ("MERCATO_NOTIFICATION_RETENTION_DAYS", "30"),
        ];
        assert_eq!(found, expected.map(|(k, v)| (k.to_owned(), v.to_owned())));
        let keys: Vec<String> = settings(text).expect("valid").into_iter().map(|s| s.key).collect();
        assert!(keys.contains(&"catalog.url".to_owned()), "{keys:?}");
    }

    #[test]
    fn what_is_not_a_setting_value_is_refused_saying_where() {
        let broken = settings("http_addr = \"0.0.0.0:8080\nsmtp_url = 1").expect_err("unclosed string");
        assert!(broken.contains("line 1"), "{broken}");
        assert!(!broken.contains('\n'), "one line: {broken}");
        let when = settings("[gateway]\nstarts = 1979-05-27T07:32:00Z").expect_err("a date");
        assert!(when.contains("`gateway.starts`"), "{when}");
        let nested = settings("cors_origins = [[\"a\"]]").expect_err("a list of lists");
        assert!(nested.contains("`cors_origins` must list"), "{nested}");
    }
}
