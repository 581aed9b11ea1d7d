//! The rules of product images: which types, how large, how many, and that the bytes are what they claim.

use platform::error::FieldViolation;
use platform::media;

/// The largest image accepted, in bytes (over HTTP it travels as base64 inside the gateway's 1 MiB body limit).
pub const MAX_IMAGE_BYTES: usize = 512 * 1024;
/// The most images a product has.
pub const MAX_IMAGES: i64 = 10;
/// The longest alt text, in characters.
pub const MAX_ALT_TEXT: usize = 200;

/// The image types a shop's pages can show.
const TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

/// An image as validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInput {
    /// Its type, as one of [`TYPES`] names it (lower case).
    pub content_type: String,
    /// Its alt text, trimmed.
    pub alt_text: String,
}

/// Checks an image to add; every bad field is named.
pub fn validate_image(content_type: &str, data: &[u8], alt_text: &str) -> Result<ImageInput, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let content_type = media::essence(content_type);
    let known = TYPES.contains(&content_type.as_str());
    if content_type.is_empty() {
        violations.push(FieldViolation::new("content_type", "is required"));
    } else if !known {
        violations.push(FieldViolation::new("content_type", "must be image/jpeg, image/png, image/webp or image/gif"));
    }
    if data.is_empty() {
        violations.push(FieldViolation::new("data", "is required"));
    } else if data.len() > MAX_IMAGE_BYTES {
        violations.push(FieldViolation::new("data", format!("is larger than {MAX_IMAGE_BYTES} bytes")));
    } else if known && !media::matches(&content_type, data) {
        violations.push(FieldViolation::new("data", format!("is not a {content_type} file")));
    }
    let alt_text = alt_text.trim();
    if alt_text.chars().count() > MAX_ALT_TEXT {
        violations.push(FieldViolation::new("alt_text", format!("is longer than {MAX_ALT_TEXT} characters")));
    } else if alt_text.chars().any(char::is_control) {
        violations.push(FieldViolation::new("alt_text", "must not contain control characters"));
    }
    if violations.is_empty() { Ok(ImageInput { content_type, alt_text: alt_text.to_owned() }) } else { Err(violations) }
}

/// Where an image's bytes are kept in the catalog's blob store.
pub fn blob_key(product_id: &str, image_id: &str) -> String {
    format!("products/{product_id}/{image_id}")
}

/// Where an image's bytes are served, relative to the API's base URL.
pub fn image_uri(product_id: &str, image_id: &str) -> String {
    format!("/v1/products/{product_id}/images/{image_id}/content")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1A\n\0\0\0\rIHDR";

    fn fields(violations: Vec<FieldViolation>) -> Vec<String> {
        violations.into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn images_are_the_type_they_claim() {
        assert_eq!(
            validate_image("Image/PNG; foo=bar", PNG, " A red mug "),
            Ok(ImageInput { content_type: "image/png".into(), alt_text: "A red mug".into() })
        );
        assert!(validate_image("image/jpeg", b"\xFF\xD8\xFF\xE0rest", "").is_ok());
        assert!(validate_image("image/gif", b"GIF89a...", "").is_ok());
        assert!(validate_image("image/webp", b"RIFF\x10\0\0\0WEBPVP8 ", "").is_ok());
        // A PNG sent as a JPEG, a RIFF that is not WebP (a WAV file), HTML posing as an image.
        assert_eq!(fields(validate_image("image/jpeg", PNG, "").expect_err("mismatch")), ["data"]);
        assert_eq!(fields(validate_image("image/webp", b"RIFF\x10\0\0\0WAVEfmt ", "").expect_err("wav")), ["data"]);
        assert_eq!(fields(validate_image("text/html", b"<script>", "").expect_err("html")), ["content_type"]);
    }

    #[test]
    fn every_bad_field_is_named() {
        let too_big = [PNG, &vec![0; MAX_IMAGE_BYTES]].concat();
        assert_eq!(fields(validate_image("image/png", &too_big, "").expect_err("too big")), ["data"]);
        assert_eq!(
            fields(validate_image("", b"", &"x".repeat(MAX_ALT_TEXT + 1)).expect_err("all bad")),
            ["content_type", "data", "alt_text"]
        );
        assert_eq!(fields(validate_image("image/png", PNG, "a\u{7}b").expect_err("bell")), ["alt_text"]);
    }

    #[test]
    fn keys_and_uris_name_the_product_and_the_image() {
        assert_eq!(blob_key("p1", "i1"), "products/p1/i1");
        assert_eq!(image_uri("p1", "i1"), "/v1/products/p1/images/i1/content");
    }
}
