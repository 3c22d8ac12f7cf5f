//! Uploaded creatives: the media types accepted, and a check that the bytes are what their type says, so
//! that what this origin serves under an image or video type is one (SVG, HTML and anything else a
//! browser could run as script are never accepted).

use distributivecom_protocol::api::CreativeKind;

/// The media types an uploaded creative may have, with the kind each is.
pub const ACCEPTED_TYPES: &[(&str, CreativeKind)] = &[
    ("image/png", CreativeKind::Image),
    ("image/jpeg", CreativeKind::Image),
    ("image/gif", CreativeKind::Image),
    ("image/webp", CreativeKind::Image),
    ("video/mp4", CreativeKind::Video),
    ("video/webm", CreativeKind::Video),
];

/// Checks an uploaded creative: its type is accepted and of its kind, and its bytes start as that type's
/// do. Returns the type, lowercased, or what is wrong.
pub fn check_upload(kind: CreativeKind, mime: &str, bytes: &[u8]) -> Result<String, String> {
    let mime = mime.trim().to_ascii_lowercase();
    let Some((accepted, accepted_kind)) = ACCEPTED_TYPES.iter().find(|(name, _)| *name == mime) else {
        let names: Vec<&str> = ACCEPTED_TYPES.iter().map(|(name, _)| *name).collect();
        return Err(format!("a creative's mime is one of {}, not {mime:?}", names.join(", ")));
    };
    if *accepted_kind != kind {
        return Err(format!("{mime} is not a creative of kind {}", kind_name(kind)));
    }
    if bytes.is_empty() {
        return Err("the creative's data is empty".to_owned());
    }
    if !starts_as(accepted, bytes) {
        return Err(format!("the creative's data is not {mime}: its first bytes are not those of that format"));
    }
    Ok(mime)
}

pub fn kind_name(kind: CreativeKind) -> &'static str {
    match kind {
        CreativeKind::Image => "image",
        CreativeKind::Video => "video",
    }
}

/// Whether `bytes` begin with the signature of `mime` (its "magic number").
fn starts_as(mime: &str, bytes: &[u8]) -> bool {
    match mime {
        "image/png" => bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "image/jpeg" => bytes.starts_with(b"\xff\xd8\xff"),
        "image/gif" => bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a"),
        "image/webp" => bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP",
        // An ISO base media file starts with a box whose type, after its 4-byte size, is `ftyp`.
        "video/mp4" => bytes.len() >= 8 && &bytes[4..8] == b"ftyp",
        // WebM is Matroska: an EBML header.
        "video/webm" => bytes.starts_with(b"\x1a\x45\xdf\xa3"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_must_be_what_its_type_says() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(check_upload(CreativeKind::Image, "Image/PNG", png), Ok("image/png".to_owned()));
        assert_eq!(check_upload(CreativeKind::Video, "video/mp4", b"\0\0\0\x18ftypmp42"), Ok("video/mp4".to_owned()));
        for (kind, mime, bytes, expected) in [
            (CreativeKind::Image, "image/svg+xml", &b"<svg/>"[..], "not \"image/svg+xml\""),
            (CreativeKind::Image, "text/html", b"<script>", "a creative's mime is one of"),
            (CreativeKind::Video, "image/png", png, "not a creative of kind video"),
            (CreativeKind::Image, "image/png", b"", "empty"),
            (CreativeKind::Image, "image/jpeg", png, "is not image/jpeg"),
            (CreativeKind::Image, "image/webp", b"RIFF", "is not image/webp"),
        ] {
            let error = check_upload(kind, mime, bytes).unwrap_err();
            assert!(error.contains(expected), "{mime}: {error}");
        }
    }
}
