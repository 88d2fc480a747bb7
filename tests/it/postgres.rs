//! The ledger kept in a real PostgreSQL server (started by the test harness, see
//! `support/postgres.rs`), through the binary: every command works on a `postgres://`
//! `--db` exactly as on a directory; `migrate` moves a ledger there and back without
//! changing a hash, the root or a checkpoint; a row edited or deleted in the database is
//! named by `verify`; the password comes from `PGPASSWORD`, a password file or
//! `.pgpass`, never the command line; one writer at a time; a database with no ledger is
//! refused and left as it was; followers are woken by the writer's notifications, not
//! only by their poll; TLS as `sslmode` and `sslrootcert` ask, `prefer` and `allow`
//! trying the other way as libpq does, and client certificates from `sslcert` and
//! `sslkey`; snapshots written in chunks on a session of their own while appends go on,
//! read back streamed, a chunk edited or deleted named by `verify`, and a database
//! written before the chunk table (its snapshots records) still read.

use crate::support;
use crate::support::postgres;
use crate::support::process;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::postgres::{Postgres, ServerTls};
use crate::support::process::{Run, BIN};
use crate::support::wait::eventually;
use serde_json::Value;

fn fixture_events() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| support::event_lines(&std::fs::read_to_string(p).unwrap()))
        .collect()
}

/// Runs the binary with the test role's password in `PGPASSWORD` (unless `password` is
/// `None`), and no `CLAIM_LEDGER_*` configuration from the caller's environment.
fn run_with(args: &[&str], stdin: Option<&str>, password: Option<&str>) -> Run {
    run_with_env(args, stdin, password, &[])
}

/// [`run_with`] with these environment variables set too.
fn run_with_env(
    args: &[&str],
    stdin: Option<&str>,
    password: Option<&str>,
    env: &[(&str, &str)],
) -> Run {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("PGPASSWORD")
        .env_remove("PGPASSFILE")
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT")
        .env_remove("PGSSLCERT")
        .env_remove("PGSSLKEY")
        .env("HOME", "/nonexistent")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars() {
        if key.starts_with("CLAIM_LEDGER_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    let mut child = command.spawn().unwrap();
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn run(args: &[&str], stdin: Option<&str>) -> Run {
    run_with(args, stdin, Some(postgres::PASSWORD))
}

pub(crate) fn ok(args: &[&str], stdin: Option<&str>) -> Run {
    let result = run(args, stdin);
    assert_eq!(result.code, 0, "claim-ledger {args:?}: {result:?}");
    result
}

#[test]
fn every_command_answers_from_postgres_as_from_a_directory() {
    let pg = Postgres::start();
    pg.create_database("same");
    let url = pg.url("same");
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("ledger");
    let disk = disk.to_str().unwrap();
    let events = fixture_events();
    let on_disk = ok(&["ingest", "--db", disk, "-"], Some(&events)).json();
    let in_db = ok(&["ingest", "--db", &url, "-"], Some(&events)).json();
    assert_eq!(on_disk, in_db);
    // Idempotent re-ingest: nothing new.
    let again = ok(&["ingest", "--db", &url, "-"], Some(&events)).json();
    assert_eq!(again["appended"], 0, "{again}");

    // Both logs record the same changes and transitions; only the observation times,
    // and so the hashes, differ (each ingest stamps its own clock).
    let verify = |db: &str| ok(&["verify", "--db", db], None).json();
    let (a, b) = (verify(disk), verify(&url));
    assert_eq!(semantic(&a), semantic(&b));
    assert!(b["verified_seq"].as_u64().unwrap() > 100);
    assert_eq!(
        ok(&["verify", "--db", &url, "--chain-only"], None).json()["verified_hash"],
        b["verified_hash"]
    );
    for args in [
        vec!["state"],
        vec!["state", "--as-of-seq", "40"],
        vec!["export"],
        vec!["export", "--from-seq", "10", "--to-seq", "30"],
    ] {
        let on = |db: &str| {
            let mut full = args.clone();
            full.extend(["--db", db]);
            let out = ok(&full, None).stdout;
            // One JSON document (state) or JSON lines (export).
            match serde_json::from_str::<Value>(&out) {
                Ok(document) => vec![semantic(&document)],
                Err(_) => out
                    .lines()
                    .map(|line| semantic(&serde_json::from_str(line).unwrap()))
                    .collect(),
            }
        };
        assert_eq!(on(disk), on(&url), "{args:?}");
    }
    // History by uid of the first pod the export names.
    let first_pod = ok(&["export", "--db", &url], None)
        .lines()
        .into_iter()
        .find_map(|line| {
            let object = &line["entry"]["change"]["object"];
            (object["kind"] == "Pod").then(|| object["uid"].as_str().unwrap().to_string())
        })
        .expect("a pod in the fixtures");
    let history = |db: &str| {
        ok(&["history", "--db", db, "--pod-uid", &first_pod], None)
            .lines()
            .iter()
            .map(semantic)
            .collect::<Vec<_>>()
    };
    assert_eq!(history(disk), history(&url));
    assert!(!history(&url).is_empty());
}

/// `value` without what depends on when it was recorded: times, and the hashes and bytes
/// that cover them.
fn semantic(value: &Value) -> Value {
    const TIMED: [&str; 7] = [
        "at",
        "since",
        "observed_at",
        "hash",
        "prev_hash",
        "bytes",
        "verified_hash",
    ];
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| !TIMED.contains(&key.as_str()))
                .map(|(key, value)| (key.clone(), semantic(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(semantic).collect()),
        other => other.clone(),
    }
}

#[test]
fn migrate_moves_a_ledger_to_postgres_and_back_without_changing_a_byte() {
    let pg = Postgres::start();
    pg.create_database("moved");
    let url = pg.url("moved");
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let source = source.to_str().unwrap();
    ok(
        &["ingest", "--db", source, "--snapshot-every", "30", "-"],
        Some(&fixture_events()),
    );
    // A signed checkpoint in the source (as `serve --signing-key` would keep).
    let key = dir.path().join("key");
    ok(
        &[
            "keygen",
            "--name",
            "moved.example",
            "--out",
            key.to_str().unwrap(),
        ],
        None,
    );
    let signing_key = key.with_extension("key");
    let bundle = dir.path().join("signed.tar");
    ok(
        &[
            "export",
            "--db",
            source,
            "--bundle",
            bundle.to_str().unwrap(),
            "--signing-key",
            signing_key.to_str().unwrap(),
        ],
        None,
    );
    let there = ok(&["migrate", "--from", source, "--to", &url], None).json();
    assert_eq!(there["checkpoints"], 1, "{there}");
    let back_dir = dir.path().join("back");
    let back = back_dir.to_str().unwrap();
    let home = ok(&["migrate", "--from", &url, "--to", back], None).json();
    for field in ["entries", "head_hash", "tree_root", "checkpoints"] {
        assert_eq!(there[field], home[field], "{field}");
    }
    let export = |db: &str| ok(&["export", "--db", db], None).stdout;
    let original = export(source);
    assert_eq!(original, export(&url));
    assert_eq!(original, export(back));
    let report = |db: &str| ok(&["verify", "--db", db], None).json();
    assert_eq!(report(source), report(&url));
    assert_eq!(report(source), report(back));
    // A bundle exported from the database verifies against the source's key.
    let from_db = dir.path().join("from-db.tar");
    ok(
        &[
            "export",
            "--db",
            &url,
            "--bundle",
            from_db.to_str().unwrap(),
        ],
        None,
    );
    let verified = ok(
        &[
            "verify-export",
            from_db.to_str().unwrap(),
            "--trusted-key",
            key.with_extension("pub").to_str().unwrap(),
        ],
        None,
    );
    assert!(verified.stdout.starts_with("ok"), "{}", verified.stdout);
    // Never into a ledger that holds entries.
    let refused = run(&["migrate", "--from", source, "--to", &url], None);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.contains("already holds a ledger"),
        "{}",
        refused.stderr
    );
}

#[test]
fn snapshots_in_postgres_are_kept_as_retention_says_and_the_log_verifies() {
    use ledger::{Ledger, LedgerConfig};
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let mut counts = Vec::new();
    for keep in [1, 0] {
        let database = format!("kept{keep}");
        pg.create_database(&database);
        let url = pg.url(&database);
        // Snapshots written at the flush that makes them due (the snapshot thread would
        // skip those due while one is still written: how many, the machine decides).
        let config = LedgerConfig {
            snapshot_every: 20,
            snapshots_kept: keep,
            background_snapshots: false,
            ..replica_config(dir.path())
        };
        let mut ledger = Ledger::open(Path::new(&url), config).unwrap();
        for batch in 0..25 {
            ledger
                .append((batch * 8 + 1..=batch * 8 + 8).map(pod), chrono::Utc::now())
                .unwrap();
            ledger.flush().unwrap();
        }
        drop(ledger);
        let report = ok(&["verify", "--db", &url], None).json();
        assert!(report["failure"].is_null(), "{report}");
        ok(&["state", "--db", &url, "--as-of-seq", "3"], None);
        // Snapshots are rows of the chunk table, none a record any more.
        let as_records = pg.psql(
            &database,
            "SELECT count(*) FROM claim_ledger_records WHERE get_byte(key, 0) = 83",
        );
        assert_eq!(as_records.trim(), "0");
        let count = |sql: &str| pg.psql(&database, sql).trim().parse::<usize>().unwrap();
        let committed =
            count("SELECT count(*) FROM claim_ledger_records WHERE get_byte(key, 0) = 80");
        let stored = count("SELECT count(DISTINCT seq) FROM claim_ledger_snapshot_chunks");
        counts.push((committed, stored));
    }
    // Eight snapshots committed to in each. Retention runs as a snapshot is written,
    // before an entry commits to it: one kept, then the newest, two in all; or all eight.
    assert_eq!(counts, [(8, 2), (8, 8)]);
}

/// The store of database `url` on the test server, as a writer (creating its tables) or
/// a reader, its password in a file under `dir`.
fn raw_store(url: &str, dir: &Path, writer: bool) -> ledger::store::PostgresStore {
    let password = dir.join("pw");
    std::fs::write(&password, postgres::PASSWORD).unwrap();
    ledger::store::PostgresStore::open(
        url,
        &ledger::store::postgres::PostgresOptions {
            create: writer,
            writer,
            password_file: Some(password),
            ..Default::default()
        },
    )
    .unwrap()
    .expect("a ledger table")
}

/// `(chunk, length)` of each stored chunk of the snapshot at `seq`.
fn chunk_rows(pg: &Postgres, database: &str, seq: u64) -> Vec<(u32, usize)> {
    pg.psql(
        database,
        &format!(
            "SELECT chunk, length(bytes) FROM claim_ledger_snapshot_chunks WHERE seq = {seq} ORDER BY chunk"
        ),
    )
    .lines()
    .map(|line| {
        let (chunk, length) = line.split_once('|').unwrap();
        (chunk.parse().unwrap(), length.parse().unwrap())
    })
    .collect()
}

#[test]
fn snapshots_are_written_in_chunks_on_a_session_of_their_own_while_appends_go_on() {
    use ledger::store::postgres::{SNAPSHOT_CHUNK, SNAPSHOT_SESSION_NAME};
    use ledger::store::{keys, Batch, Store};
    use std::io::Read;
    let pg = Postgres::start();
    pg.create_database("chunks");
    let url = pg.url("chunks");
    let dir = tempfile::tempdir().unwrap();
    let store = raw_store(&url, dir.path(), true);
    assert!(store.is_writer());
    let bytes: Vec<u8> = (0..SNAPSHOT_CHUNK * 5 / 2)
        .map(|i| (i * 7 % 251) as u8)
        .collect();

    // Another session holds the chunk table for two seconds: the snapshot's write waits
    // for it on its own session, while appends (commits on the store's session) go on.
    let mut holder = pg.psql_in_background(
        "chunks",
        "BEGIN; LOCK TABLE claim_ledger_snapshot_chunks IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(2); COMMIT;",
    );
    eventually("the chunk table locked", || {
        pg.psql(
            "chunks",
            "SELECT count(*) FROM pg_locks WHERE relation = 'claim_ledger_snapshot_chunks'::regclass AND mode = 'AccessExclusiveLock' AND granted",
        )
        .trim()
            == "1"
    });
    std::thread::scope(|scope| {
        let writing = scope.spawn(|| store.put_snapshot(100, &bytes));
        eventually("the snapshot's session waiting for the table", || {
            pg.psql(
                "chunks",
                &format!(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{SNAPSHOT_SESSION_NAME}' AND wait_event_type = 'Lock'"
                ),
            )
            .trim()
                == "1"
        });
        for n in 1..=20u64 {
            let started = std::time::Instant::now();
            let mut batch = Batch::default();
            batch.insert(keys::seq_key(keys::ENTRY, n), format!("entry {n}"));
            store.commit(batch).unwrap();
            assert!(
                started.elapsed() < std::time::Duration::from_secs(1),
                "an append waited for the snapshot"
            );
        }
        assert!(!writing.is_finished(), "the lock was not held long enough");
        writing.join().unwrap().unwrap();
    });
    assert!(holder.wait().unwrap().success());

    // Two whole chunks and a half one, and no copy among the records.
    assert_eq!(
        chunk_rows(&pg, "chunks", 100),
        [
            (0, SNAPSHOT_CHUNK),
            (1, SNAPSHOT_CHUNK),
            (2, SNAPSHOT_CHUNK / 2)
        ]
    );
    let key = keys::seq_key(keys::SNAPSHOT, 100);
    assert_eq!(
        pg.psql(
            "chunks",
            "SELECT count(*) FROM claim_ledger_records WHERE get_byte(key, 0) = 83"
        )
        .trim(),
        "0"
    );
    // Read back by the writer and by a reader, streamed and whole, listed and scanned as
    // the other backends' snapshots are.
    let reader = raw_store(&url, dir.path(), false);
    for store in [&store, &reader] {
        let mut streamed = Vec::new();
        store
            .snapshot_reader(100)
            .unwrap()
            .expect("stored")
            .read_to_end(&mut streamed)
            .unwrap();
        assert!(streamed == bytes, "the streamed snapshot differs");
        assert!(store.get(&key).unwrap().unwrap() == bytes);
        assert_eq!(store.snapshot_seqs().unwrap(), [100]);
        let scanned: Vec<Vec<u8>> = store
            .scan(&[0], &[0xff; 9], false)
            .map(|record| record.unwrap().0)
            .collect();
        assert_eq!(scanned.len(), 21);
        assert_eq!(scanned.last().unwrap(), &key.to_vec());
        assert!(store.snapshot_reader(99).unwrap().is_none());
        assert_eq!(store.get(&keys::seq_key(keys::SNAPSHOT, 99)).unwrap(), None);
    }
    assert!(matches!(
        reader.put_snapshot(101, b"not the writer"),
        Err(ledger::store::StoreError::NotWriter(_))
    ));

    // A reader part way through reads the version it started on to the end, though
    // retention removes the snapshot meanwhile.
    let mut stream = reader.snapshot_reader(100).unwrap().unwrap();
    let mut first = vec![0; 1000];
    stream.read_exact(&mut first).unwrap();
    store.remove_snapshot(100).unwrap();
    assert_eq!(
        pg.psql(
            "chunks",
            "SELECT count(*) FROM claim_ledger_snapshot_chunks"
        )
        .trim(),
        "0"
    );
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    drop(stream);
    assert!([first, rest].concat() == bytes);
    assert!(reader.snapshot_reader(100).unwrap().is_none());
    assert!(reader.snapshot_seqs().unwrap().is_empty());

    // A snapshot written as a record (a migration's batch) goes to the chunk table too; a
    // snapshot kept as a record by a database of before is read, listed and removed.
    let mut batch = Batch::default();
    batch.insert(keys::seq_key(keys::SNAPSHOT, 200), b"migrated".to_vec());
    store.commit(batch).unwrap();
    assert_eq!(chunk_rows(&pg, "chunks", 200), [(0, 8)]);
    pg.psql(
        "chunks",
        "INSERT INTO claim_ledger_records VALUES ('\\x53000000000000012c', 'kept as a record')",
    );
    assert_eq!(reader.snapshot_seqs().unwrap(), [200, 300]);
    let old = keys::seq_key(keys::SNAPSHOT, 300);
    assert_eq!(reader.get(&old).unwrap().unwrap(), b"kept as a record");
    let mut streamed = Vec::new();
    reader
        .snapshot_reader(300)
        .unwrap()
        .unwrap()
        .read_to_end(&mut streamed)
        .unwrap();
    assert_eq!(streamed, b"kept as a record");
    let snapshots: Vec<(Vec<u8>, Vec<u8>)> = reader
        .scan(&keys::seq_key(keys::SNAPSHOT, 0), &[0xff; 9], true)
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        snapshots,
        [
            (old.to_vec(), b"kept as a record".to_vec()),
            (
                keys::seq_key(keys::SNAPSHOT, 200).to_vec(),
                b"migrated".to_vec()
            )
        ]
    );
    store.remove_snapshot(300).unwrap();
    let mut batch = Batch::default();
    batch.remove(keys::seq_key(keys::SNAPSHOT, 200));
    store.commit(batch).unwrap();
    assert!(reader.snapshot_seqs().unwrap().is_empty());
}

#[test]
fn a_streamed_snapshot_is_stored_in_chunks_as_it_is_encoded_or_not_at_all() {
    use ledger::store::postgres::SNAPSHOT_CHUNK;
    use ledger::store::Store;
    use std::io::Read;
    let pg = Postgres::start();
    pg.create_database("streamed");
    let dir = tempfile::tempdir().unwrap();
    let store = raw_store(&pg.url("streamed"), dir.path(), true);
    let bytes: Vec<u8> = (0..SNAPSHOT_CHUNK * 9 / 4)
        .map(|i| (i * 13 % 251) as u8)
        .collect();
    // Written in small pieces, as the encoder writes: cut into whole chunks regardless.
    store
        .put_snapshot_streamed(7, &mut |out| {
            bytes
                .chunks(100_003)
                .try_for_each(|piece| out.write_all(piece))
        })
        .unwrap();
    assert_eq!(
        chunk_rows(&pg, "streamed", 7),
        [
            (0, SNAPSHOT_CHUNK),
            (1, SNAPSHOT_CHUNK),
            (2, SNAPSHOT_CHUNK / 4)
        ]
    );
    let mut read = Vec::new();
    store
        .snapshot_reader(7)
        .unwrap()
        .expect("stored")
        .read_to_end(&mut read)
        .unwrap();
    assert!(read == bytes, "the stored snapshot differs");

    // An encoder that fails after two chunks went out leaves nothing of its own: the
    // snapshot stored before at that seq stays whole.
    let failed = store.put_snapshot_streamed(7, &mut |out| {
        out.write_all(&vec![1u8; SNAPSHOT_CHUNK * 2 + 10])?;
        Err(std::io::Error::other("the encoder stopped"))
    });
    let message = failed.unwrap_err().to_string();
    assert!(
        message.contains("encoding the snapshot at seq 7"),
        "{message}"
    );
    assert_eq!(chunk_rows(&pg, "streamed", 7).len(), 3);
    let mut again = Vec::new();
    store
        .snapshot_reader(7)
        .unwrap()
        .unwrap()
        .read_to_end(&mut again)
        .unwrap();
    assert!(again == bytes);

    // An empty snapshot is one empty chunk, as when written whole.
    store.put_snapshot_streamed(8, &mut |_| Ok(())).unwrap();
    assert_eq!(chunk_rows(&pg, "streamed", 8), [(0, 0)]);
    assert_eq!(store.snapshot_seqs().unwrap(), [7, 8]);
}

#[test]
fn a_row_edited_or_deleted_in_the_database_is_named_by_verify() {
    let pg = Postgres::start();
    pg.create_database("edited");
    let url = pg.url("edited");
    ok(&["ingest", "--db", &url, "-"], Some(&fixture_events()));
    let entry_key = |seq: u64| format!("'\\x45{seq:016x}'::bytea");
    // One byte of entry 17's stored bytes (after its 32-byte hash) changed.
    pg.psql(
        "edited",
        &format!(
            "UPDATE claim_ledger_records SET value = set_byte(value, 60, get_byte(value, 60) # 1) WHERE key = {}",
            entry_key(17)
        ),
    );
    let result = run(&["verify", "--db", &url, "--allow-corrupt"], None);
    assert_eq!(result.code, 1, "{result:?}");
    let report = result.json();
    assert_eq!(report["failure"]["seq"], 17, "{report}");
    let kind = report["failure"]["kind"].as_str().unwrap();
    assert!(["hash_mismatch", "undecodable"].contains(&kind), "{report}");
    // Opening strictly refuses it, naming the seq.
    let strict = run(&["state", "--db", &url], None);
    assert_eq!(strict.code, 1, "{strict:?}");
    assert!(strict.stderr.contains("seq 17"), "{}", strict.stderr);

    pg.psql(
        "edited",
        &format!(
            "DELETE FROM claim_ledger_records WHERE key = {}",
            entry_key(9)
        ),
    );
    let report = run(&["verify", "--db", &url, "--allow-corrupt"], None).json();
    assert_eq!(
        (&report["failure"]["seq"], &report["failure"]["kind"]),
        (&Value::from(9), &Value::from("seq_gap")),
        "{report}"
    );
}

/// The seq of the snapshot [`ledger_with_a_chunked_snapshot`] writes.
const CHUNKED_AT: u64 = 12_000;

/// A ledger in database `database` whose snapshot at [`CHUNKED_AT`] is 3 chunks long and
/// committed to by the entry after it, the last; `dir` holds its password file.
fn ledger_with_a_chunked_snapshot(pg: &Postgres, database: &str, dir: &Path) {
    use ledger::{Ledger, LedgerConfig};
    pg.create_database(database);
    let url = pg.url(database);
    let config = LedgerConfig {
        snapshot_every: CHUNKED_AT,
        // Written at the flush that makes it due, so the next append commits to it.
        background_snapshots: false,
        ..replica_config(dir)
    };
    let mut ledger = Ledger::open(Path::new(&url), config).unwrap();
    let at = chrono::Utc::now();
    for batch in 0..CHUNKED_AT / 1000 {
        ledger
            .append((batch * 1000 + 1..=(batch + 1) * 1000).map(big_pod), at)
            .unwrap();
        ledger.flush().unwrap();
    }
    ledger.append([big_pod(CHUNKED_AT + 1)], at).unwrap();
    ledger.flush().unwrap();
}

/// A pod with long, unique names and identity, so that a snapshot of some thousands is
/// several chunks long (a snapshot writes each shared string once: only unique text counts).
fn big_pod(n: u64) -> schemas::ObjectChange {
    // As long as Kubernetes allows: names 253 bytes, a namespace 63, uids (here) 100.
    let (name, namespace, uid) = ("x".repeat(230), "y".repeat(60), "z".repeat(90));
    let object = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("p{n}-{name}"), "namespace": format!("n-{namespace}"),
                     "uid": format!("p{n}-{uid}"), "resourceVersion": n.to_string(),
                     "annotations": {"openshell.io/sandbox-id": format!("sbx{n}-{name}")},
                     "ownerReferences": [{"apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
                                          "name": format!("s{n}-{name}"), "uid": format!("s{n}-{uid}"), "controller": true}]}});
    schemas::normalize(schemas::WatchEventType::Added, &object)
        .unwrap()
        .unwrap()
}

#[test]
fn a_snapshot_chunk_edited_or_deleted_in_the_database_is_named_by_verify() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    ledger_with_a_chunked_snapshot(&pg, "chunked", dir.path());
    let (url, seq) = (pg.url("chunked"), CHUNKED_AT);
    let rows = chunk_rows(&pg, "chunked", seq);
    assert!(rows.len() >= 3, "{rows:?}");
    let report = ok(&["verify", "--db", &url], None).json();
    assert!(report["failure"].is_null(), "{report}");
    let named = |report: &Value| {
        assert_eq!(report["failure"]["kind"], "snapshot_mismatch", "{report}");
        let detail = report["failure"]["detail"].as_str().unwrap();
        assert!(detail.contains(&format!("seq {seq}")), "{report}");
    };
    // One byte of the middle chunk changed: verify names the snapshot, and a strict open
    // refuses the ledger rather than start from it.
    let flip = format!(
        "UPDATE claim_ledger_snapshot_chunks SET bytes = set_byte(bytes, 1000, get_byte(bytes, 1000) # 1) WHERE seq = {seq} AND chunk = 1"
    );
    pg.psql("chunked", &flip);
    let result = run(&["verify", "--db", &url, "--allow-corrupt"], None);
    assert_eq!(result.code, 1, "{result:?}");
    named(&result.json());
    let strict = run(&["state", "--db", &url], None);
    assert_eq!(strict.code, 1, "{strict:?}");
    assert!(
        strict.stderr.contains("snapshot_mismatch")
            && strict.stderr.contains(&format!("seq {seq}")),
        "{}",
        strict.stderr
    );
    // Flipped back, it verifies again; then the middle chunk deleted.
    pg.psql("chunked", &flip);
    ok(&["verify", "--db", &url], None);
    pg.psql(
        "chunked",
        &format!("DELETE FROM claim_ledger_snapshot_chunks WHERE seq = {seq} AND chunk = 1"),
    );
    let result = run(&["verify", "--db", &url, "--allow-corrupt"], None);
    assert_eq!(result.code, 1, "{result:?}");
    named(&result.json());
    let strict = run(&["state", "--db", &url], None);
    assert_eq!(strict.code, 1, "{strict:?}");
}

#[test]
fn a_database_with_its_snapshots_as_records_opens_reads_them_and_moves_on_to_chunks() {
    use ledger::{Ledger, LedgerConfig};
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    ledger_with_a_chunked_snapshot(&pg, "before", dir.path());
    let url = pg.url("before");
    // The layout of the versions before the chunk table: each snapshot one record of
    // claim_ledger_records under its `S` key, and no other table.
    pg.psql(
        "before",
        "INSERT INTO claim_ledger_records (key, value) \
         SELECT '\\x53'::bytea || int8send(seq), string_agg(bytes, ''::bytea ORDER BY chunk) \
         FROM claim_ledger_snapshot_chunks GROUP BY seq; \
         DROP TABLE claim_ledger_snapshot_chunks",
    );
    let chunk_table = || {
        pg.psql(
            "before",
            "SELECT to_regclass('claim_ledger_snapshot_chunks') IS NOT NULL",
        )
        .trim()
            == "t"
    };
    let as_records = || {
        pg.psql(
            "before",
            "SELECT string_agg(get_byte(key, 7)::text || ',' || get_byte(key, 8)::text, ' ') FROM claim_ledger_records WHERE get_byte(key, 0) = 83",
        )
        .trim()
        .to_string()
    };
    // The last two bytes of the one `S` key: the seq's.
    assert_eq!(
        as_records(),
        format!("{},{}", CHUNKED_AT / 256 % 256, CHUNKED_AT % 256)
    );
    // Readers open it as it is, read its snapshot (a full verify checks the newest
    // committed one against the chain and the replay), and create nothing.
    let report = ok(&["verify", "--db", &url], None).json();
    assert!(report["failure"].is_null(), "{report}");
    let as_of = (CHUNKED_AT + 1).to_string();
    ok(&["state", "--db", &url, "--as-of-seq", &as_of], None);
    assert!(!chunk_table());
    // It is that record that is read: changed, it is named.
    let flip = format!("UPDATE claim_ledger_records SET value = set_byte(value, 5000, get_byte(value, 5000) # 1) WHERE key = '\\x53{CHUNKED_AT:016x}'");
    pg.psql("before", &flip);
    let result = run(&["verify", "--db", &url, "--allow-corrupt"], None);
    assert_eq!(result.code, 1, "{result:?}");
    assert_eq!(result.json()["failure"]["kind"], "snapshot_mismatch");
    pg.psql("before", &flip);

    // A writer of this version creates the chunk table and writes its snapshots there;
    // retention removes the old record as newer snapshots are committed.
    let config = LedgerConfig {
        snapshot_every: 1000,
        background_snapshots: false,
        ..replica_config(dir.path())
    };
    let mut writer = Ledger::open(Path::new(&url), config).unwrap();
    assert!(chunk_table());
    let at = chrono::Utc::now();
    let first = CHUNKED_AT / 1000;
    for batch in first..first + 4 {
        writer
            .append((batch * 1000 + 2..=(batch + 1) * 1000 + 1).map(big_pod), at)
            .unwrap();
        writer.flush().unwrap();
    }
    writer.append([big_pod(20_000)], at).unwrap();
    writer.flush().unwrap();
    drop(writer);
    assert_eq!(
        as_records(),
        "",
        "the snapshot kept as a record outlived retention"
    );
    let chunked = pg.psql(
        "before",
        "SELECT count(DISTINCT seq) FROM claim_ledger_snapshot_chunks",
    );
    assert!(chunked.trim().parse::<u32>().unwrap() >= 2, "{chunked}");
    let report = ok(&["verify", "--db", &url], None).json();
    assert!(report["failure"].is_null(), "{report}");
    assert_eq!(report["verified_seq"], CHUNKED_AT + 4002, "{report}");
}

#[test]
fn a_role_that_may_not_create_the_chunk_table_keeps_its_snapshots_as_records() {
    let pg = Postgres::start();
    pg.create_database("granted");
    // The records table made beforehand for a role that may only read and write it
    // (docs/OPERATIONS.md), in a schema where it may create nothing.
    pg.psql(
        "granted",
        &format!(
            "CREATE ROLE limited LOGIN PASSWORD '{}'; \
             REVOKE CREATE ON SCHEMA public FROM PUBLIC; \
             CREATE TABLE claim_ledger_records (key bytea PRIMARY KEY, value bytea NOT NULL); \
             GRANT SELECT, INSERT, UPDATE, DELETE ON claim_ledger_records TO limited",
            postgres::PASSWORD
        ),
    );
    let url = pg.url("granted").replace(postgres::USER, "limited");
    let args = [
        "ingest",
        "--db",
        &url,
        "--snapshot-every",
        "20",
        "--batch-size",
        "8",
        "-",
    ];
    ok(&args, Some(&fixture_events()));
    let tables = pg.psql(
        "granted",
        "SELECT to_regclass('claim_ledger_snapshot_chunks') IS NULL",
    );
    assert_eq!(tables.trim(), "t");
    let as_records = pg.psql(
        "granted",
        "SELECT count(*) FROM claim_ledger_records WHERE get_byte(key, 0) = 83",
    );
    assert!(
        as_records.trim().parse::<u32>().unwrap() >= 1,
        "{as_records}"
    );
    let report = ok(&["verify", "--db", &url], None).json();
    assert!(report["failure"].is_null(), "{report}");
}

#[test]
fn the_password_comes_from_the_environment_a_file_or_pgpass() {
    let pg = Postgres::start();
    pg.create_database("secret");
    let url = pg.url("secret");
    let dir = tempfile::tempdir().unwrap();
    // No password anywhere: the server refuses, a usage error naming the database
    // without any password.
    let refused = run_with(&["ingest", "--db", &url, "/dev/null"], None, None);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(refused.stderr.contains("127.0.0.1"), "{}", refused.stderr);
    // A password file.
    let file = dir.path().join("pw");
    std::fs::write(&file, format!("{}\n", postgres::PASSWORD)).unwrap();
    let result = run_with(
        &[
            "ingest",
            "--db",
            &url,
            "--db-password-file",
            file.to_str().unwrap(),
            "/dev/null",
        ],
        None,
        None,
    );
    assert_eq!(result.code, 0, "{result:?}");
    // .pgpass through PGPASSFILE.
    let pgpass = dir.path().join("pgpass");
    std::fs::write(
        &pgpass,
        format!(
            "127.0.0.1:{}:secret:{}:{}\n",
            pg.port,
            postgres::USER,
            postgres::PASSWORD
        ),
    )
    .unwrap();
    let output = Command::new(BIN)
        .args(["verify", "--db", &url])
        .env_remove("PGPASSWORD")
        .env("PGPASSFILE", &pgpass)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // A wrong password is refused and never printed.
    let wrong = run_with(&["verify", "--db", &url], None, Some("not-it"));
    assert_eq!(wrong.code, 2, "{wrong:?}");
    assert!(!wrong.stderr.contains("not-it"), "{}", wrong.stderr);
}

#[test]
fn one_writer_at_a_time_and_readers_alongside() {
    let pg = Postgres::start();
    pg.create_database("busy");
    let url = pg.url("busy");
    ok(&["ingest", "--db", &url, "-"], Some(&fixture_events()));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:9\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user: {}\ncurrent-context: c\n",
    )
    .unwrap();
    let mut command = Command::new(BIN);
    command
        .args([
            "serve",
            "--db",
            &url,
            "--listen",
            "127.0.0.1:0",
            "--insecure-no-auth",
        ])
        .env("PGPASSWORD", postgres::PASSWORD)
        .env("KUBECONFIG", &kubeconfig)
        .env("CLAIM_LEDGER_LOG_LEVEL", "off");
    let mut serve = process::Child::start(&mut command);
    serve.line_with("API listening");
    let second = run(&["ingest", "--db", &url, "/dev/null"], None);
    assert_eq!(second.code, 2, "a second writer was let in: {second:?}");
    assert!(second.stderr.contains("in use"), "{}", second.stderr);
    // Readers take no lock.
    ok(&["verify", "--db", &url], None);
    serve.interrupt_and_wait();
    ok(&["ingest", "--db", &url, "/dev/null"], None);
}

#[test]
fn many_records_are_read_together_in_the_order_asked_missing_ones_as_none() {
    use ledger::store::{Batch, Store};
    let pg = Postgres::start();
    pg.create_database("many");
    let dir = tempfile::tempdir().unwrap();
    let store = raw_store(&pg.url("many"), dir.path(), true);
    assert!(store.try_become_writer().unwrap());
    // More keys than one query reads, so the answer comes from several.
    let key = |n: u32| format!("k{n:05}").into_bytes();
    let mut batch = Batch::default();
    for n in (0..1500).step_by(2) {
        batch.insert(key(n), format!("value {n}").into_bytes());
    }
    store.commit(batch).unwrap();
    let asked: Vec<Vec<u8>> = [1499, 0, 3, 4, 4, 1498, 7000]
        .into_iter()
        .chain((0..1200).rev())
        .map(key)
        .collect();
    let together = store.get_many(&asked).unwrap();
    let one_by_one: Vec<Option<Vec<u8>>> = asked.iter().map(|k| store.get(k).unwrap()).collect();
    assert_eq!(together, one_by_one);
    assert_eq!(together[1].as_deref(), Some(&b"value 0"[..]));
    assert_eq!(together[0], None);
    assert_eq!(
        (together[3].clone(), together[4].clone()),
        (Some(b"value 4".to_vec()), Some(b"value 4".to_vec()))
    );
    assert_eq!(together.iter().flatten().count(), 4 + 600);
}

#[test]
fn a_database_without_a_ledger_is_refused_and_left_as_it_was() {
    let pg = Postgres::start();
    pg.create_database("empty");
    let url = pg.url("empty");
    for command in [
        vec!["verify", "--db", &url],
        vec!["state", "--db", &url],
        vec!["export", "--db", &url],
    ] {
        let result = run(&command, None);
        assert_eq!(result.code, 2, "{command:?}: {result:?}");
        assert!(
            result.stderr.contains("no ledger at")
                && result.stderr.contains("claim_ledger_records"),
            "{}",
            result.stderr
        );
    }
    let tables = pg.psql(
        "empty",
        "SELECT count(*) FROM pg_tables WHERE tablename = 'claim_ledger_records'",
    );
    assert_eq!(tables.trim(), "0", "a reading command created the table");
}

/// A pod owned by a Sandbox, as the watcher would record it.
fn pod(n: u64) -> schemas::ObjectChange {
    let object = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("p{n}"), "namespace": "ns", "uid": format!("pod-{n}"),
                     "resourceVersion": n.to_string(),
                     "ownerReferences": [{"apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
                                          "name": "s", "uid": "sb-1", "controller": true}]}});
    schemas::normalize(schemas::WatchEventType::Added, &object)
        .unwrap()
        .unwrap()
}

/// A library ledger's settings as one of several replicas of the test server's database,
/// its password in a file under `dir`.
fn replica_config(dir: &Path) -> ledger::LedgerConfig {
    let password = dir.join("pw");
    std::fs::write(&password, postgres::PASSWORD).unwrap();
    ledger::LedgerConfig {
        replica: true,
        password_file: Some(password),
        ..ledger::LedgerConfig::default()
    }
}

#[test]
fn replicas_follow_the_writer_and_a_deposed_writer_cannot_fork_the_log() {
    use ledger::{Ledger, LedgerConfig, LedgerError};
    let pg = Postgres::start();
    pg.create_database("replicas");
    let url = pg.url("replicas");
    let dir = tempfile::tempdir().unwrap();
    let config = LedgerConfig {
        lease: Some(std::time::Duration::from_secs(3)),
        ..replica_config(dir.path())
    };
    let at = chrono::Utc::now();
    let mut first = Ledger::open(Path::new(&url), config.clone()).unwrap();
    let mut second = Ledger::open(Path::new(&url), config.clone()).unwrap();
    assert!(first.is_writer() && !second.is_writer());
    first.append((1..=50).map(pod), at).unwrap();
    first.flush().unwrap();
    assert_eq!(second.follow().unwrap(), 50);
    assert_eq!(second.head(), first.head());
    assert_eq!(second.projection(), first.projection());
    assert_eq!(second.tree_root(), first.tree_root());
    assert!(matches!(
        second.append([pod(99)], at),
        Err(LedgerError::Follower)
    ));
    assert!(!second.try_promote().unwrap(), "the lock is held");

    // Someone writes the head behind the writer's back: its next commit is fenced off
    // and writes nothing.
    let head_before = pg.psql(
        "replicas",
        "SELECT encode(value, 'hex') FROM claim_ledger_records WHERE key = '\\x48'",
    );
    pg.psql(
        "replicas",
        "UPDATE claim_ledger_records SET value = set_byte(value, 39, get_byte(value, 39) # 1) WHERE key = '\\x48'",
    );
    let fenced = first.append((51..=55).map(pod), at);
    assert!(
        matches!(&fenced, Err(LedgerError::Deposed(_)))
            && fenced
                .as_ref()
                .is_err_and(|e| e.to_string().contains("deposed")),
        "{fenced:?}"
    );
    assert!(!first.is_writer());
    assert_eq!(
        pg.psql(
            "replicas",
            "SELECT count(*) FROM claim_ledger_records WHERE key = '\\x450000000000000033'"
        )
        .trim(),
        "0",
        "entry 51 was written by a fenced writer"
    );
    pg.psql(
        "replicas",
        &format!(
            "UPDATE claim_ledger_records SET value = decode('{}', 'hex') WHERE key = '\\x48'",
            head_before.trim()
        ),
    );

    // The writer's session ends (a crash or a partition): its lock goes with it, a
    // follower takes over and continues the same chain, and the old writer's next
    // append fails instead of forking the log.
    pg.psql(
        "replicas",
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted",
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !second.try_promote().unwrap() {
        assert!(std::time::Instant::now() < deadline, "no takeover");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(second.is_writer());
    second.append((60..=70).map(pod), at).unwrap();
    second.flush().unwrap();
    assert!(first.append((80..=81).map(pod), at).is_err());
    drop((first, second));

    let reader = Ledger::open(
        Path::new(&url),
        LedgerConfig {
            create: false,
            ..config
        },
    )
    .unwrap();
    let report = reader.verify().unwrap();
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(
        reader.head().seq,
        61,
        "50 from the first writer, 11 from its successor"
    );
}

pub(crate) fn call(address: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    process::http(
        address,
        method,
        path,
        None,
        body,
        std::time::Duration::from_secs(10),
    )
}

/// The cluster simulator (no controllers) writing its kubeconfig to `kubeconfig`: the
/// child and its address.
fn simulator(kubeconfig: &Path) -> (process::Child, String) {
    let mut sim = process::Child::start(&mut process::command(&[
        "sim",
        "--listen",
        "127.0.0.1:0",
        "--no-controllers",
        "--kubeconfig-out",
        kubeconfig.to_str().unwrap(),
    ]));
    let address = process::address_of(&sim.line_with("listening on"));
    (sim, address)
}

/// Creates, through the simulator's API, a Sandbox `name` with sandbox id `sandbox_id` and
/// its pod (a direct binding, no claim); returns the pod's uid.
fn direct_sandbox_and_pod(sim_address: &str, name: &str, sandbox_id: &str) -> String {
    let sandbox = format!(
        r#"{{"apiVersion":"agents.x-k8s.io/v1beta1","kind":"Sandbox","metadata":{{"name":"{name}","namespace":"default","labels":{{"openshell.ai/sandbox-id":"{sandbox_id}"}}}},"spec":{{"podTemplate":{{"spec":{{"containers":[{{"name":"c","image":"busybox"}}]}}}}}}}}"#
    );
    let created_uid = |path: &str, body: &str| {
        let (status, created) = call(sim_address, "POST", path, Some(body));
        assert_eq!(status, 201, "{created}");
        serde_json::from_str::<Value>(&created).unwrap()["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let sandbox_uid = created_uid(
        "/apis/agents.x-k8s.io/v1beta1/namespaces/default/sandboxes",
        &sandbox,
    );
    let pod = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"default","annotations":{{"openshell.io/sandbox-id":"{sandbox_id}"}},"ownerReferences":[{{"apiVersion":"agents.x-k8s.io/v1beta1","kind":"Sandbox","name":"{name}","uid":"{sandbox_uid}","controller":true}}]}},"spec":{{"containers":[{{"name":"c","image":"busybox"}}]}}}}"#
    );
    created_uid("/api/v1/namespaces/default/pods", &pod)
}

/// A `serve --replica` process on the shared database.
fn replica(url: &str, kubeconfig: &Path) -> (process::Child, String) {
    replica_with(url, kubeconfig, &[])
}

/// [`replica`] with more `serve` flags (`--signing-key`, `--unready-after`, ...).
pub(crate) fn replica_with(
    url: &str,
    kubeconfig: &Path,
    extra: &[&str],
) -> (process::Child, String) {
    replica_with_env(url, kubeconfig, extra, &[])
}

/// [`replica_with`] with more environment variables.
fn replica_with_env(
    url: &str,
    kubeconfig: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (process::Child, String) {
    let mut args = vec![
        "serve",
        "--db",
        url,
        "--listen",
        "127.0.0.1:0",
        "--insecure-no-auth",
        "--replica",
        "--lease-seconds",
        "2",
    ];
    args.extend_from_slice(extra);
    let mut command = process::command(&args);
    command
        .env("PGPASSWORD", postgres::PASSWORD)
        .env("KUBECONFIG", kubeconfig)
        .env("CLAIM_LEDGER_LOG_LEVEL", "warn,kube_client=off")
        .envs(env.iter().copied());
    let mut child = process::Child::start(&mut command);
    let address = process::address_of(&child.line_with("API listening"));
    (child, address)
}

#[test]
fn two_serve_replicas_answer_alike_and_the_follower_takes_over_when_the_writer_dies() {
    let pg = Postgres::start();
    pg.create_database("ha");
    let url = pg.url("ha");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let (sim, sim_address) = simulator(&kubeconfig);
    let (mut first, first_api) = replica(&url, &kubeconfig);
    eventually("the first replica, the writer, to be ready", || {
        let (status, body) = call(&first_api, "GET", "/readyz", None);
        status == 200 && body.contains(r#""role":"writer""#)
    });
    let (mut second, second_api) = replica(&url, &kubeconfig);
    eventually("the second replica, a follower, to be ready", || {
        let (status, body) = call(&second_api, "GET", "/readyz", None);
        status == 200 && body.contains(r#""role":"follower""#)
    });

    // A directly created Sandbox and its pod: both replicas allow it once recorded.
    let pod_uid = direct_sandbox_and_pod(&sim_address, "direct", "sbx-d");
    let request = format!(
        r#"{{"namespace":"default","pod_name":"direct","pod_uid":"{pod_uid}","require_claim":false}}"#
    );
    for api in [&first_api, &second_api] {
        eventually("the direct binding on every replica", || {
            call(api, "POST", "/v1/identity/check", Some(&request))
                .1
                .contains(r#""decision":"allow""#)
        });
    }
    // Both replicas number entries alike: the head they report is the same.
    let head =
        |api: &str| serde_json::from_str::<Value>(&call(api, "GET", "/v1/head", None).1).unwrap();
    eventually("the same head on both replicas", || {
        head(&first_api)["seq"] == head(&second_api)["seq"]
    });

    // Each replica says who the writer is: the writer itself (its host and process), and
    // the follower from the writer's published status, with how far behind it is; its
    // /metrics say the same.
    let report = |api: &str| {
        serde_json::from_str::<Value>(&call(api, "GET", "/readyz", None).1).unwrap()["watchers"]
            ["report"]
            .clone()
    };
    let writer = report(&first_api)["identity"].as_str().unwrap().to_string();
    assert!(
        writer.ends_with(&format!("/{}", first.child.id())),
        "{writer}"
    );
    eventually("the follower to name the writer and catch up", || {
        let follower = report(&second_api);
        follower["writer"] == writer.as_str() && follower["lag_entries"] == 0
    });
    let metrics = call(&second_api, "GET", "/metrics", None).1;
    assert!(
        metrics.contains(&format!(
            "claim_ledger_replica{{role=\"follower\",writer=\"{writer}\"}} 1"
        )),
        "{metrics}"
    );
    for gauge in [
        "claim_ledger_replica_lag_entries ",
        "claim_ledger_replica_caught_up_age_seconds ",
        "claim_ledger_replica_writer_status_age_seconds ",
    ] {
        assert!(metrics.contains(gauge), "{gauge} missing: {metrics}");
    }
    let metrics = call(&first_api, "GET", "/metrics", None).1;
    assert!(
        metrics.contains(&format!(
            "claim_ledger_replica{{role=\"writer\",writer=\"{writer}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(!metrics.contains("claim_ledger_replica_lag_entries"));

    // The writer dies. The follower takes over, relists the cluster (recording a
    // watch_gap, as a restart does) and goes on recording: the pod's deletion.
    let _ = first.child.kill();
    let _ = first.child.wait();
    eventually("the follower to become the writer", || {
        let (status, body) = call(&second_api, "GET", "/readyz", None);
        status == 200 && body.contains(r#""role":"writer""#)
    });
    let (status, _) = call(
        &sim_address,
        "DELETE",
        "/api/v1/namespaces/default/pods/direct",
        None,
    );
    assert!(status == 200 || status == 202, "{status}");
    eventually("the deletion recorded by the new writer", || {
        !call(&second_api, "POST", "/v1/identity/check", Some(&request))
            .1
            .contains(r#""decision":"allow""#)
    });
    second.interrupt_and_wait();
    drop(sim);

    // One log, no fork: it verifies, and holds the bind, the takeover's watch gap and
    // the release.
    let report = ok(&["verify", "--db", &url], None).json();
    assert_eq!(report["failure"], Value::Null, "{report}");
    let lines = ok(&["export", "--db", &url], None).lines();
    assert!(lines
        .iter()
        .any(|l| l["entry"]["change"]["watch_gap"]["reason"] == "restart"));
    let history = ok(&["history", "--db", &url, "--pod-uid", &pod_uid], None).stdout;
    assert!(history.contains(r#""transition":"bound""#), "{history}");
    assert!(history.contains(r#""transition":"released""#), "{history}");
}

#[test]
fn a_paused_writer_loses_its_lease_and_on_resuming_steps_down_without_writing() {
    let pg = Postgres::start();
    pg.create_database("paused");
    let url = pg.url("paused");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let (sim, _) = simulator(&kubeconfig);
    let (mut first, first_api) = replica(&url, &kubeconfig);
    eventually("the writer to be ready", || {
        call(&first_api, "GET", "/readyz", None).0 == 200
    });
    let (mut second, second_api) = replica(&url, &kubeconfig);
    eventually("the follower to be ready", || {
        call(&second_api, "GET", "/readyz", None)
            .1
            .contains(r#""role":"follower""#)
    });
    let signal = |name: &str, child: &process::Child| {
        let status = Command::new("kill")
            .args([name, &child.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    // Paused past its lease (2 s): its database session is ended, the follower takes over.
    signal("-STOP", &first);
    eventually("the follower to take over from the paused writer", || {
        call(&second_api, "GET", "/readyz", None)
            .1
            .contains(r#""role":"writer""#)
    });
    let before = ok(&["verify", "--db", &url], None).json();
    // Resumed, it finds its session gone and steps down: it exits with an error.
    signal("-CONT", &first);
    let status = first.wait();
    assert!(!status.success(), "the deposed writer kept running");
    second.interrupt_and_wait();
    let report = ok(&["verify", "--db", &url], None).json();
    assert_eq!(report["failure"], Value::Null, "{report}");
    // Whatever the new writer appended extends what was there: no fork.
    let seq = before["verified_seq"].as_u64().unwrap();
    assert!(report["verified_seq"].as_u64().unwrap() >= seq, "{report}");
    if seq > 0 {
        let seq = seq.to_string();
        let line = ok(
            &["export", "--db", &url, "--from-seq", &seq, "--to-seq", &seq],
            None,
        )
        .lines();
        assert_eq!(line[0]["hash"], before["verified_hash"]);
    }
    drop(sim);
}

#[test]
fn followers_stop_answering_when_the_writer_cannot_record_the_cluster() {
    let pg = Postgres::start();
    pg.create_database("blind");
    let url = pg.url("blind");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let (mut sim, _) = simulator(&kubeconfig);
    let fast = ["--unready-after", "1"];
    let (_first, first_api) = replica_with(&url, &kubeconfig, &fast);
    eventually("the writer to be ready", || {
        call(&first_api, "GET", "/readyz", None).0 == 200
    });
    let (_second, second_api) = replica_with(&url, &kubeconfig, &fast);
    eventually("the follower to be ready", || {
        let (status, body) = call(&second_api, "GET", "/readyz", None);
        status == 200 && body.contains(r#""role":"follower""#)
    });
    // The API server goes away: the writer's watches fail, it is no longer ready, and
    // the follower, whose log has stopped moving, says so instead of answering from it.
    let _ = sim.child.kill();
    let _ = sim.child.wait();
    eventually("the writer not ready", || {
        call(&first_api, "GET", "/readyz", None).0 == 503
    });
    eventually("the follower not ready, naming the writer", || {
        let (status, body) = call(&second_api, "GET", "/readyz", None);
        status == 503 && body.contains("the writer's watchers are not ready")
    });
    let request = r#"{"namespace":"default","pod_name":"p","pod_uid":"00000000-0000-4000-8000-000000000001","require_claim":false}"#;
    let (_, body) = call(&second_api, "POST", "/v1/identity/check", Some(request));
    assert!(body.contains("LEDGER_NOT_READY"), "{body}");
}

#[test]
fn replicas_ride_out_a_database_restart() {
    let pg = Postgres::start();
    pg.create_database("restart");
    let url = pg.url("restart");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let (_sim, _) = simulator(&kubeconfig);
    let fast = ["--unready-after", "1"];
    let (mut first, first_api) = replica_with(&url, &kubeconfig, &fast);
    eventually("the writer to be ready", || {
        call(&first_api, "GET", "/readyz", None).0 == 200
    });
    let (mut second, second_api) = replica_with(&url, &kubeconfig, &fast);
    eventually("the follower to be ready", || {
        let (status, body) = call(&second_api, "GET", "/readyz", None);
        status == 200 && body.contains(r#""role":"follower""#)
    });
    // Every session ends with the restart: the writer's lock with it. The writer is
    // deposed and stops; the follower reconnects, takes over and is ready again.
    pg.restart();
    let status = first.wait();
    assert!(!status.success(), "the writer outlived its session");
    eventually("the follower to recover as the writer", || {
        let (status, body) = call(&second_api, "GET", "/readyz", None);
        status == 200 && body.contains(r#""role":"writer""#)
    });
    second.interrupt_and_wait();
    let report = ok(&["verify", "--db", &url], None).json();
    assert_eq!(report["failure"], Value::Null, "{report}");
}

/// Waits for the follower thread's rounds until it has applied `seq`: every round must
/// have been woken by a notification (its waits last an hour, so a round that was not
/// would never come).
fn until_applied(rounds: &std::sync::mpsc::Receiver<(bool, u64)>, seq: u64) {
    loop {
        let (woke, head) = rounds
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("the follower did not reach seq {seq}: {e}"));
        assert!(woke, "a round not woken by a notification");
        if head >= seq {
            assert_eq!(head, seq);
            return;
        }
    }
}

#[test]
fn a_follower_is_woken_by_the_writers_commits_and_listens_again_when_its_connection_is_lost() {
    use ledger::{Ledger, SharedLedger};
    let pg = Postgres::start();
    pg.create_database("notify");
    let url = pg.url("notify");
    let dir = tempfile::tempdir().unwrap();
    let config = replica_config(dir.path());
    let at = chrono::Utc::now();
    let mut writer = Ledger::open(Path::new(&url), config.clone()).unwrap();
    let follower = SharedLedger::new(Ledger::open(Path::new(&url), config).unwrap());
    assert!(writer.is_writer() && !follower.view().is_writer());
    // The follower waits an hour between rounds, as if its fallback poll were that long:
    // only a notification can bring the next round within the test.
    let (report, rounds) = std::sync::mpsc::channel();
    let following = std::thread::spawn({
        let follower = follower.clone();
        move || loop {
            let woke = follower.wait_for_change(std::time::Duration::from_secs(3600));
            let head = follower
                .with_writer(|ledger| ledger.follow().map(|_| ledger.head().seq))
                .unwrap();
            if report.send((woke, head)).is_err() {
                return;
            }
        }
    });
    // The first wait opens the LISTEN; once it is in place, the follower reads once, for
    // whatever was committed before.
    until_applied(&rounds, 0);
    writer.append((1..=20).map(pod), at).unwrap();
    writer.flush().unwrap();
    until_applied(&rounds, 20);

    // The listening connection is lost (a proxy restart, a terminated backend): a commit
    // made meanwhile still arrives, once the follower listens again, and later ones
    // arrive as before.
    let listeners = || {
        pg.psql(
            "notify",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{}'",
                ledger::store::postgres::LISTENER_NAME
            ),
        )
        .trim()
        .to_string()
    };
    assert_eq!(listeners(), "1");
    pg.psql(
        "notify",
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{}'",
            ledger::store::postgres::LISTENER_NAME
        ),
    );
    writer.append((21..=25).map(pod), at).unwrap();
    writer.flush().unwrap();
    until_applied(&rounds, 25);
    eventually("the follower to listen again", || listeners() == "1");
    writer.append((26..=30).map(pod), at).unwrap();
    writer.flush().unwrap();
    until_applied(&rounds, 30);
    assert_eq!(follower.view().head(), writer.head());

    // One more commit wakes the follower thread, which finds nobody to report to.
    drop(rounds);
    writer.append([pod(31)], at).unwrap();
    writer.flush().unwrap();
    following.join().unwrap();
}

#[test]
fn a_serve_follower_keeps_up_on_notifications_alone() {
    let pg = Postgres::start();
    pg.create_database("notified");
    let url = pg.url("notified");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let (_sim, sim_address) = simulator(&kubeconfig);
    let (_writer, writer_api) = replica(&url, &kubeconfig);
    eventually("the writer to be ready", || {
        let (status, body) = call(&writer_api, "GET", "/readyz", None);
        status == 200 && body.contains(r#""role":"writer""#)
    });
    // A follower whose fallback poll is an hour: everything it applies, it applies
    // because the writer's commits (entries and status beats) notified it.
    let (_follower, follower_api) = replica_with_env(
        &url,
        &kubeconfig,
        &[],
        &[("CLAIM_LEDGER_FOLLOW_POLL_MS", "3600000")],
    );
    eventually("the follower to be ready", || {
        let (status, body) = call(&follower_api, "GET", "/readyz", None);
        status == 200 && body.contains(r#""role":"follower""#)
    });
    let pod_uid = direct_sandbox_and_pod(&sim_address, "n", "sbx-n");
    let request = format!(
        r#"{{"namespace":"default","pod_name":"n","pod_uid":"{pod_uid}","require_claim":false}}"#
    );
    eventually("the binding on the follower", || {
        call(&follower_api, "POST", "/v1/identity/check", Some(&request))
            .1
            .contains(r#""decision":"allow""#)
    });
    let head =
        |api: &str| serde_json::from_str::<Value>(&call(api, "GET", "/v1/head", None).1).unwrap();
    eventually("the same head on both replicas", || {
        head(&writer_api)["seq"] == head(&follower_api)["seq"]
    });
}

/// A CA named `name`: its certificate (PEM and parsed) and its key.
fn certificate_authority(name: &str) -> (String, rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let certificate = params.self_signed(&key).unwrap();
    (certificate.pem(), certificate, key)
}

#[test]
fn tls_to_postgres_is_as_sslmode_and_sslrootcert_ask() {
    let (ca_pem, ca, ca_key) = certificate_authority("claim-ledger test CA");
    let (other_ca_pem, _, _) = certificate_authority("another CA");
    // The server's certificate names `localhost` only, not 127.0.0.1.
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca, &ca_key)
        .unwrap();
    let pg = Postgres::start_with_tls(&server.pem(), &server_key.serialize_pem());
    pg.create_database("tls");
    let dir = tempfile::tempdir().unwrap();
    let (root, wrong_root) = (dir.path().join("ca.pem"), dir.path().join("other-ca.pem"));
    std::fs::write(&root, &ca_pem).unwrap();
    std::fs::write(&wrong_root, &other_ca_pem).unwrap();
    let (root, wrong_root) = (root.to_str().unwrap(), wrong_root.to_str().unwrap());
    let by_ip = pg.url("tls");
    let by_name = by_ip.replace("127.0.0.1", "localhost");
    let verify = |url: String| run(&["verify", "--db", &url], None);

    // verify-full with the CA that signed the server's certificate: the ledger is created
    // and read over TLS.
    let full = format!("{by_name}?sslmode=verify-full&sslrootcert={root}");
    ok(&["ingest", "--db", &full, "-"], Some(&fixture_events()));
    assert_eq!(verify(full.clone()).code, 0);
    // The server accepts TCP over TLS only (hostssl): a connection without is refused,
    // so every connection that succeeds here was encrypted.
    let plain = verify(format!("{by_ip}?sslmode=disable"));
    assert_ne!(plain.code, 0);
    assert!(plain.stderr.contains("no encryption"), "{plain:?}");
    // require: encrypted, the certificate unchecked; prefer (the default) takes TLS too,
    // and allow, refused without it, tries again with it.
    assert_eq!(verify(format!("{by_ip}?sslmode=require")).code, 0);
    assert_eq!(verify(by_ip.clone()).code, 0);
    assert_eq!(verify(format!("{by_ip}?sslmode=allow")).code, 0);
    // A password refused over TLS: prefer tries again without, which this server refuses
    // too; both refusals are said.
    let wrong = run_with(&["verify", "--db", &by_ip], None, Some("not-it"));
    assert_eq!(wrong.code, 2, "{wrong:?}");
    assert!(
        wrong
            .stderr
            .contains("over TLS: FATAL: password authentication failed")
            && wrong
                .stderr
                .contains("then without TLS: FATAL: no pg_hba.conf entry")
            && !wrong.stderr.contains("not-it"),
        "{wrong:?}"
    );
    // verify-ca checks the chain, not the name; verify-full checks both.
    assert_eq!(
        verify(format!("{by_ip}?sslmode=verify-ca&sslrootcert={root}")).code,
        0
    );
    let wrong_name = verify(format!("{by_ip}?sslmode=verify-full&sslrootcert={root}"));
    assert_ne!(wrong_name.code, 0);
    assert!(
        wrong_name.stderr.contains("TLS handshake failed")
            && wrong_name.stderr.contains("not valid for name"),
        "{wrong_name:?}"
    );
    // A root certificate that did not sign the server's: refused, saying so, and not as
    // a database that is merely down.
    for mode in ["verify-full", "verify-ca", "require"] {
        let refused = verify(format!("{by_name}?sslmode={mode}&sslrootcert={wrong_root}"));
        assert_ne!(refused.code, 0, "{mode}");
        assert!(
            refused.stderr.contains("TLS handshake failed")
                && refused.stderr.contains("not signed by a CA of sslrootcert")
                && !refused.stderr.contains("unavailable"),
            "{mode}: {refused:?}"
        );
    }
    // The same from the environment, as libpq reads it; the URL wins over it.
    let from_env = |mode: &str, root: &str, url: &str| {
        run_with_env(
            &["verify", "--db", url],
            None,
            Some(postgres::PASSWORD),
            &[("PGSSLMODE", mode), ("PGSSLROOTCERT", root)],
        )
    };
    assert_eq!(from_env("verify-full", root, &by_name).code, 0);
    assert_ne!(from_env("verify-full", wrong_root, &by_name).code, 0);
    assert_eq!(
        from_env(
            "verify-full",
            wrong_root,
            &format!("{by_name}?sslrootcert={root}")
        )
        .code,
        0
    );
    // verify-full without a root certificate says what is missing.
    let missing = verify(format!("{by_name}?sslmode=verify-full"));
    assert_ne!(missing.code, 0);
    assert!(missing.stderr.contains("sslrootcert"), "{missing:?}");
    let unknown = verify(format!("{by_name}?sslmode=sometimes"));
    assert!(
        unknown.code != 0 && unknown.stderr.contains("unknown sslmode"),
        "{unknown:?}"
    );
}

/// A server certificate for `localhost` signed by `ca`: the certificate and its key (PEM).
fn server_certificate(ca: &rcgen::Certificate, ca_key: &rcgen::KeyPair) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let certificate = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, ca, ca_key)
        .unwrap();
    (certificate.pem(), key.serialize_pem())
}

/// Whether a session opened with `url` (a database holding the ledger's table) is
/// encrypted, as the server sees it.
fn session_uses_tls(pg: &Postgres, database: &str, url: &str, dir: &Path) -> bool {
    let separator = if url.contains('?') { '&' } else { '?' };
    let store = raw_store(
        &format!("{url}{separator}application_name=tls-probe"),
        dir,
        false,
    );
    let ssl = pg.psql(
        database,
        "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'tls-probe'",
    );
    drop(store);
    match ssl.trim() {
        "t" => true,
        "f" => false,
        other => panic!("no probe session ({other:?})"),
    }
}

#[test]
fn prefer_and_allow_try_the_other_way_as_libpq_does() {
    let (_, ca, ca_key) = certificate_authority("claim-ledger test CA");
    let (certificate, key) = server_certificate(&ca, &ca_key);
    let tls = |hba, settings| {
        Some(ServerTls {
            certificate: &certificate,
            key: &key,
            client_ca: None,
            hba,
            settings,
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let with_mode = |url: &str, mode: &str| format!("{url}?sslmode={mode}");
    let table = "CREATE TABLE claim_ledger_records (key bytea PRIMARY KEY, value bytea NOT NULL)";

    // A server without TLS: prefer (the default) and allow go without it; require does
    // not connect, saying why.
    let plain = Postgres::start();
    plain.create_database("plain");
    let url = plain.url("plain");
    ok(&["ingest", "--db", &url, "/dev/null"], None);
    for mode in ["prefer", "allow", "disable"] {
        ok(&["verify", "--db", &with_mode(&url, mode)], None);
    }
    let refused = run(&["verify", "--db", &with_mode(&url, "require")], None);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.contains("server does not support TLS"),
        "{refused:?}"
    );

    // A server that takes sessions with TLS and without: prefer and require encrypt,
    // allow and disable do not.
    let both = Postgres::start_with(tls(&[("host", "scram-sha-256")], &[]));
    both.create_database("both");
    both.psql("both", table);
    let url = both.url("both");
    for (mode, encrypted) in [
        ("prefer", true),
        ("require", true),
        ("allow", false),
        ("disable", false),
    ] {
        let used = session_uses_tls(&both, "both", &with_mode(&url, mode), dir.path());
        assert_eq!(used, encrypted, "sslmode={mode}");
    }

    // A server whose TLS handshake fails (it speaks TLS 1.1 at most, which rustls does
    // not): prefer tries again without TLS; require fails, naming the handshake.
    let old = Postgres::start_with(tls(
        &[("host", "scram-sha-256")],
        &[
            "ssl_min_protocol_version=TLSv1",
            "ssl_max_protocol_version=TLSv1.1",
        ],
    ));
    old.create_database("old");
    let url = old.url("old");
    ok(&["ingest", "--db", &url, "-"], Some(&fixture_events()));
    ok(&["verify", "--db", &with_mode(&url, "allow")], None);
    assert!(!session_uses_tls(&old, "old", &url, dir.path()));
    let refused = run(&["verify", "--db", &with_mode(&url, "require")], None);
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(refused.stderr.contains("TLS handshake"), "{refused:?}");

    // A server that refuses sessions over TLS after the handshake (hostnossl): prefer
    // tries again without; require is refused by the server, which says why.
    let nossl = Postgres::start_with(tls(&[("hostnossl", "scram-sha-256")], &[]));
    nossl.create_database("nossl");
    nossl.psql("nossl", table);
    let url = nossl.url("nossl");
    assert!(!session_uses_tls(&nossl, "nossl", &url, dir.path()));
    let refused = run(&["verify", "--db", &with_mode(&url, "require")], None);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.contains("no pg_hba.conf entry")
            && refused.stderr.contains("SSL encryption"),
        "{refused:?}"
    );
}

#[test]
fn a_client_certificate_from_sslcert_and_sslkey_lets_the_ledger_into_a_cert_only_server() {
    use std::os::unix::fs::PermissionsExt;
    let (ca_pem, ca, ca_key) = certificate_authority("claim-ledger test CA");
    let (client_ca_pem, client_ca, client_ca_key) = certificate_authority("client CA");
    let (_, stranger_ca, stranger_ca_key) = certificate_authority("a CA the server does not trust");
    let (certificate, key) = server_certificate(&ca, &ca_key);
    // Sessions over TLS with a client certificate only (cert authentication: the
    // certificate's common name is the role, and no password is asked for).
    let pg = Postgres::start_with(Some(ServerTls {
        certificate: &certificate,
        key: &key,
        client_ca: Some(&client_ca_pem),
        hba: &[("hostssl", "cert")],
        settings: &[],
    }));
    pg.create_database("mtls");
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str, mode: u32| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path.to_str().unwrap().to_string()
    };
    let client = |ca: &rcgen::Certificate, ca_key: &rcgen::KeyPair, name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, postgres::USER);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let certificate = params.signed_by(&key, ca, ca_key).unwrap();
        (
            write(&format!("{name}.crt"), &certificate.pem(), 0o644),
            write(&format!("{name}.key"), &key.serialize_pem(), 0o600),
        )
    };
    let (cert, key) = client(&client_ca, &client_ca_key, "client");
    let (stranger_cert, stranger_key) = client(&stranger_ca, &stranger_ca_key, "stranger");
    let loose_key = write("loose.key", &std::fs::read_to_string(&key).unwrap(), 0o644);
    let root = write("ca.crt", &ca_pem, 0o644);
    let url = pg.url("mtls").replace("127.0.0.1", "localhost");
    let base = format!("{url}?sslmode=verify-full&sslrootcert={root}");
    let with = |cert: &str, key: &str| format!("{base}&sslcert={cert}&sslkey={key}");
    let no_password = |args: &[&str], env: &[(&str, &str)]| run_with_env(args, None, None, env);

    // With the certificate: the ledger is created and read, with no password anywhere.
    let events = fixture_events();
    let created = run_with(
        &["ingest", "--db", &with(&cert, &key), "-"],
        Some(&events),
        None,
    );
    assert_eq!(created.code, 0, "{created:?}");
    assert_eq!(
        no_password(&["verify", "--db", &with(&cert, &key)], &[]).code,
        0
    );
    // The same from PGSSLCERT and PGSSLKEY, and from ~/.postgresql/postgresql.crt and
    // postgresql.key; prefer (the default) presents it too.
    assert_eq!(
        no_password(
            &["verify", "--db", &base],
            &[("PGSSLCERT", &cert), ("PGSSLKEY", &key)]
        )
        .code,
        0
    );
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".postgresql")).unwrap();
    std::fs::copy(&cert, home.join(".postgresql/postgresql.crt")).unwrap();
    std::fs::copy(&key, home.join(".postgresql/postgresql.key")).unwrap();
    assert_eq!(
        no_password(
            &["verify", "--db", &base],
            &[("HOME", home.to_str().unwrap())]
        )
        .code,
        0
    );
    assert_eq!(
        no_password(
            &["verify", "--db", &url],
            &[("HOME", home.to_str().unwrap())]
        )
        .code,
        0
    );

    // Without one: refused by the server, which says why.
    let refused = no_password(&["verify", "--db", &base], &[]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("connection requires a valid client certificate"),
        "{refused:?}"
    );
    // One signed by a CA the server does not trust: refused in the handshake.
    let refused = no_password(
        &["verify", "--db", &with(&stranger_cert, &stranger_key)],
        &[],
    );
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("the server refused the client certificate"),
        "{refused:?}"
    );
    // A key others may read is refused before connecting, as libpq refuses it; so is a
    // certificate named but missing.
    let refused = no_password(&["verify", "--db", &with(&cert, &loose_key)], &[]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.contains("group or world access") && refused.stderr.contains("loose.key"),
        "{refused:?}"
    );
    let missing = dir.path().join("missing.crt");
    let refused = no_password(
        &["verify", "--db", &with(missing.to_str().unwrap(), &key)],
        &[],
    );
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(refused.stderr.contains("missing.crt"), "{refused:?}");
}
