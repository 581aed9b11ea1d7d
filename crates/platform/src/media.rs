//! Media types of uploaded files: what a client claims a file is, and whether its bytes agree. Every service
//! that keeps uploads (the catalog's product images, support's attachments) checks them the same way, so a
//! file served back with the type it was stored under is that type, never HTML posing as an image.

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

#[cfg(test)]
mod tests {
    use super::*;

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
