//! What a file is, from its bytes; what it is called, from a name the
//! client gave; and the ids uploads get.

/// Bytes of a file's head kept for sniffing.
pub const HEAD_BYTES: usize = 8192;

/// The types decoded, thumbnailed and shown inline. Anything else (SVG
/// above all: it runs script) is served as a download.
const IMAGES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

/// A fresh media id: 128 random bits as 32 lower-case hex digits.
pub fn new_media_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// The type of a file from its first bytes: what its magic says; else
/// plain text when the bytes are UTF-8 without NULs; else
/// `application/octet-stream`. A client's claim is never asked.
pub fn sniff(head: &[u8]) -> String {
    if let Some(kind) = infer::get(head) {
        return kind.mime_type().to_owned();
    }
    let text = match std::str::from_utf8(head) {
        Ok(_) => true,
        // A character cut by the end of the head is still text.
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    };
    if !head.is_empty() && text && !head.contains(&0) {
        "text/plain; charset=utf-8".to_owned()
    } else {
        "application/octet-stream".to_owned()
    }
}

/// Whether files of `content_type` are decoded and shown inline.
pub fn is_image(content_type: &str) -> bool {
    IMAGES.contains(&content_type)
}

/// The name to keep of the one a client gave: its last path component,
/// without control characters, trimmed, at most 255 bytes; `file` when
/// nothing is left (or only dots).
pub fn clean_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last.chars().filter(|c| !c.is_control()).collect();
    let mut cleaned = cleaned.trim().to_owned();
    if cleaned.len() > 255 {
        let mut end = 255;
        while !cleaned.is_char_boundary(end) {
            end -= 1;
        }
        cleaned.truncate(end);
    }
    if cleaned.chars().all(|c| c == '.') {
        return "file".to_owned();
    }
    cleaned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_come_from_the_bytes() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0";
        assert_eq!(sniff(png), "image/png");
        assert_eq!(sniff(b"%PDF-1.7\n%..."), "application/pdf");
        assert_eq!(sniff(b"PK\x03\x04\x14\0\0\0\x08\0"), "application/zip");
        assert_eq!(sniff(b"\xff\xd8\xff\xe0\0\x10JFIF\0"), "image/jpeg");
        // Served as a download whatever it is (see the node's routes).
        assert_eq!(sniff(b"<html><script>x</script>"), "text/html");
        assert_eq!(sniff(b"just words"), "text/plain; charset=utf-8");
        assert_eq!(sniff("caf\u{e9}".as_bytes()), "text/plain; charset=utf-8");
        // A two-byte character cut in half at the end of the head.
        assert_eq!(
            sniff(&"caf\u{e9}".as_bytes()[..4]),
            "text/plain; charset=utf-8"
        );
        assert_eq!(sniff(b"a\0b"), "application/octet-stream");
        assert_eq!(sniff(&[0x9f, 0x12, 0xfe, 0x80]), "application/octet-stream");
        assert_eq!(sniff(b""), "application/octet-stream");
        assert!(is_image("image/png") && is_image("image/webp"));
        assert!(!is_image("image/svg+xml") && !is_image("text/plain; charset=utf-8"));
    }

    #[test]
    fn names_lose_their_paths_and_control_characters() {
        assert_eq!(clean_name("../../x"), "x");
        assert_eq!(clean_name("a\\b.txt"), "b.txt");
        assert_eq!(clean_name("C:\\Users\\me\\photo.jpg"), "photo.jpg");
        assert_eq!(clean_name(" in\u{0}va\nlid\u{7f}.txt "), "invalid.txt");
        assert_eq!(clean_name(""), "file");
        assert_eq!(clean_name(".."), "file");
        assert_eq!(clean_name("dir/"), "file");
        let long = "\u{e9}".repeat(200);
        let kept = clean_name(&long);
        assert!(kept.len() <= 255 && kept.chars().all(|c| c == '\u{e9}'));
        assert_eq!(
            clean_name("r\u{e9}sum\u{e9} 2026.pdf"),
            "r\u{e9}sum\u{e9} 2026.pdf"
        );
    }

    #[test]
    fn ids_are_fresh_media_ids() {
        let (a, b) = (new_media_id(), new_media_id());
        assert_ne!(a, b);
        assert!(chat_protocol::media::is_media_id(&a), "{a}");
    }
}
