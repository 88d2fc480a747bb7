//! Snapshot records (`S` keys) kept as files of their own, one per snapshot, for a backend
//! whose engine should not carry them: a snapshot of hundreds of megabytes written into
//! sled is rewritten with its leaf, and flushed by the flush that makes the next append
//! durable, so the writer waited for it. A file is written by whoever encoded the snapshot
//! (the ledger's snapshot thread), beside the engine and never through it.
//!
//! ```text
//! <dir>/<seq, 20 decimal digits>.snapshot   the record's value, byte for byte
//! <dir>/<seq>.snapshot.tmp                  a write under way (ignored, replaced)
//! ```
//!
//! A file is written to its temporary name, synced, renamed and the directory synced, so
//! after a crash a snapshot file is either whole or absent. Its bytes are judged by the
//! chain like any snapshot record: the entry that commits to a snapshot names its digest.

use std::fs::{File, OpenOptions};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::{keys, Record, Records, StoreError};

/// Bytes gathered before each write to a snapshot file.
const WRITE_BUFFER: usize = 1 << 20;

/// The file name suffix of a snapshot.
const SUFFIX: &str = ".snapshot";

/// A directory of snapshot files.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotFiles {
    dir: PathBuf,
}

impl SnapshotFiles {
    /// The snapshot files in `dir` (created at the first write).
    pub(crate) fn new(dir: PathBuf) -> SnapshotFiles {
        SnapshotFiles { dir }
    }

    fn file(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}{SUFFIX}"))
    }

    fn io(&self, doing: &str, seq: Option<u64>) -> impl FnOnce(std::io::Error) -> StoreError {
        let context = match seq {
            Some(seq) => format!("{doing} {}", self.file(seq).display()),
            None => format!("{doing} {}", self.dir.display()),
        };
        move |source| StoreError::Io { context, source }
    }

    /// Stores the snapshot after `seq`, as `encode` writes it, durably: when this returns,
    /// the file is whole on disk under its final name. If `encode` fails, only the
    /// temporary file is left (replaced by the next write, ignored by reads).
    pub(crate) fn put(
        &self,
        seq: u64,
        encode: super::SnapshotEncoder<'_>,
    ) -> Result<(), StoreError> {
        if !self.dir.is_dir() {
            std::fs::create_dir_all(&self.dir)
                .map_err(self.io("creating the snapshot directory", None))?;
            if let Some(parent) = self.dir.parent() {
                sync_dir(parent).map_err(self.io("syncing the parent of", None))?;
            }
        }
        let target = self.file(seq);
        let temporary = target.with_extension("snapshot.tmp");
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temporary)
            .map_err(self.io("creating", Some(seq)))?;
        let mut buffered = BufWriter::with_capacity(WRITE_BUFFER, file);
        encode(&mut buffered)
            .and_then(|()| buffered.into_inner().map_err(|e| e.into_error()))
            .and_then(|file| file.sync_data())
            .map_err(self.io("writing", Some(seq)))?;
        std::fs::rename(&temporary, &target).map_err(self.io("renaming into", Some(seq)))?;
        sync_dir(&self.dir).map_err(self.io("syncing", None))
    }

    /// The bytes of the snapshot after `seq`, if it has a file.
    pub(crate) fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        match std::fs::read(self.file(seq)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("reading", Some(seq))(e)),
        }
    }

    /// The snapshot after `seq` as an open file, if it has one.
    pub(crate) fn open(&self, seq: u64) -> Result<Option<File>, StoreError> {
        match File::open(self.file(seq)) {
            Ok(file) => Ok(Some(file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("opening", Some(seq))(e)),
        }
    }

    /// Removes the snapshot after `seq`, durably; absent is fine.
    pub(crate) fn remove(&self, seq: u64) -> Result<(), StoreError> {
        match std::fs::remove_file(self.file(seq)) {
            Ok(()) => sync_dir(&self.dir).map_err(self.io("syncing", None)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io("removing", Some(seq))(e)),
        }
    }

    /// The seqs with a snapshot file, ascending.
    pub(crate) fn seqs(&self) -> Result<Vec<u64>, StoreError> {
        let listing = match std::fs::read_dir(&self.dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io("listing", None)(e)),
        };
        let mut seqs = Vec::new();
        for item in listing {
            let item = item.map_err(self.io("listing", None))?;
            let name = item.file_name();
            let seq = name
                .to_str()
                .and_then(|name| name.strip_suffix(SUFFIX))
                .filter(|digits| digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|digits| digits.parse::<u64>().ok());
            seqs.extend(seq);
        }
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// The snapshot records whose `S` keys lie in `from..=to`, in key order (or reverse),
    /// each file read only when its record is reached.
    pub(crate) fn scan(&self, from: &[u8], to: &[u8], reverse: bool) -> Records<'static> {
        let mut seqs = match self.seqs() {
            Ok(seqs) => seqs,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        seqs.retain(|&seq| {
            let key = keys::seq_key(keys::SNAPSHOT, seq);
            from <= &key[..] && &key[..] <= to
        });
        if reverse {
            seqs.reverse();
        }
        let files = self.clone();
        Box::new(seqs.into_iter().filter_map(move |seq| {
            match files.get(seq) {
                Ok(Some(bytes)) => Some(Ok::<Record, _>((
                    keys::seq_key(keys::SNAPSHOT, seq).to_vec(),
                    bytes,
                ))),
                // Removed since the listing: as if it had never been there.
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            }
        }))
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_of(records: Records<'_>) -> Vec<u64> {
        records
            .map(|record| keys::seq_of(&record.unwrap().0).unwrap())
            .collect()
    }

    #[test]
    fn files_read_back_as_snapshot_records_in_key_order() {
        let root = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::new(root.path().join("snapshots"));
        assert_eq!(files.get(7).unwrap(), None);
        assert!(keys_of(files.scan(&[0], &[0xff; 9], false)).is_empty());
        for seq in [300, 7, 12] {
            files
                .put(seq, &mut |file| {
                    file.write_all(format!("snapshot {seq}").as_bytes())
                })
                .unwrap();
        }
        // A write cut short leaves a temporary file, which is not a snapshot.
        std::fs::write(files.file(400).with_extension("snapshot.tmp"), b"torn").unwrap();
        assert_eq!(files.get(12).unwrap().as_deref(), Some(&b"snapshot 12"[..]));
        let all = (
            keys::seq_key(keys::SNAPSHOT, 0),
            keys::seq_key(keys::SNAPSHOT, u64::MAX),
        );
        assert_eq!(keys_of(files.scan(&all.0, &all.1, false)), [7, 12, 300]);
        assert_eq!(keys_of(files.scan(&all.0, &all.1, true)), [300, 12, 7]);
        let upto_12 = keys::seq_key(keys::SNAPSHOT, 12);
        assert_eq!(keys_of(files.scan(&all.0, &upto_12, true)), [12, 7]);
        // Keys below and above the `S` prefix select nothing or everything.
        assert!(keys_of(files.scan(b"E", b"H", false)).is_empty());
        assert_eq!(keys_of(files.scan(b"A", b"Z", false)), [7, 12, 300]);
        files
            .put(12, &mut |file| file.write_all(b"rewritten"))
            .unwrap();
        assert_eq!(files.get(12).unwrap().as_deref(), Some(&b"rewritten"[..]));
        files.remove(12).unwrap();
        files.remove(12).unwrap();
        assert_eq!(keys_of(files.scan(b"A", b"Z", false)), [7, 300]);
    }

    #[test]
    fn a_snapshot_whose_encoder_fails_is_not_stored_and_the_old_one_stays() {
        let root = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::new(root.path().join("snapshots"));
        files.put(5, &mut |file| file.write_all(b"whole")).unwrap();
        // Megabytes written before the failure: past the write buffer, on disk already.
        let failed = files.put(5, &mut |file| {
            file.write_all(&vec![7u8; 3 << 20])?;
            Err(std::io::Error::other("the encoder stopped"))
        });
        let message = failed.unwrap_err().to_string();
        assert!(message.contains("writing"), "{message}");
        assert_eq!(files.get(5).unwrap().as_deref(), Some(&b"whole"[..]));
        let failed = files.put(6, &mut |file| {
            file.write_all(b"half")?;
            Err(std::io::Error::other("the encoder stopped"))
        });
        assert!(failed.is_err());
        assert_eq!(files.get(6).unwrap(), None);
        assert_eq!(files.seqs().unwrap(), [5]);
    }
}
