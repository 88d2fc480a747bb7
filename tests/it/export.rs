//! Black-box tests of the compliance export through the `claim-ledger` binary, on real
//! sled ledgers in temporary directories: `keygen` (file modes, no overwrite, invalid
//! names), `export --bundle` as a tar and as a directory (whole tree and a middle range)
//! and `verify-export` on them, a tamper matrix on bundles (altered, forged, dropped,
//! swapped and cut entries, an untrusted key, a forked tree signed by the same key, a
//! rollback), consistency between successive exports, key rotation, `verify
//! --checkpoint` against a truncated or forked ledger, the CSV and CloudEvents exports
//! (CloudEvents bytes re-hashed with blake3), and malformed bundles (exit 2, no panic).
//!
//! The binary is driven only by its arguments, exit codes, stdout and stderr; the
//! `schemas` crate is used only to play a forger (re-encoding an entry) and to re-hash.

use crate::support::process;
use std::path::Path;

use crate::support::event_lines;
use crate::support::process::Run;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::Value;

/// Runs the binary with `args` and no stdin.
fn run(args: &[&str]) -> Run {
    process::run(args, None)
}

/// Runs and requires exit 0.
fn ok(args: &[&str]) -> Run {
    process::ok(args, None)
}

/// Runs and requires exit `code`, and no panic.
fn fails(code: i32, args: &[&str]) -> Run {
    let result = run(args);
    assert_eq!(result.code, code, "claim-ledger {args:?}: {result:?}");
    assert!(!result.stderr.contains("panicked"), "{result:?}");
    result
}

/// A temporary directory for ledgers, keys and bundles.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    /// Ingests a fixture's watch events into `db`; returns the head seq.
    fn ingest(&self, db: &str, fixture: &str) -> u64 {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(fixture),
        )
        .unwrap();
        let file = self.path(&format!("{fixture}.events"));
        std::fs::write(&file, event_lines(&text)).unwrap();
        let report = ok(&["ingest", "--db", &self.path(db), &file]).json();
        assert_eq!(report["errors"], Value::Array(vec![]), "{report}");
        report["head_seq"].as_u64().unwrap()
    }

    /// `keygen --name NAME --out PREFIX`: the signing and the verifier key files.
    fn keygen(&self, name: &str, prefix: &str) -> (String, String) {
        let report = ok(&["keygen", "--name", name, "--out", &self.path(prefix)]).json();
        assert_eq!(report["name"], name);
        (
            self.path(&format!("{prefix}.key")),
            self.path(&format!("{prefix}.pub")),
        )
    }

    /// `export --bundle OUT` with extra arguments; returns the printed manifest.
    fn bundle(&self, db: &str, out: &str, extra: &[&str]) -> Value {
        let out = self.path(out);
        let db = self.path(db);
        let mut args = vec!["export", "--db", &db, "--bundle", &out];
        args.extend_from_slice(extra);
        ok(&args).json()
    }
}

/// `verify-export BUNDLE --trusted-key K... [--previous-checkpoint P]`.
fn verify_export(bundle: &str, keys: &[&str], previous: Option<&str>) -> Run {
    let mut args = vec!["verify-export", bundle];
    for key in keys {
        args.extend(["--trusted-key", key]);
    }
    if let Some(previous) = previous {
        args.extend(["--previous-checkpoint", previous]);
    }
    run(&args)
}

/// Requires `verify-export` to pass and returns its one-line summary.
fn verified(bundle: &str, keys: &[&str], previous: Option<&str>) -> String {
    let result = verify_export(bundle, keys, previous);
    assert_eq!(result.code, 0, "{bundle}: {result:?}");
    assert_eq!(result.stdout.lines().count(), 1, "{result:?}");
    assert!(result.stdout.starts_with("ok: "), "{result:?}");
    result.stdout.trim_end().to_string()
}

/// Requires `verify-export` to reject with exit 1 naming `kind` (and `seq`, if given).
fn rejected(bundle: &str, keys: &[&str], previous: Option<&str>, kind: &str, seq: Option<u64>) {
    let result = verify_export(bundle, keys, previous);
    assert_eq!(result.code, 1, "{bundle}: {result:?}");
    let expected = match seq {
        Some(seq) => format!("bundle rejected: {kind} at seq {seq}:"),
        None => format!("bundle rejected: {kind}:"),
    };
    assert!(
        result.stderr.contains(&expected),
        "expected {expected:?} in {:?}",
        result.stderr
    );
    assert!(result.stdout.is_empty(), "{result:?}");
}

/// Copies a directory tree (a closed sled ledger or a bundle).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for item in std::fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        let target = to.join(item.file_name());
        if item.file_type().unwrap().is_dir() {
            copy_dir(&item.path(), &target);
        } else {
            std::fs::copy(item.path(), &target).unwrap();
        }
    }
}

/// A copy of the directory bundle `bundle` (under `scratch`, named `name`) whose
/// `entries.jsonl` lines were changed by `edit`.
fn tampered(
    scratch: &Scratch,
    bundle: &str,
    name: &str,
    edit: impl FnOnce(&mut Vec<String>),
) -> String {
    let copy = scratch.path(name);
    copy_dir(Path::new(bundle), Path::new(&copy));
    let file = Path::new(&copy).join("entries.jsonl");
    let mut lines: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    edit(&mut lines);
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&file, text).unwrap();
    copy
}

/// What a forger with the bundle in hand does to line `line`: re-encode the entry with
/// another `observed_at`, and rewrite its bytes, its JSON and its chain hash to match, so
/// the line is consistent with itself.
fn forge(line: &str) -> String {
    let mut value: Value = serde_json::from_str(line).unwrap();
    let bytes = B64.decode(value["bytes"].as_str().unwrap()).unwrap();
    let mut entry = schemas::Entry::decode(&bytes).unwrap();
    entry.observed_at += chrono::Duration::seconds(1);
    let forged = entry.encode().unwrap();
    assert_ne!(forged, bytes);
    let hash = schemas::chain_hash(&entry.prev_hash, entry.seq, &forged);
    value["bytes"] = Value::String(B64.encode(&forged));
    value["hash"] = Value::String(hash.to_hex());
    value["entry"] = serde_json::to_value(&entry).unwrap();
    serde_json::to_string(&value).unwrap()
}

fn seq_of(line: &str) -> u64 {
    serde_json::from_str::<Value>(line).unwrap()["seq"]
        .as_u64()
        .unwrap()
}

/// A ledger `db` of several fixtures (more than 9 entries); returns its head seq.
fn several(scratch: &Scratch, db: &str) -> u64 {
    let mut head = 0;
    for fixture in [
        "warm_bind.jsonl",
        "cold_bind.jsonl",
        "pod_replacement.jsonl",
    ] {
        let now = scratch.ingest(db, fixture);
        assert!(now > head, "{fixture} appended nothing");
        head = now;
    }
    head
}

#[test]
fn keygen_writes_a_private_key_and_a_verifier_key_and_never_overwrites() {
    let scratch = Scratch::new();
    let report = ok(&[
        "keygen",
        "--name",
        "audit.example/ledger",
        "--out",
        &scratch.path("k"),
    ])
    .json();
    let (key, public) = (scratch.path("k.key"), scratch.path("k.pub"));
    assert_eq!(report["name"], "audit.example/ledger");
    assert_eq!(report["signing_key_file"], key.as_str());
    assert_eq!(report["verifier_key_file"], public.as_str());
    let key_id = report["key_id"].as_str().unwrap();
    assert_eq!(key_id.len(), 8, "{report}");
    assert!(key_id.chars().all(|c| c.is_ascii_hexdigit()), "{report}");

    let private = std::fs::read_to_string(&key).unwrap();
    assert!(
        private.starts_with("PRIVATE+KEY+audit.example/ledger+"),
        "{private}"
    );
    let verifier = std::fs::read_to_string(&public).unwrap();
    assert_eq!(
        verifier.trim_end(),
        report["verifier_key"].as_str().unwrap()
    );
    assert!(
        verifier.starts_with(&format!("audit.example/ledger+{key_id}+")),
        "{verifier}"
    );
    assert!(!verifier.contains("PRIVATE"), "{verifier}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    // An existing key is never overwritten, whatever the name.
    let again = fails(
        2,
        &["keygen", "--name", "other", "--out", &scratch.path("k")],
    );
    assert!(again.stderr.contains("k.key"), "{again:?}");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), private);
    assert_eq!(std::fs::read_to_string(&public).unwrap(), verifier);

    // Key names with a space or a '+' are refused, and nothing is written.
    for (name, prefix) in [("bad name", "space"), ("bad+name", "plus")] {
        let refused = fails(
            2,
            &["keygen", "--name", name, "--out", &scratch.path(prefix)],
        );
        assert!(refused.stderr.contains("key name"), "{refused:?}");
        assert!(!Path::new(&scratch.path(&format!("{prefix}.key"))).exists());
        assert!(!Path::new(&scratch.path(&format!("{prefix}.pub"))).exists());
    }
}

#[test]
fn bundles_as_tar_and_directory_verify_offline() {
    let scratch = Scratch::new();
    let head = several(&scratch, "db");
    let (key, public) = scratch.keygen("audit.example/ledger", "k");

    let manifest = scratch.bundle("db", "out.tar", &["--signing-key", &key]);
    assert_eq!(manifest["format"], "claim-ledger-export-bundle/1");
    assert_eq!(manifest["origin"], "audit.example/ledger");
    assert_eq!(
        (
            manifest["from_seq"].as_u64(),
            manifest["to_seq"].as_u64(),
            manifest["entries"].as_u64(),
            manifest["tree_size"].as_u64()
        ),
        (Some(1), Some(head), Some(head), Some(head)),
        "{manifest}"
    );
    // The tar holds exactly the four files at its top level.
    let mut archive = tar::Archive::new(std::fs::File::open(scratch.path("out.tar")).unwrap());
    let mut names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|m| m.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "checkpoint",
            "entries.jsonl",
            "manifest.json",
            "proofs.json"
        ]
    );
    // Pinned to its origin it verifies; pinned to another log's, it is refused.
    let bundle = scratch.path("out.tar");
    let pinned = run(&[
        "verify-export",
        &bundle,
        "--trusted-key",
        &public,
        "--origin",
        "audit.example/ledger",
    ]);
    assert_eq!(pinned.code, 0, "{pinned:?}");
    let other = run(&[
        "verify-export",
        &bundle,
        "--trusted-key",
        &public,
        "--origin",
        "staging.example/ledger",
    ]);
    assert_eq!(other.code, 1, "{other:?}");
    assert!(
        other.stderr.contains("bundle rejected: origin_mismatch"),
        "{other:?}"
    );
    // For machines: one JSON object either way.
    let json = |origin: &str| {
        let result = run(&[
            "verify-export",
            &bundle,
            "--trusted-key",
            &public,
            "--origin",
            origin,
            "--output",
            "json",
        ]);
        let value: Value = serde_json::from_str(&result.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {result:?}"));
        (result.code, value)
    };
    let (code, accepted) = json("audit.example/ledger");
    assert_eq!(
        (code, &accepted["ok"]),
        (0, &Value::Bool(true)),
        "{accepted}"
    );
    assert_eq!(accepted["tree_size"].as_u64(), Some(head), "{accepted}");
    let (code, refused) = json("staging.example/ledger");
    assert_eq!(
        (code, &refused["ok"]),
        (1, &Value::Bool(false)),
        "{refused}"
    );
    assert_eq!(refused["failure"]["kind"], "origin_mismatch", "{refused}");
    let summary = verified(&scratch.path("out.tar"), &[&public], None);
    assert!(
        summary.starts_with(&format!(
            "ok: entries 1..={head} ({head}) of origin \"audit.example/ledger\" are in the tree of size {head}"
        )),
        "{summary}"
    );
    assert!(
        summary.ends_with("signed by key \"audit.example/ledger\""),
        "{summary}"
    );

    // The same as a directory; the checkpoint already covers the head, so it is reused.
    let manifest = scratch.bundle("db", "dir", &["--signing-key", &key]);
    assert_eq!(manifest["tree_size"], head);
    assert_eq!(
        std::fs::read_to_string(scratch.path("dir/checkpoint")).unwrap(),
        {
            let mut archive =
                tar::Archive::new(std::fs::File::open(scratch.path("out.tar")).unwrap());
            let mut text = String::new();
            for member in archive.entries().unwrap() {
                let mut member = member.unwrap();
                if member.path().unwrap().to_string_lossy() == "checkpoint" {
                    std::io::Read::read_to_string(&mut member, &mut text).unwrap();
                }
            }
            text
        }
    );
    let entries = std::fs::read_to_string(scratch.path("dir/entries.jsonl")).unwrap();
    assert_eq!(entries.lines().count() as u64, head);
    verified(&scratch.path("dir"), &[&public], None);

    // A middle range of the same signed tree, without signing again.
    let manifest = scratch.bundle("db", "middle", &["--from-seq", "3", "--to-seq", "9"]);
    assert_eq!(
        (
            manifest["from_seq"].as_u64(),
            manifest["to_seq"].as_u64(),
            manifest["entries"].as_u64(),
            manifest["tree_size"].as_u64()
        ),
        (Some(3), Some(9), Some(7), Some(head)),
        "{manifest}"
    );
    let lines = std::fs::read_to_string(scratch.path("middle/entries.jsonl")).unwrap();
    let seqs: Vec<u64> = lines.lines().map(seq_of).collect();
    assert_eq!(seqs, (3..=9).collect::<Vec<_>>());
    let summary = verified(&scratch.path("middle"), &[&public], None);
    assert!(
        summary.starts_with(&format!("ok: entries 3..=9 (7) of origin \"audit.example/ledger\" are in the tree of size {head}")),
        "{summary}"
    );
    // And as a tar.
    scratch.bundle("db", "middle.tar", &["--from-seq", "3", "--to-seq", "9"]);
    verified(&scratch.path("middle.tar"), &[&public], None);
}

#[test]
fn tampered_bundles_are_rejected_naming_the_kind_and_the_seq() {
    let scratch = Scratch::new();
    let head = several(&scratch, "db");
    assert!(head >= 10, "{head}");
    let (key, public) = scratch.keygen("audit.example/ledger", "k");
    scratch.bundle("db", "good", &["--signing-key", &key]);
    let good = scratch.path("good");
    verified(&good, &[&public], None);

    // One base64 character of seq 5's bytes changed (still valid base64).
    let altered = tampered(&scratch, &good, "altered", |lines| {
        let mut value: Value = serde_json::from_str(&lines[4]).unwrap();
        let mut bytes: Vec<char> = value["bytes"].as_str().unwrap().chars().collect();
        let middle = bytes.len() / 2;
        bytes[middle] = if bytes[middle] == 'A' { 'B' } else { 'A' };
        value["bytes"] = Value::String(bytes.into_iter().collect());
        lines[4] = serde_json::to_string(&value).unwrap();
    });
    let result = verify_export(&altered, &[&public], None);
    assert_eq!(result.code, 1, "{result:?}");
    assert!(
        result
            .stderr
            .contains("bundle rejected: entry_altered at seq 5:")
            || result
                .stderr
                .contains("bundle rejected: undecodable_entry at seq 5:"),
        "{result:?}"
    );

    // A forged line, consistent with itself: the next entry's link breaks...
    let forged = tampered(&scratch, &good, "forged", |lines| {
        lines[4] = forge(&lines[4]);
    });
    rejected(&forged, &[&public], None, "chain_broken", Some(6));
    // ...and the last one has nothing after it, but is not in the signed tree.
    let forged_last = tampered(&scratch, &good, "forged-last", |lines| {
        let last = lines.len() - 1;
        lines[last] = forge(&lines[last]);
    });
    rejected(&forged_last, &[&public], None, "not_included", Some(head));

    // Seq 5 dropped.
    let dropped = tampered(&scratch, &good, "dropped", |lines| {
        lines.remove(4);
    });
    rejected(&dropped, &[&public], None, "seq_gap", Some(5));

    // Seqs 5 and 6 swapped.
    let swapped = tampered(&scratch, &good, "swapped", |lines| {
        lines.swap(4, 5);
    });
    rejected(&swapped, &[&public], None, "out_of_order", Some(5));

    // The last line cut.
    let cut = tampered(&scratch, &good, "cut", |lines| {
        lines.pop();
    });
    rejected(&cut, &[&public], None, "truncated", Some(head));

    // A line added after the last.
    let trailing = tampered(&scratch, &good, "trailing", |lines| {
        let copy = lines[lines.len() - 1].clone();
        lines.push(copy);
    });
    rejected(
        &trailing,
        &[&public],
        None,
        "trailing_entry",
        Some(head + 1),
    );

    // A key the auditor does not trust.
    let (_, stranger) = scratch.keygen("audit.example/ledger", "stranger");
    rejected(&good, &[&stranger], None, "untrusted_checkpoint", None);
    // Trusting both still verifies: only trusted keys count.
    verified(&good, &[&stranger, &public], None);
}

#[test]
fn a_forked_tree_signed_by_the_same_key_and_a_rollback_are_inconsistent() {
    let scratch = Scratch::new();
    let (key, public) = scratch.keygen("audit.example/ledger", "k");
    // Two histories of the same length (14 entries each), signed by the same key.
    let size = scratch.ingest("honest", "pod_replacement.jsonl");
    assert_eq!(
        scratch.ingest("fork", "release_background.jsonl"),
        size,
        "the fork fixture must have as many entries"
    );
    scratch.bundle("honest", "honest", &["--signing-key", &key]);
    scratch.bundle("fork", "fork-same-size", &["--signing-key", &key]);
    let honest_checkpoint = scratch.path("honest/checkpoint");
    let fork_checkpoint = scratch.path("fork-same-size/checkpoint");
    // Each verifies on its own.
    verified(&scratch.path("honest"), &[&public], None);
    verified(&scratch.path("fork-same-size"), &[&public], None);
    assert_ne!(
        std::fs::read_to_string(&honest_checkpoint).unwrap(),
        std::fs::read_to_string(&fork_checkpoint).unwrap()
    );

    // Same size, another root.
    rejected(
        &scratch.path("fork-same-size"),
        &[&public],
        Some(&honest_checkpoint),
        "inconsistent",
        None,
    );

    // The fork grows and proves consistency with its own past: not with the auditor's.
    let grown = scratch.ingest("fork", "cold_bind.jsonl");
    assert!(grown > size);
    scratch.bundle(
        "fork",
        "fork-grown",
        &[
            "--signing-key",
            &key,
            "--previous-checkpoint",
            &fork_checkpoint,
        ],
    );
    let summary = verified(
        &scratch.path("fork-grown"),
        &[&public],
        Some(&fork_checkpoint),
    );
    assert!(
        summary.ends_with(&format!(
            "consistent with the previous checkpoint of size {size}"
        )),
        "{summary}"
    );
    rejected(
        &scratch.path("fork-grown"),
        &[&public],
        Some(&honest_checkpoint),
        "inconsistent",
        None,
    );
    // The exporter itself refuses to prove consistency with a checkpoint of another tree.
    let refused = fails(
        2,
        &[
            "export",
            "--db",
            &scratch.path("fork"),
            "--bundle",
            &scratch.path("never"),
            "--previous-checkpoint",
            &honest_checkpoint,
        ],
    );
    assert!(refused.stderr.contains("not the one"), "{refused:?}");

    // Rollback: a bundle of the tree of size 14 against a previous checkpoint of size 22.
    let grown_checkpoint = scratch.path("fork-grown/checkpoint");
    scratch.bundle("fork", "fork-old", &["--to-seq", &size.to_string()]);
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(scratch.path("fork-old/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["tree_size"], size);
    verified(&scratch.path("fork-old"), &[&public], None);
    let result = verify_export(
        &scratch.path("fork-old"),
        &[&public],
        Some(&grown_checkpoint),
    );
    assert_eq!(result.code, 1, "{result:?}");
    assert!(
        result.stderr.contains("bundle rejected: inconsistent:")
            && result.stderr.contains("rollback"),
        "{result:?}"
    );
}

#[test]
fn successive_exports_prove_consistency_with_the_previous_checkpoint() {
    let scratch = Scratch::new();
    let (key, public) = scratch.keygen("audit.example/ledger", "k");
    let first = several(&scratch, "db");
    scratch.bundle("db", "b1", &["--signing-key", &key]);
    let previous = scratch.path("b1/checkpoint");
    verified(&scratch.path("b1"), &[&public], None);

    let second = scratch.ingest("db", "release_foreground.jsonl");
    assert!(second > first);
    let manifest = scratch.bundle(
        "db",
        "b2.tar",
        &["--signing-key", &key, "--previous-checkpoint", &previous],
    );
    assert_eq!(manifest["tree_size"], second);
    let summary = verified(&scratch.path("b2.tar"), &[&public], Some(&previous));
    assert!(
        summary.starts_with(&format!("ok: entries 1..={second} ({second})")),
        "{summary}"
    );
    assert!(
        summary.ends_with(&format!(
            "; consistent with the previous checkpoint of size {first}"
        )),
        "{summary}"
    );
    // Only the new entries, still proven to extend the previous tree.
    let from = (first + 1).to_string();
    scratch.bundle(
        "db",
        "b2-new",
        &["--from-seq", &from, "--previous-checkpoint", &previous],
    );
    let summary = verified(&scratch.path("b2-new"), &[&public], Some(&previous));
    assert!(
        summary.starts_with(&format!(
            "ok: entries {from}..={second} ({})",
            second - first
        )),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("previous checkpoint of size {first}")),
        "{summary}"
    );

    // A bundle made without the previous checkpoint cannot show it extends it.
    scratch.bundle("db", "b2-unproven", &[]);
    rejected(
        &scratch.path("b2-unproven"),
        &[&public],
        Some(&previous),
        "inconsistent",
        None,
    );
    // A previous checkpoint signed by an untrusted key is refused as such.
    let (stranger_key, stranger) = scratch.keygen("audit.example/ledger", "stranger");
    let other = several(&scratch, "other");
    scratch.bundle("other", "other", &["--signing-key", &stranger_key]);
    assert_eq!(other, first);
    rejected(
        &scratch.path("b2.tar"),
        &[&public],
        Some(&scratch.path("other/checkpoint")),
        "previous_untrusted",
        None,
    );
    verified(&scratch.path("other"), &[&stranger], None);
}

#[test]
fn key_rotation_verifies_each_checkpoint_with_its_key() {
    let scratch = Scratch::new();
    let (key_a, public_a) = scratch.keygen("audit.example/ledger-2025", "a");
    let (key_b, public_b) = scratch.keygen("audit.example/ledger-2026", "b");
    let origin = "audit.example/ledger";
    let size_a = several(&scratch, "db");
    scratch.bundle("db", "a", &["--signing-key", &key_a, "--origin", origin]);
    let checkpoint_a = scratch.path("a/checkpoint");

    let size_b = scratch.ingest("db", "retain_expiry.jsonl");
    assert!(size_b > size_a);
    let manifest = scratch.bundle(
        "db",
        "latest",
        &[
            "--signing-key",
            &key_b,
            "--origin",
            origin,
            "--previous-checkpoint",
            &checkpoint_a,
        ],
    );
    assert_eq!(manifest["tree_size"], size_b);
    assert_eq!(manifest["origin"], origin);

    // The range that ends at A's checkpoint is covered by A's signature.
    let manifest = scratch.bundle("db", "old", &["--to-seq", &size_a.to_string()]);
    assert_eq!(manifest["tree_size"], size_a);
    let summary = verified(&scratch.path("old"), &[&public_a], None);
    assert!(
        summary.ends_with("signed by key \"audit.example/ledger-2025\""),
        "{summary}"
    );
    rejected(
        &scratch.path("old"),
        &[&public_b],
        None,
        "untrusted_checkpoint",
        None,
    );

    // The latest by B, not A.
    let summary = verified(&scratch.path("latest"), &[&public_b], None);
    assert!(
        summary.ends_with("signed by key \"audit.example/ledger-2026\""),
        "{summary}"
    );
    rejected(
        &scratch.path("latest"),
        &[&public_a],
        None,
        "untrusted_checkpoint",
        None,
    );

    // One trust file with both keys verifies both, and the rotation is consistent.
    let both = scratch.path("both.pub");
    std::fs::write(
        &both,
        format!(
            "# the 2025 key, then the 2026 key\n{}\n{}",
            std::fs::read_to_string(&public_a).unwrap(),
            std::fs::read_to_string(&public_b).unwrap()
        ),
    )
    .unwrap();
    verified(&scratch.path("old"), &[&both], None);
    verified(&scratch.path("latest"), &[&both], None);
    let summary = verified(&scratch.path("latest"), &[&both], Some(&checkpoint_a));
    assert!(
        summary.ends_with(&format!(
            "consistent with the previous checkpoint of size {size_a}"
        )),
        "{summary}"
    );
    // With only B trusted, A's checkpoint as the previous one is not trusted.
    rejected(
        &scratch.path("latest"),
        &[&public_b],
        Some(&checkpoint_a),
        "previous_untrusted",
        None,
    );
}

#[test]
fn verify_against_a_checkpoint_catches_truncation_forks_and_untrusted_keys() {
    let scratch = Scratch::new();
    let (key, public) = scratch.keygen("audit.example/ledger", "k");
    let short = several(&scratch, "db");
    // A copy at size N, taken while no process holds the ledger.
    copy_dir(
        Path::new(&scratch.path("db")),
        Path::new(&scratch.path("copy")),
    );
    let long = scratch.ingest("db", "release_orphan.jsonl");
    assert!(long > short);
    scratch.bundle("db", "b", &["--signing-key", &key]);
    let checkpoint = scratch.path("b/checkpoint");

    let verify = |db: &str, checkpoint: &str, keys: &[&str]| {
        let db = scratch.path(db);
        let mut args = vec!["verify", "--db", &db, "--checkpoint", checkpoint];
        for key in keys {
            args.extend(["--trusted-key", key]);
        }
        run(&args)
    };

    let good = verify("db", &checkpoint, &[&public]);
    assert_eq!(good.code, 0, "{good:?}");
    assert_eq!(good.json()["checkpoint"]["consistent"], true, "{good:?}");

    // The copy is a full, valid ledger on its own...
    let alone = run(&["verify", "--db", &scratch.path("copy")]);
    assert_eq!(alone.code, 0, "{alone:?}");
    // ...but it does not hold the tree the later checkpoint signed.
    let truncated = verify("copy", &checkpoint, &[&public]);
    assert_eq!(truncated.code, 1, "{truncated:?}");
    let json = truncated.json();
    assert_eq!(json["checkpoint"]["consistent"], false, "{json}");
    assert_eq!(
        json["checkpoint"]["failure"]["kind"], "checkpoint_mismatch",
        "{json}"
    );
    assert_eq!(json["checkpoint"]["failure"]["seq"], long, "{json}");
    assert!(truncated.stderr.contains("truncated"), "{truncated:?}");

    // A forked ledger of the same size as the checkpoint.
    let fork_size = [
        "claim_recreated.jsonl",
        "v1beta1_warm_bind.jsonl",
        "warm_bind.jsonl",
    ]
    .map(|fixture| scratch.ingest("fork", fixture))[2];
    assert!(fork_size >= long, "{fork_size} < {long}");
    let forked = verify("fork", &checkpoint, &[&public]);
    assert_eq!(forked.code, 1, "{forked:?}");
    assert_eq!(forked.json()["checkpoint"]["consistent"], false);

    // A checkpoint of the right tree signed by a key that is not trusted.
    let (_, stranger) = scratch.keygen("audit.example/ledger", "stranger");
    let untrusted = verify("db", &checkpoint, &[&stranger]);
    assert_eq!(untrusted.code, 1, "{untrusted:?}");
    assert!(
        untrusted.stderr.contains("not signed by a trusted key"),
        "{untrusted:?}"
    );
    // A file that is not a signed note is an input error.
    let garbage = scratch.path("garbage");
    std::fs::write(&garbage, "not a checkpoint\n").unwrap();
    let result = verify("db", &garbage, &[&public]);
    assert_eq!(result.code, 2, "{result:?}");
}

#[test]
fn csv_and_cloudevents_exports_carry_every_entry_and_its_bytes() {
    let scratch = Scratch::new();
    let head = several(&scratch, "db");
    let db = scratch.path("db");
    let jsonl = ok(&["export", "--db", &db, "--format", "jsonl"]).lines();
    assert_eq!(jsonl.len() as u64, head);

    let csv = ok(&["export", "--db", &db, "--format", "csv"]).stdout;
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len() as u64, head + 1, "{csv}");
    let header: Vec<&str> = rows[0].split(',').collect();
    assert_eq!(header[0], "seq");
    assert_eq!(header[1], "leaf_index");
    assert_eq!(header.last(), Some(&"bytes_base64"));
    for (row, line) in rows[1..].iter().zip(&jsonl) {
        let seq = line["seq"].as_u64().unwrap();
        assert!(
            row.starts_with(&format!("{seq},{},", seq - 1)),
            "row {row} for seq {seq}"
        );
        // The bytes (base64 needs no quoting) end the row, as in the jsonl export.
        assert!(
            row.ends_with(&format!(",{}", line["bytes"].as_str().unwrap())),
            "row {row}"
        );
        assert!(row.contains(line["hash"].as_str().unwrap()), "row {row}");
    }
    let range = ok(&[
        "export",
        "--db",
        &db,
        "--format",
        "csv",
        "--from-seq",
        "2",
        "--to-seq",
        "4",
    ])
    .stdout;
    assert_eq!(range.lines().count(), 4, "{range}");
    assert!(range.lines().nth(1).unwrap().starts_with("2,1,"), "{range}");

    let events = ok(&["export", "--db", &db, "--format", "cloudevents"]).lines();
    assert_eq!(events.len() as u64, head);
    let mut prev = schemas::Hash::ZERO.to_hex();
    for (i, event) in events.iter().enumerate() {
        let seq = i as u64 + 1;
        assert_eq!(event["specversion"], "1.0", "{event}");
        assert_eq!(event["id"], seq.to_string(), "{event}");
        assert_eq!(event["source"], "claim-ledger", "{event}");
        assert_eq!(event["datacontenttype"], "application/json", "{event}");
        assert!(
            event["type"]
                .as_str()
                .unwrap()
                .starts_with("dev.claimledger."),
            "{event}"
        );
        let data = &event["data"];
        assert_eq!(data["seq"], seq, "{event}");
        assert_eq!(data["prev_hash"], prev.as_str(), "{event}");
        let bytes = B64.decode(data["bytes"].as_str().unwrap()).unwrap();
        let mut previous = [0u8; 32];
        for (slot, pair) in previous.iter_mut().zip(prev.as_bytes().chunks(2)) {
            *slot = u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap();
        }
        let hash = schemas::chain_hash(&schemas::Hash(previous), seq, &bytes).to_hex();
        assert_eq!(data["hash"], hash.as_str(), "seq {seq}");
        assert_eq!(data["hash"], jsonl[i]["hash"], "seq {seq}");
        prev = hash;
    }
    // The first entry's hash with the blake3 crate directly, as FORMAT.md writes it.
    let first = &events[0]["data"];
    let mut recomputed = blake3::Hasher::new();
    recomputed.update(b"claim-ledger/entry/v1\0");
    recomputed.update(&[0u8; 32]);
    recomputed.update(&1u64.to_be_bytes());
    recomputed.update(&B64.decode(first["bytes"].as_str().unwrap()).unwrap());
    assert_eq!(first["hash"], recomputed.finalize().to_hex().as_str());

    // Once a checkpoint is signed, its origin is the default source.
    let (key, _) = scratch.keygen("audit.example/ledger", "k");
    scratch.bundle("db", "b", &["--signing-key", &key]);
    let events = ok(&["export", "--db", &db, "--format", "cloudevents"]).lines();
    assert_eq!(events[0]["source"], "audit.example/ledger");
    let events = ok(&[
        "export",
        "--db",
        &db,
        "--format",
        "cloudevents",
        "--source",
        "urn:test",
        "--to-seq",
        "2",
    ])
    .lines();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["source"], "urn:test");
}

#[test]
fn malformed_bundles_and_misuse_are_input_errors() {
    let scratch = Scratch::new();
    several(&scratch, "db");
    let db = scratch.path("db");
    let (key, public) = scratch.keygen("audit.example/ledger", "k");

    // No checkpoint signed yet: nothing to bundle against.
    let result = fails(
        2,
        &["export", "--db", &db, "--bundle", &scratch.path("none")],
    );
    assert!(result.stderr.contains("no checkpoint"), "{result:?}");
    // A bundle holds jsonl only.
    fails(
        2,
        &[
            "export",
            "--db",
            &db,
            "--bundle",
            &scratch.path("csv"),
            "--format",
            "csv",
        ],
    );

    scratch.bundle("db", "good", &["--signing-key", &key]);
    verified(&scratch.path("good"), &[&public], None);

    // A directory bundle without one of its files.
    for file in [
        "manifest.json",
        "entries.jsonl",
        "checkpoint",
        "proofs.json",
    ] {
        let copy = scratch.path(&format!("missing-{file}"));
        copy_dir(Path::new(&scratch.path("good")), Path::new(&copy));
        std::fs::remove_file(Path::new(&copy).join(file)).unwrap();
        let result = fails(2, &["verify-export", &copy, "--trusted-key", &public]);
        assert!(
            result.stderr.contains(&format!("the bundle has no {file}")),
            "{result:?}"
        );
    }

    // Garbage instead of a tar, short and long.
    for (name, bytes) in [
        ("short.tar", b"not a tar archive\n".to_vec()),
        ("long.tar", vec![b'x'; 4096]),
    ] {
        let path = scratch.path(name);
        std::fs::write(&path, bytes).unwrap();
        let result = fails(2, &["verify-export", &path, "--trusted-key", &public]);
        assert!(result.stderr.contains(name), "{result:?}");
    }
    // A tar cut in the middle of a member.
    scratch.bundle("db", "full.tar", &[]);
    let full = std::fs::read(scratch.path("full.tar")).unwrap();
    let cut = scratch.path("cut.tar");
    std::fs::write(&cut, &full[..full.len() / 2]).unwrap();
    fails(2, &["verify-export", &cut, "--trusted-key", &public]);
    // No such bundle, no such key, a key file with no key.
    fails(
        2,
        &[
            "verify-export",
            &scratch.path("absent"),
            "--trusted-key",
            &public,
        ],
    );
    fails(
        2,
        &[
            "verify-export",
            &scratch.path("good"),
            "--trusted-key",
            &scratch.path("absent.pub"),
        ],
    );
    let empty = scratch.path("empty.pub");
    std::fs::write(&empty, "# nothing here\n\n").unwrap();
    let result = fails(
        2,
        &[
            "verify-export",
            &scratch.path("good"),
            "--trusted-key",
            &empty,
        ],
    );
    assert!(result.stderr.contains("no trusted key"), "{result:?}");
    // The private key where a verifier key belongs.
    fails(
        2,
        &[
            "verify-export",
            &scratch.path("good"),
            "--trusted-key",
            &key,
        ],
    );
    // A manifest that is not JSON is a rejected bundle (exit 1, malformed), not a crash.
    let copy = scratch.path("bad-manifest");
    copy_dir(Path::new(&scratch.path("good")), Path::new(&copy));
    std::fs::write(Path::new(&copy).join("manifest.json"), "{").unwrap();
    rejected(&copy, &[&public], None, "malformed", None);
}

/// A tar header (512 bytes) named `name` whose size field holds `size_field` verbatim, with
/// a correct checksum, so the archive reader gets as far as parsing the size.
fn tar_header(name: &str, size_field: &[u8; 12]) -> Vec<u8> {
    let mut header = vec![0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[100..108].copy_from_slice(b"0000644\0");
    header[124..136].copy_from_slice(size_field);
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    header
}

#[test]
fn terminal_escapes_in_a_hostile_bundle_never_reach_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("hostile.tar");
    // The size field clears the screen and writes a fake verdict if printed raw.
    let mut tar = tar_header("manifest.json", b"\x1b[2J\rok: vv\n");
    tar.extend_from_slice(&[0u8; 1024]);
    std::fs::write(&bundle, &tar).unwrap();
    let key = dir.path().join("k");
    let keygen = process::run(
        &[
            "keygen",
            "--name",
            "t.example",
            "--out",
            key.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(keygen.code, 0, "{keygen:?}");
    let result = process::run(
        &[
            "verify-export",
            bundle.to_str().unwrap(),
            "--trusted-key",
            key.with_extension("pub").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(result.code, 2, "{result:?}");
    assert!(
        !result.stderr.contains('\x1b') && !result.stderr.contains('\r'),
        "a raw escape reached stderr: {:?}",
        result.stderr
    );
    assert_eq!(result.stderr.lines().count(), 1, "{:?}", result.stderr);
    assert!(!result.stdout.contains("ok"), "{:?}", result.stdout);
}
