//! The PostgreSQL backend: every record a row of one table,
//!
//! ```sql
//! CREATE TABLE claim_ledger_records (key bytea PRIMARY KEY, value bytea NOT NULL)
//! ```
//!
//! in the database (and `search_path`) the URL names. A commit is one transaction (an
//! upsert of every record it sets and a delete of every record it removes, each one
//! statement over arrays), durable when it returns under PostgreSQL's default
//! `synchronous_commit`, so [`Store::flush`] has nothing left to do.
//!
//! **One writer.** A writer holds a session-level advisory lock for as long as its
//! session lives; other handles only read (a commit from them is refused). The lock is a
//! lease: the writer's session runs with `idle_session_timeout` set to the lease and
//! heartbeats well within it, so a writer that stops (a crash, a partition, a process
//! paused for longer than the lease) loses its session and with it the lock, and another
//! replica can take over. **Fencing:** every commit first locks the head record
//! (`SELECT ... FOR UPDATE`) and requires it to be the one this writer last wrote (or read
//! when it became the writer); otherwise the commit is refused as [`StoreError::Fenced`]
//! and nothing of it is written, so a deposed writer can never fork the log.
//!
//! The client is `tokio-postgres`, driven by a thread of its own with a current-thread
//! runtime: the [`Store`] interface is synchronous (the ledger calls it from plain threads
//! and from async tasks alike), and a blocking call into another runtime from inside a
//! tokio task would panic.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use tokio_postgres::NoTls;

use super::{Batch, Record, Records, Store, StoreError};

/// The table holding the records.
pub const TABLE: &str = "claim_ledger_records";

/// The advisory lock key a writer holds (`pg_try_advisory_lock`): "claimled" in ASCII.
const WRITER_LOCK: i64 = 0x636c_6169_6d6c_6564;

/// Rows fetched per round trip by a scan.
const PAGE: i64 = 512;

/// Whether `location` names a PostgreSQL database rather than a directory.
pub fn is_postgres_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// How long a writer's session may go quiet before PostgreSQL ends it (and so frees the
/// writer's lock for another replica), by default.
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(10);

/// How to open the database.
#[derive(Debug, Clone, Default)]
pub struct PostgresOptions {
    /// Create the table when it is absent (a writer opening a new ledger).
    pub create: bool,
    /// Take the writer's advisory lock (refused while another writer holds it, unless
    /// `follow_if_locked`).
    pub writer: bool,
    /// When another writer holds the lock, open as a follower instead of failing.
    pub follow_if_locked: bool,
    /// The writer's lease ([`DEFAULT_LEASE`] when `None`).
    pub lease: Option<std::time::Duration>,
    /// Read the password from this file (its first line) when the URL has none.
    pub password_file: Option<std::path::PathBuf>,
}

/// What the worker thread is asked to do.
enum Job {
    Get(Vec<u8>, mpsc::Sender<Result<Option<Vec<u8>>, StoreError>>),
    Page {
        from: Vec<u8>,
        to: Vec<u8>,
        reverse: bool,
        reply: mpsc::Sender<Result<Vec<Record>, StoreError>>,
    },
    Commit(Batch, mpsc::Sender<Result<(), StoreError>>),
    Count(mpsc::Sender<Result<i64, StoreError>>),
    BecomeWriter(mpsc::Sender<Result<bool, StoreError>>),
}

impl Job {
    /// Answers the job with `error`, whatever it asked.
    fn fail(self, error: StoreError) {
        // A caller that gave up waiting has nobody to tell.
        let _ = match self {
            Job::Get(_, reply) => reply.send(Err(error)).is_ok(),
            Job::Page { reply, .. } => reply.send(Err(error)).is_ok(),
            Job::Commit(_, reply) => reply.send(Err(error)).is_ok(),
            Job::Count(reply) => reply.send(Err(error)).is_ok(),
            Job::BecomeWriter(reply) => reply.send(Err(error)).is_ok(),
        };
    }
}

/// The writer's side of the worker: whether it holds the lock, and the head record it
/// last wrote or read (the fencing token every commit compares with).
#[derive(Default)]
struct WriterState {
    holds_lock: bool,
    last_head: Option<Vec<u8>>,
}

/// A ledger store in a PostgreSQL table.
pub struct PostgresStore {
    jobs: Option<tokio::sync::mpsc::UnboundedSender<Job>>,
    worker: Option<JoinHandle<()>>,
    /// The URL without its password, for messages.
    label: String,
    /// Whether this handle holds the writer's lock: set by the worker, which sees the
    /// session end or a commit fenced off.
    writer: Arc<AtomicBool>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("database", &self.label)
            .finish_non_exhaustive()
    }
}

fn db_error(context: &str, error: tokio_postgres::Error) -> StoreError {
    let source = std::io::Error::other(error.to_string());
    let context = context.to_string();
    // A closed connection, or none at all, says nothing about the data: try again later.
    let unreachable = error.is_closed()
        || std::error::Error::source(&error)
            .is_some_and(|cause| cause.downcast_ref::<std::io::Error>().is_some());
    match unreachable {
        true => StoreError::Unavailable { context, source },
        false => StoreError::Io { context, source },
    }
}

/// The password for `config` from the standard places, when the URL carries none:
/// `PGPASSWORD`, then the `password_file` flag, then `PGPASSFILE` or `~/.pgpass`
/// (`host:port:database:user:password` lines, `*` matching anything).
fn find_password(
    config: &tokio_postgres::Config,
    password_file: Option<&std::path::Path>,
) -> Result<Option<String>, StoreError> {
    if config.get_password().is_some() {
        return Ok(None);
    }
    if let Ok(password) = std::env::var("PGPASSWORD") {
        return Ok(Some(password));
    }
    if let Some(path) = password_file {
        let text = std::fs::read_to_string(path).map_err(|source| StoreError::Io {
            context: format!("reading the password file {}", path.display()),
            source,
        })?;
        return Ok(Some(text.lines().next().unwrap_or_default().to_string()));
    }
    let pgpass = std::env::var_os("PGPASSFILE")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".pgpass"))
        });
    let Some(text) = pgpass.and_then(|path| std::fs::read_to_string(path).ok()) else {
        return Ok(None);
    };
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "localhost".to_string(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let database = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or_default()
        .to_string();
    let user = config.get_user().unwrap_or_default().to_string();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.splitn(5, ':').collect();
        let [h, p, d, u, password] = fields[..] else {
            continue;
        };
        let matches = |pattern: &str, value: &str| pattern == "*" || pattern == value;
        if matches(h, &host) && matches(p, &port) && matches(d, &database) && matches(u, &user) {
            return Ok(Some(password.to_string()));
        }
    }
    Ok(None)
}

/// The URL with any password replaced, for messages.
fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((credentials, host)) => {
                let user = credentials.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}@{host}")
            }
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

impl PostgresStore {
    /// Connects to the database `url`, as `options` say. `Ok(None)` when the table does
    /// not exist and `options.create` is not set (there is no ledger there).
    pub fn open(url: &str, options: &PostgresOptions) -> Result<Option<PostgresStore>, StoreError> {
        let label = redacted(url);
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| StoreError::Io {
            context: format!("parsing the database URL {label}"),
            source: std::io::Error::other(format!("{e}")),
        })?;
        if let Some(password) = find_password(&config, options.password_file.as_deref())? {
            config.password(password);
        }
        let (jobs, receiver) = tokio::sync::mpsc::unbounded_channel();
        let (ready, started) = mpsc::channel::<Result<Option<bool>, StoreError>>();
        let options_for_worker = options.clone();
        let label_for_worker = label.clone();
        let writer = Arc::new(AtomicBool::new(false));
        let writer_for_worker = Arc::clone(&writer);
        let worker = std::thread::Builder::new()
            .name("claim-ledger-postgres".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(source) => {
                        let _ = ready.send(Err(StoreError::Io {
                            context: "starting the PostgreSQL client".into(),
                            source,
                        }));
                        return;
                    }
                };
                runtime.block_on(serve_jobs(
                    config,
                    options_for_worker,
                    label_for_worker,
                    writer_for_worker,
                    receiver,
                    ready,
                ));
            })
            .map_err(|source| StoreError::Io {
                context: "starting the PostgreSQL client thread".into(),
                source,
            })?;
        let store = PostgresStore {
            jobs: Some(jobs),
            worker: Some(worker),
            label,
            writer,
        };
        match started.recv() {
            Ok(Ok(Some(_))) => Ok(Some(store)),
            Ok(Ok(None)) => Ok(None),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StoreError::Io {
                context: format!("connecting to {}", store.label),
                source: std::io::Error::other("the client thread stopped"),
            }),
        }
    }

    /// The database, without its password.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// How many records the table holds.
    pub fn record_count(&self) -> Result<u64, StoreError> {
        let count = self.ask(Job::Count)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    fn ask<T>(
        &self,
        job: impl FnOnce(mpsc::Sender<Result<T, StoreError>>) -> Job,
    ) -> Result<T, StoreError> {
        let (reply, answer) = mpsc::channel();
        let gone = || StoreError::Io {
            context: format!("talking to {}", self.label),
            source: std::io::Error::other("the connection to the database is closed"),
        };
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(job(reply))
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Closing the channel ends the worker, which closes the session (and so releases
        // the writer's advisory lock).
        self.jobs.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// The worker: connects, checks or creates the table, takes the writer's lock, reports
/// whether a ledger is there, then answers jobs until the store is dropped.
async fn serve_jobs(
    config: tokio_postgres::Config,
    options: PostgresOptions,
    label: String,
    shared_writer: Arc<AtomicBool>,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<Job>,
    ready: mpsc::Sender<Result<Option<bool>, StoreError>>,
) {
    let connected = config.connect(NoTls).await;
    let (mut client, connection) = match connected {
        Ok(pair) => pair,
        Err(e) => {
            let _ = ready.send(Err(db_error(&format!("connecting to {label}"), e)));
            return;
        }
    };
    let mut connection = tokio::spawn(connection);
    let lease = options.lease.unwrap_or(DEFAULT_LEASE);
    let mut writer = WriterState::default();
    match prepare(&client, &options, &label).await {
        Ok(false) => {
            let _ = ready.send(Ok(None));
            return;
        }
        Ok(true) => {}
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    }
    if options.writer {
        match become_writer(&client, &mut writer, lease).await {
            Ok(true) => {}
            Ok(false) if options.follow_if_locked => {}
            Ok(false) => {
                let _ = ready.send(Err(StoreError::Locked(format!(
                    "{label} (another claim-ledger writer holds its advisory lock)"
                ))));
                return;
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        }
    }
    shared_writer.store(writer.holds_lock, Ordering::SeqCst);
    let _ = ready.send(Ok(Some(writer.holds_lock)));
    // The heartbeat keeps a writer's session (and lock) alive within its lease.
    let mut heartbeat = tokio::time::interval(lease / 3);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let job = tokio::select! {
            job = jobs.recv() => job,
            _ = heartbeat.tick() => {
                if writer.holds_lock && client.simple_query("SELECT 1").await.is_err() {
                    // The session is gone: so is the lock. Commits now fail.
                    writer.holds_lock = false;
                    shared_writer.store(false, Ordering::SeqCst);
                }
                continue;
            }
        };
        let Some(job) = job else { break };
        if client.is_closed() {
            // The session ended (a database restart, a dropped connection): so did any
            // writer's lock. Open a new session for this job; a writer that lost its lock
            // stays deposed (it must be promoted again, after following the log).
            writer.holds_lock = false;
            shared_writer.store(false, Ordering::SeqCst);
            match config.connect(NoTls).await {
                Ok((new_client, new_connection)) => {
                    client = new_client;
                    connection = tokio::spawn(new_connection);
                }
                Err(e) => {
                    let error = db_error(&format!("reconnecting to {label}"), e);
                    job.fail(error);
                    continue;
                }
            }
        }
        match job {
            Job::Get(key, reply) => {
                let result = client
                    .query_opt(
                        &format!("SELECT value FROM {TABLE} WHERE key = $1"),
                        &[&key],
                    )
                    .await
                    .map(|row| row.map(|row| row.get::<_, Vec<u8>>(0)))
                    .map_err(|e| db_error("reading a record", e));
                let _ = reply.send(result);
            }
            Job::Page {
                from,
                to,
                reverse,
                reply,
            } => {
                let order = if reverse { "DESC" } else { "ASC" };
                let sql = format!(
                    "SELECT key, value FROM {TABLE} WHERE key >= $1 AND key <= $2 ORDER BY key {order} LIMIT {PAGE}"
                );
                let result = client
                    .query(&sql, &[&from, &to])
                    .await
                    .map(|rows| {
                        rows.iter()
                            .map(|row| (row.get::<_, Vec<u8>>(0), row.get::<_, Vec<u8>>(1)))
                            .collect()
                    })
                    .map_err(|e| db_error("scanning records", e));
                let _ = reply.send(result);
            }
            Job::Commit(batch, reply) => {
                let result = match writer.holds_lock {
                    true => commit(&mut client, &mut writer, batch).await,
                    false => Err(StoreError::NotWriter(label.clone())),
                };
                shared_writer.store(writer.holds_lock, Ordering::SeqCst);
                let _ = reply.send(result);
            }
            Job::BecomeWriter(reply) => {
                let result = become_writer(&client, &mut writer, lease).await;
                shared_writer.store(writer.holds_lock, Ordering::SeqCst);
                let _ = reply.send(result);
            }
            Job::Count(reply) => {
                let result = client
                    .query_one(&format!("SELECT count(*) FROM {TABLE}"), &[])
                    .await
                    .map(|row| row.get::<_, i64>(0))
                    .map_err(|e| db_error("counting records", e));
                let _ = reply.send(result);
            }
        }
    }
    drop(client);
    let _ = connection.await;
}

/// Takes the writer's lock if it is free, with the session's lease, and reads the head it
/// will fence its commits on.
async fn become_writer(
    client: &tokio_postgres::Client,
    writer: &mut WriterState,
    lease: std::time::Duration,
) -> Result<bool, StoreError> {
    if writer.holds_lock {
        return Ok(true);
    }
    let locked = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&WRITER_LOCK])
        .await
        .map_err(|e| db_error("taking the writer's lock", e))?
        .get::<_, bool>(0);
    if !locked {
        return Ok(false);
    }
    client
        .batch_execute(&format!(
            "SET idle_session_timeout = {}",
            lease.as_millis().max(1)
        ))
        .await
        .map_err(|e| db_error("setting the writer's lease", e))?;
    writer.last_head = client
        .query_opt(
            &format!("SELECT value FROM {TABLE} WHERE key = $1"),
            &[&super::keys::HEAD],
        )
        .await
        .map_err(|e| db_error("reading the head", e))?
        .map(|row| row.get::<_, Vec<u8>>(0));
    writer.holds_lock = true;
    Ok(true)
}

/// Checks (or creates) the table; whether a ledger is there.
async fn prepare(
    client: &tokio_postgres::Client,
    options: &PostgresOptions,
    label: &str,
) -> Result<bool, StoreError> {
    let exists = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&TABLE])
        .await
        .map_err(|e| db_error(&format!("looking for {TABLE} in {label}"), e))?
        .get::<_, bool>(0);
    if !exists {
        if !options.create {
            return Ok(false);
        }
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (key bytea PRIMARY KEY, value bytea NOT NULL)"
            ))
            .await
            .map_err(|e| db_error(&format!("creating {TABLE} in {label}"), e))?;
    }
    Ok(true)
}

/// One batch as one transaction, fenced on the head: the last write of each key wins, as
/// applying them in order would leave it.
async fn commit(
    client: &mut tokio_postgres::Client,
    writer: &mut WriterState,
    batch: Batch,
) -> Result<(), StoreError> {
    let mut last: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> = Default::default();
    for (key, value) in batch.into_writes() {
        last.insert(key, value);
    }
    let (mut keys, mut values, mut removed) = (Vec::new(), Vec::new(), Vec::new());
    for (key, value) in last {
        match value {
            Some(value) => {
                keys.push(key);
                values.push(value);
            }
            None => removed.push(key),
        }
    }
    let new_head = last_head_written(&keys, &values);
    let transaction = client
        .transaction()
        .await
        .map_err(|e| db_error("starting a transaction", e))?;
    let stored_head = transaction
        .query_opt(
            &format!("SELECT value FROM {TABLE} WHERE key = $1 FOR UPDATE"),
            &[&super::keys::HEAD],
        )
        .await
        .map_err(|e| db_error("locking the head", e))?
        .map(|row| row.get::<_, Vec<u8>>(0));
    if stored_head != writer.last_head {
        // Dropping the transaction rolls it back: nothing of this batch is written.
        writer.holds_lock = false;
        return Err(StoreError::Fenced(
            "the log's head in the database is not the one this writer last wrote: another writer appended".into(),
        ));
    }
    if !keys.is_empty() {
        transaction
            .execute(
                &format!(
                    "INSERT INTO {TABLE} (key, value) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                ),
                &[&keys, &values],
            )
            .await
            .map_err(|e| db_error("writing records", e))?;
    }
    if !removed.is_empty() {
        transaction
            .execute(
                &format!("DELETE FROM {TABLE} WHERE key = ANY($1::bytea[])"),
                &[&removed],
            )
            .await
            .map_err(|e| db_error("removing records", e))?;
    }
    transaction
        .commit()
        .await
        .map_err(|e| db_error("committing a transaction", e))?;
    if let Some(head) = new_head {
        writer.last_head = Some(head);
    }
    Ok(())
}

/// The head record a batch sets, if it sets one.
fn last_head_written(keys: &[Vec<u8>], values: &[Vec<u8>]) -> Option<Vec<u8>> {
    keys.iter()
        .position(|key| key.as_slice() == super::keys::HEAD)
        .map(|at| values[at].clone())
}

impl Store for PostgresStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.ask(|reply| Job::Get(key.to_vec(), reply))
    }

    fn scan(&self, from: &[u8], to: &[u8], reverse: bool) -> Records<'_> {
        if from > to {
            return Box::new(std::iter::empty());
        }
        Box::new(PagedRecords {
            store: self,
            from: from.to_vec(),
            to: to.to_vec(),
            reverse,
            page: Vec::new().into_iter(),
            done: false,
        })
    }

    fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.ask(|reply| Job::Commit(batch, reply))
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Every commit was a committed transaction.
        Ok(())
    }

    fn try_become_writer(&self) -> Result<bool, StoreError> {
        self.ask(Job::BecomeWriter)
    }

    fn is_writer(&self) -> bool {
        self.writer.load(Ordering::SeqCst)
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }
}

/// A scan fetched a page at a time, by key (keyset pagination).
struct PagedRecords<'a> {
    store: &'a PostgresStore,
    from: Vec<u8>,
    to: Vec<u8>,
    reverse: bool,
    page: std::vec::IntoIter<Record>,
    done: bool,
}

impl Iterator for PagedRecords<'_> {
    type Item = Result<Record, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(record) = self.page.next() {
            return Some(Ok(record));
        }
        if self.done {
            return None;
        }
        let (from, to, reverse) = (self.from.clone(), self.to.clone(), self.reverse);
        let rows = match self.store.ask(|reply| Job::Page {
            from,
            to,
            reverse,
            reply,
        }) {
            Ok(rows) => rows,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        if (rows.len() as i64) < PAGE {
            self.done = true;
        }
        // The next page starts just past the last key of this one.
        if let Some((last, _)) = rows.last() {
            if self.reverse {
                match predecessor(last) {
                    Some(before) => self.to = before,
                    None => self.done = true,
                }
            } else {
                let mut after = last.clone();
                after.push(0);
                self.from = after;
            }
        }
        self.page = rows.into_iter();
        self.page.next().map(Ok)
    }
}

/// The greatest key below `key` that a scan bound can name: `key` with its last byte
/// decremented and followed by 0xff bytes as far as any key of this layout reaches (keys
/// are at most 9 bytes), or the key shortened when its last byte is 0.
fn predecessor(key: &[u8]) -> Option<Vec<u8>> {
    let (&last, rest) = key.split_last()?;
    if last == 0 {
        return Some(rest.to_vec());
    }
    let mut before = rest.to_vec();
    before.push(last - 1);
    before.extend_from_slice(&[0xff; 16]);
    Some(before)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redacted("postgres://claim:secret@db.example:5432/ledger"),
            "postgres://claim@db.example:5432/ledger"
        );
        assert_eq!(
            redacted("postgresql://db.example/ledger"),
            "postgresql://db.example/ledger"
        );
    }

    #[test]
    fn the_predecessor_of_a_key_sorts_just_below_it() {
        let key = [b'E', 0, 0, 0, 0, 0, 0, 1, 0];
        let before = predecessor(&key).unwrap();
        assert!(before.as_slice() < &key[..]);
        assert!(before.as_slice() >= &[b'E', 0, 0, 0, 0, 0, 0, 0, 0xff][..]);
        let key = [b'E', 0, 0, 0, 0, 0, 0, 0, 5];
        let before = predecessor(&key).unwrap();
        assert!(
            before.as_slice() < &key[..] && before.as_slice() > &[b'E', 0, 0, 0, 0, 0, 0, 0, 4][..]
        );
        assert!(is_postgres_url("postgres://x/y") && is_postgres_url("postgresql://x"));
        assert!(!is_postgres_url("/var/lib/claim-ledger"));
    }
}
