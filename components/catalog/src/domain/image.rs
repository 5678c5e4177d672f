//! Product images: the type is sniffed from the bytes (the declared `Content-Type` is only a
//! gate), the key is the SHA-256 of the bytes, so identical uploads share one stored object and
//! a key's content never changes (hence `immutable` caching and the hash as strong `ETag`).

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The image formats the catalog accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageType {
    Png,
    Jpeg,
    Webp,
}

impl ImageType {
    pub fn content_type(self) -> &'static str {
        match self {
            ImageType::Png => "image/png",
            ImageType::Jpeg => "image/jpeg",
            ImageType::Webp => "image/webp",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ImageType::Png => "png",
            ImageType::Jpeg => "jpg",
            ImageType::Webp => "webp",
        }
    }

    fn from_extension(ext: &str) -> Option<ImageType> {
        match ext {
            "png" => Some(ImageType::Png),
            "jpg" => Some(ImageType::Jpeg),
            "webp" => Some(ImageType::Webp),
            _ => None,
        }
    }

    /// The declared media type of an upload (parameters and case ignored); `None` when it is
    /// not one the catalog takes.
    pub fn from_declared(content_type: Option<&str>) -> Option<ImageType> {
        let essence = content_type?.split(';').next()?.trim().to_ascii_lowercase();
        match essence.as_str() {
            "image/png" => Some(ImageType::Png),
            "image/jpeg" | "image/jpg" => Some(ImageType::Jpeg),
            "image/webp" => Some(ImageType::Webp),
            _ => None,
        }
    }

    /// Recognises PNG (8-byte signature), JPEG (SOI marker `FF D8 FF`) and WebP (`RIFF` container
    /// of form type `WEBP`) from the first bytes.
    pub fn sniff(bytes: &[u8]) -> Option<ImageType> {
        const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
        if bytes.len() > PNG.len() && bytes.starts_with(PNG) {
            Some(ImageType::Png)
        } else if bytes.len() > 3 && bytes.starts_with(b"\xFF\xD8\xFF") {
            Some(ImageType::Jpeg)
        } else if bytes.len() > 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
            Some(ImageType::Webp)
        } else {
            None
        }
    }
}

/// `<64 lower-case hex sha256>.<png|jpg|webp>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageKey {
    digest: String,
    kind: ImageType,
}

impl ImageKey {
    /// The key of `bytes` of type `kind`.
    pub fn of(bytes: &[u8], kind: ImageType) -> ImageKey {
        let digest = Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        ImageKey { digest, kind }
    }

    /// Parses a key from a URL path segment; anything else is `None` (answered 404).
    pub fn parse(text: &str) -> Option<ImageKey> {
        let (digest, ext) = text.split_once('.')?;
        let kind = ImageType::from_extension(ext)?;
        if digest.len() != 64
            || !digest
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return None;
        }
        Some(ImageKey {
            digest: digest.to_owned(),
            kind,
        })
    }

    pub fn kind(&self) -> ImageType {
        self.kind
    }

    /// The strong entity tag, quoted: `"<sha256>"`.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.digest)
    }
}

impl fmt::Display for ImageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.digest, self.kind.extension())
    }
}

impl TryFrom<String> for ImageKey {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        ImageKey::parse(&s).ok_or_else(|| format!("not an image key: {s}"))
    }
}

impl From<ImageKey> for String {
    fn from(k: ImageKey) -> String {
        k.to_string()
    }
}

/// Whether an `If-None-Match` header value matches `etag` (RFC 9110 §13.1.2: weak comparison,
/// `*` matches any current representation).
pub fn if_none_match(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

/// The public URL of an image: `<cdn_base_url>/images/<key>`, or the relative `/images/<key>`
/// when no CDN is configured.
pub fn image_url(cdn_base_url: &str, key: &ImageKey) -> String {
    format!("{}/images/{key}", cdn_base_url.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    const JPEG: &[u8] = b"\xFF\xD8\xFF\xE0\0\x10JFIF";
    const WEBP: &[u8] = b"RIFF\x24\0\0\0WEBPVP8 ";

    #[test]
    fn sniffs_magic_bytes_only() {
        assert_eq!(ImageType::sniff(PNG), Some(ImageType::Png));
        assert_eq!(ImageType::sniff(JPEG), Some(ImageType::Jpeg));
        assert_eq!(ImageType::sniff(WEBP), Some(ImageType::Webp));
        for bad in [
            &b""[..],
            b"GIF89a....",
            b"<svg xmlns='http://www.w3.org/2000/svg'/>",
            b"\x89PNG\r\n\x1a\n",
            b"RIFF\x24\0\0\0WAVEfmt ",
            b"\xFF\xD8",
        ] {
            assert_eq!(ImageType::sniff(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn declared_types() {
        assert_eq!(
            ImageType::from_declared(Some("IMAGE/PNG; q=1")),
            Some(ImageType::Png)
        );
        assert_eq!(
            ImageType::from_declared(Some("image/jpeg")),
            Some(ImageType::Jpeg)
        );
        assert_eq!(ImageType::from_declared(Some("image/svg+xml")), None);
        assert_eq!(ImageType::from_declared(None), None);
    }

    #[test]
    fn keys_are_content_addressed_and_parse_strictly() {
        let key = ImageKey::of(b"abc", ImageType::Png);
        assert_eq!(
            key.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad.png"
        );
        assert_eq!(ImageKey::parse(&key.to_string()), Some(key.clone()));
        assert_eq!(
            key.etag(),
            "\"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\""
        );
        for bad in [
            "x.png",
            "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD.png",
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad.gif",
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "../etc/passwd",
        ] {
            assert_eq!(ImageKey::parse(bad), None, "{bad}");
        }
        assert_eq!(image_url("", &key), format!("/images/{key}"));
        assert_eq!(
            image_url("https://cdn.example.com/", &key),
            format!("https://cdn.example.com/images/{key}")
        );
    }

    #[test]
    fn if_none_match_rules() {
        let etag = "\"abc\"";
        assert!(if_none_match("\"abc\"", etag));
        assert!(if_none_match("\"x\", W/\"abc\"", etag));
        assert!(if_none_match("*", etag));
        assert!(!if_none_match("\"abd\"", etag));
        assert!(!if_none_match("abc", etag));
    }
}
