//! C2SP signed notes (<https://c2sp.org/signed-note>): a text, a blank line, and one
//! signature line per signer.
//!
//! ```text
//! <text, ending with a newline>
//!
//! — <key name> <base64(4-byte key id ‖ 64-byte Ed25519 signature of the text)>
//! ```
//!
//! The line prefix is U+2014 (em dash) and a space. The signature covers the text exactly,
//! final newline included, and nothing else. A verifier ignores signature lines of keys it
//! does not know (so more signers, such as witnesses, can be added later) and fails on a
//! line that names its key but does not verify. This is the format Go's
//! `golang.org/x/mod/sumdb/note` writes; the tests check a note it produced, byte for byte.
//!
//! Pure: formatting, parsing, signing and verifying; keys are in `note_key`.

use base64::Engine as _;

use super::note_key::{is_valid_key_name, NoteSigner, NoteVerifier};

/// What starts every signature line: an em dash and a space.
pub const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// At most this many signature lines are read (as in Go's implementation): a bound on the
/// work a hostile note can cause.
pub const SIGNATURES_MAX: usize = 100;

/// Why a note was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("malformed note: {0}")]
    Malformed(String),
    #[error("the note carries no signature by key {key} (it is signed by: {present})")]
    NoSignatureByKey { key: String, present: String },
    #[error("the signature by key {key} does not verify: the text was changed after signing, or another key with that name and id signed it")]
    BadSignature { key: String },
}

/// One signature line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: u32,
    /// The signature bytes after the key id (64 for Ed25519).
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// `— <name> <base64(key id ‖ signature)>\n`.
    fn line(&self) -> String {
        let mut raw = Vec::with_capacity(4 + self.signature.len());
        raw.extend_from_slice(&self.key_id.to_be_bytes());
        raw.extend_from_slice(&self.signature);
        format!(
            "{SIGNATURE_PREFIX}{} {}\n",
            self.name,
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// A parsed note: its text and its signature lines, not yet verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    text: String,
    signatures: Vec<NoteSignature>,
}

/// Checks the rules every note text obeys: UTF-8 ending in a newline, with no ASCII
/// control character other than newline.
pub(crate) fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed(
            "the text must end with a newline".into(),
        ));
    }
    if let Some(c) = text.chars().find(|&c| c < ' ' && c != '\n') {
        return Err(NoteError::Malformed(format!(
            "the text contains the control character U+{:04X}",
            u32::from(c)
        )));
    }
    Ok(())
}

/// Signs `text` with every signer, in order, and returns the note.
pub fn sign(text: &str, signers: &[&NoteSigner]) -> Result<String, NoteError> {
    check_text(text)?;
    let mut note = String::with_capacity(text.len() + 1 + signers.len() * 120);
    note.push_str(text);
    note.push('\n');
    for s in signers {
        note.push_str(
            &NoteSignature {
                name: s.name().to_owned(),
                key_id: s.key_id(),
                signature: s.sign(text.as_bytes()).to_vec(),
            }
            .line(),
        );
    }
    Ok(note)
}

/// Parses a signed note (at least one signature line) without verifying any signature.
pub fn parse(note: &[u8]) -> Result<Note, NoteError> {
    let note =
        std::str::from_utf8(note).map_err(|e| NoteError::Malformed(format!("not UTF-8: {e}")))?;
    // The signature block follows the last blank line; signature lines contain none.
    let split = note.rfind("\n\n").ok_or_else(|| {
        NoteError::Malformed("no blank line separates the text from the signatures".into())
    })?;
    let (text, block) = (&note[..=split], &note[split + 2..]);
    check_text(text)?;
    if block.is_empty() {
        return Err(NoteError::Malformed("no signature lines".into()));
    }
    let Some(block) = block.strip_suffix('\n') else {
        return Err(NoteError::Malformed(
            "the last signature line does not end with a newline".into(),
        ));
    };
    let mut signatures = Vec::new();
    for (i, line) in block.split('\n').enumerate() {
        if i == SIGNATURES_MAX {
            return Err(NoteError::Malformed(format!(
                "more than {SIGNATURES_MAX} signature lines"
            )));
        }
        signatures.push(parse_signature_line(i + 1, line)?);
    }
    Ok(Note {
        text: text.to_owned(),
        signatures,
    })
}

fn parse_signature_line(n: usize, line: &str) -> Result<NoteSignature, NoteError> {
    let bad = |why: String| NoteError::Malformed(format!("signature line {n}: {why}"));
    let rest = line
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or_else(|| bad(format!("does not start with {SIGNATURE_PREFIX:?}")))?;
    let (name, b64) = rest
        .split_once(' ')
        .ok_or_else(|| bad("expected a key name, a space and a base64 signature".into()))?;
    if !is_valid_key_name(name) {
        return Err(bad(format!("invalid key name {name:?}")));
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| bad(format!("signature is not standard base64: {e}")))?;
    if raw.len() < 5 {
        return Err(bad(format!(
            "{} bytes is too short for a key id and a signature",
            raw.len()
        )));
    }
    Ok(NoteSignature {
        name: name.to_owned(),
        key_id: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
        signature: raw[4..].to_vec(),
    })
}

/// Parses `note` and verifies it with `verifier`: the note's text, once a signature by
/// that key verifies.
pub fn open(note: &[u8], verifier: &NoteVerifier) -> Result<Note, NoteError> {
    let parsed = parse(note)?;
    parsed.verify(verifier)?;
    Ok(parsed)
}

impl Note {
    /// The signed text, final newline included.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Succeeds when a signature line names `verifier`'s key (name and id) and verifies.
    /// Lines of other keys are ignored; a line of this key that does not verify is an error.
    pub fn verify(&self, verifier: &NoteVerifier) -> Result<(), NoteError> {
        let key = format!("{}+{:08x}", verifier.name(), verifier.key_id());
        let mut verified = false;
        for s in &self.signatures {
            if s.name != verifier.name() || s.key_id != verifier.key_id() {
                continue;
            }
            if !verifier.verify(self.text.as_bytes(), &s.signature) {
                return Err(NoteError::BadSignature { key });
            }
            verified = true;
        }
        if verified {
            Ok(())
        } else {
            let present: Vec<String> = self
                .signatures
                .iter()
                .map(|s| format!("{}+{:08x}", s.name, s.key_id))
                .collect();
            Err(NoteError::NoSignatureByKey {
                key,
                present: present.join(", "),
            })
        }
    }

    /// The note as text: the text, a blank line, the signature lines.
    pub fn to_text(&self) -> String {
        let mut out = self.text.clone();
        out.push('\n');
        for s in &self.signatures {
            out.push_str(&s.line());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::note_key::tests::{GO_SIGNER, GO_VERIFIER};

    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                           then you don't know what your problem is.\n";
    /// The signed note Go's `note.Sign` writes for `GO_TEXT` and `GO_SIGNER` (its package
    /// documentation); Ed25519 is deterministic, so ours must be identical.
    const GO_NOTE: &str = "If you think cryptography is the answer to your problem,\n\
                           then you don't know what your problem is.\n\
                           \n\
                           \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    fn go_signer() -> NoteSigner {
        NoteSigner::parse(GO_SIGNER).unwrap()
    }

    fn other_signer(name: &str) -> NoteSigner {
        NoteSigner::from_seed(name, &[7; 32]).unwrap()
    }

    #[test]
    fn signs_exactly_as_the_go_reference() {
        assert_eq!(sign(GO_TEXT, &[&go_signer()]).unwrap(), GO_NOTE);
        let v = NoteVerifier::parse(GO_VERIFIER).unwrap();
        let n = open(GO_NOTE.as_bytes(), &v).unwrap();
        assert_eq!(n.text(), GO_TEXT);
        assert_eq!(n.signatures().len(), 1);
        assert_eq!(n.to_text(), GO_NOTE);
    }

    #[test]
    fn round_trip_with_several_signers() {
        let (a, b) = (go_signer(), other_signer("witness.example"));
        let note = sign("hello\nworld\n", &[&a, &b]).unwrap();
        let parsed = parse(note.as_bytes()).unwrap();
        assert_eq!(parsed.signatures().len(), 2);
        assert_eq!(parsed.to_text(), note);
        assert!(parsed.verify(&a.verifier()).is_ok());
        assert!(parsed.verify(&b.verifier()).is_ok());
    }

    #[test]
    fn a_tampered_text_fails() {
        let s = go_signer();
        let note = sign("size 10\n", &[&s]).unwrap();
        let tampered = note.replacen("10", "11", 1);
        let e = open(tampered.as_bytes(), &s.verifier()).unwrap_err();
        assert!(matches!(e, NoteError::BadSignature { .. }), "{e}");
        assert!(e.to_string().contains("PeterNeumann+c74f20a3"), "{e}");
    }

    #[test]
    fn a_tampered_signature_fails() {
        let s = go_signer();
        let mut note = sign("x\n", &[&s]).unwrap().into_bytes();
        // Flip one base64 character in the middle of the signature.
        let i = note.len() - 20;
        note[i] = if note[i] == b'A' { b'B' } else { b'A' };
        let e = open(&note, &s.verifier()).unwrap_err();
        assert!(matches!(e, NoteError::BadSignature { .. }), "{e}");
    }

    #[test]
    fn another_key_fails_and_names_who_signed() {
        let note = sign("x\n", &[&go_signer()]).unwrap();
        let e = open(note.as_bytes(), &other_signer("PeterNeumann").verifier()).unwrap_err();
        assert!(matches!(e, NoteError::NoSignatureByKey { .. }), "{e}");
        assert!(
            e.to_string().contains("signed by: PeterNeumann+c74f20a3"),
            "{e}"
        );
    }

    #[test]
    fn malformed_notes_are_rejected() {
        let s = go_signer();
        let good = sign("x\n", &[&s]).unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"x\n".to_vec(), "no blank line"),
            (b"x\n\n".to_vec(), "no signature lines"),
            (
                good.trim_end().as_bytes().to_vec(),
                "does not end with a newline",
            ),
            (
                good.replace('\u{2014}', "-").into_bytes(),
                "does not start with",
            ),
            (good.replace("x\n", "x\ty\n").into_bytes(), "U+0009"),
            (vec![0xff, b'\n', b'\n'], "not UTF-8"),
            (b"x\n\n\xe2\x80\x94 n AAAA\n".to_vec(), "too short"),
            (
                b"x\n\n\xe2\x80\x94 a+b AAAAAAA=\n".to_vec(),
                "invalid key name",
            ),
            (b"x\n\n\xe2\x80\x94 n !!!\n".to_vec(), "base64"),
        ];
        for (note, why) in cases {
            let e = parse(&note).unwrap_err().to_string();
            assert!(e.contains(why), "{why:?} not in {e:?}");
        }
        let line = good.split_once("\n\n").unwrap().1;
        let many = format!("x\n\n{}", line.repeat(SIGNATURES_MAX + 1));
        let e = parse(many.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("more than 100"), "{e}");
        let e = sign("no newline", &[&s]).unwrap_err().to_string();
        assert!(e.contains("must end with a newline"), "{e}");
    }
}
