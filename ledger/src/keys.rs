//! The sled key layout. Everything lives in one tree so that an append (entry, indexes,
//! head, snapshot) is one atomic `apply_batch`.
//!
//! | prefix | key rest | value |
//! |---|---|---|
//! | `E` | seq (u64 BE) | chain hash (32 bytes) ‖ entry bytes |
//! | `H` | — | head seq (u64 BE) ‖ head hash (32 bytes) |
//! | `U` | uid ‖ 0x00 ‖ seq | empty: per-uid history |
//! | `N` | kind byte ‖ namespace ‖ 0x00 ‖ name ‖ 0x00 ‖ seq | empty: per-name history |
//! | `S` | seq | snapshot of the projection after that seq |
//! | `F` | — | store format version (u16 BE) |

use schemas::ObjectKind;

pub(crate) const ENTRY: u8 = b'E';
pub(crate) const HEAD: &[u8] = b"H";
pub(crate) const UID_INDEX: u8 = b'U';
pub(crate) const NAME_INDEX: u8 = b'N';
pub(crate) const SNAPSHOT: u8 = b'S';
pub(crate) const FORMAT: &[u8] = b"F";
/// The store layout version written under [`FORMAT`].
pub(crate) const STORE_FORMAT: u16 = 1;

pub(crate) fn seq_key(prefix: u8, seq: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = prefix;
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub(crate) fn seq_of(key: &[u8]) -> Option<u64> {
    let tail = key.get(key.len().checked_sub(8)?..)?;
    Some(u64::from_be_bytes(tail.try_into().ok()?))
}

pub(crate) fn uid_prefix(uid: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(uid.len() + 10);
    key.push(UID_INDEX);
    key.extend_from_slice(uid.as_bytes());
    key.push(0);
    key
}

pub(crate) fn name_prefix(kind: ObjectKind, namespace: &str, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(namespace.len() + name.len() + 12);
    key.push(NAME_INDEX);
    key.push(kind_byte(kind));
    key.extend_from_slice(namespace.as_bytes());
    key.push(0);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key
}

pub(crate) fn with_seq(mut prefix: Vec<u8>, seq: u64) -> Vec<u8> {
    prefix.extend_from_slice(&seq.to_be_bytes());
    prefix
}

fn kind_byte(kind: ObjectKind) -> u8 {
    match kind {
        ObjectKind::Sandbox => b's',
        ObjectKind::SandboxClaim => b'c',
        ObjectKind::Pod => b'p',
        ObjectKind::PersistentVolumeClaim => b'v',
    }
}
