//! C2SP `tlog-checkpoint` bodies inside C2SP `signed-note`s, signed with Ed25519. Pure
//! functions and types, no IO and no randomness (keys come from caller-provided seeds).
//!
//! # Checkpoint body ([`Checkpoint`])
//!
//! ```text
//! <origin>\n
//! <tree size, ASCII decimal, no leading zeroes>\n
//! <base64 (RFC 4648 §4, padded) of the 32-byte RFC 6962 root hash>\n
//! [<extension line>\n ...]
//! ```
//!
//! At least three lines, all non-empty; no ASCII control character other than the newline.
//!
//! # Signed note ([`SignedNote`])
//!
//! The note text (ending in a newline), a blank line, then one or more signature lines
//! `— <key name> <base64(key ID (4 bytes, big-endian) || signature)>\n` (the dash is
//! U+2014). The text is separated from the signatures by the *last* blank line. Key names
//! are non-empty and contain no Unicode space and no `+`. An Ed25519 signature signs the
//! note text exactly, final newline included.
//!
//! # Keys ([`VerifierKey`], [`SignerKey`])
//!
//! * key ID = the first 4 bytes, big-endian, of
//!   `SHA-256(key name || 0x0A || 0x01 || 32-byte Ed25519 public key)` ([`key_id`]);
//! * verifier key text: `<name>+<8 hex digits of the key ID>+<base64(0x01 || public key)>`;
//! * signer key text: `PRIVATE+KEY+<name>+<8 hex digits>+<base64(0x01 || 32-byte seed)>`.
//!
//! # Verification ([`open_note`], [`verify_note`])
//!
//! A signature counts only when both its key name and key ID match a trusted key;
//! signatures by other keys are ignored (cosignatures, rotated keys). A signature by a
//! trusted key that fails to verify rejects the whole note, and a note with no valid
//! signature by a trusted key is rejected.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::merkle::Hash32;

/// The signed-note signature type identifier byte of Ed25519.
pub const SIG_TYPE_ED25519: u8 = 0x01;

/// The prefix of a signature line: em dash (U+2014) and a space.
pub const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// The most signature lines [`SignedNote::parse`] accepts (the spec requires at least 16).
pub const MAX_SIGNATURES: usize = 100;

/// Everything that can be wrong with a checkpoint, a note, a key or a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The text contains an ASCII control character other than the newline.
    #[error("control character U+{0:04X} in note text")]
    ControlCharacter(u32),
    /// Note text or a checkpoint body that is empty or does not end in a newline.
    #[error("text is empty or does not end in a newline")]
    MissingFinalNewline,
    /// A signed note without the blank line separating the text from the signatures, or
    /// without any signature line after it.
    #[error("signed note has no signature block after a blank line")]
    NoSignatureBlock,
    /// A signature line that is not `— <key name> <base64>` with at least 5 decoded bytes.
    #[error("malformed signature line {line}: {detail}")]
    BadSignatureLine {
        /// The signature line's position among the signature lines (1-based).
        line: usize,
        /// What is wrong.
        detail: &'static str,
    },
    /// More than [`MAX_SIGNATURES`] signature lines.
    #[error("more than {MAX_SIGNATURES} signature lines")]
    TooManySignatures,
    /// A key name that is empty or contains a Unicode space or a `+`.
    #[error("invalid key name {0:?}")]
    InvalidKeyName(String),
    /// A checkpoint body that is not origin, tree size, root hash and non-empty extensions.
    #[error("malformed checkpoint body: {0}")]
    BadCheckpoint(&'static str),
    /// A verifier or signer key text that does not parse.
    #[error("malformed key: {0}")]
    BadKey(&'static str),
    /// A key of a signature type other than Ed25519 (`0x01`).
    #[error("unsupported key type 0x{0:02x} (only Ed25519, 0x01)")]
    UnsupportedKeyType(u8),
    /// A key text whose key ID is not the one its name and public key give.
    #[error("key ID {stated:08x} of key {name:?} does not match its public key ({computed:08x})")]
    KeyIdMismatch {
        /// The key name.
        name: String,
        /// The key ID written in the key text.
        stated: u32,
        /// The key ID computed from the name and public key.
        computed: u32,
    },
    /// A signature by a trusted key (name and key ID match) that does not verify.
    #[error("invalid signature by trusted key {name:?} ({key_id:08x})")]
    InvalidSignature {
        /// The key name.
        name: String,
        /// The key ID.
        key_id: u32,
    },
    /// No signature in the note is by a trusted key.
    #[error("no signature by a trusted key")]
    NoTrustedSignature,
}

// ---------------------------------------------------------------------------------------
// Text rules.

fn check_no_control(text: &str) -> Result<(), CheckpointError> {
    match text.chars().find(|&c| c < ' ' && c != '\n') {
        Some(c) => Err(CheckpointError::ControlCharacter(c as u32)),
        None => Ok(()),
    }
}

/// Checks the rules every signed-note text must follow: non-empty, ends in a newline, no
/// ASCII control character other than the newline.
pub fn check_note_text(text: &str) -> Result<(), CheckpointError> {
    if !text.ends_with('\n') {
        return Err(CheckpointError::MissingFinalNewline);
    }
    check_no_control(text)
}

/// Whether `name` is a valid key name: non-empty, no Unicode space, no `+`.
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

fn check_key_name(name: &str) -> Result<(), CheckpointError> {
    if is_valid_key_name(name) {
        Ok(())
    } else {
        Err(CheckpointError::InvalidKeyName(name.to_owned()))
    }
}

// ---------------------------------------------------------------------------------------
// Checkpoint body.

/// A C2SP `tlog-checkpoint` body: the log's origin, tree size and root hash, and optional
/// opaque extension lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, e.g. `example.com/log42` (non-empty, one line).
    pub origin: String,
    /// The number of leaves in the tree.
    pub size: u64,
    /// The RFC 6962 root hash of the tree at `size`.
    pub root: Hash32,
    /// Extension lines, each non-empty and without its newline (NOT RECOMMENDED by the
    /// spec; usually empty).
    pub extensions: Vec<String>,
}

fn check_body_line(line: &str, what: &'static str) -> Result<(), CheckpointError> {
    if line.is_empty() || line.contains('\n') {
        return Err(CheckpointError::BadCheckpoint(what));
    }
    check_no_control(line)
}

impl Checkpoint {
    /// The note text of this checkpoint (what gets signed). Fails when the origin or an
    /// extension line is empty, spans lines or contains a control character.
    pub fn to_body(&self) -> Result<String, CheckpointError> {
        check_body_line(&self.origin, "origin must be one non-empty line")?;
        for ext in &self.extensions {
            check_body_line(ext, "extension lines must be non-empty single lines")?;
        }
        let mut body = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for ext in &self.extensions {
            body.push_str(ext);
            body.push('\n');
        }
        Ok(body)
    }

    /// Parses a checkpoint body strictly: at least three non-empty lines, each ending in a
    /// newline; a decimal size without sign or leading zeroes that fits a `u64`; a
    /// canonical padded standard base64 root of exactly 32 bytes; no control characters.
    pub fn parse_body(body: &str) -> Result<Self, CheckpointError> {
        check_note_text(body)?;
        let mut lines = body[..body.len() - 1].split('\n');
        let origin = lines.next().unwrap_or_default();
        let size = lines
            .next()
            .ok_or(CheckpointError::BadCheckpoint("missing tree size line"))?;
        let root = lines
            .next()
            .ok_or(CheckpointError::BadCheckpoint("missing root hash line"))?;
        if origin.is_empty() {
            return Err(CheckpointError::BadCheckpoint("empty origin"));
        }
        let size = parse_tree_size(size)?;
        let root: Hash32 = B64
            .decode(root)
            .map_err(|_| CheckpointError::BadCheckpoint("root hash is not standard base64"))?
            .try_into()
            .map_err(|_| CheckpointError::BadCheckpoint("root hash is not 32 bytes"))?;
        let extensions = lines
            .map(|l| {
                if l.is_empty() {
                    Err(CheckpointError::BadCheckpoint("empty extension line"))
                } else {
                    Ok(l.to_owned())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }
}

fn parse_tree_size(s: &str) -> Result<u64, CheckpointError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CheckpointError::BadCheckpoint(
            "tree size is not ASCII decimal",
        ));
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(CheckpointError::BadCheckpoint(
            "tree size has a leading zero",
        ));
    }
    s.parse()
        .map_err(|_| CheckpointError::BadCheckpoint("tree size does not fit 64 bits"))
}

// ---------------------------------------------------------------------------------------
// Signed note.

/// One signature line of a signed note, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The key name.
    pub name: String,
    /// The key ID (the first 4 decoded bytes, big-endian).
    pub key_id: u32,
    /// The signature bytes after the key ID (64 for Ed25519).
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// Parses one signature line, with or without its final newline:
    /// `— <key name> <base64(key ID || signature)>`.
    pub fn parse_line(line: &str) -> Result<Self, CheckpointError> {
        Self::parse_numbered(line.strip_suffix('\n').unwrap_or(line), 1)
    }

    fn parse_numbered(line: &str, n: usize) -> Result<Self, CheckpointError> {
        let bad = |detail| CheckpointError::BadSignatureLine { line: n, detail };
        let rest = line
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or(bad("does not start with an em dash and a space"))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or(bad("no space between key name and signature"))?;
        if !is_valid_key_name(name) {
            return Err(bad("invalid key name"));
        }
        let raw = B64
            .decode(b64)
            .map_err(|_| bad("signature is not standard base64"))?;
        if raw.len() < 5 {
            return Err(bad("signature shorter than a key ID and one byte"));
        }
        Ok(NoteSignature {
            name: name.to_owned(),
            key_id: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
            signature: raw[4..].to_vec(),
        })
    }

    /// The signature line, final newline included.
    pub fn to_line(&self) -> String {
        let mut raw = Vec::with_capacity(4 + self.signature.len());
        raw.extend_from_slice(&self.key_id.to_be_bytes());
        raw.extend_from_slice(&self.signature);
        format!("{SIGNATURE_PREFIX}{} {}\n", self.name, B64.encode(raw))
    }
}

/// A signed note: its text (the body, final newline included) and its signature lines, as
/// parsed, before any verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    /// The note text that the signatures sign (a checkpoint body for checkpoints).
    pub body: String,
    /// The signatures, in the note's order.
    pub signatures: Vec<NoteSignature>,
}

impl SignedNote {
    /// Splits a signed note into its text and signature lines, checking the format (valid
    /// UTF-8 is given by `&str`; no control characters but newlines; the text ends in a
    /// newline and is followed by a blank line and 1 to [`MAX_SIGNATURES`] well-formed
    /// signature lines). Verifies nothing.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        check_no_control(text)?;
        let split = text
            .rfind("\n\n")
            .ok_or(CheckpointError::NoSignatureBlock)?;
        let (body, sigs) = (&text[..split + 1], &text[split + 2..]);
        if sigs.is_empty() {
            return Err(CheckpointError::NoSignatureBlock);
        }
        if !sigs.ends_with('\n') {
            return Err(CheckpointError::MissingFinalNewline);
        }
        let lines: Vec<&str> = sigs[..sigs.len() - 1].split('\n').collect();
        if lines.len() > MAX_SIGNATURES {
            return Err(CheckpointError::TooManySignatures);
        }
        let signatures = lines
            .iter()
            .enumerate()
            .map(|(i, l)| NoteSignature::parse_numbered(l, i + 1))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SignedNote {
            body: body.to_owned(),
            signatures,
        })
    }

    /// Signs `body` with each key, in order.
    pub fn sign(body: &str, keys: &[&SignerKey]) -> Result<Self, CheckpointError> {
        check_note_text(body)?;
        Ok(SignedNote {
            body: body.to_owned(),
            signatures: keys.iter().map(|k| k.sign_unchecked(body)).collect(),
        })
    }

    /// The note as text: body, blank line, signature lines. (Formats the fields as they
    /// are; a note from [`parse`](Self::parse) or [`sign`](Self::sign) round-trips.)
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(self.body.len() + 1 + 120 * self.signatures.len());
        out.push_str(&self.body);
        out.push('\n');
        for s in &self.signatures {
            out.push_str(&s.to_line());
        }
        out
    }

    /// Checks the signatures against the trusted keys (see the
    /// [module documentation](self)) and returns the names of the trusted keys whose
    /// signatures verified, each once, in note order.
    pub fn verify(&self, trusted: &[VerifierKey]) -> Result<Vec<String>, CheckpointError> {
        let mut verified: Vec<String> = Vec::new();
        for sig in &self.signatures {
            let Some(key) = trusted
                .iter()
                .find(|k| k.name == sig.name && k.key_id == sig.key_id)
            else {
                continue; // unknown key: ignored
            };
            if !key.verify(self.body.as_bytes(), &sig.signature) {
                return Err(CheckpointError::InvalidSignature {
                    name: sig.name.clone(),
                    key_id: sig.key_id,
                });
            }
            if !verified.contains(&sig.name) {
                verified.push(sig.name.clone());
            }
        }
        if verified.is_empty() {
            return Err(CheckpointError::NoTrustedSignature);
        }
        Ok(verified)
    }
}

/// Parses a signed note of any text and verifies it against the trusted keys: the note and
/// the names of the trusted keys that signed it. See the [module documentation](self).
pub fn open_note(
    text: &str,
    trusted: &[VerifierKey],
) -> Result<(SignedNote, Vec<String>), CheckpointError> {
    let note = SignedNote::parse(text)?;
    let names = note.verify(trusted)?;
    Ok((note, names))
}

/// Verifies a signed checkpoint: [`open_note`], then [`Checkpoint::parse_body`] of its
/// text. Returns the checkpoint and the names of the trusted keys that signed it.
pub fn verify_note(
    text: &str,
    trusted: &[VerifierKey],
) -> Result<(Checkpoint, Vec<String>), CheckpointError> {
    let (note, names) = open_note(text, trusted)?;
    Ok((Checkpoint::parse_body(&note.body)?, names))
}

/// Signs a note text with an Ed25519 signer key: the signature line
/// `— <name> <base64(key ID || signature)>\n` to append after the blank line.
pub fn sign(body: &str, key: &SignerKey) -> Result<String, CheckpointError> {
    check_note_text(body)?;
    Ok(key.sign_unchecked(body).to_line())
}

// ---------------------------------------------------------------------------------------
// Keys.

/// The signed-note key ID of an Ed25519 key:
/// `SHA-256(name || 0x0A || 0x01 || public key)[..4]`, big-endian.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', SIG_TYPE_ED25519]);
    h.update(public_key);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

fn parse_hex_id(s: &str) -> Result<u32, CheckpointError> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CheckpointError::BadKey("key ID is not 8 hex digits"));
    }
    u32::from_str_radix(s, 16).map_err(|_| CheckpointError::BadKey("key ID is not 8 hex digits"))
}

/// Decodes `base64(0x01 || 32 bytes)`.
fn decode_key_data(s: &str) -> Result<[u8; 32], CheckpointError> {
    let raw = B64
        .decode(s)
        .map_err(|_| CheckpointError::BadKey("key data is not standard base64"))?;
    match raw.split_first() {
        None => Err(CheckpointError::BadKey("empty key data")),
        Some((&SIG_TYPE_ED25519, rest)) => rest
            .try_into()
            .map_err(|_| CheckpointError::BadKey("Ed25519 key data is not 32 bytes")),
        Some((&other, _)) => Err(CheckpointError::UnsupportedKeyType(other)),
    }
}

fn encode_key_data(key: &[u8; 32]) -> String {
    let mut raw = [0u8; 33];
    raw[0] = SIG_TYPE_ED25519;
    raw[1..].copy_from_slice(key);
    B64.encode(raw)
}

/// A trusted Ed25519 note verifier key: name, key ID and public key. Text form
/// `<name>+<hex key ID>+<base64(0x01 || public key)>` ([`parse`](Self::parse),
/// [`Display`](fmt::Display)).
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    key_id: u32,
    public: VerifyingKey,
}

impl VerifierKey {
    /// Parses a verifier key text (exactly: no surrounding whitespace or final newline),
    /// checking the name, that the key is an Ed25519 point
    /// and that the key ID matches the name and key.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id), Some(data)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CheckpointError::BadKey(
                "verifier key is not <name>+<key ID>+<key data>",
            ));
        };
        check_key_name(name)?;
        let stated = parse_hex_id(id)?;
        let public = decode_key_data(data)?;
        Self::from_public_key(name, public, Some(stated))
    }

    fn from_public_key(
        name: &str,
        public: [u8; 32],
        stated: Option<u32>,
    ) -> Result<Self, CheckpointError> {
        check_key_name(name)?;
        let computed = key_id(name, &public);
        if let Some(stated) = stated {
            if stated != computed {
                return Err(CheckpointError::KeyIdMismatch {
                    name: name.to_owned(),
                    stated,
                    computed,
                });
            }
        }
        let public = VerifyingKey::from_bytes(&public)
            .map_err(|_| CheckpointError::BadKey("not an Ed25519 public key"))?;
        Ok(VerifierKey {
            name: name.to_owned(),
            key_id: computed,
            public,
        })
    }

    /// A verifier key from a name and a 32-byte Ed25519 public key (key ID computed).
    pub fn from_public(name: &str, public_key: [u8; 32]) -> Result<Self, CheckpointError> {
        Self::from_public_key(name, public_key, None)
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    /// Whether `signature` (64 bytes) is this key's valid Ed25519 signature of `message`
    /// (strict RFC 8032 verification: canonical encodings, no small-order keys).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = Signature::from_slice(signature) else {
            return false;
        };
        self.public.verify_strict(message, &sig).is_ok()
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            encode_key_data(&self.public.to_bytes())
        )
    }
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

impl FromStr for VerifierKey {
    type Err = CheckpointError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// An Ed25519 note signer key: name, key ID and the secret seed. Text form
/// `PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || 32-byte seed)>`
/// ([`parse`](Self::parse), [`to_text`](Self::to_text)). Its `Debug` output hides the
/// seed; the seed is wiped from memory when the key is dropped.
#[derive(Clone)]
pub struct SignerKey {
    name: String,
    key_id: u32,
    signing: SigningKey,
}

impl SignerKey {
    /// A signer key from a name and 32 secret seed bytes, which the caller draws from a
    /// cryptographically secure source (this crate has no randomness).
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, CheckpointError> {
        check_key_name(name)?;
        let signing = SigningKey::from_bytes(&seed);
        Ok(SignerKey {
            name: name.to_owned(),
            key_id: key_id(name, &signing.verifying_key().to_bytes()),
            signing,
        })
    }

    /// Parses a signer key text (exactly: no surrounding whitespace or final newline),
    /// checking that the key ID matches the name and key.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let mut parts = text.splitn(5, '+');
        let (Some("PRIVATE"), Some("KEY"), Some(name), Some(id), Some(data)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(CheckpointError::BadKey(
                "signer key is not PRIVATE+KEY+<name>+<key ID>+<key data>",
            ));
        };
        let stated = parse_hex_id(id)?;
        let key = Self::from_seed(name, decode_key_data(data)?)?;
        if key.key_id != stated {
            return Err(CheckpointError::KeyIdMismatch {
                name: name.to_owned(),
                stated,
                computed: key.key_id,
            });
        }
        Ok(key)
    }

    /// The signer key text (contains the secret seed).
    pub fn to_text(&self) -> String {
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.key_id,
            encode_key_data(&self.signing.to_bytes())
        )
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            key_id: self.key_id,
            public: self.signing.verifying_key(),
        }
    }

    fn sign_unchecked(&self, body: &str) -> NoteSignature {
        NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature: self.signing.sign(body.as_bytes()).to_bytes().to_vec(),
        }
    }
}

impl fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignerKey({}+{:08x}+<secret>)", self.name, self.key_id)
    }
}

impl FromStr for SignerKey {
    type Err = CheckpointError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names() {
        assert!(is_valid_key_name("example.com/log"));
        assert!(!is_valid_key_name(""));
        assert!(!is_valid_key_name("a b"));
        assert!(!is_valid_key_name("a+b"));
        assert!(!is_valid_key_name("a\u{a0}b"));
        assert!(!is_valid_key_name("a\u{3000}b"));
    }

    #[test]
    fn signer_round_trip() {
        let k = SignerKey::from_seed("example.com/log", [7; 32]).unwrap();
        let text = k.to_text();
        let back = SignerKey::parse(&text).unwrap();
        assert_eq!(back.to_text(), text);
        assert!(!format!("{k:?}").contains(&text[text.rfind('+').unwrap() + 1..]));
        let v = k.verifier();
        assert_eq!(VerifierKey::parse(&v.to_string()).unwrap(), v);
    }
}
