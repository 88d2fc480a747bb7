//! The compliance-export side of the binary: signing keys (`keygen`), key and checkpoint
//! files, and reading export bundles (a directory or a tar) for `verify-export`.

use std::io::Read;
use std::path::{Path, PathBuf};

use schemas::bundle::{CHECKPOINT_FILE, ENTRIES_FILE, MANIFEST_FILE, PROOFS_FILE};
use schemas::checkpoint::{SignerKey, VerifierKey};
use serde::Serialize;

/// The largest bundle member `verify-export` reads into memory (4 GiB): a bound, so a
/// hostile archive cannot claim an absurd size.
const MAX_MEMBER: u64 = 4 << 30;

/// What `keygen` wrote.
#[derive(Debug, Serialize)]
pub struct KeygenReport {
    /// The key name (and the default checkpoint origin).
    pub name: String,
    /// The signed-note key ID, 8 hex digits.
    pub key_id: String,
    /// The verifier key text, for auditors (`--trusted-key`).
    pub verifier_key: String,
    /// Where the private signing key went (mode 0600).
    pub signing_key_file: PathBuf,
    /// Where the verifier key went.
    pub verifier_key_file: PathBuf,
}

/// Writes a new Ed25519 signed-note key pair: `PREFIX.key` (the private key, mode 0600,
/// never overwritten) and `PREFIX.pub` (the verifier key).
pub fn keygen(name: &str, prefix: &Path) -> Result<KeygenReport, String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no randomness for a key: {e}"))?;
    let key = SignerKey::from_seed(name, seed).map_err(|e| format!("key name {name:?}: {e}"))?;
    let signing_key_file = with_suffix(prefix, "key");
    let verifier_key_file = with_suffix(prefix, "pub");
    for file in [&signing_key_file, &verifier_key_file] {
        if file.exists() {
            return Err(format!(
                "cannot create {}: it exists, and keygen never overwrites a key",
                file.display()
            ));
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&signing_key_file)
        .map_err(|e| format!("cannot create {}: {e}", signing_key_file.display()))?;
    std::io::Write::write_all(&mut file, format!("{}\n", key.to_text()).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", signing_key_file.display()))?;
    let verifier = key.verifier().to_string();
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&verifier_key_file)
        .and_then(|mut file| {
            std::io::Write::write_all(&mut file, format!("{verifier}\n").as_bytes())
        })
        .map_err(|e| format!("cannot create {}: {e}", verifier_key_file.display()))?;
    Ok(KeygenReport {
        name: name.to_string(),
        key_id: format!("{:08x}", key.key_id()),
        verifier_key: verifier,
        signing_key_file,
        verifier_key_file,
    })
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// Reads a signing key file (`PRIVATE+KEY+…`, as `keygen` writes it).
/// Who besides the owner may read or write a secret file, from its mode: `None` when
/// nobody, else a phrase for the message ("its group", "others").
pub fn secret_file_exposure(path: &Path) -> Result<Option<&'static str>, String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .permissions()
        .mode();
    Ok(match (mode & 0o007 != 0, mode & 0o070 != 0) {
        (true, _) => Some("others"),
        (false, true) => Some("its group"),
        (false, false) => None,
    })
}

/// Loads the checkpoint signing key for a service, refusing a key file anyone but its
/// owner can read: others never, its group only with `allow_group` (a Kubernetes Secret
/// mounted with `fsGroup` is group-readable), and then with a warning.
pub fn load_service_signer(path: &Path, allow_group: bool) -> Result<SignerKey, String> {
    match secret_file_exposure(path)? {
        None => {}
        Some("its group") if allow_group => tracing::warn!(
            path = %path.display(),
            "the signing key is readable by its group (allowed by --allow-group-readable-secrets)"
        ),
        Some(who) => {
            return Err(format!(
                "the signing key {} is readable by {who}: anyone who reads it can sign checkpoints of a forged log. `chmod 600` it{}",
                path.display(),
                if who == "its group" {
                    ", or pass --allow-group-readable-secrets for a Secret mounted with fsGroup"
                } else {
                    ""
                }
            ))
        }
    }
    load_signer(path)
}

/// Reads a signing key file.
pub fn load_signer(path: &Path) -> Result<SignerKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the signing key {}: {e}", path.display()))?;
    SignerKey::parse(text.trim()).map_err(|e| format!("{}: not a signing key: {e}", path.display()))
}

/// Reads trusted verifier keys: each file holds one key per line (blank lines and `#`
/// comments skipped), so a rotation is trusted by listing the old and the new key.
pub fn load_trusted(paths: &[PathBuf]) -> Result<Vec<VerifierKey>, String> {
    let mut keys = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the trusted key {}: {e}", path.display()))?;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            keys.push(VerifierKey::parse(line).map_err(|e| {
                format!(
                    "{} line {}: not a verifier key: {e}",
                    path.display(),
                    number + 1
                )
            })?);
        }
    }
    if keys.is_empty() {
        return Err("no trusted key given".into());
    }
    Ok(keys)
}

/// Reads a text file whole, naming it in the error.
pub fn read_text(path: &Path, what: &str) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
}

/// The four files of a bundle, as text.
pub struct BundleFiles {
    /// `manifest.json`.
    pub manifest: String,
    /// `entries.jsonl`.
    pub entries: String,
    /// `checkpoint`.
    pub checkpoint: String,
    /// `proofs.json`.
    pub proofs: String,
}

impl BundleFiles {
    /// The parts for [`schemas::bundle::verify_bundle`].
    pub fn parts(&self) -> schemas::bundle::BundleParts<'_> {
        schemas::bundle::BundleParts {
            manifest: &self.manifest,
            entries: &self.entries,
            checkpoint: &self.checkpoint,
            proofs: &self.proofs,
        }
    }
}

/// Reads a bundle from a directory or a tar archive. A missing member, a duplicate one, a
/// member that is not UTF-8 text, or an unreadable archive is an input error.
pub fn read_bundle(path: &Path) -> Result<BundleFiles, String> {
    let names = [MANIFEST_FILE, ENTRIES_FILE, CHECKPOINT_FILE, PROOFS_FILE];
    let mut found: [Option<String>; 4] = Default::default();
    if path.is_dir() {
        for (slot, name) in found.iter_mut().zip(names) {
            let file = path.join(name);
            if file.exists() {
                *slot = Some(read_text(&file, "bundle file")?);
            }
        }
    } else {
        let file = std::fs::File::open(path)
            .map_err(|e| format!("cannot open the bundle {}: {e}", path.display()))?;
        let mut archive = tar::Archive::new(file);
        let members = archive
            .entries()
            .map_err(|e| format!("{}: not a tar archive: {e}", path.display()))?;
        for member in members {
            let mut member =
                member.map_err(|e| format!("{}: unreadable tar member: {e}", path.display()))?;
            let name = member
                .path()
                .map_err(|e| format!("{}: bad member name: {e}", path.display()))?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            let Some(index) = names.iter().position(|n| *n == name) else {
                continue;
            };
            if found[index].is_some() {
                return Err(format!("{}: {name} appears twice", path.display()));
            }
            if member.size() > MAX_MEMBER {
                return Err(format!("{}: {name} is too large", path.display()));
            }
            let mut bytes = Vec::new();
            member
                .read_to_end(&mut bytes)
                .map_err(|e| format!("{}: cannot read {name}: {e}", path.display()))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| format!("{}: {name} is not UTF-8 text", path.display()))?;
            found[index] = Some(text);
        }
    }
    let [manifest, entries, checkpoint, proofs] = found;
    let missing = |name: &str| format!("{}: the bundle has no {name}", path.display());
    Ok(BundleFiles {
        manifest: manifest.ok_or_else(|| missing(MANIFEST_FILE))?,
        entries: entries.ok_or_else(|| missing(ENTRIES_FILE))?,
        checkpoint: checkpoint.ok_or_else(|| missing(CHECKPOINT_FILE))?,
        proofs: proofs.ok_or_else(|| missing(PROOFS_FILE))?,
    })
}
