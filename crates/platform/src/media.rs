//! Media types of uploaded files: what a client claims a file is, and whether its bytes agree. Every service
//! that keeps uploads (the catalog's product images, support's attachments) checks them the same way, so a
//! file served back with the type it was stored under is that type, never HTML posing as an image.
//!
//! Files go back out as a `google.api.HttpBody` ([`http_body`]), whose extension
//! `mercato.options.v1.HttpBodyHeaders` tells the gateway how to cache them and whether to show or save them.

use api::google::api::HttpBody;
use api::mercato::options::v1::HttpBodyHeaders;
use prost::Message;

/// The type URL of [`HttpBodyHeaders`] in an HttpBody's `extensions`.
pub const HTTP_BODY_HEADERS_TYPE_URL: &str = "type.googleapis.com/mercato.options.v1.HttpBodyHeaders";

/// The types an upload may have, each with the bytes its files start with (empty: any bytes, see
/// [`matches`]).
const SIGNATURES: &[(&str, &[&[u8]])] = &[
    ("image/jpeg", &[b"\xFF\xD8\xFF"]),
    ("image/png", &[b"\x89PNG\r\n\x1A\n"]),
    ("image/gif", &[b"GIF87a", b"GIF89a"]),
    ("image/webp", &[b"RIFF"]),
    ("application/pdf", &[b"%PDF-"]),
    ("text/plain", &[]),
];

/// The media type `content_type` names without its parameters (`; charset=...`), lower case, trimmed:
/// `Image/PNG; x=y` is `image/png`.
pub fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// Whether `data` is a file of type `media_type` (an [`essence`]) as far as its first bytes tell: the
/// signature of its format (a WebP file is `RIFF`, a size, then `WEBP`), or for `text/plain` UTF-8 without
/// NUL bytes. False for a type not listed here.
pub fn matches(media_type: &str, data: &[u8]) -> bool {
    let Some((_, signatures)) = SIGNATURES.iter().find(|(name, _)| *name == media_type) else { return false };
    match media_type {
        "text/plain" => std::str::from_utf8(data).is_ok_and(|text| !text.contains('\0')),
        "image/webp" => data.starts_with(b"RIFF") && data.get(8..12) == Some(b"WEBP".as_slice()),
        _ => signatures.iter().any(|signature| data.starts_with(signature)),
    }
}

/// The answer of a method that returns a file: `data` as `content_type`, with the `headers` the gateway is to send.
pub fn http_body(content_type: String, data: Vec<u8>, headers: &HttpBodyHeaders) -> HttpBody {
    let extension =
        prost_types::Any { type_url: HTTP_BODY_HEADERS_TYPE_URL.to_owned(), value: headers.encode_to_vec() };
    HttpBody { content_type, data, extensions: vec![extension] }
}

/// The headers `body` asks for (the first [`HttpBodyHeaders`] among its extensions); none when it carries none
/// or one that does not decode.
pub fn http_body_headers(body: &HttpBody) -> HttpBodyHeaders {
    body.extensions
        .iter()
        .find(|any| any.type_url == HTTP_BODY_HEADERS_TYPE_URL)
        .and_then(|any| HttpBodyHeaders::decode(any.value.as_slice()).ok())
        .unwrap_or_default()
}

/// A strong entity tag for bytes that never change under `id` (an image's or attachment's id): `"<id>"`.
pub fn etag(id: &str) -> String {
    format!("\"{id}\"")
}

/// `Content-Disposition` for saving a file as `filename` (RFC 6266): a plain ASCII `filename` for old clients,
/// with anything else replaced by `_`, and the exact name as UTF-8 in `filename*`.
pub fn attachment_disposition(filename: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    // RFC 5987's attr-char: what `filename*` may carry unencoded.
    const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'!')
        .remove(b'#')
        .remove(b'$')
        .remove(b'&')
        .remove(b'+')
        .remove(b'-')
        .remove(b'.')
        .remove(b'^')
        .remove(b'_')
        .remove(b'`')
        .remove(b'|')
        .remove(b'~');
    let ascii: String = filename
        .chars()
        .map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{}", utf8_percent_encode(filename, ATTR_CHAR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_carry_the_headers_asked_for() {
        let headers =
            HttpBodyHeaders { cache_control: "private, no-cache".into(), etag: etag("a-1"), ..Default::default() };
        let body = http_body("image/png".into(), b"png".to_vec(), &headers);
        assert_eq!(http_body_headers(&body), headers);
        assert_eq!(headers.etag, "\"a-1\"");
        let plain = HttpBody { content_type: "text/plain".into(), data: Vec::new(), extensions: Vec::new() };
        assert_eq!(http_body_headers(&plain), HttpBodyHeaders::default());
    }

    #[test]
    fn dispositions_save_the_file_under_its_name() {
        assert_eq!(
            attachment_disposition("receipt 1.pdf"),
            "attachment; filename=\"receipt 1.pdf\"; filename*=UTF-8''receipt%201.pdf"
        );
        assert_eq!(
            attachment_disposition("Quittung \"März\".pdf"),
            "attachment; filename=\"Quittung _M_rz_.pdf\"; filename*=UTF-8''Quittung%20%22M%C3%A4rz%22.pdf"
        );
    }

    #[test]
    fn essences_drop_parameters_and_case() {
        assert_eq!(essence(" Image/PNG; foo=bar"), "image/png");
        assert_eq!(essence("text/plain;charset=utf-8"), "text/plain");
        assert_eq!(essence(""), "");
    }

    #[test]
    fn files_are_the_type_they_claim() {
        assert!(matches("image/png", b"\x89PNG\r\n\x1A\n\0\0\0\rIHDR"));
        assert!(matches("image/jpeg", b"\xFF\xD8\xFF\xE0rest"));
        assert!(matches("image/gif", b"GIF89a..."));
        assert!(matches("image/webp", b"RIFF\x10\0\0\0WEBPVP8 "));
        assert!(matches("application/pdf", b"%PDF-1.7\n"));
        assert!(matches("text/plain", "Order 42: the mug arrived broken. ☹\n".as_bytes()));
        // A PNG sent as a JPEG, a RIFF that is not WebP (a WAV file), HTML posing as a PDF, binary as text.
        assert!(!matches("image/jpeg", b"\x89PNG\r\n\x1A\n"));
        assert!(!matches("image/webp", b"RIFF\x10\0\0\0WAVEfmt "));
        assert!(!matches("application/pdf", b"<html><script>"));
        assert!(!matches("text/plain", b"\xFF\xFE\0a"));
        assert!(!matches("text/plain", b"a\0b"));
        // Types not listed are never a match, whatever the bytes.
        assert!(!matches("text/html", b"<html>"));
        assert!(!matches("image/svg+xml", b"<svg>"));
    }
}
