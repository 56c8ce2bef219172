//! Checkpoints: a context's tree size and root in the C2SP tlog-checkpoint format
//! (<https://c2sp.org/tlog-checkpoint>), signed as a C2SP signed note.
//!
//! A root the server merely states proves nothing to a third party; a root it *signed*
//! does: anyone holding the public key can show what the ledger committed to at that size,
//! and two signed checkpoints that no consistency proof connects are proof of a forked
//! history. The body is three lines, each ending in a newline:
//!
//! ```text
//! converge-ledger/<context id>     the origin: which log this is
//! <tree size>                      decimal, no sign, no leading zeros
//! <base64 of the 32-byte root>     standard alphabet, padded
//! ```
//!
//! The origin is fixed, not configured: `converge-ledger/` followed by the context id, with
//! `%`, ASCII control characters and DEL written as `%XX` (uppercase hex) so that any
//! context id gives one line and distinct ids give distinct origins. The signing key's name
//! says which ledger signed. Parsing accepts (and keeps) extension lines after the root, as
//! the format allows; the ledger writes none.
//!
//! Pure: no I/O.

use base64::Engine as _;

use super::note::{self, check_text, NoteError};
use super::note_key::{NoteSigner, NoteVerifier};
use crate::model::Hash;

/// What every origin this ledger writes starts with.
pub const ORIGIN_PREFIX: &str = "converge-ledger/";

/// The origin line of a context's checkpoints (see the module documentation).
pub fn origin(context_id: &str) -> String {
    let mut out = String::with_capacity(ORIGIN_PREFIX.len() + context_id.len());
    out.push_str(ORIGIN_PREFIX);
    for c in context_id.chars() {
        if c == '%' || c < ' ' || c == '\u{7f}' {
            out.push_str(&format!("%{:02X}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Why a checkpoint was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    #[error(transparent)]
    Note(#[from] NoteError),
    #[error("the checkpoint is not signed, but a signature by key {key} was required")]
    Unsigned { key: String },
}

/// A checkpoint body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub tree_size: u64,
    pub root: Hash,
    /// Lines after the root (none in checkpoints this ledger writes).
    pub extensions: Vec<String>,
}

/// What is known about a checkpoint's signatures after [`read`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureCheck {
    /// Signed by the required key, and the signature verifies.
    Verified { key: String },
    /// Signed by these keys (`name+id`), not checked: no key was required.
    NotChecked { keys: Vec<String> },
    /// A bare body with no signature lines.
    Unsigned,
}

impl Checkpoint {
    /// The checkpoint of `context_id`'s tree of `tree_size` entries with root `root`.
    pub fn new(context_id: &str, tree_size: u64, root: Hash) -> Self {
        Checkpoint {
            origin: origin(context_id),
            tree_size,
            root,
            extensions: Vec::new(),
        }
    }

    /// The body text: origin, size, base64 root, extension lines, each ending in a newline.
    pub fn body(&self) -> String {
        let mut out = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.tree_size,
            base64::engine::general_purpose::STANDARD.encode(self.root)
        );
        for line in &self.extensions {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// The body signed by `signer`: a complete C2SP signed note.
    pub fn sign(&self, signer: &NoteSigner) -> String {
        match note::sign(&self.body(), &[signer]) {
            Ok(n) => n,
            // The origin escapes every control character and the other lines are digits
            // and base64, so the body is always valid note text.
            Err(e) => unreachable!("a checkpoint body is valid note text: {e}"),
        }
    }

    /// Parses a body (exactly the signed text of a checkpoint note).
    pub fn parse_body(text: &str) -> Result<Self, CheckpointError> {
        let bad = |m: String| CheckpointError::Malformed(m);
        check_text(text)?;
        let mut lines = text[..text.len() - 1].split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(bad("the origin line is empty".into()));
        }
        let size = lines
            .next()
            .ok_or_else(|| bad("no tree size line".into()))?;
        let canonical = size == "0" || (!size.starts_with('0') && !size.is_empty());
        let tree_size = match size.parse::<u64>() {
            Ok(n) if canonical && size.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err(bad(format!(
                    "tree size {size:?} is not a decimal number without sign or leading zeros"
                )))
            }
        };
        let root_b64 = lines
            .next()
            .ok_or_else(|| bad("no root hash line".into()))?;
        let root = base64::engine::general_purpose::STANDARD
            .decode(root_b64)
            .map_err(|e| {
                bad(format!(
                    "root hash {root_b64:?} is not standard base64: {e}"
                ))
            })?;
        let root: Hash = root
            .as_slice()
            .try_into()
            .map_err(|_| bad(format!("root hash is {} bytes, not 32", root.len())))?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(bad("empty line in the checkpoint body".into()));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            tree_size,
            root,
            extensions,
        })
    }
}

/// Reads a checkpoint: a signed note, or (when no key is required) a bare body.
///
/// With `required`, the checkpoint must be a note signed by that key and the signature must
/// verify. Without, signatures are parsed but not checked, and a bare body is accepted.
pub fn read(
    bytes: &[u8],
    required: Option<&NoteVerifier>,
) -> Result<(Checkpoint, SignatureCheck), CheckpointError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| CheckpointError::Malformed(format!("not UTF-8: {e}")))?;
    let signed = text.contains("\n\n");
    match (required, signed) {
        (Some(v), false) => Err(CheckpointError::Unsigned {
            key: format!("{}+{:08x}", v.name(), v.key_id()),
        }),
        (Some(v), true) => {
            let n = note::open(bytes, v)?;
            let key = format!("{}+{:08x}", v.name(), v.key_id());
            Ok((
                Checkpoint::parse_body(n.text())?,
                SignatureCheck::Verified { key },
            ))
        }
        (None, true) => {
            let n = note::parse(bytes)?;
            let keys = n
                .signatures()
                .iter()
                .map(|s| format!("{}+{:08x}", s.name, s.key_id))
                .collect();
            Ok((
                Checkpoint::parse_body(n.text())?,
                SignatureCheck::NotChecked { keys },
            ))
        }
        (None, false) => Ok((Checkpoint::parse_body(text)?, SignatureCheck::Unsigned)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> NoteSigner {
        NoteSigner::from_seed("ledger.example", &[1; 32]).unwrap()
    }

    #[test]
    fn origin_is_the_context_id_escaped_injectively() {
        assert_eq!(origin("ctx-1"), "converge-ledger/ctx-1");
        assert_eq!(origin("a b/é"), "converge-ledger/a b/é");
        assert_eq!(origin("a\nb"), "converge-ledger/a%0Ab");
        assert_eq!(origin("100%"), "converge-ledger/100%25");
        assert_ne!(origin("a%0Ab"), origin("a\nb"));
        assert_eq!(origin("\u{7f}\t"), "converge-ledger/%7F%09");
    }

    #[test]
    fn body_format() {
        let c = Checkpoint::new("demo-ctx", 7, [0xab; 32]);
        assert_eq!(
            c.body(),
            "converge-ledger/demo-ctx\n7\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n"
        );
        assert_eq!(Checkpoint::parse_body(&c.body()).unwrap(), c);
    }

    #[test]
    fn signed_round_trip_and_checks() {
        let s = signer();
        let c = Checkpoint::new("a\nweird%ctx", 1_000_000, [9; 32]);
        let note = c.sign(&s);
        let (back, check) = read(note.as_bytes(), Some(&s.verifier())).unwrap();
        assert_eq!(back, c);
        assert!(matches!(check, SignatureCheck::Verified { .. }));

        let (back, check) = read(note.as_bytes(), None).unwrap();
        assert_eq!(back, c);
        assert_eq!(
            check,
            SignatureCheck::NotChecked {
                keys: vec![format!("ledger.example+{:08x}", s.key_id())]
            }
        );

        // Another key: rejected.
        let other = NoteSigner::from_seed("ledger.example", &[2; 32]).unwrap();
        let e = read(note.as_bytes(), Some(&other.verifier())).unwrap_err();
        assert!(
            matches!(e, CheckpointError::Note(NoteError::NoSignatureByKey { .. })),
            "{e}"
        );

        // A changed size or root: the signature no longer verifies.
        let forged = note.replacen("1000000", "1000001", 1);
        let e = read(forged.as_bytes(), Some(&s.verifier())).unwrap_err();
        assert!(
            matches!(e, CheckpointError::Note(NoteError::BadSignature { .. })),
            "{e}"
        );
    }

    #[test]
    fn unsigned_bodies() {
        let c = Checkpoint::new("c", 0, [0; 32]);
        let (back, check) = read(c.body().as_bytes(), None).unwrap();
        assert_eq!((back, check), (c.clone(), SignatureCheck::Unsigned));
        let e = read(c.body().as_bytes(), Some(&signer().verifier())).unwrap_err();
        assert!(matches!(e, CheckpointError::Unsigned { .. }), "{e}");
    }

    #[test]
    fn malformed_bodies_say_why() {
        let root = base64::engine::general_purpose::STANDARD.encode([0u8; 32]);
        let cases = [
            (format!("o\n01\n{root}\n"), "leading zeros"),
            (format!("o\n+1\n{root}\n"), "without sign"),
            (format!("o\n\n{root}\n"), "not a decimal"),
            (
                format!("o\n18446744073709551616\n{root}\n"),
                "not a decimal",
            ),
            ("o\n1\n".to_string(), "no root hash line"),
            ("o\n1\nAAAA\n".to_string(), "3 bytes, not 32"),
            (format!("\n1\n{root}\n"), "origin line is empty"),
            (format!("o\n1\n{root}\n\next\n"), "empty line"),
            (format!("o\n1\n{root}"), "end with a newline"),
        ];
        for (text, why) in cases {
            let e = Checkpoint::parse_body(&text).unwrap_err().to_string();
            assert!(e.contains(why), "{text:?}: {why:?} not in {e:?}");
        }
        let with_ext = Checkpoint::parse_body(&format!("o\n1\n{root}\nmore\n")).unwrap();
        assert_eq!(with_ext.extensions, vec!["more".to_string()]);
    }
}
