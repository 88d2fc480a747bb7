//! Export bundles over a real sled ledger with a signed checkpoint: what a plan refuses
//! and with which [`FormatError`] category (the HTTP status and the exit code follow from
//! it), and that an entry missing inside the signed range is corruption, not the caller's
//! mistake, whatever error type the source of entries has.

use chrono::{DateTime, TimeZone, Utc};
use formats::bundle::{plan, write_dir, write_tar, BundleRequest};
use formats::FormatError;
use ledger::{Ledger, LedgerConfig, StoredEntry};
use schemas::checkpoint::{Checkpoint, SignerKey};
use schemas::{Change, WatchGap};

const ORIGIN: &str = "ledger.example/bundles";
const ENTRIES: u64 = 6;

fn at(second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, second).unwrap()
}

/// A ledger of `ENTRIES` watch gaps, with a checkpoint signed over all of them.
fn signed_ledger() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    for second in 0..ENTRIES as u32 {
        ledger
            .append_changes(
                [Change::WatchGap(WatchGap {
                    resource: "pods/v1".into(),
                    last_resource_version: Some(second.to_string()),
                    reason: "relist".into(),
                })],
                at(second),
            )
            .unwrap();
    }
    ledger.flush().unwrap();
    let key = SignerKey::from_seed(ORIGIN, [7; 32]).unwrap();
    ledger.sign_checkpoint(&key, ORIGIN).unwrap();
    (dir, ledger)
}

fn request(from: u64, to: Option<u64>) -> BundleRequest {
    BundleRequest {
        from_seq: Some(from),
        to_seq: to,
        previous: None,
    }
}

#[test]
fn a_plan_covers_the_signed_range_and_refuses_by_category() {
    let (_dir, ledger) = signed_ledger();
    let whole = plan(&ledger, &request(1, None), at(59)).unwrap();
    assert_eq!(
        (whole.manifest.from_seq, whole.manifest.to_seq),
        (1, ENTRIES)
    );
    assert_eq!(whole.proofs.tree_size, ENTRIES);

    let error = plan(&ledger, &request(4, Some(3)), at(59)).unwrap_err();
    assert!(matches!(error, FormatError::OutOfRange(_)), "{error}");
    let error = plan(&ledger, &request(0, Some(3)), at(59)).unwrap_err();
    assert!(matches!(error, FormatError::OutOfRange(_)), "{error}");
    // No checkpoint covers a seq past the signed tree.
    let error = plan(&ledger, &request(1, Some(ENTRIES + 1)), at(59)).unwrap_err();
    assert!(matches!(error, FormatError::NoCheckpoint(_)), "{error}");

    // A previous checkpoint whose root this ledger never had: a fork.
    let forked = BundleRequest {
        previous: Some(Checkpoint {
            origin: ORIGIN.into(),
            size: 2,
            root: [9; 32],
            extensions: Vec::new(),
        }),
        ..request(1, None)
    };
    let error = plan(&ledger, &forked, at(59)).unwrap_err();
    assert!(
        matches!(error, FormatError::InconsistentCheckpoint(_)),
        "{error}"
    );
    // A previous checkpoint of another origin.
    let elsewhere = BundleRequest {
        previous: Some(Checkpoint {
            origin: "ledger.example/other".into(),
            size: 2,
            root: ledger.root_at(2).unwrap(),
            extensions: Vec::new(),
        }),
        ..request(1, None)
    };
    let error = plan(&ledger, &elsewhere, at(59)).unwrap_err();
    assert!(
        matches!(error, FormatError::InconsistentCheckpoint(_)),
        "{error}"
    );
    // The same origin and root: a consistency proof from it.
    let extended = BundleRequest {
        previous: Some(Checkpoint {
            origin: ORIGIN.into(),
            size: 2,
            root: ledger.root_at(2).unwrap(),
            extensions: Vec::new(),
        }),
        ..request(1, None)
    };
    let with_proof = plan(&ledger, &extended, at(59)).unwrap();
    assert!(with_proof.proofs.consistency.is_some());
}

#[test]
fn an_entry_missing_inside_the_signed_range_is_corruption() {
    let (dir, ledger) = signed_ledger();
    let plan = plan(&ledger, &request(1, None), at(59)).unwrap();
    // A source that lost seq 3 (as a damaged store would).
    let losing = |from: u64, to: u64| -> Result<Vec<StoredEntry>, FormatError> {
        Ok(ledger
            .entries(from, to)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|stored| stored.entry.seq != 3)
            .collect())
    };
    let error = write_tar(losing, &plan, std::io::sink()).unwrap_err();
    let FormatError::Ledger(error) = error else {
        panic!("not a ledger error: {error}");
    };
    assert!(error.is_integrity_failure(), "{error}");
    assert!(error.to_string().contains("entry 3 is missing"), "{error}");

    // A source that ends early: the last entries are missing too.
    let short = |from: u64, to: u64| -> Result<Vec<StoredEntry>, FormatError> {
        Ok(ledger
            .entries(from, to.min(ENTRIES - 1))
            .collect::<Result<Vec<_>, _>>()?)
    };
    let out = dir.path().join("bundle");
    let error = write_dir(short, &plan, &out).unwrap_err();
    assert!(
        matches!(&error, FormatError::Ledger(e) if e.is_integrity_failure()),
        "{error}"
    );

    // The whole range writes.
    write_tar(&*ledger, &plan, std::io::sink()).unwrap();
}

/// A source's own failure, beside the bundle's.
#[derive(Debug)]
enum SourceError {
    Unavailable,
    Format(FormatError),
}

impl From<FormatError> for SourceError {
    fn from(error: FormatError) -> SourceError {
        SourceError::Format(error)
    }
}

#[test]
fn a_source_keeps_its_own_errors_and_receives_the_bundles() {
    let (_dir, ledger) = signed_ledger();
    let plan = plan(&ledger, &request(1, None), at(59)).unwrap();
    let unavailable =
        |_: u64, _: u64| -> Result<Vec<StoredEntry>, SourceError> { Err(SourceError::Unavailable) };
    assert!(matches!(
        write_tar(unavailable, &plan, std::io::sink()),
        Err(SourceError::Unavailable)
    ));
    let empty = |_: u64, _: u64| -> Result<Vec<StoredEntry>, SourceError> { Ok(Vec::new()) };
    assert!(matches!(
        write_tar(empty, &plan, std::io::sink()),
        Err(SourceError::Format(FormatError::Ledger(_)))
    ));
}
