//! `converge-ledger keygen`: a new Ed25519 key for signing checkpoints.
//!
//! Writes the signer key (secret, for `serve --signing-key`) and the verifier key (public,
//! for `verify --trusted-key` and for anyone who checks the ledger's checkpoints) in the
//! C2SP signed-note encodings (`integrity::note_key`), so Go's `sumdb/note` and other
//! signed-note tools read them too. The seed comes from the operating system's random
//! source. An existing key file is never overwritten without `--force`: replacing a
//! signing key by accident would orphan every checkpoint signed with it.

use super::commands::Out;
use super::CliError;
use crate::integrity::note_key::is_valid_key_name;
use crate::integrity::NoteSigner;
use clap::Args;
use rand::TryRngCore;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The default key name: the name signature lines carry.
pub const DEFAULT_KEY_NAME: &str = "converge-ledger";

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Write the signer (private) key to FILE, readable by its owner only, and the verifier
    /// (public) key to FILE.pub.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// The key's name, carried by every signature line: non-empty, no whitespace, no '+'.
    /// A host-like name saying which ledger signs (ledger.example.com/prod) is a good choice.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_KEY_NAME)]
    pub name: String,

    /// Replace FILE and FILE.pub if they exist.
    #[arg(long)]
    pub force: bool,
}

/// `FILE` → `FILE.pub`.
pub fn public_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Creates `path` with `text`; mode 0600 when `secret` (on Unix). Fails if it exists
/// unless `force`.
fn write_key_file(path: &Path, text: &str, secret: bool, force: bool) -> Result<(), CliError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AlreadyExists {
            " (use --force to replace it)"
        } else {
            ""
        };
        CliError::Local(format!("cannot create {}: {e}{hint}", path.display()))
    })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| CliError::Local(format!("cannot write {}: {e}", path.display())))
}

pub(super) fn run(args: KeygenArgs, out: &mut Out) -> Result<(), CliError> {
    if !is_valid_key_name(&args.name) {
        return Err(CliError::Usage(format!(
            "--name {:?}: a key name is non-empty, with no whitespace and no '+'",
            args.name
        )));
    }
    let pub_path = public_path(&args.out);
    if !args.force {
        for p in [&args.out, &pub_path] {
            if p.exists() {
                return Err(CliError::Local(format!(
                    "{} already exists; use --force to replace it",
                    p.display()
                )));
            }
        }
    }
    let mut seed = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| CliError::Local(format!("cannot read the OS random source: {e}")))?;
    let signer = NoteSigner::from_seed(&args.name, &seed)
        .map_err(|e| CliError::Usage(format!("--name: {e}")))?;
    let verifier = signer.verifier().encode();
    write_key_file(
        &args.out,
        &format!("{}\n", signer.encode()),
        true,
        args.force,
    )?;
    write_key_file(&pub_path, &format!("{verifier}\n"), false, args.force)?;
    out.line(&format!(
        "wrote signer key {} (secret: for serve --signing-key) and verifier key {}:",
        args.out.display(),
        pub_path.display()
    ))?;
    out.line(&verifier)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::NoteVerifier;

    #[test]
    fn writes_a_matching_pair_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("ledger.key");
        let args = |force| KeygenArgs {
            out: key.clone(),
            name: "ledger.test".into(),
            force,
        };
        run(args(false), &mut Out::stdout()).unwrap();
        let signer = NoteSigner::parse(&std::fs::read_to_string(&key).unwrap()).unwrap();
        let verifier =
            NoteVerifier::parse(&std::fs::read_to_string(public_path(&key)).unwrap()).unwrap();
        assert_eq!(signer.verifier(), verifier);
        assert_eq!(verifier.name(), "ledger.test");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the signer key is private: {mode:o}");
        }

        let e = run(args(false), &mut Out::stdout()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("--force"), "{e}");

        run(args(true), &mut Out::stdout()).unwrap();
        let replaced = NoteSigner::parse(&std::fs::read_to_string(&key).unwrap()).unwrap();
        assert_ne!(replaced.verifier(), verifier, "a fresh random key");
    }

    #[test]
    fn bad_names_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = run(
            KeygenArgs {
                out: dir.path().join("k"),
                name: "has space".into(),
                force: false,
            },
            &mut Out::stdout(),
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("--name"), "{e}");
    }
}
