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
//! **Change notifications.** Every commit also runs `NOTIFY claim_ledger_changes` in its
//! transaction, with the new head seq as payload (empty when the batch does not move the
//! head: the writer's status), so PostgreSQL delivers it only if the commit is.
//! [`Store::wait_for_change`] keeps a `LISTEN` on a connection of its own (opened at its
//! first call, reopened whenever it is lost) and returns as soon as one arrives; whoever
//! waits still polls at its timeout, which covers the time a `LISTEN` is down.
//!
//! **TLS.** `sslmode` (`disable`, `allow`, `prefer`, `require`, `verify-ca`,
//! `verify-full`) and `sslrootcert` in the URL's query, else `PGSSLMODE` and
//! `PGSSLROOTCERT`, mean what they mean to libpq; the TLS client is rustls.
//!
//! The client is `tokio-postgres`, driven by a thread of its own with a current-thread
//! runtime: the [`Store`] interface is synchronous (the ledger calls it from plain threads
//! and from async tasks alike), and a blocking call into another runtime from inside a
//! tokio task would panic.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Batch, Record, Records, Store, StoreError};

/// The table holding the records.
pub const TABLE: &str = "claim_ledger_records";

/// The advisory lock key a writer holds (`pg_try_advisory_lock`): "claimled" in ASCII.
const WRITER_LOCK: i64 = 0x636c_6169_6d6c_6564;

/// Rows fetched per round trip by a scan.
const PAGE: i64 = 512;

/// The channel every commit notifies and followers listen on.
pub const CHANNEL: &str = "claim_ledger_changes";

/// The `application_name` of the listening connection, so that an operator (or a test)
/// can tell it from the session that reads and writes.
pub const LISTENER_NAME: &str = "claim-ledger-listener";

/// How often the listening connection proves it is alive: a connection that died without
/// closing (a partition) would otherwise leave followers on their fallback polls for as
/// long as TCP takes to notice.
const LISTEN_PING: Duration = Duration::from_secs(5);

/// How long after losing the listening connection (or failing to open it) another is tried.
const RELISTEN_AFTER: Duration = Duration::from_secs(1);

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
    /// The keys in a range, ascending, without their values.
    Keys {
        from: Vec<u8>,
        to: Vec<u8>,
        reply: mpsc::Sender<Result<Vec<Vec<u8>>, StoreError>>,
    },
    Count(mpsc::Sender<Result<i64, StoreError>>),
    BecomeWriter(mpsc::Sender<Result<bool, StoreError>>),
    /// Start listening for the writer's commits (once per store).
    Listen,
}

impl Job {
    /// Answers the job with `error`, whatever it asked.
    fn fail(self, error: StoreError) {
        // A caller that gave up waiting has nobody to tell.
        let _ = match self {
            Job::Get(_, reply) => reply.send(Err(error)).is_ok(),
            Job::Page { reply, .. } => reply.send(Err(error)).is_ok(),
            Job::Commit(_, reply) => reply.send(Err(error)).is_ok(),
            Job::Keys { reply, .. } => reply.send(Err(error)).is_ok(),
            Job::Count(reply) => reply.send(Err(error)).is_ok(),
            Job::BecomeWriter(reply) => reply.send(Err(error)).is_ok(),
            // The listener retries on its own.
            Job::Listen => true,
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
    /// Commits notified since [`Store::wait_for_change`] last returned.
    changes: Arc<Changes>,
    /// Whether the listening connection was asked for.
    listening: AtomicBool,
}

/// Whether a change was notified and not yet waited for, and the waiters to wake.
#[derive(Default)]
struct Changes {
    pending: Mutex<bool>,
    arrived: Condvar,
}

impl Changes {
    fn signal(&self) {
        *self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        self.arrived.notify_all();
    }

    /// Waits for a signal up to `timeout`; whether one came (and consumes it).
    fn wait(&self, timeout: Duration) -> bool {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mut pending, _) = self
            .arrived
            .wait_timeout_while(pending, timeout, |pending| !*pending)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::replace(&mut *pending, false)
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("database", &self.label)
            .finish_non_exhaustive()
    }
}

fn db_error(context: &str, error: tokio_postgres::Error) -> StoreError {
    // The server's own words (a refused login, a missing privilege) are in the source:
    // the error alone says only "db error".
    let source = std::io::Error::other(match error.as_db_error() {
        Some(db) => db.to_string(),
        None => error.to_string(),
    });
    let context = context.to_string();
    let io_cause =
        std::error::Error::source(&error).and_then(|cause| cause.downcast_ref::<std::io::Error>());
    // rustls's refusals come wrapped in an I/O error; a certificate that is not trusted
    // will not become trusted by trying again, and must not read as a database that is
    // merely down.
    if let Some(refusal) = io_cause
        .and_then(|io| io.get_ref())
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        use rustls::CertificateError as Refused;
        let why = match refusal {
            rustls::Error::InvalidCertificate(Refused::UnknownIssuer | Refused::BadSignature) => {
                "the server's certificate is not signed by a CA of sslrootcert: "
            }
            rustls::Error::InvalidCertificate(
                Refused::NotValidForName | Refused::NotValidForNameContext { .. },
            ) => {
                "the server's certificate does not name the host of the URL (sslmode=verify-full): "
            }
            _ => "",
        };
        return StoreError::Io {
            context: format!("{context}: the TLS handshake failed"),
            source: std::io::Error::other(format!("{why}{refusal}")),
        };
    }
    // A closed connection, or none at all, says nothing about the data: try again later.
    // So does a server that refuses sessions while it starts or stops, or ends them as
    // it stops (SQLSTATE class 08, and 57P01-57P03 and 57P05).
    let server_going = error.as_db_error().is_some_and(|db| {
        let code = db.code().code();
        code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "57P05")
    });
    match error.is_closed() || io_cause.is_some() || server_going {
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
        // tokio-postgres knows neither the verify modes nor sslrootcert: they are taken
        // out of the URL and applied here.
        let (rest, sslmode, sslrootcert) = tls::take_params(url);
        let mut config: tokio_postgres::Config = rest.parse().map_err(|e| StoreError::Io {
            context: format!("parsing the database URL {label}"),
            source: std::io::Error::other(format!("{e}")),
        })?;
        if let Some(password) = find_password(&config, options.password_file.as_deref())? {
            config.password(password);
        }
        let (mode, tls) = tls::connector(sslmode, sslrootcert)?;
        config.ssl_mode(mode);
        let connector = Connector { config, tls };
        let (jobs, receiver) = tokio::sync::mpsc::unbounded_channel();
        let (ready, started) = mpsc::channel::<Result<Option<bool>, StoreError>>();
        let options_for_worker = options.clone();
        let label_for_worker = label.clone();
        let writer = Arc::new(AtomicBool::new(false));
        let writer_for_worker = Arc::clone(&writer);
        let changes = Arc::new(Changes::default());
        let changes_for_worker = Arc::clone(&changes);
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
                    connector,
                    options_for_worker,
                    label_for_worker,
                    writer_for_worker,
                    changes_for_worker,
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
            changes,
            listening: AtomicBool::new(false),
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
    connector: Connector,
    options: PostgresOptions,
    label: String,
    shared_writer: Arc<AtomicBool>,
    changes: Arc<Changes>,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<Job>,
    ready: mpsc::Sender<Result<Option<bool>, StoreError>>,
) {
    let (mut client, mut connection) = match connector.connect(None).await {
        Ok(pair) => pair,
        Err(e) => {
            let _ = ready.send(Err(db_error(&format!("connecting to {label}"), e)));
            return;
        }
    };
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
        if let Job::Listen = job {
            // A task of its own: the listening connection is independent of this one,
            // and outlives its losses.
            tokio::spawn(listen(
                connector.clone(),
                label.clone(),
                Arc::clone(&changes),
            ));
            continue;
        }
        if client.is_closed() {
            // The session ended (a database restart, a dropped connection): so did any
            // writer's lock. Open a new session for this job; a writer that lost its lock
            // stays deposed (it must be promoted again, after following the log).
            writer.holds_lock = false;
            shared_writer.store(false, Ordering::SeqCst);
            match connector.connect(None).await {
                Ok((new_client, new_connection)) => {
                    client = new_client;
                    connection = new_connection;
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
            Job::Keys { from, to, reply } => {
                let sql =
                    format!("SELECT key FROM {TABLE} WHERE key >= $1 AND key <= $2 ORDER BY key");
                let result = client
                    .query(&sql, &[&from, &to])
                    .await
                    .map(|rows| rows.iter().map(|row| row.get::<_, Vec<u8>>(0)).collect())
                    .map_err(|e| db_error("listing keys", e));
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
            Job::Listen => {}
        }
    }
    drop(client);
    let _ = connection.await;
}

/// How to open a session: the parsed URL (with its password) and the TLS it asks for.
#[derive(Clone)]
struct Connector {
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl Connector {
    /// Opens a session, its connection driven by a task of its own that signals
    /// `changes` at every notification, when given.
    async fn connect(
        &self,
        changes: Option<Arc<Changes>>,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
        let (client, connection) = self.config.connect(self.tls.clone()).await?;
        Ok((client, tokio::spawn(drive(connection, changes))))
    }
}

/// Runs a session's connection until it closes, passing notifications on to `changes`.
async fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    changes: Option<Arc<Changes>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    std::future::poll_fn(|cx| loop {
        match connection.poll_message(cx) {
            std::task::Poll::Pending => return std::task::Poll::Pending,
            std::task::Poll::Ready(Some(Ok(tokio_postgres::AsyncMessage::Notification(_)))) => {
                if let Some(changes) = &changes {
                    changes.signal();
                }
            }
            std::task::Poll::Ready(Some(Ok(_))) => {}
            std::task::Poll::Ready(Some(Err(_)) | None) => return std::task::Poll::Ready(()),
        }
    })
    .await
}

/// Keeps a `LISTEN` on [`CHANNEL`] open for as long as the store lives (the worker's
/// runtime ends this task with it), opening a new session whenever one is lost.
async fn listen(connector: Connector, label: String, changes: Arc<Changes>) {
    let mut connector = connector;
    connector.config.application_name(LISTENER_NAME);
    let mut was_listening = false;
    loop {
        match connector.connect(Some(Arc::clone(&changes))).await {
            Ok((client, mut driver)) => {
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        if was_listening {
                            tracing::info!(database = %label, "listening for the writer's commits again");
                        }
                        was_listening = true;
                        // Whatever was committed while nobody listened is read now.
                        changes.signal();
                        let mut ping = tokio::time::interval(LISTEN_PING);
                        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        loop {
                            tokio::select! {
                                _ = &mut driver => break,
                                _ = ping.tick() => {
                                    let alive = tokio::time::timeout(LISTEN_PING, client.simple_query("SELECT 1")).await;
                                    if !matches!(alive, Ok(Ok(_))) {
                                        break;
                                    }
                                }
                            }
                        }
                        tracing::warn!(database = %label, "lost the connection listening for the writer's commits; polling until it is back");
                    }
                    Err(e) => {
                        tracing::debug!(database = %label, error = %e, "cannot listen for the writer's commits");
                    }
                }
                drop(client);
                driver.abort();
            }
            Err(e) => {
                tracing::debug!(database = %label, error = %e, "cannot open the listening connection");
            }
        }
        tokio::time::sleep(RELISTEN_AFTER).await;
    }
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
    // Delivered to the listeners only if this transaction commits. The payload is a
    // decimal number or nothing, so it can be a literal of the simple query protocol
    // (one round trip, nothing to prepare).
    let payload = new_head
        .as_deref()
        .and_then(|head| head.get(..8))
        .and_then(|seq| <[u8; 8]>::try_from(seq).ok())
        .map(|seq| u64::from_be_bytes(seq).to_string())
        .unwrap_or_default();
    transaction
        .batch_execute(&format!("NOTIFY {CHANNEL}, '{payload}'"))
        .await
        .map_err(|e| db_error("notifying the followers", e))?;
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

    fn snapshot_seqs(&self) -> Result<Vec<u64>, StoreError> {
        // Keys alone: a snapshot is hundreds of megabytes at cluster scale.
        let keys = self.ask(|reply| Job::Keys {
            from: super::keys::seq_key(super::keys::SNAPSHOT, 0).to_vec(),
            to: super::keys::seq_key(super::keys::SNAPSHOT, u64::MAX).to_vec(),
            reply,
        })?;
        Ok(keys
            .iter()
            .filter(|key| key.len() == 9)
            .filter_map(|key| super::keys::seq_of(key))
            .collect())
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

    fn wait_for_change(&self, timeout: Duration) -> bool {
        if !self.listening.swap(true, Ordering::SeqCst) {
            if let Some(jobs) = &self.jobs {
                // A closed worker has nobody to listen for: the wait is then a poll.
                let _ = jobs.send(Job::Listen);
            }
        }
        self.changes.wait(timeout)
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

/// libpq's TLS settings, for tokio-postgres and rustls.
mod tls {
    use std::path::PathBuf;
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
    use tokio_postgres::config::SslMode;

    use super::StoreError;

    /// The URL without its `sslmode` and `sslrootcert` parameters, and their values
    /// (percent-decoded, as tokio-postgres decodes the others).
    pub(super) fn take_params(url: &str) -> (String, Option<String>, Option<String>) {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_string(), None, None);
        };
        let (mut mode, mut root, mut kept) = (None, None, Vec::new());
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            match pair.split_once('=') {
                Some(("sslmode", value)) => mode = Some(percent_decoded(value)),
                Some(("sslrootcert", value)) => root = Some(percent_decoded(value)),
                _ => kept.push(pair),
            }
        }
        let rest = match kept.is_empty() {
            true => base.to_string(),
            false => format!("{base}?{}", kept.join("&")),
        };
        (rest, mode, root)
    }

    fn percent_decoded(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut at = 0;
        while at < bytes.len() {
            let escaped = (bytes[at] == b'%')
                .then(|| bytes.get(at + 1..at + 3))
                .flatten()
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok());
            match escaped {
                Some(byte) => {
                    out.push(byte);
                    at += 3;
                }
                None => {
                    out.push(bytes[at]);
                    at += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn invalid(context: &str, detail: String) -> StoreError {
        StoreError::Io {
            context: context.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, detail),
        }
    }

    /// Where trusted CA certificates come from.
    enum Roots {
        File(PathBuf),
        /// The system's trust store (libpq's `sslrootcert=system`).
        System,
    }

    /// How the server's certificate is checked.
    enum Check {
        /// Not at all: the connection is encrypted, but a server in the middle could
        /// answer it (libpq's `prefer` and `require` without a root certificate).
        Nothing,
        /// Signed by a trusted CA, for any host name (`verify-ca`).
        Chain(Roots),
        /// Signed by a trusted CA and naming the host connected to (`verify-full`).
        ChainAndName(Roots),
    }

    /// What tokio-postgres is told (whether to ask the server for TLS), and the TLS
    /// client that checks the server as `sslmode` and `sslrootcert` (each from the URL,
    /// else from `PGSSLMODE` and `PGSSLROOTCERT`) say, as libpq does:
    ///
    /// * `disable`: no TLS; `allow` and `prefer` (the default): TLS when the server
    ///   offers it, else none; `require`: TLS or no connection;
    /// * `verify-ca`: TLS, with a server certificate signed by a CA of `sslrootcert` (by
    ///   default `~/.postgresql/root.crt`); `verify-full`: also naming the URL's host;
    /// * `require` with a root certificate file checks the chain as `verify-ca` does;
    ///   `sslrootcert=system` is the system's trust store, with `verify-full` only.
    pub(super) fn connector(
        sslmode: Option<String>,
        sslrootcert: Option<String>,
    ) -> Result<(SslMode, tokio_postgres_rustls::MakeRustlsConnect), StoreError> {
        let context = "reading the database URL's TLS settings";
        let mode = sslmode
            .or_else(|| std::env::var("PGSSLMODE").ok())
            .filter(|mode| !mode.is_empty())
            .unwrap_or_else(|| "prefer".into());
        let explicit_root = sslrootcert
            .or_else(|| std::env::var("PGSSLROOTCERT").ok())
            .filter(|root| !root.is_empty());
        let root = match explicit_root.as_deref() {
            Some("system") => Some(Roots::System),
            Some(path) => Some(Roots::File(PathBuf::from(path))),
            None => std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".postgresql/root.crt"))
                .filter(|path| path.is_file())
                .map(Roots::File),
        };
        if matches!(root, Some(Roots::System)) && mode != "verify-full" {
            return Err(invalid(
                context,
                format!("sslmode={mode} may not be used with sslrootcert=system (use verify-full)"),
            ));
        }
        let no_root = |mode: &str| {
            invalid(
                context,
                format!(
                    "sslmode={mode} needs the CA certificate that signed the server's: \
                     sslrootcert=FILE in the URL or PGSSLROOTCERT (~/.postgresql/root.crt \
                     does not exist)"
                ),
            )
        };
        let (ssl_mode, check) = match mode.as_str() {
            "disable" => (SslMode::Disable, Check::Nothing),
            "allow" | "prefer" => (SslMode::Prefer, Check::Nothing),
            "require" => match root {
                Some(root) => (SslMode::Require, Check::Chain(root)),
                None => (SslMode::Require, Check::Nothing),
            },
            "verify-ca" => (
                SslMode::Require,
                Check::Chain(root.ok_or_else(|| no_root(&mode))?),
            ),
            "verify-full" => (
                SslMode::Require,
                Check::ChainAndName(root.ok_or_else(|| no_root(&mode))?),
            ),
            other => {
                return Err(invalid(
                    context,
                    format!(
                        "unknown sslmode {other:?}: one of disable, allow, prefer, require, \
                         verify-ca, verify-full"
                    ),
                ))
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(context, e.to_string()))?;
        let config = match check {
            Check::Nothing => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))),
            Check::Chain(roots) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyName(verifier(roots, provider)?))),
            Check::ChainAndName(roots) => builder.with_webpki_verifier(verifier(roots, provider)?),
        }
        .with_no_client_auth();
        Ok((
            ssl_mode,
            tokio_postgres_rustls::MakeRustlsConnect::new(config),
        ))
    }

    /// rustls's own verifier of chains and names, trusting `roots`.
    fn verifier(
        roots: Roots,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<WebPkiServerVerifier>, StoreError> {
        let mut store = rustls::RootCertStore::empty();
        match roots {
            Roots::File(path) => {
                let context = format!("reading the root certificate file {}", path.display());
                let certificates = CertificateDer::pem_file_iter(&path)
                    .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| invalid(&context, e.to_string()))?;
                if certificates.is_empty() {
                    return Err(invalid(&context, "it holds no PEM certificate".into()));
                }
                for certificate in certificates {
                    store
                        .add(certificate)
                        .map_err(|e| invalid(&context, e.to_string()))?;
                }
            }
            Roots::System => {
                let found = rustls_native_certs::load_native_certs();
                store.add_parsable_certificates(found.certs);
                if store.is_empty() {
                    return Err(invalid(
                        "reading the system's trusted certificates (sslrootcert=system)",
                        "none found".into(),
                    ));
                }
            }
        }
        WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
            .build()
            .map_err(|e| invalid("loading the root certificates", e.to_string()))
    }

    /// `prefer` and `require` without a root certificate: any certificate, as libpq
    /// accepts; the handshake's signatures are still checked.
    #[derive(Debug)]
    struct AnyCertificate(Arc<CryptoProvider>);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// `verify-ca`: the chain as rustls checks it, whatever host name the certificate
    /// names (rustls checks the name last, after the chain).
    #[derive(Debug)]
    struct AnyName(Arc<WebPkiServerVerifier>);

    impl ServerCertVerifier for AnyName {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp_response: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            match self.0.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                checked => checked,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }
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

    #[test]
    fn the_tls_parameters_are_taken_out_of_the_url() {
        assert_eq!(
            tls::take_params("postgres://u@h/db?sslmode=verify-full&connect_timeout=5&sslrootcert=%2Fetc%2Fca%20x.pem"),
            (
                "postgres://u@h/db?connect_timeout=5".to_string(),
                Some("verify-full".to_string()),
                Some("/etc/ca x.pem".to_string())
            )
        );
        assert_eq!(
            tls::take_params("postgres://u@h/db?sslmode=require"),
            (
                "postgres://u@h/db".to_string(),
                Some("require".to_string()),
                None
            )
        );
        assert_eq!(
            tls::take_params("postgres://u@h/db"),
            ("postgres://u@h/db".to_string(), None, None)
        );
    }
}
