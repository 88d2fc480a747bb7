//! The ledger directory: what makes a directory recognisably a ledger, and the
//! acknowledged high-water mark kept outside the store's own files.
//!
//! ```text
//! DIR/manifest.json   what this is: {"claim_ledger": "ledger", "layout", "ledger_id", "store", "created_at"}
//! DIR/high-water      the durable head last acknowledged (two checksummed slots)
//! DIR/sled/           the sled store's own files
//! ```
//!
//! The manifest is written last at creation, so a directory without one is never taken
//! for a ledger: reading commands refuse it, and `ingest`/`serve` create a ledger only in
//! an absent or empty directory (or one holding only the remains of an interrupted
//! creation). The ledger id is kept in the manifest, in the store (`I` record) and in the
//! high-water mark, so a store or mark from another ledger is refused.
//!
//! The high-water mark is rewritten after every durable flush, with `fdatasync`, into the
//! slot that does not hold the newest mark (the newest valid slot wins on reading), so a
//! torn write leaves the previous mark readable. A store that comes back shorter than the
//! mark, or with another entry at its seq, has been rolled back or replaced. This cannot
//! catch an attacker who rewrites the store and the mark together; signed checkpoints
//! held outside the machine (`verify --checkpoint`) do.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use schemas::Hash;
use serde::{Deserialize, Serialize};

use crate::store::StoreError;
use crate::LedgerError;

/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// The high-water mark's file name.
pub const HIGH_WATER: &str = "high-water";
/// The sled store's subdirectory.
pub const SLED_DIR: &str = "sled";
/// The manifest layout this build writes and reads.
const LAYOUT: u32 = 1;
/// What the manifest's `claim_ledger` field says.
const MANIFEST_MARK: &str = "ledger";

/// The manifest of a ledger directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always `ledger`: marks the file as claim-ledger's.
    pub claim_ledger: String,
    /// The manifest layout version.
    pub layout: u32,
    /// The ledger's random identity (32 hex digits).
    pub ledger_id: String,
    /// The store kind (`sled`).
    pub store: String,
    /// When the ledger was created (RFC 3339).
    pub created_at: String,
}

/// A ledger id: 16 random bytes.
pub type LedgerId = [u8; 16];

impl Manifest {
    /// The ledger id, parsed.
    pub fn id(&self) -> Option<LedgerId> {
        parse_id(&self.ledger_id)
    }
}

pub(crate) fn id_hex(id: &LedgerId) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn parse_id(text: &str) -> Option<LedgerId> {
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(id)
}

/// A fresh random ledger id.
pub(crate) fn new_id() -> Result<LedgerId, LedgerError> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| {
        LedgerError::Storage(StoreError::Io {
            context: "drawing a ledger id".into(),
            source: std::io::Error::other(e.to_string()),
        })
    })?;
    Ok(id)
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

/// What a directory is, as far as opening a ledger goes.
pub(crate) enum Found {
    /// A ledger: its manifest.
    Ledger(Manifest),
    /// Absent or empty (or holding only the remains of an interrupted creation): a ledger
    /// may be created there.
    Vacant,
}

/// Looks at `path`: a ledger (with a valid manifest), a place where one may be created,
/// or neither (`NotALedger`, naming what is there and where a ledger probably is).
pub(crate) fn inspect(path: &Path) -> Result<Found, LedgerError> {
    let not_a_ledger = |detail: String| LedgerError::NotALedger {
        path: path.to_path_buf(),
        detail,
    };
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Vacant),
        Err(e) => return Err(not_a_ledger(format!("cannot read it: {e}"))),
    };
    if !metadata.is_dir() {
        return Err(not_a_ledger("it is a file, not a ledger directory".into()));
    }
    let manifest_path = path.join(MANIFEST);
    match std::fs::read(&manifest_path) {
        Ok(bytes) => {
            let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
                LedgerError::Corrupt(crate::VerifyFailure {
                    seq: 0,
                    kind: crate::FailureKind::StoreDamaged,
                    detail: format!(
                        "the manifest {} is unreadable: {e}",
                        manifest_path.display()
                    ),
                })
            })?;
            if manifest.claim_ledger != MANIFEST_MARK || manifest.id().is_none() {
                return Err(LedgerError::Corrupt(crate::VerifyFailure {
                    seq: 0,
                    kind: crate::FailureKind::StoreDamaged,
                    detail: format!(
                        "the manifest {} is not a claim-ledger manifest",
                        manifest_path.display()
                    ),
                }));
            }
            if manifest.layout != LAYOUT {
                return Err(LedgerError::StoreFormat(manifest.layout as u16));
            }
            if manifest.store != "sled" {
                return Err(not_a_ledger(format!(
                    "its manifest names a {:?} store, which this build cannot open from a directory",
                    manifest.store
                )));
            }
            return Ok(Found::Ledger(manifest));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(not_a_ledger(format!("cannot read {MANIFEST}: {e}"))),
    }
    let names: Vec<String> = std::fs::read_dir(path)
        .map_err(|e| not_a_ledger(format!("cannot list it: {e}")))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    if names.iter().all(|name| is_creation_leftover(name)) {
        return Ok(Found::Vacant);
    }
    let mut detail = format!("it has no {MANIFEST}");
    let mut shown: Vec<&String> = names.iter().collect();
    shown.sort();
    let more = shown.len().saturating_sub(8);
    shown.truncate(8);
    detail.push_str(&format!(
        " and holds {}{}",
        shown
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    ));
    if names.iter().any(|n| n == "conf") && names.iter().any(|n| n == "db") {
        detail.push_str(
            "; it looks like a sled ledger written by a claim-ledger before ledger manifests (store format 4), which this build does not open",
        );
    }
    let below: Vec<String> = shown
        .iter()
        .map(|name| path.join(name.as_str()))
        .filter(|sub| sub.join(MANIFEST).is_file())
        .map(|sub| sub.display().to_string())
        .collect();
    if !below.is_empty() {
        detail.push_str(&format!("; a ledger is at {}", below.join(", ")));
    }
    Err(not_a_ledger(detail))
}

/// What an interrupted creation may have left (the manifest is written last).
fn is_creation_leftover(name: &str) -> bool {
    matches!(name, SLED_DIR | HIGH_WATER) || name == manifest_temp_name()
}

fn manifest_temp_name() -> String {
    format!("{MANIFEST}.tmp")
}

/// Prepares `path` for a new ledger: creates it owner-only when absent, removes the
/// remains of an interrupted creation.
pub(crate) fn prepare(path: &Path) -> Result<(), LedgerError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io(format!("creating {}", path.display())))?;
    for name in [SLED_DIR, HIGH_WATER, &manifest_temp_name()] {
        let leftover = path.join(name);
        let removed = match std::fs::symlink_metadata(&leftover) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&leftover),
            Ok(_) => std::fs::remove_file(&leftover),
            Err(_) => continue,
        };
        removed.map_err(io(format!("removing {}", leftover.display())))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path.join(SLED_DIR))
        .map_err(io(format!("creating {}", path.join(SLED_DIR).display())))?;
    Ok(())
}

/// Writes the manifest (the last step of a creation): a temporary file, fsync, rename,
/// fsync of the directory.
pub(crate) fn write_manifest(path: &Path, manifest: &Manifest) -> Result<(), LedgerError> {
    let temp = path.join(manifest_temp_name());
    let mut text = serde_json::to_string_pretty(manifest).map_err(|e| {
        LedgerError::Storage(StoreError::Io {
            context: "encoding the manifest".into(),
            source: std::io::Error::other(e.to_string()),
        })
    })?;
    text.push('\n');
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(io(format!("creating {}", temp.display())))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io(format!("writing {}", temp.display())))?;
    std::fs::rename(&temp, path.join(MANIFEST))
        .map_err(io(format!("renaming {}", temp.display())))?;
    sync_dir(path)?;
    Ok(())
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(io(format!("syncing {}", path.display())))
}

/// The durable head a flush acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acknowledged {
    /// Its seq (0: nothing yet).
    pub seq: u64,
    /// Its chain hash.
    pub hash: Hash,
}

impl Acknowledged {
    /// The mark of an empty log: nothing acknowledged.
    pub const NOTHING: Acknowledged = Acknowledged {
        seq: 0,
        hash: Hash::ZERO,
    };
}

/// Where the acknowledged high-water mark is kept, outside the store.
pub trait HighWater: Send + Sync {
    /// The newest mark saved (`Ok(None)` only for a mark never written).
    fn load(&self) -> Result<Option<Acknowledged>, StoreError>;
    /// Durably replaces the mark.
    fn save(&self, mark: Acknowledged) -> Result<(), StoreError>;
    /// Replaces the mark so that it survives the process (not necessarily the machine)
    /// until [`HighWater::sync`]: the ledger records every flush's head this way and syncs
    /// at most once a second. By default the same as [`HighWater::save`].
    fn record(&self, mark: Acknowledged) -> Result<(), StoreError> {
        self.save(mark)
    }
    /// Makes the marks recorded so far durable.
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A high-water mark in memory, for stores in memory: it survives what a test calls a
/// crash of the store, as a file would.
#[derive(Debug, Default)]
pub struct MemoryHighWater(Mutex<Option<Acknowledged>>);

impl HighWater for MemoryHighWater {
    fn load(&self) -> Result<Option<Acknowledged>, StoreError> {
        Ok(*self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn save(&self, mark: Acknowledged) -> Result<(), StoreError> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(mark);
        Ok(())
    }
}

/// Bytes of one slot: magic (8), ledger id (16), seq (8, BE), hash (32), blake3 of those (32).
const SLOT_LEN: usize = 96;
/// Slots are a sector apart, so a torn write of one cannot reach the other.
const SLOT_STRIDE: u64 = 512;
const SLOT_MAGIC: &[u8; 8] = b"CLHWM\x00\x00\x01";

/// The high-water mark file: two checksummed slots, written alternately.
#[derive(Debug)]
pub struct HighWaterFile {
    path: PathBuf,
    id: LedgerId,
    /// The open file (when writable) and the slot the next save goes to.
    state: Mutex<(Option<File>, u64)>,
}

impl HighWaterFile {
    /// Creates the file of a new ledger holding the mark of an empty log.
    pub(crate) fn create(path: &Path, id: LedgerId) -> Result<HighWaterFile, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io(format!("creating {}", path.display())))?;
        file.set_len(2 * SLOT_STRIDE)
            .map_err(io(format!("sizing {}", path.display())))?;
        let mark = HighWaterFile {
            path: path.to_path_buf(),
            id,
            state: Mutex::new((Some(file), 0)),
        };
        mark.save(Acknowledged::NOTHING)?;
        if let Some(parent) = path.parent() {
            sync_dir(parent)?;
        }
        Ok(mark)
    }

    /// Opens an existing mark of ledger `id`; `writable` for a writer.
    pub(crate) fn open(
        path: &Path,
        id: LedgerId,
        writable: bool,
    ) -> Result<HighWaterFile, StoreError> {
        let file = match writable {
            true => Some(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(io(format!("opening {}", path.display())))?,
            ),
            false => None,
        };
        Ok(HighWaterFile {
            path: path.to_path_buf(),
            id,
            state: Mutex::new((file, 0)),
        })
    }

    /// Opens, writable, the mark of the ledger directory `dir` (an operator's restore, or
    /// a test playing an attacker).
    pub fn open_dir(dir: &Path) -> Result<HighWaterFile, LedgerError> {
        let Found::Ledger(manifest) = inspect(dir)? else {
            return Err(LedgerError::NotALedger {
                path: dir.to_path_buf(),
                detail: "the directory is absent or empty".into(),
            });
        };
        let id = manifest.id().ok_or_else(|| LedgerError::NotALedger {
            path: dir.to_path_buf(),
            detail: "its manifest has no valid ledger id".into(),
        })?;
        Ok(HighWaterFile::open(&dir.join(HIGH_WATER), id, true)?)
    }

    fn encode(&self, mark: Acknowledged) -> [u8; SLOT_LEN] {
        let mut slot = [0u8; SLOT_LEN];
        slot[..8].copy_from_slice(SLOT_MAGIC);
        slot[8..24].copy_from_slice(&self.id);
        slot[24..32].copy_from_slice(&mark.seq.to_be_bytes());
        slot[32..64].copy_from_slice(&mark.hash.0);
        let check = blake3::hash(&slot[..64]);
        slot[64..].copy_from_slice(check.as_bytes());
        slot
    }

    fn decode(&self, slot: &[u8]) -> Option<Acknowledged> {
        let slot = slot.get(..SLOT_LEN)?;
        if &slot[..8] != SLOT_MAGIC || blake3::hash(&slot[..64]).as_bytes() != &slot[64..] {
            return None;
        }
        if slot[8..24] != self.id {
            return None;
        }
        Some(Acknowledged {
            seq: u64::from_be_bytes(slot[24..32].try_into().ok()?),
            hash: Hash::from_slice(&slot[32..64])?,
        })
    }
}

impl HighWater for HighWaterFile {
    fn load(&self) -> Result<Option<Acknowledged>, StoreError> {
        let mut bytes = Vec::new();
        File::open(&self.path)
            .and_then(|mut file| file.read_to_end(&mut bytes))
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => StoreError::Damaged(format!(
                    "the high-water mark {} is missing",
                    self.path.display()
                )),
                _ => StoreError::Io {
                    context: format!("reading {}", self.path.display()),
                    source: e,
                },
            })?;
        let slots: Vec<(u64, Acknowledged)> = (0..2u64)
            .filter_map(|i| {
                let start = (i * SLOT_STRIDE) as usize;
                Some((i, self.decode(bytes.get(start..)?)?))
            })
            .collect();
        let Some(&(slot, newest)) = slots.iter().max_by_key(|(_, mark)| mark.seq) else {
            return Err(StoreError::Damaged(format!(
                "the high-water mark {} holds no valid mark of this ledger",
                self.path.display()
            )));
        };
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = 1 - slot;
        Ok(Some(newest))
    }

    fn save(&self, mark: Acknowledged) -> Result<(), StoreError> {
        self.record(mark)?;
        self.sync()
    }

    /// Writes the slot that does not hold the newest mark (a torn write leaves the other).
    fn record(&self, mark: Acknowledged) -> Result<(), StoreError> {
        let slot = self.encode(mark);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let next = state.1;
        let Some(file) = state.0.as_ref() else {
            return Err(StoreError::Io {
                context: format!("writing {}", self.path.display()),
                source: std::io::Error::other("the ledger was opened read-only"),
            });
        };
        file.write_all_at(&slot, next * SLOT_STRIDE)
            .map_err(io(format!("writing {}", self.path.display())))?;
        state.1 = 1 - next;
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.0.as_ref() {
            Some(file) => file
                .sync_data()
                .map_err(io(format!("syncing {}", self.path.display()))),
            None => Ok(()),
        }
    }
}
