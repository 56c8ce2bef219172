//! How the client commands print what the server returned: one readable line per entry in
//! text mode, one JSON object per line with `--json`. Pure functions, unit-tested.

use crate::proto::{Durability, Entry};
use base64::Engine as _;
use serde::Serialize;
use std::collections::BTreeMap;

/// Characters of a UTF-8 payload shown in text mode before it is cut with "…".
pub const TEXT_PAYLOAD_CHARS: usize = 200;

/// Hex digits of a content hash shown in text mode.
pub const TEXT_HASH_DIGITS: usize = 16;

/// Lowercase hex of all the bytes.
pub fn hex_full(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// The first [`TEXT_HASH_DIGITS`] hex digits (all of them when shorter; "-" when empty).
pub fn hex_short(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "-".to_owned();
    }
    let mut h = hex::encode(bytes);
    h.truncate(TEXT_HASH_DIGITS);
    h
}

/// A hash in text mode: its hex, or "-" when the server sent none.
pub fn hex_or_dash(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        "-".to_owned()
    } else {
        hex::encode(bytes)
    }
}

/// The name of a `Durability` value as the proto spells it ("FSYNCED"), or
/// `UNKNOWN(<n>)` for a value this client does not know.
pub fn durability_name(value: i32) -> String {
    match Durability::try_from(value) {
        Ok(d) => d.as_str_name().to_owned(),
        Err(_) => format!("UNKNOWN({value})"),
    }
}

/// A word of a text line: as it is when it is a plain word, otherwise quoted with Rust
/// string escapes, so spaces, '=', quotes, newlines and control characters stay visible
/// and every line stays one line.
pub fn text_token(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '=' && c != '\\');
    if plain {
        s.to_owned()
    } else {
        format!("\"{}\"", s.escape_debug())
    }
}

/// A payload in text mode: quoted and escaped when it is UTF-8 (cut at
/// [`TEXT_PAYLOAD_CHARS`] characters with "…" and its size), `<N bytes>` otherwise.
pub fn payload_text(payload: &[u8]) -> String {
    match std::str::from_utf8(payload) {
        Ok(s) => {
            let mut chars = s.char_indices();
            match chars.nth(TEXT_PAYLOAD_CHARS) {
                None => format!("\"{}\"", s.escape_debug()),
                Some((cut, _)) => {
                    format!("\"{}…\" ({} bytes)", s[..cut].escape_debug(), payload.len())
                }
            }
        }
        Err(_) => format!("<{} bytes>", payload.len()),
    }
}

/// One entry as one text line:
/// `#<seq> <key> clock=<n> id=<id> hash=<16 hex> <payload> [k=v ...]` (metadata sorted by key).
pub fn entry_text(e: &Entry) -> String {
    let mut line = format!(
        "#{} {} clock={} id={} hash={} {}",
        e.sequence,
        text_token(&e.key),
        e.lamport_clock,
        text_token(&e.id),
        hex_short(&e.content_hash),
        payload_text(&e.payload)
    );
    for (k, v) in sorted(&e.metadata) {
        line.push(' ');
        line.push_str(&text_token(k));
        line.push('=');
        line.push_str(&text_token(v));
    }
    line
}

fn sorted<K: Ord, V>(m: &std::collections::HashMap<K, V>) -> BTreeMap<&K, &V> {
    m.iter().collect()
}

/// An entry in JSON. The payload is `payload` (a string) when it is valid UTF-8, else
/// `payload_base64` (standard alphabet, padded); exactly one of the two is present.
#[derive(Debug, Serialize)]
pub struct EntryJson<'a> {
    pub sequence: u64,
    pub id: &'a str,
    pub key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
    pub metadata: BTreeMap<&'a str, &'a str>,
    pub appended_at_ns: u64,
    pub lamport_clock: u64,
    /// Lowercase hex.
    pub content_hash: String,
}

impl<'a> EntryJson<'a> {
    pub fn new(e: &'a Entry) -> Self {
        let (payload, payload_base64) = match std::str::from_utf8(&e.payload) {
            Ok(s) => (Some(s), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(&e.payload)),
            ),
        };
        EntryJson {
            sequence: e.sequence,
            id: &e.id,
            key: &e.key,
            payload,
            payload_base64,
            metadata: e
                .metadata
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            appended_at_ns: e.appended_at_ns,
            lamport_clock: e.lamport_clock,
            content_hash: hex_full(&e.content_hash),
        }
    }
}

/// `append --json`: the entry's fields plus the acknowledgement's.
#[derive(Debug, Serialize)]
pub struct AppendJson<'a> {
    #[serde(flatten)]
    pub entry: EntryJson<'a>,
    pub duplicate: bool,
    pub durability: String,
}

/// `watch --json`: the entry's fields plus the root at tree size = its sequence.
#[derive(Debug, Serialize)]
pub struct WatchJson<'a> {
    #[serde(flatten)]
    pub entry: EntryJson<'a>,
    pub merkle_root: String,
}

/// `watch --json`: the marker line once the stored backlog has been delivered.
#[derive(Debug, Serialize)]
pub struct CaughtUpJson {
    pub caught_up: bool,
}

/// `get --json`: the last line, after the entries.
#[derive(Debug, Serialize)]
pub struct GetSummaryJson {
    /// Entries printed above.
    pub count: u64,
    pub latest_sequence: u64,
    pub merkle_root: String,
}

/// `snapshot --json`.
#[derive(Debug, Serialize)]
pub struct SnapshotJson<'a> {
    pub context_id: &'a str,
    pub file: String,
    pub bytes: u64,
    pub sequence: u64,
    pub entry_count: u64,
    pub version: u32,
    pub created_at_ns: u64,
    pub merkle_root: String,
}

/// `load --json`.
#[derive(Debug, Serialize)]
pub struct LoadJson<'a> {
    pub context_id: &'a str,
    pub file: String,
    pub entries_restored: u64,
    pub latest_sequence: u64,
    pub merkle_root: String,
}

/// One JSON line (no trailing newline).
pub fn json_line<T: Serialize>(value: &T) -> String {
    // Serializing these plain structs cannot fail: string keys, no non-finite floats.
    serde_json::to_string(value).expect("CLI JSON values always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::{json, Value};

    fn entry(payload: &[u8]) -> Entry {
        Entry {
            id: "0190-abc".into(),
            key: "facts".into(),
            payload: Bytes::copy_from_slice(payload),
            sequence: 7,
            appended_at_ns: 1_700_000_000_000_000_000,
            metadata: [("step", "3"), ("agent", "a b")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            lamport_clock: 9,
            content_hash: Bytes::from_static(&[0xab; 32]),
        }
    }

    #[test]
    fn text_line_of_a_utf8_entry() {
        assert_eq!(
            entry_text(&entry(b"hello \"world\"\n")),
            "#7 facts clock=9 id=0190-abc hash=abababababababab \
             \"hello \\\"world\\\"\\n\" agent=\"a b\" step=3"
        );
    }

    #[test]
    fn text_line_of_binary_and_empty_entries() {
        let mut e = entry(&[0xff, 0x00, 0x01]);
        e.metadata.clear();
        e.key.clear();
        e.content_hash = Bytes::new();
        assert_eq!(
            entry_text(&e),
            "#7 \"\" clock=9 id=0190-abc hash=- <3 bytes>"
        );
        e.payload = Bytes::new();
        assert!(entry_text(&e).ends_with(" \"\""), "empty UTF-8 payload");
    }

    #[test]
    fn long_payloads_are_cut_at_char_boundaries() {
        let s = "é".repeat(300);
        let t = payload_text(s.as_bytes());
        assert_eq!(t, format!("\"{}…\" (600 bytes)", "é".repeat(200)));
        let exact = "x".repeat(TEXT_PAYLOAD_CHARS);
        assert_eq!(payload_text(exact.as_bytes()), format!("\"{exact}\""));
    }

    #[test]
    fn tokens_quote_what_would_break_a_line() {
        assert_eq!(text_token("facts"), "facts");
        assert_eq!(text_token(""), "\"\"");
        assert_eq!(text_token("a=b"), "\"a=b\"");
        assert_eq!(text_token("two\nlines"), "\"two\\nlines\"");
        assert_eq!(text_token("tab\there"), "\"tab\\there\"");
        assert_eq!(text_token("ünï"), "ünï");
    }

    #[test]
    fn json_of_a_utf8_entry() {
        let e = entry(b"{\"x\":1}");
        let v: Value = serde_json::from_str(&json_line(&EntryJson::new(&e))).unwrap();
        assert_eq!(
            v,
            json!({
                "sequence": 7,
                "id": "0190-abc",
                "key": "facts",
                "payload": "{\"x\":1}",
                "metadata": {"agent": "a b", "step": "3"},
                "appended_at_ns": 1_700_000_000_000_000_000u64,
                "lamport_clock": 9,
                "content_hash": "ab".repeat(32),
            })
        );
    }

    #[test]
    fn json_of_a_binary_entry_uses_base64() {
        let e = entry(&[0xff, 0xfe, 0x00]);
        let v: Value = serde_json::from_str(&json_line(&EntryJson::new(&e))).unwrap();
        assert_eq!(v["payload_base64"], "//4A");
        assert!(v.get("payload").is_none());
    }

    #[test]
    fn json_lines_are_single_lines_with_flattened_extras() {
        let e = entry(b"multi\nline");
        let line = json_line(&AppendJson {
            entry: EntryJson::new(&e),
            duplicate: true,
            durability: durability_name(Durability::Fsynced as i32),
        });
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["sequence"], 7);
        assert_eq!(v["duplicate"], true);
        assert_eq!(v["durability"], "FSYNCED");

        let v: Value = serde_json::from_str(&json_line(&WatchJson {
            entry: EntryJson::new(&e),
            merkle_root: hex_full(&[1, 2]),
        }))
        .unwrap();
        assert_eq!(v["merkle_root"], "0102");
        assert_eq!(v["payload"], "multi\nline");
    }

    #[test]
    fn durability_names() {
        assert_eq!(durability_name(1), "MEMORY");
        assert_eq!(durability_name(2), "WRITTEN");
        assert_eq!(durability_name(0), "DURABILITY_UNSPECIFIED");
        assert_eq!(durability_name(42), "UNKNOWN(42)");
    }

    #[test]
    fn hashes() {
        assert_eq!(hex_short(&[0x0f; 32]), "0f0f0f0f0f0f0f0f");
        assert_eq!(hex_short(&[0x0f]), "0f");
        assert_eq!(hex_or_dash(&[]), "-");
        assert_eq!(hex_or_dash(&[0xa0]), "a0");
    }
}
