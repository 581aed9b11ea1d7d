//! The rules of ticket attachments: which types, how large, how many, what a file name may be, and that the
//! bytes are the type they claim.

use platform::error::{FieldViolation, Violations};
use platform::media;

/// The largest attachment accepted, in bytes (over HTTP it travels as base64 inside the gateway's 1 MiB body
/// limit).
pub const MAX_ATTACHMENT_BYTES: usize = 512 * 1024;
/// The most attachments a ticket holds.
pub const MAX_ATTACHMENTS: i64 = 10;
/// The longest file name, in characters.
pub const MAX_FILENAME: usize = 255;

/// The types a customer may send: pictures, documents and text, nothing a browser would run.
const TYPES: &[&str] = &["image/jpeg", "image/png", "image/webp", "image/gif", "application/pdf", "text/plain"];

/// An attachment as validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentInput {
    /// Its file name, trimmed.
    pub filename: String,
    /// Its type, as one of [`TYPES`] names it (lower case, no parameters).
    pub content_type: String,
}

/// Checks an attachment to add; every bad field is named.
pub fn validate_attachment(
    filename: &str,
    content_type: &str,
    data: &[u8],
) -> Result<AttachmentInput, Vec<FieldViolation>> {
    let mut violations = Violations::new();
    let filename = filename.trim();
    if filename.is_empty() {
        violations.add("filename", "is required");
    } else if filename.chars().count() > MAX_FILENAME {
        violations.add("filename", format!("is longer than {MAX_FILENAME} characters"));
    } else if filename.contains(['/', '\\']) || filename == "." || filename == ".." {
        violations.add("filename", "must be a file's name, not a path");
    } else if filename.chars().any(char::is_control) {
        violations.add("filename", "must not contain control characters");
    }
    let content_type = media::essence(content_type);
    let known = TYPES.contains(&content_type.as_str());
    if content_type.is_empty() {
        violations.add("content_type", "is required");
    } else if !known {
        violations
            .add("content_type", "must be image/jpeg, image/png, image/webp, image/gif, application/pdf or text/plain");
    }
    if data.is_empty() {
        violations.add("data", "is required");
    } else if data.len() > MAX_ATTACHMENT_BYTES {
        violations.add("data", format!("is larger than {MAX_ATTACHMENT_BYTES} bytes"));
    } else if known && !media::matches(&content_type, data) {
        violations.add("data", format!("is not a {content_type} file"));
    }
    violations.finish()?;
    Ok(AttachmentInput { filename: filename.to_owned(), content_type })
}

/// Where an attachment's bytes are kept in the support service's blob store.
pub fn blob_key(ticket_id: &str, attachment_id: &str) -> String {
    format!("tickets/{ticket_id}/{attachment_id}")
}

/// Where an attachment's bytes are served, relative to the API's base URL.
pub fn attachment_uri(ticket_id: &str, attachment_id: &str) -> String {
    format!("/v1/tickets/{ticket_id}/attachments/{attachment_id}/content")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(violations: Vec<FieldViolation>) -> Vec<String> {
        violations.into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn attachments_are_pictures_documents_or_text_of_the_type_they_claim() {
        assert_eq!(
            validate_attachment(" receipt.pdf ", "Application/PDF", b"%PDF-1.7\n"),
            Ok(AttachmentInput { filename: "receipt.pdf".into(), content_type: "application/pdf".into() })
        );
        assert!(validate_attachment("log.txt", "text/plain; charset=utf-8", "ok ✓\n".as_bytes()).is_ok());
        assert!(validate_attachment("mug.png", "image/png", b"\x89PNG\r\n\x1A\nrest").is_ok());
        assert_eq!(fields(validate_attachment("a.pdf", "application/pdf", b"<html>").expect_err("html")), ["data"]);
        assert_eq!(
            fields(validate_attachment("a.html", "text/html", b"<script>").expect_err("html")),
            ["content_type"]
        );
        assert_eq!(fields(validate_attachment("a.svg", "image/svg+xml", b"<svg>").expect_err("svg")), ["content_type"]);
    }

    #[test]
    fn names_are_file_names_and_every_bad_field_is_named() {
        for bad in ["../etc/passwd", "a\\b.txt", "..", "a\nb.txt"] {
            assert_eq!(fields(validate_attachment(bad, "text/plain", b"x").expect_err(bad)), ["filename"], "{bad}");
        }
        assert_eq!(
            fields(validate_attachment(&"a".repeat(MAX_FILENAME + 1), "text/plain", b"x").expect_err("long")),
            ["filename"]
        );
        assert_eq!(fields(validate_attachment("", "", b"").expect_err("empty")), ["filename", "content_type", "data"]);
        let too_big = vec![b'a'; MAX_ATTACHMENT_BYTES + 1];
        assert_eq!(fields(validate_attachment("big.txt", "text/plain", &too_big).expect_err("big")), ["data"]);
    }

    #[test]
    fn keys_and_uris_name_the_ticket_and_the_attachment() {
        assert_eq!(blob_key("t1", "a1"), "tickets/t1/a1");
        assert_eq!(attachment_uri("t1", "a1"), "/v1/tickets/t1/attachments/a1/content");
    }
}
