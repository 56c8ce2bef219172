//! Ed25519 keys for C2SP signed notes, and their text encodings.
//!
//! A signed checkpoint is only as useful as the ability of an outsider to check it with a
//! tool that is not ours. So keys use the encodings of the C2SP signed-note ecosystem
//! (<https://c2sp.org/signed-note>, the same strings Go's `golang.org/x/mod/sumdb/note`
//! reads and writes):
//!
//! ```text
//! key id        = SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[0..4], big-endian u32
//! verifier key  = <name>+<8 hex digits of key id>+<base64(0x01 ‖ 32-byte public key)>
//! signer key    = PRIVATE+KEY+<name>+<8 hex digits of key id>+<base64(0x01 ‖ 32-byte seed)>
//! ```
//!
//! `0x01` is the signature-algorithm byte of Ed25519. A key name is non-empty UTF-8 with no
//! whitespace and no `+`. Pure: generating a key's randomness is the caller's job
//! ([`NoteSigner::from_seed`]).

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// The signature-algorithm byte of Ed25519 in C2SP signed notes.
pub const ALG_ED25519: u8 = 0x01;

const PRIVATE_PREFIX: &str = "PRIVATE+KEY+";

/// A key string that cannot be used, with the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("invalid key name {0:?}: a key name is non-empty, with no whitespace and no '+'")]
    BadName(String),
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("{what} names key id {stated:08x} but its key hashes to {computed:08x}")]
    KeyIdMismatch {
        what: &'static str,
        stated: u32,
        computed: u32,
    },
}

/// Whether `name` may name a key: non-empty, no whitespace, no `+`.
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

fn check_name(name: &str) -> Result<(), KeyError> {
    if is_valid_key_name(name) {
        Ok(())
    } else {
        Err(KeyError::BadName(name.to_owned()))
    }
}

/// The C2SP key id of an Ed25519 key: the first four bytes of
/// `SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key)`.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update([b'\n', ALG_ED25519])
        .chain_update(public_key)
        .finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Splits `<name>+<hex id>+<base64 key>` and decodes the 32 key bytes after the algorithm byte.
fn parse_parts(what: &'static str, s: &str) -> Result<(String, u32, [u8; 32]), KeyError> {
    let malformed = |reason: String| KeyError::Malformed { what, reason };
    // The base64 key may itself contain '+': split at the first two only.
    let mut parts = s.splitn(3, '+');
    let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(
            "expected three '+'-separated fields: name, key id, key".into(),
        ));
    };
    check_name(name)?;
    if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed(format!(
            "key id {id_hex:?} is not 8 hexadecimal digits"
        )));
    }
    let id = u32::from_str_radix(id_hex, 16)
        .map_err(|e| malformed(format!("key id {id_hex:?}: {e}")))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(key_b64)
        .map_err(|e| malformed(format!("key is not standard base64: {e}")))?;
    let Some((&alg, key)) = raw.split_first() else {
        return Err(malformed("key is empty".into()));
    };
    if alg != ALG_ED25519 {
        return Err(malformed(format!(
            "algorithm byte is 0x{alg:02x}; only Ed25519 (0x01) is supported"
        )));
    }
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| malformed(format!("an Ed25519 key is 32 bytes, got {}", key.len())))?;
    Ok((name.to_owned(), id, key))
}

fn encode_key(name: &str, id: u32, key: &[u8; 32]) -> String {
    let mut raw = Vec::with_capacity(33);
    raw.push(ALG_ED25519);
    raw.extend_from_slice(key);
    format!(
        "{name}+{id:08x}+{}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// A named Ed25519 public key that checks signatures on notes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// A verifier from its name and raw public key.
    pub fn new(name: &str, public_key: &[u8; 32]) -> Result<Self, KeyError> {
        check_name(name)?;
        let key = VerifyingKey::from_bytes(public_key).map_err(|e| KeyError::Malformed {
            what: "verifier key",
            reason: format!("not an Ed25519 public key: {e}"),
        })?;
        Ok(NoteVerifier {
            name: name.to_owned(),
            id: key_id(name, public_key),
            key,
        })
    }

    /// Parses `<name>+<hex id>+<base64(0x01 ‖ public key)>` (surrounding whitespace ignored)
    /// and checks that the id is the key's.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let (name, id, key) = parse_parts("verifier key", s.trim())?;
        let v = NoteVerifier::new(&name, &key)?;
        if v.id != id {
            return Err(KeyError::KeyIdMismatch {
                what: "verifier key",
                stated: id,
                computed: v.id,
            });
        }
        Ok(v)
    }

    /// The verifier key string, as [`parse`](Self::parse) reads it.
    pub fn encode(&self) -> String {
        encode_key(&self.name, self.id, self.key.as_bytes())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.id
    }

    /// Whether `signature` (64 bytes) is this key's Ed25519 signature of `message`
    /// (RFC 8032, strict: non-canonical and small-order encodings are rejected).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match Signature::from_slice(signature) {
            Ok(sig) => self.key.verify_strict(message, &sig).is_ok(),
            Err(_) => false,
        }
    }
}

/// A named Ed25519 private key that signs notes. Its `Debug` does not print the key.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    id: u32,
    key: SigningKey,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.id))
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A signer from its name and 32-byte Ed25519 seed (the RFC 8032 private key). The seed
    /// must come from a cryptographic random source.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, KeyError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(seed);
        let id = key_id(name, key.verifying_key().as_bytes());
        Ok(NoteSigner {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// Parses `PRIVATE+KEY+<name>+<hex id>+<base64(0x01 ‖ seed)>` (surrounding whitespace
    /// ignored) and checks that the id is the key's.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let rest = s
            .trim()
            .strip_prefix(PRIVATE_PREFIX)
            .ok_or_else(|| KeyError::Malformed {
                what: "signer key",
                reason: format!("does not start with {PRIVATE_PREFIX:?}"),
            })?;
        let (name, id, seed) = parse_parts("signer key", rest)?;
        let signer = NoteSigner::from_seed(&name, &seed)?;
        if signer.id != id {
            return Err(KeyError::KeyIdMismatch {
                what: "signer key",
                stated: id,
                computed: signer.id,
            });
        }
        Ok(signer)
    }

    /// The signer key string, as [`parse`](Self::parse) reads it. Secret: write it only to a
    /// file only its owner can read.
    pub fn encode(&self) -> String {
        format!(
            "{PRIVATE_PREFIX}{}",
            encode_key(&self.name, self.id, self.key.as_bytes())
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.id
    }

    /// The matching verifier.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// The 64-byte Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// RFC 8032 §7.1 TEST 1: seed and public key.
    const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn seed() -> [u8; 32] {
        hex::decode(SEED).unwrap().try_into().unwrap()
    }

    #[test]
    fn rfc8032_key_and_signature() {
        let s = NoteSigner::from_seed("test", &seed()).unwrap();
        assert_eq!(hex::encode(s.verifier().key.as_bytes()), PUBLIC);
        // RFC 8032 TEST 1 signs the empty message.
        assert_eq!(
            hex::encode(s.sign(b"")),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
             5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        assert!(s.verifier().verify(b"", &s.sign(b"")));
        assert!(!s.verifier().verify(b"x", &s.sign(b"")));
        assert!(!s.verifier().verify(b"", &[0u8; 63]));
    }

    /// The key id, computed independently with python3:
    /// `hashlib.sha256(b"test\n\x01" + bytes.fromhex(PUBLIC)).hexdigest()[:8]`.
    #[test]
    fn key_id_known_answer() {
        let public: [u8; 32] = hex::decode(PUBLIC).unwrap().try_into().unwrap();
        assert_eq!(format!("{:08x}", key_id("test", &public)), KEY_ID_HEX);
        let s = NoteSigner::from_seed("test", &seed()).unwrap();
        assert_eq!(format!("{:08x}", s.key_id()), KEY_ID_HEX);
    }
    const KEY_ID_HEX: &str = "05688f09";

    /// The key pair of Go's `golang.org/x/mod/sumdb/note` documentation and tests (its
    /// base64 contains a '+', which must not split the string).
    pub(crate) const GO_SIGNER: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    pub(crate) const GO_VERIFIER: &str =
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";

    #[test]
    fn reads_the_go_reference_keys() {
        let s = NoteSigner::parse(GO_SIGNER).unwrap();
        assert_eq!(s.name(), "PeterNeumann");
        assert_eq!(s.key_id(), 0xc74f20a3);
        assert_eq!(s.encode(), GO_SIGNER);
        assert_eq!(s.verifier().encode(), GO_VERIFIER);
        assert_eq!(NoteVerifier::parse(GO_VERIFIER).unwrap(), s.verifier());
    }

    #[test]
    fn encodings_round_trip() {
        let s = NoteSigner::from_seed("ledger.example/log", &seed()).unwrap();
        let text = s.encode();
        assert!(
            text.starts_with("PRIVATE+KEY+ledger.example/log+"),
            "{text}"
        );
        let back = NoteSigner::parse(&format!("{text}\n")).unwrap();
        assert_eq!(back.encode(), text);
        assert_eq!(back.verifier(), s.verifier());

        let v = s.verifier();
        let vtext = v.encode();
        assert!(vtext.starts_with("ledger.example/log+"), "{vtext}");
        assert!(vtext.splitn(3, '+').count() == 3);
        assert_eq!(NoteVerifier::parse(&vtext).unwrap(), v);
    }

    #[test]
    fn bad_keys_say_why() {
        let v = NoteSigner::from_seed("n", &seed()).unwrap().verifier();
        let good = v.encode();
        let parts: Vec<&str> = good.splitn(3, '+').collect();

        let e = NoteVerifier::parse(&format!("m+{}+{}", parts[1], parts[2])).unwrap_err();
        assert!(matches!(e, KeyError::KeyIdMismatch { .. }), "{e}");
        assert!(e.to_string().contains("hashes to"), "{e}");

        let e = NoteVerifier::parse("n+1234+AQ==").unwrap_err();
        assert!(e.to_string().contains("8 hexadecimal digits"), "{e}");
        let e = NoteVerifier::parse(&format!("n+{}+AgAA", parts[1])).unwrap_err();
        assert!(e.to_string().contains("algorithm byte is 0x02"), "{e}");
        let e = NoteVerifier::parse(&format!("n+{}+AQAA", parts[1])).unwrap_err();
        assert!(e.to_string().contains("32 bytes, got 2"), "{e}");
        let e = NoteVerifier::parse("just-a-name").unwrap_err();
        assert!(e.to_string().contains("three '+'-separated"), "{e}");
        let e = NoteVerifier::parse(&format!("a b+{}+{}", parts[1], parts[2])).unwrap_err();
        assert!(matches!(e, KeyError::BadName(_)), "{e}");
        let e = NoteSigner::parse(&good).unwrap_err();
        assert!(e.to_string().contains("PRIVATE+KEY+"), "{e}");

        assert!(NoteSigner::from_seed("", &seed()).is_err());
        assert!(NoteSigner::from_seed("a+b", &seed()).is_err());
        assert!(NoteSigner::from_seed("tab\there", &seed()).is_err());
    }

    #[test]
    fn debug_hides_the_private_key() {
        let s = NoteSigner::from_seed("n", &seed()).unwrap();
        let d = format!("{s:?}");
        assert!(!d.contains(&SEED[..8]), "{d}");
        assert!(d.contains("key_id"), "{d}");
    }
}
