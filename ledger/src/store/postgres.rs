//! The PostgreSQL backend: every record a row of one table,
//!
//! ```sql
//! CREATE TABLE claim_ledger_records (key bytea PRIMARY KEY, value bytea NOT NULL)
//! ```
//!
//! in the database (and `search_path`) the URL names, except snapshots (`S` records), which
//! are kept in chunks in a second table:
//!
//! ```sql
//! CREATE TABLE claim_ledger_snapshot_chunks (
//!     seq bigint NOT NULL, chunk integer NOT NULL, bytes bytea NOT NULL,
//!     PRIMARY KEY (seq, chunk))
//! ```
//!
//! A commit is one transaction (an upsert of every record it sets and a delete of every
//! record it removes, each one statement over arrays), durable when it returns under
//! PostgreSQL's default `synchronous_commit`, so [`Store::flush`] has nothing left to do.
//!
//! **Snapshots** are hundreds of megabytes at cluster scale. Written as one value through
//! the session that appends, one held every append behind it for as long as it took; read
//! as one value, it was held whole in memory. So each snapshot is written over a session
//! of its own (`application_name` [`SNAPSHOT_SESSION_NAME`], opened for the write and
//! closed after it) as rows of [`SNAPSHOT_CHUNK`] bytes in one transaction, and read by
//! [`Store::snapshot_reader`] a chunk at a time through a cursor on a session of its own:
//! at most a few chunks are in memory, and the cursor reads one consistent version however
//! long the reader takes (retention removing the snapshot meanwhile does not cut it short).
//! Databases written before keep their snapshots as rows of the records table: those are
//! still read (and listed and removed), so nothing is migrated; retention removes them as
//! newer snapshots are written. A writer creates the chunk table when it is absent; one
//! whose role may not create tables keeps writing snapshots as records, and says so.
//! [`Store::get`], [`Store::scan`] and [`Store::commit`] see one key space, as the other
//! backends: an `S` record's value is its chunks joined.
//!
//! **One writer.** A writer holds a session-level advisory lock for as long as its
//! session lives; other handles only read (a commit from them is refused). The lock is a
//! lease: the writer's session runs with `idle_session_timeout` set to the lease and
//! heartbeats well within it, so a writer that stops (a crash, a partition, a process
//! paused for longer than the lease) loses its session and with it the lock, and another
//! replica can take over. **Fencing:** every commit first locks the head record
//! (`SELECT ... FOR UPDATE`) and requires it to be the one this writer last wrote (or read
//! when it became the writer); otherwise the commit is refused as [`StoreError::Fenced`]
//! and nothing of it is written, so a deposed writer can never fork the log. (Snapshot
//! writes are not fenced: no entry commits to a snapshot its writer did not append, and
//! one no entry commits to is never used.)
//!
//! **Change notifications.** Every commit also runs `NOTIFY claim_ledger_changes` in its
//! transaction, with the new head seq as payload (empty when the batch does not move the
//! head: the writer's status), so PostgreSQL delivers it only if the commit is.
//! [`Store::wait_for_change`] keeps a `LISTEN` on a connection of its own (opened at its
//! first call, reopened whenever it is lost) and returns as soon as one arrives; whoever
//! waits still polls at its timeout, which covers the time a `LISTEN` is down.
//!
//! **TLS.** `sslmode` (`disable`, `allow`, `prefer`, `require`, `verify-ca`,
//! `verify-full`), `sslrootcert`, `sslcert` and `sslkey` in the URL's query, else
//! `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT` and `PGSSLKEY`, mean what they mean to libpq:
//! `prefer` tries again without TLS when a session over TLS fails, `allow` starts without
//! and tries again with it; the TLS client is rustls.
//!
//! The client is `tokio-postgres`, driven by a thread of its own with a current-thread
//! runtime: the [`Store`] interface is synchronous (the ledger calls it from plain threads
//! and from async tasks alike), and a blocking call into another runtime from inside a
//! tokio task would panic. Snapshot sessions run on threads of their own for the same
//! reason, and so that their hundreds of megabytes never pass through the thread that
//! serves appends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{keys, Batch, MergedRecords, Record, Records, Store, StoreError};

/// The table holding the records.
pub const TABLE: &str = "claim_ledger_records";

/// The table holding snapshots, in chunks of [`SNAPSHOT_CHUNK`] bytes (the last shorter).
pub const SNAPSHOT_TABLE: &str = "claim_ledger_snapshot_chunks";

/// The bytes of a snapshot per row of [`SNAPSHOT_TABLE`]: a few hundred rows for the
/// largest snapshots, and at most a few of them in memory while one is read (the one
/// being decoded, the next one fetched meanwhile).
pub const SNAPSHOT_CHUNK: usize = 4 << 20;

/// The `application_name` of the sessions that write, read and remove snapshots, so that
/// an operator can tell them from the session that appends.
pub const SNAPSHOT_SESSION_NAME: &str = "claim-ledger-snapshots";

/// The advisory lock key a writer holds (`pg_try_advisory_lock`): "claimled" in ASCII.
const WRITER_LOCK: i64 = 0x636c_6169_6d6c_6564;

/// Rows fetched per round trip by a scan.
const PAGE: i64 = 512;

/// Keys read by one query of [`Store::get_many`]: a page's worth.
const GET_MANY_KEYS: usize = PAGE as usize;

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
    /// Several records in one query: `(key, value)` for each key stored.
    GetMany(Vec<Vec<u8>>, mpsc::Sender<Result<Vec<Record>, StoreError>>),
    Page {
        from: Vec<u8>,
        to: Vec<u8>,
        reverse: bool,
        reply: mpsc::Sender<Result<Vec<Record>, StoreError>>,
    },
    Commit(Batch, mpsc::Sender<Result<(), StoreError>>),
    /// The seqs of the stored snapshots, in each layout.
    SnapshotSeqs(mpsc::Sender<Result<StoredSnapshots, StoreError>>),
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
            Job::GetMany(_, reply) => reply.send(Err(error)).is_ok(),
            Job::Page { reply, .. } => reply.send(Err(error)).is_ok(),
            Job::Commit(_, reply) => reply.send(Err(error)).is_ok(),
            Job::SnapshotSeqs(reply) => reply.send(Err(error)).is_ok(),
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
    /// What the worker knows and the handle reads.
    flags: Arc<Flags>,
    /// How to open a session: snapshots are written and read over sessions of their own.
    connector: Connector,
    /// Commits notified since [`Store::wait_for_change`] last returned.
    changes: Arc<Changes>,
    /// Whether the listening connection was asked for.
    listening: AtomicBool,
}

/// What the worker sets and the store's handle reads.
#[derive(Default)]
struct Flags {
    /// Whether this handle holds the writer's lock: set by the worker, which sees the
    /// session end or a commit fenced off.
    writer: AtomicBool,
    /// Whether snapshots are written to [`SNAPSHOT_TABLE`] (else, as before it, as `S`
    /// records: a writer whose role may not create it).
    chunked_snapshots: AtomicBool,
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

/// What the server said (a refused login, a missing privilege), or the client's error
/// with its cause: tokio-postgres's own text names only the kind of error ("db error",
/// "error performing TLS handshake").
fn describe(error: &tokio_postgres::Error) -> String {
    match (error.as_db_error(), std::error::Error::source(error)) {
        // `cert` authentication, or `clientcert=verify-ca|verify-full`, without one.
        (Some(db), _)
            if db.code()
                == &tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                && db.message().contains("client certificate") =>
        {
            format!("{db} (sslcert and sslkey in the URL, or PGSSLCERT and PGSSLKEY, name it)")
        }
        (Some(db), _) => db.to_string(),
        (None, Some(cause)) => format!("{error}: {cause}"),
        (None, None) => error.to_string(),
    }
}

fn db_error(context: &str, error: tokio_postgres::Error) -> StoreError {
    let source = std::io::Error::other(describe(&error));
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
        use rustls::AlertDescription as Alert;
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
            // A server sends these only about the certificate the client presented.
            rustls::Error::AlertReceived(Alert::CertificateRequired) => {
                "the server requires a client certificate (sslcert and sslkey): "
            }
            rustls::Error::AlertReceived(Alert::ProtocolVersion) => {
                "the server speaks no TLS version this client does (1.2 and 1.3): "
            }
            rustls::Error::AlertReceived(
                Alert::UnknownCA
                | Alert::BadCertificate
                | Alert::UnsupportedCertificate
                | Alert::CertificateRevoked
                | Alert::CertificateExpired
                | Alert::CertificateUnknown,
            ) => "the server refused the client certificate (sslcert): ",
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
        // tokio-postgres knows neither the verify modes nor the certificate files: they
        // are taken out of the URL and applied here.
        let (rest, params) = tls::take_params(url);
        let mut config: tokio_postgres::Config = rest.parse().map_err(|e| StoreError::Io {
            context: format!("parsing the database URL {label}"),
            source: std::io::Error::other(format!("{e}")),
        })?;
        if let Some(password) = find_password(&config, options.password_file.as_deref())? {
            config.password(password);
        }
        let tls = tls::connector(params)?;
        config.ssl_mode(tls.first);
        let connector = Connector {
            config,
            tls: tls.connect,
            fallback: tls.fallback,
        };
        let connector_for_worker = connector.clone();
        let (jobs, receiver) = tokio::sync::mpsc::unbounded_channel();
        let (ready, started) = mpsc::channel::<Result<Option<bool>, StoreError>>();
        let options_for_worker = options.clone();
        let label_for_worker = label.clone();
        let flags = Arc::new(Flags::default());
        let flags_for_worker = Arc::clone(&flags);
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
                    connector_for_worker,
                    options_for_worker,
                    label_for_worker,
                    flags_for_worker,
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
            flags,
            connector,
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

impl PostgresStore {
    /// How snapshot sessions connect: as the store's own, under a name of their own.
    fn snapshot_connector(&self) -> Connector {
        let mut connector = self.connector.clone();
        connector.config.application_name(SNAPSHOT_SESSION_NAME);
        connector
    }

    /// Runs `work` with a session of its own, on a thread of its own, and waits for it:
    /// a snapshot's hundreds of megabytes never pass through the session (or the thread)
    /// that appends, so appends go on meanwhile. The session is closed after.
    fn on_own_session<T, F>(
        &self,
        doing: &str,
        work: impl FnOnce(tokio_postgres::Client) -> F + Send,
    ) -> Result<T, StoreError>
    where
        T: Send,
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        let connector = self.snapshot_connector();
        let context = format!("{doing}: connecting to {}", self.label);
        std::thread::scope(|scope| {
            let session = std::thread::Builder::new()
                .name("claim-ledger-snapshot-session".into())
                .spawn_scoped(scope, move || {
                    session_runtime()?.block_on(async {
                        let (client, driver) = connector.connect(None, &context).await?;
                        let done = work(client).await;
                        // `work` has dropped the client, which closes the session.
                        let _ = driver.await;
                        done
                    })
                })
                .map_err(|source| StoreError::Io {
                    context: format!("{doing}: starting its thread"),
                    source,
                })?;
            session.join().unwrap_or_else(|_| {
                Err(StoreError::Io {
                    context: doing.to_string(),
                    source: std::io::Error::other("the snapshot session's thread panicked"),
                })
            })
        })
    }

    /// The snapshot after `seq` as a stream of its chunks, fetched by a session of its
    /// own one ahead of the reader; `None` when it is stored in neither layout.
    fn open_snapshot(&self, seq: u64) -> Result<Option<SnapshotStream>, StoreError> {
        let row = chunk_seq(seq)?;
        let connector = self.snapshot_connector();
        let context = format!(
            "reading the snapshot at seq {seq}: connecting to {}",
            self.label
        );
        // One chunk waits in the channel while the reader decodes the one before and the
        // session fetches the one after: three at most in memory.
        let (pieces, fetched) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("claim-ledger-snapshot-reader".into())
            .spawn(move || match session_runtime() {
                Ok(runtime) => {
                    runtime.block_on(fetch_snapshot(connector, context, seq, row, pieces))
                }
                Err(e) => {
                    let _ = pieces.send(Fetched::Failed(e));
                }
            })
            .map_err(|source| StoreError::Io {
                context: format!("reading the snapshot at seq {seq}: starting its thread"),
                source,
            })?;
        let (current, ended) = match fetched.recv() {
            Ok(Fetched::Absent) => return Ok(None),
            Ok(Fetched::Piece(first)) => (first, false),
            Ok(Fetched::End) => (Vec::new(), true),
            Ok(Fetched::Failed(e)) => return Err(e),
            Err(_) => return Err(session_ended(seq)),
        };
        Ok(Some(SnapshotStream {
            seq,
            fetched,
            current,
            at: 0,
            ended,
        }))
    }
}

/// The runtime of a snapshot session's thread.
fn session_runtime() -> Result<tokio::runtime::Runtime, StoreError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| StoreError::Io {
            context: "starting a PostgreSQL client for a snapshot".into(),
            source,
        })
}

/// What a snapshot's reading session passes to its reader, in order: `Absent`, or its
/// pieces then `End`; `Failed` ends it anywhere.
enum Fetched {
    Absent,
    Piece(Vec<u8>),
    End,
    Failed(StoreError),
}

fn session_ended(seq: u64) -> StoreError {
    StoreError::Io {
        context: format!("reading the snapshot at seq {seq}"),
        source: std::io::Error::other("the session reading it stopped"),
    }
}

/// Reads the snapshot after `seq` (`row` in the chunk table) into `pieces`, a chunk at a
/// time through a cursor, in one read-only transaction: the chunks of one version, even
/// if the snapshot is removed or rewritten meanwhile. Without chunks, a copy kept among
/// the records (a database written before the chunk table) is the one piece. Stops as
/// soon as the reader is gone.
async fn fetch_snapshot(
    connector: Connector,
    context: String,
    seq: u64,
    row: i64,
    pieces: mpsc::SyncSender<Fetched>,
) {
    let fetched = async {
        let (mut client, driver) = connector.connect(None, &context).await?;
        let failed = |e| db_error(&format!("reading the snapshot at seq {seq}"), e);
        let transaction = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(failed)?;
        let chunked = transaction
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&SNAPSHOT_TABLE])
            .await
            .map_err(failed)?
            .get::<_, bool>(0);
        let mut found = false;
        if chunked {
            let cursor = transaction
                .bind(
                    &format!("SELECT bytes FROM {SNAPSHOT_TABLE} WHERE seq = $1 ORDER BY chunk"),
                    &[&row],
                )
                .await
                .map_err(failed)?;
            loop {
                let rows = transaction.query_portal(&cursor, 1).await.map_err(failed)?;
                let Some(chunk) = rows.first() else { break };
                found = true;
                // The blocking send waits for the reader to take the chunk before; nothing
                // else runs on this thread meanwhile.
                if pieces.send(Fetched::Piece(chunk.get(0))).is_err() {
                    return Ok(());
                }
            }
        }
        if !found {
            let key = keys::seq_key(keys::SNAPSHOT, seq);
            let record = transaction
                .query_opt(
                    &format!("SELECT value FROM {TABLE} WHERE key = $1"),
                    &[&key.as_slice()],
                )
                .await
                .map_err(failed)?;
            match record {
                Some(record) => found = pieces.send(Fetched::Piece(record.get(0))).is_ok(),
                None => {
                    let _ = pieces.send(Fetched::Absent);
                }
            }
        }
        if found {
            let _ = pieces.send(Fetched::End);
        }
        drop(transaction);
        drop(client);
        let _ = driver.await;
        Ok(())
    };
    if let Err(e) = fetched.await {
        let _ = pieces.send(Fetched::Failed(e));
    }
}

/// A stored snapshot read as it is fetched ([`fetch_snapshot`]).
struct SnapshotStream {
    seq: u64,
    fetched: mpsc::Receiver<Fetched>,
    /// The piece being read, from `at`.
    current: Vec<u8>,
    at: usize,
    /// Whether the last piece has come.
    ended: bool,
}

impl SnapshotStream {
    /// The next piece; `None` after the last.
    fn next_piece(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        if self.ended {
            return Ok(None);
        }
        match self.fetched.recv() {
            Ok(Fetched::Piece(piece)) => Ok(Some(piece)),
            Ok(Fetched::End | Fetched::Absent) => {
                self.ended = true;
                Ok(None)
            }
            Ok(Fetched::Failed(e)) => {
                self.ended = true;
                Err(e)
            }
            Err(_) => {
                self.ended = true;
                Err(session_ended(self.seq))
            }
        }
    }

    /// The whole snapshot, for [`Store::get`].
    fn read_all(mut self) -> Result<Vec<u8>, StoreError> {
        let mut bytes = std::mem::take(&mut self.current);
        while let Some(piece) = self.next_piece()? {
            bytes.extend_from_slice(&piece);
        }
        Ok(bytes)
    }
}

impl std::io::Read for SnapshotStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.current.len() && !buf.is_empty() {
            match self.next_piece().map_err(std::io::Error::other)? {
                Some(piece) => (self.current, self.at) = (piece, 0),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
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
    flags: Arc<Flags>,
    changes: Arc<Changes>,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<Job>,
    ready: mpsc::Sender<Result<Option<bool>, StoreError>>,
) {
    let (mut client, mut connection) = match connector
        .connect(None, &format!("connecting to {label}"))
        .await
    {
        Ok(pair) => pair,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let lease = options.lease.unwrap_or(DEFAULT_LEASE);
    let mut writer = WriterState::default();
    match prepare(&client, &options, &label).await {
        Ok(None) => {
            let _ = ready.send(Ok(None));
            return;
        }
        Ok(Some(chunked)) => flags.chunked_snapshots.store(chunked, Ordering::SeqCst),
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
    flags.writer.store(writer.holds_lock, Ordering::SeqCst);
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
                    flags.writer.store(false, Ordering::SeqCst);
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
            flags.writer.store(false, Ordering::SeqCst);
            match connector
                .connect(None, &format!("reconnecting to {label}"))
                .await
            {
                Ok((new_client, new_connection)) => {
                    client = new_client;
                    connection = new_connection;
                }
                Err(error) => {
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
            Job::GetMany(keys, reply) => {
                let result = client
                    .query(
                        &format!("SELECT key, value FROM {TABLE} WHERE key = ANY($1::bytea[])"),
                        &[&keys],
                    )
                    .await
                    .map(|rows| key_values(&rows))
                    .map_err(|e| db_error("reading records", e));
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
                    .map(|rows| key_values(&rows))
                    .map_err(|e| db_error("scanning records", e));
                let _ = reply.send(result);
            }
            Job::SnapshotSeqs(reply) => {
                let _ = reply.send(snapshot_seqs(&client).await);
            }
            Job::Commit(batch, reply) => {
                let result = match writer.holds_lock {
                    true => {
                        let chunked = flags.chunked_snapshots.load(Ordering::SeqCst);
                        commit(&mut client, &mut writer, batch, chunked).await
                    }
                    false => Err(StoreError::NotWriter(label.clone())),
                };
                flags.writer.store(writer.holds_lock, Ordering::SeqCst);
                let _ = reply.send(result);
            }
            Job::BecomeWriter(reply) => {
                let result = become_writer(&client, &mut writer, lease).await;
                flags.writer.store(writer.holds_lock, Ordering::SeqCst);
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

/// How to open a session: the parsed URL (with its password, its `sslmode` the first
/// attempt's) and the TLS it asks for.
#[derive(Clone)]
struct Connector {
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// What a second attempt asks for when the first fails, as libpq does: `prefer` tries
    /// again without TLS, `allow` (which starts without) with it.
    fallback: Option<tokio_postgres::config::SslMode>,
}

impl Connector {
    /// Opens a session, its connection driven by a task of its own that signals
    /// `changes` at every notification, when given; a failure is said with `context`.
    async fn connect(
        &self,
        changes: Option<Arc<Changes>>,
        context: &str,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), StoreError> {
        let first = match self.config.connect(self.tls.clone()).await {
            Ok((client, connection)) => {
                return Ok((client, tokio::spawn(drive(connection, changes))))
            }
            Err(e) => e,
        };
        // A server that could not be reached at all would not be reached the other way
        // either: trying again only doubles the wait (and `connect_timeout`).
        let Some(mode) = self.fallback.filter(|_| !unreachable(&first)) else {
            return Err(db_error(context, first));
        };
        let mut config = self.config.clone();
        config.ssl_mode(mode);
        match config.connect(self.tls.clone()).await {
            Ok((client, connection)) => Ok((client, tokio::spawn(drive(connection, changes)))),
            Err(second) => Err(both_failed(
                context,
                self.config.get_ssl_mode(),
                first,
                second,
            )),
        }
    }
}

/// The (key, value) pairs of rows selected as `key, value`.
fn key_values(rows: &[tokio_postgres::Row]) -> Vec<(Vec<u8>, Vec<u8>)> {
    rows.iter()
        .map(|row| (row.get::<_, Vec<u8>>(0), row.get::<_, Vec<u8>>(1)))
        .collect()
}

/// Whether a session failed before reaching the server (no address, no TCP connection):
/// tokio-postgres's error kinds are private, but that one alone reads so.
fn unreachable(error: &tokio_postgres::Error) -> bool {
    error.to_string() == "error connecting to server"
}

/// Both attempts of `prefer` or `allow` failed (the first with `first_mode`): each said,
/// since either may be the one that matters (a password refused over TLS, then a server
/// that accepts nothing without it), unless they say the same.
fn both_failed(
    context: &str,
    first_mode: tokio_postgres::config::SslMode,
    first: tokio_postgres::Error,
    second: tokio_postgres::Error,
) -> StoreError {
    if describe(&first) == describe(&second) {
        return db_error(context, second);
    }
    let (first_how, second_how) = match first_mode {
        tokio_postgres::config::SslMode::Disable => ("without TLS", "then over TLS"),
        _ => ("over TLS", "then without TLS"),
    };
    let (first, second) = (db_error(first_how, first), db_error(second_how, second));
    let source = std::io::Error::other(format!("{first}; {second}"));
    let context = context.to_string();
    match first.is_unavailable() && second.is_unavailable() {
        true => StoreError::Unavailable { context, source },
        false => StoreError::Io { context, source },
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
        let opened = connector
            .connect(
                Some(Arc::clone(&changes)),
                "opening the listening connection",
            )
            .await;
        match opened {
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

/// Checks (or creates) the tables: `None` when there is no ledger, else whether snapshots
/// are written to [`SNAPSHOT_TABLE`].
async fn prepare(
    client: &tokio_postgres::Client,
    options: &PostgresOptions,
    label: &str,
) -> Result<Option<bool>, StoreError> {
    let exists = |table: &'static str| async move {
        client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await
            .map(|row| row.get::<_, bool>(0))
            .map_err(|e| db_error(&format!("looking for {table} in {label}"), e))
    };
    if !exists(TABLE).await? {
        if !options.create {
            return Ok(None);
        }
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (key bytea PRIMARY KEY, value bytea NOT NULL)"
            ))
            .await
            .map_err(|e| db_error(&format!("creating {TABLE} in {label}"), e))?;
    }
    // Readers create nothing (and write no snapshot, so the answer does not matter to
    // them): they read snapshots in either layout, and find the chunk table whenever a
    // writer has made it.
    if exists(SNAPSHOT_TABLE).await? || !options.writer {
        return Ok(Some(true));
    }
    let error = match client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {SNAPSHOT_TABLE} (seq bigint NOT NULL, chunk integer NOT NULL, \
             bytes bytea NOT NULL, PRIMARY KEY (seq, chunk))"
        ))
        .await
    {
        Ok(()) => return Ok(Some(true)),
        Err(error) => error,
    };
    use tokio_postgres::error::SqlState;
    let code = error.code();
    if code == Some(&SqlState::UNIQUE_VIOLATION) || code == Some(&SqlState::DUPLICATE_TABLE) {
        // Another replica created it at the same moment.
        return Ok(Some(true));
    }
    if code == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
        // A database whose tables were made for a role that may only read and write them
        // (docs/OPERATIONS.md): it goes on working as before, its snapshots records of the
        // one table, until an operator creates the other.
        tracing::warn!(
            database = %label,
            "cannot create {SNAPSHOT_TABLE} (permission denied): snapshots are written whole, as records of {TABLE}; create the table (docs/OPERATIONS.md) to have them written in chunks"
        );
        return Ok(Some(false));
    }
    Err(db_error(
        &format!("creating {SNAPSHOT_TABLE} in {label}"),
        error,
    ))
}

/// Whether `error` says that a table does not exist (a database that no writer of this
/// version has opened has no chunk table).
fn no_such_table(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)
}

/// The seqs of the stored snapshots, ascending, in each layout.
#[derive(Debug, Default)]
struct StoredSnapshots {
    /// In the chunk table.
    chunked: Vec<u64>,
    /// As `S` records (written before the chunk table, or by a writer that may not create it).
    records: Vec<u64>,
}

/// The seqs of the snapshots stored in each layout: keys alone, since a snapshot is
/// hundreds of megabytes at cluster scale.
async fn snapshot_seqs(client: &tokio_postgres::Client) -> Result<StoredSnapshots, StoreError> {
    let chunked = match client
        .query(
            &format!("SELECT DISTINCT seq FROM {SNAPSHOT_TABLE} ORDER BY seq"),
            &[],
        )
        .await
    {
        Ok(rows) => rows
            .iter()
            .map(|row| row.get::<_, i64>(0))
            .collect::<Vec<_>>(),
        Err(e) if no_such_table(&e) => Vec::new(),
        Err(e) => return Err(db_error("listing snapshots", e)),
    };
    let records = client
        .query(
            &format!("SELECT key FROM {TABLE} WHERE key >= $1 AND key <= $2 ORDER BY key"),
            &[
                &keys::seq_key(keys::SNAPSHOT, 0).as_slice(),
                &keys::seq_key(keys::SNAPSHOT, u64::MAX).as_slice(),
            ],
        )
        .await
        .map_err(|e| db_error("listing snapshots", e))?;
    Ok(StoredSnapshots {
        chunked: chunked
            .into_iter()
            .filter_map(|seq: i64| u64::try_from(seq).ok())
            .collect(),
        records: records
            .iter()
            .filter_map(|row| snapshot_seq(&row.get::<_, Vec<u8>>(0)))
            .collect(),
    })
}

/// The seq of a well-formed snapshot record's key (`S` and a u64).
fn snapshot_seq(key: &[u8]) -> Option<u64> {
    match key.len() == 9 && key.first() == Some(&keys::SNAPSHOT) {
        true => keys::seq_of(key),
        false => None,
    }
}

/// `seq` as the chunk table's `bigint`. A seq past `i64::MAX` is never reached (a ledger
/// appending a million entries a second would take 290,000 years).
fn chunk_seq(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| StoreError::Io {
        context: format!("storing the snapshot at seq {seq}"),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a snapshot seq past 2^63 - 1 has no row in the chunk table",
        ),
    })
}

/// A snapshot's bytes as the chunk rows it is stored in: one empty row for an empty one,
/// so that it is still there.
fn chunks_of(bytes: &[u8]) -> impl Iterator<Item = (i32, &[u8])> {
    let pieces: Box<dyn Iterator<Item = &[u8]>> = match bytes.is_empty() {
        true => Box::new(std::iter::once(bytes)),
        false => Box::new(bytes.chunks(SNAPSHOT_CHUNK)),
    };
    // A snapshot of 8 PiB would overflow the index: far beyond any projection in memory.
    (0..=i32::MAX).zip(pieces)
}

/// What the encoder hands the snapshot's session.
enum SnapshotPiece {
    /// The next [`SNAPSHOT_CHUNK`] bytes (the last one shorter, and one empty chunk for an
    /// empty snapshot, as [`chunks_of`] cuts them).
    Chunk(Vec<u8>),
    /// Every chunk was sent: commit.
    End,
}

/// Cuts the encoder's bytes into chunks for the snapshot's session.
struct ChunkWriter {
    chunks: std::sync::mpsc::SyncSender<SnapshotPiece>,
    pending: Vec<u8>,
    sent: usize,
    /// Whether the session stopped taking chunks (its error is the one to report).
    session_stopped: bool,
}

impl ChunkWriter {
    fn send(&mut self, piece: SnapshotPiece) -> std::io::Result<()> {
        self.chunks.send(piece).map_err(|_| {
            self.session_stopped = true;
            std::io::Error::other("the snapshot's session stopped")
        })
    }

    /// Sends the last chunk and the end.
    fn finish(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() || self.sent == 0 {
            let last = std::mem::take(&mut self.pending);
            self.send(SnapshotPiece::Chunk(last))?;
            self.sent += 1;
        }
        self.send(SnapshotPiece::End)
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = SNAPSHOT_CHUNK - self.pending.len();
        let taken = buf.len().min(room);
        self.pending.extend_from_slice(&buf[..taken]);
        if self.pending.len() == SNAPSHOT_CHUNK {
            let full = std::mem::replace(&mut self.pending, Vec::with_capacity(SNAPSHOT_CHUNK));
            self.send(SnapshotPiece::Chunk(full))?;
            self.sent += 1;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Removes the chunks of the snapshot after `seq`, if any (and if there is a chunk table:
/// a database no writer of this version has opened has none).
async fn remove_chunks(
    transaction: &tokio_postgres::Transaction<'_>,
    seq: i64,
) -> Result<(), StoreError> {
    // Looked for first: a statement on a missing table would fail the whole transaction.
    let table = transaction
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&SNAPSHOT_TABLE])
        .await
        .map_err(|e| db_error("removing a snapshot", e))?
        .get::<_, bool>(0);
    if table {
        transaction
            .execute(
                &format!("DELETE FROM {SNAPSHOT_TABLE} WHERE seq = $1"),
                &[&seq],
            )
            .await
            .map_err(|e| db_error("removing a snapshot", e))?;
    }
    Ok(())
}

/// Writes the snapshot after `seq` as chunk rows in `transaction`, replacing any stored
/// at that seq.
async fn write_chunks(
    transaction: &tokio_postgres::Transaction<'_>,
    seq: i64,
    bytes: &[u8],
) -> Result<(), StoreError> {
    transaction
        .execute(
            &format!("DELETE FROM {SNAPSHOT_TABLE} WHERE seq = $1"),
            &[&seq],
        )
        .await
        .map_err(|e| db_error("replacing a snapshot", e))?;
    let insert = transaction
        .prepare(&format!(
            "INSERT INTO {SNAPSHOT_TABLE} (seq, chunk, bytes) VALUES ($1, $2, $3)"
        ))
        .await
        .map_err(|e| db_error("writing a snapshot", e))?;
    for (index, piece) in chunks_of(bytes) {
        transaction
            .execute(&insert, &[&seq, &index, &piece])
            .await
            .map_err(|e| db_error("writing a snapshot", e))?;
    }
    Ok(())
}

/// One batch as one transaction, fenced on the head: the last write of each key wins, as
/// applying them in order would leave it. With `chunked`, the `S` records it sets (a
/// migration's, a repair tool's: the ledger writes snapshots through
/// [`Store::put_snapshot`]) go to the chunk table, replacing any copy among the records.
async fn commit(
    client: &mut tokio_postgres::Client,
    writer: &mut WriterState,
    batch: Batch,
    chunked: bool,
) -> Result<(), StoreError> {
    let mut last: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> = Default::default();
    for (key, value) in batch.into_writes() {
        last.insert(key, value);
    }
    let (mut keys, mut values, mut removed) = (Vec::new(), Vec::new(), Vec::new());
    // Snapshots set or removed: chunks go, or are replaced (and their seqs checked) in
    // this transaction. Removed ones may be in either layout.
    let mut snapshots = Vec::new();
    for (key, value) in last {
        if let Some(seq) = snapshot_seq(&key) {
            if chunked || value.is_none() {
                snapshots.push((chunk_seq(seq), value));
                removed.push(key);
                continue;
            }
        }
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
    for (seq, value) in snapshots {
        let seq = seq?;
        match value {
            Some(bytes) => write_chunks(&transaction, seq, &bytes).await?,
            None => remove_chunks(&transaction, seq).await?,
        }
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
        if let Some(seq) = snapshot_seq(key) {
            return match self.open_snapshot(seq)? {
                Some(stream) => stream.read_all().map(Some),
                None => Ok(None),
            };
        }
        self.ask(|reply| Job::Get(key.to_vec(), reply))
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        // Snapshots are read from their chunks, one at a time.
        if keys.len() < 2 || keys.iter().any(|key| snapshot_seq(key).is_some()) {
            return keys.iter().map(|key| self.get(key)).collect();
        }
        let mut found = std::collections::HashMap::with_capacity(keys.len());
        for some in keys.chunks(GET_MANY_KEYS) {
            found.extend(self.ask(|reply| Job::GetMany(some.to_vec(), reply))?);
        }
        Ok(keys.iter().map(|key| found.get(key).cloned()).collect())
    }

    fn scan(&self, from: &[u8], to: &[u8], reverse: bool) -> Records<'_> {
        if from > to {
            return Box::new(std::iter::empty());
        }
        let records = Box::new(PagedRecords {
            store: self,
            from: from.to_vec(),
            to: to.to_vec(),
            reverse,
            page: Vec::new().into_iter(),
            done: false,
        });
        // The chunk table holds only `S` records: read it only where the range reaches them.
        let (first, past) = ([keys::SNAPSHOT], [keys::SNAPSHOT + 1]);
        if to < &first[..] || from >= &past[..] {
            return records;
        }
        let mut seqs = match self.ask(Job::SnapshotSeqs) {
            Ok(stored) => stored.chunked,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        seqs.retain(|&seq| {
            let key = keys::seq_key(keys::SNAPSHOT, seq);
            from <= &key[..] && &key[..] <= to
        });
        if reverse {
            seqs.reverse();
        }
        // Each snapshot is read when the scan reaches it (a migration copies one at a time).
        let chunked = seqs.into_iter().filter_map(move |seq| {
            let key = keys::seq_key(keys::SNAPSHOT, seq).to_vec();
            match self.get(&key) {
                Ok(Some(bytes)) => Some(Ok((key, bytes))),
                // Removed since the listing (retention): as if it had never been there.
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            }
        });
        Box::new(MergedRecords::new(records, Box::new(chunked), reverse))
    }

    fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.ask(|reply| Job::Commit(batch, reply))
    }

    fn put_snapshot(&self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        if self.flags.chunked_snapshots.load(Ordering::SeqCst) {
            return self.put_snapshot_streamed(seq, &mut |out| out.write_all(bytes));
        }
        if !self.is_writer() {
            return Err(StoreError::NotWriter(self.label.clone()));
        }
        let key = keys::seq_key(keys::SNAPSHOT, seq);
        self.on_own_session("writing a snapshot", move |mut client| async move {
            let failed = |e| db_error(&format!("writing the snapshot at seq {seq}"), e);
            let transaction = client.transaction().await.map_err(failed)?;
            transaction
                .execute(
                    &format!(
                        "INSERT INTO {TABLE} (key, value) VALUES ($1, $2) \
                         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                    ),
                    &[&key.as_slice(), &bytes],
                )
                .await
                .map_err(failed)?;
            transaction.commit().await.map_err(failed)
        })
    }

    fn put_snapshot_streamed(
        &self,
        seq: u64,
        encode: super::SnapshotEncoder<'_>,
    ) -> Result<(), StoreError> {
        if !self.flags.chunked_snapshots.load(Ordering::SeqCst) {
            // Kept as one record (a role that cannot create the chunk table): whole.
            let mut bytes = Vec::new();
            encode(&mut bytes).map_err(|source| StoreError::Io {
                context: format!("encoding the snapshot at seq {seq}"),
                source,
            })?;
            return self.put_snapshot(seq, &bytes);
        }
        if !self.is_writer() {
            return Err(StoreError::NotWriter(self.label.clone()));
        }
        // Each chunk goes to the snapshot's session as soon as it is full, so the writer
        // never holds more than two; the session commits only after the last one. (Its
        // runtime is its own: waiting for the next chunk blocks nothing else, and the
        // encoder may run on a thread of an async runtime, where an async channel's
        // blocking send would panic.)
        let (key, row) = (keys::seq_key(keys::SNAPSHOT, seq), chunk_seq(seq)?);
        let (chunks, received) = std::sync::mpsc::sync_channel::<SnapshotPiece>(1);
        std::thread::scope(|scope| {
            let session = scope.spawn(move || {
                self.on_own_session("writing a snapshot", move |mut client| async move {
                    let failed = |e| db_error(&format!("writing the snapshot at seq {seq}"), e);
                    let transaction = client.transaction().await.map_err(failed)?;
                    transaction
                        .execute(
                            &format!("DELETE FROM {SNAPSHOT_TABLE} WHERE seq = $1"),
                            &[&row],
                        )
                        .await
                        .map_err(failed)?;
                    let insert = transaction
                        .prepare(&format!(
                            "INSERT INTO {SNAPSHOT_TABLE} (seq, chunk, bytes) VALUES ($1, $2, $3)"
                        ))
                        .await
                        .map_err(failed)?;
                    let mut index = 0i32;
                    loop {
                        match received.recv().ok() {
                            Some(SnapshotPiece::Chunk(piece)) => {
                                transaction
                                    .execute(&insert, &[&row, &index, &piece.as_slice()])
                                    .await
                                    .map_err(failed)?;
                                index = index.checked_add(1).ok_or_else(|| {
                                    StoreError::Damaged("a snapshot of over 8 PiB".into())
                                })?;
                            }
                            Some(SnapshotPiece::End) => break,
                            // The encoder failed: the transaction rolls back as it drops.
                            None => {
                                return Err(StoreError::Io {
                                    context: format!("writing the snapshot at seq {seq}"),
                                    source: std::io::Error::other("its encoder stopped"),
                                })
                            }
                        }
                    }
                    // A copy kept among the records at this seq (by a version before, or
                    // before the chunk table was made) must not outlive it.
                    transaction
                        .execute(
                            &format!("DELETE FROM {TABLE} WHERE key = $1"),
                            &[&key.as_slice()],
                        )
                        .await
                        .map_err(failed)?;
                    transaction.commit().await.map_err(failed)
                })
            });
            let mut writer = ChunkWriter {
                chunks,
                pending: Vec::with_capacity(SNAPSHOT_CHUNK),
                sent: 0,
                session_stopped: false,
            };
            let encoded = encode(&mut writer).and_then(|()| writer.finish());
            let session_stopped = writer.session_stopped;
            drop(writer);
            let stored = session.join().unwrap_or_else(|_| {
                Err(StoreError::Damaged(
                    "the snapshot session's thread panicked".into(),
                ))
            });
            match (encoded, stored) {
                (Ok(()), stored) => stored,
                // The session's own error explains why it stopped taking chunks.
                (Err(_), Err(stored)) if session_stopped => Err(stored),
                (Err(source), _) => Err(StoreError::Io {
                    context: format!("encoding the snapshot at seq {seq}"),
                    source,
                }),
            }
        })
    }

    fn snapshot_reader(
        &self,
        seq: u64,
    ) -> Result<Option<Box<dyn std::io::Read + Send + '_>>, StoreError> {
        Ok(self
            .open_snapshot(seq)?
            .map(|stream| Box::new(stream) as Box<dyn std::io::Read + Send>))
    }

    fn remove_snapshot(&self, seq: u64) -> Result<(), StoreError> {
        if !self.is_writer() {
            return Err(StoreError::NotWriter(self.label.clone()));
        }
        // On a session of its own too: removing a snapshot's hundreds of megabytes is work
        // for the server that appends should not wait behind.
        let (key, row) = (keys::seq_key(keys::SNAPSHOT, seq), chunk_seq(seq)?);
        self.on_own_session("removing a snapshot", move |mut client| async move {
            let failed = |e| db_error(&format!("removing the snapshot at seq {seq}"), e);
            let transaction = client.transaction().await.map_err(failed)?;
            remove_chunks(&transaction, row).await?;
            transaction
                .execute(
                    &format!("DELETE FROM {TABLE} WHERE key = $1"),
                    &[&key.as_slice()],
                )
                .await
                .map_err(failed)?;
            transaction.commit().await.map_err(failed)
        })
    }

    fn snapshot_seqs(&self) -> Result<Vec<u64>, StoreError> {
        let stored = self.ask(Job::SnapshotSeqs)?;
        let mut seqs = stored.chunked;
        seqs.extend(stored.records);
        seqs.sort_unstable();
        seqs.dedup();
        Ok(seqs)
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Every commit was a committed transaction.
        Ok(())
    }

    fn try_become_writer(&self) -> Result<bool, StoreError> {
        self.ask(Job::BecomeWriter)
    }

    fn is_writer(&self) -> bool {
        self.flags.writer.load(Ordering::SeqCst)
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }

    /// Every commit is a transaction (a lock on the head, the rows, a notification): one
    /// per append, not one per chunk of it.
    fn pipelines_commits(&self) -> bool {
        false
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
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
    use tokio_postgres::config::SslMode;

    use super::StoreError;

    /// The TLS parameters of a URL's query that tokio-postgres does not know (it knows
    /// neither the verify modes nor certificate files), percent-decoded as it decodes the
    /// others.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub(super) struct Params {
        pub(super) sslmode: Option<String>,
        pub(super) sslrootcert: Option<String>,
        pub(super) sslcert: Option<String>,
        pub(super) sslkey: Option<String>,
    }

    /// The URL without its [`Params`], and their values.
    pub(super) fn take_params(url: &str) -> (String, Params) {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_string(), Params::default());
        };
        let (mut params, mut kept) = (Params::default(), Vec::new());
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let slot = match pair.split_once('=') {
                Some(("sslmode", value)) => Some((&mut params.sslmode, value)),
                Some(("sslrootcert", value)) => Some((&mut params.sslrootcert, value)),
                Some(("sslcert", value)) => Some((&mut params.sslcert, value)),
                Some(("sslkey", value)) => Some((&mut params.sslkey, value)),
                _ => None,
            };
            match slot {
                Some((slot, value)) => *slot = Some(percent_decoded(value)),
                None => kept.push(pair),
            }
        }
        let rest = match kept.is_empty() {
            true => base.to_string(),
            false => format!("{base}?{}", kept.join("&")),
        };
        (rest, params)
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

    /// What tokio-postgres is told, and the TLS client it connects with.
    pub(super) struct Tls {
        /// Whether the first attempt asks the server for TLS.
        pub(super) first: SslMode,
        /// What a second attempt asks for when the first fails (`prefer`, `allow`).
        pub(super) fallback: Option<SslMode>,
        /// The TLS client.
        pub(super) connect: tokio_postgres_rustls::MakeRustlsConnect,
    }

    /// The TLS that `sslmode`, `sslrootcert`, `sslcert` and `sslkey` (each from the URL,
    /// else from `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT` and `PGSSLKEY`) ask for, as
    /// libpq reads them:
    ///
    /// * `disable`: no TLS; `prefer` (the default): TLS when the server offers it, and if
    ///   a session over TLS fails (the handshake, or the server refusing it), another
    ///   without; `allow`: a session without TLS, and if that fails, one with it;
    ///   `require`: TLS or no connection;
    /// * `verify-ca`: TLS, with a server certificate signed by a CA of `sslrootcert` (by
    ///   default `~/.postgresql/root.crt`); `verify-full`: also naming the URL's host;
    /// * `require` with a root certificate file checks the chain as `verify-ca` does;
    ///   `sslrootcert=system` is the system's trust store, with `verify-full` only;
    /// * `sslcert` and `sslkey`: the client certificate (chain) and its key, PEM, sent
    ///   when the server asks for one (`clientcert=verify-ca|verify-full` or `cert`
    ///   authentication in `pg_hba.conf`); by default `~/.postgresql/postgresql.crt` and
    ///   `postgresql.key` when that certificate exists.
    pub(super) fn connector(params: Params) -> Result<Tls, StoreError> {
        let context = "reading the database URL's TLS settings";
        let from_env = |given: Option<String>, variable: &str| {
            given
                .or_else(|| std::env::var(variable).ok())
                .filter(|value| !value.is_empty())
        };
        let mode = from_env(params.sslmode, "PGSSLMODE").unwrap_or_else(|| "prefer".into());
        let explicit_root = from_env(params.sslrootcert, "PGSSLROOTCERT");
        let home_file = |name: &str| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".postgresql").join(name))
                .filter(|path| path.is_file())
        };
        let root = match explicit_root.as_deref() {
            Some("system") => Some(Roots::System),
            Some(path) => Some(Roots::File(PathBuf::from(path))),
            None => home_file("root.crt").map(Roots::File),
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
        let (first, fallback, check) = match mode.as_str() {
            "disable" => (SslMode::Disable, None, Check::Nothing),
            "allow" => (SslMode::Disable, Some(SslMode::Require), Check::Nothing),
            "prefer" => (SslMode::Prefer, Some(SslMode::Disable), Check::Nothing),
            "require" => match root {
                Some(root) => (SslMode::Require, None, Check::Chain(root)),
                None => (SslMode::Require, None, Check::Nothing),
            },
            "verify-ca" => (
                SslMode::Require,
                None,
                Check::Chain(root.ok_or_else(|| no_root(&mode))?),
            ),
            "verify-full" => (
                SslMode::Require,
                None,
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
        // Only what a session may use: `disable` never sends a certificate.
        let identity = match first == SslMode::Disable && fallback.is_none() {
            true => None,
            false => client_identity(
                from_env(params.sslcert, "PGSSLCERT"),
                from_env(params.sslkey, "PGSSLKEY"),
                home_file,
            )?,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(context, e.to_string()))?;
        let builder = match check {
            Check::Nothing => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))),
            Check::Chain(roots) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyName(verifier(roots, provider)?))),
            Check::ChainAndName(roots) => builder.with_webpki_verifier(verifier(roots, provider)?),
        };
        let config = match identity {
            Some(identity) => builder
                .with_client_auth_cert(identity.chain, identity.key)
                .map_err(|e| {
                    invalid(
                        &format!(
                            "loading the client certificate {} and key {}",
                            identity.cert_path.display(),
                            identity.key_path.display()
                        ),
                        e.to_string(),
                    )
                })?,
            None => builder.with_no_client_auth(),
        };
        Ok(Tls {
            first,
            fallback,
            connect: tokio_postgres_rustls::MakeRustlsConnect::new(config),
        })
    }

    /// A client certificate chain and its key, and where they came from.
    struct Identity {
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        cert_path: PathBuf,
        key_path: PathBuf,
    }

    /// The client certificate `sslcert` names and the key `sslkey` names, else
    /// `~/.postgresql/postgresql.crt` and `postgresql.key` (`home_file` finds those) when
    /// that certificate exists; `None` when there is none. A certificate named but absent
    /// is refused rather than left out (libpq leaves it out): the server's refusal of a
    /// session without one would not say which file was missing.
    fn client_identity(
        sslcert: Option<String>,
        sslkey: Option<String>,
        home_file: impl Fn(&str) -> Option<PathBuf>,
    ) -> Result<Option<Identity>, StoreError> {
        let Some(cert_path) = sslcert
            .map(PathBuf::from)
            .or_else(|| home_file("postgresql.crt"))
        else {
            return Ok(None);
        };
        // libpq's default key is in the home directory whatever `sslcert` names.
        let key_path = sslkey.map(PathBuf::from).unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".postgresql/postgresql.key"))
                .unwrap_or_else(|| PathBuf::from(".postgresql/postgresql.key"))
        });
        let cert_context = format!(
            "reading the client certificate file {}",
            cert_path.display()
        );
        let chain = CertificateDer::pem_file_iter(&cert_path)
            .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
            .map_err(|e| invalid(&cert_context, e.to_string()))?;
        if chain.is_empty() {
            return Err(invalid(&cert_context, "it holds no PEM certificate".into()));
        }
        let key_context = format!("reading the client key file {}", key_path.display());
        key_permissions_allowed(&key_path).map_err(|detail| invalid(&key_context, detail))?;
        let key = PrivateKeyDer::from_pem_file(&key_path)
            .map_err(|e| invalid(&key_context, e.to_string()))?;
        Ok(Some(Identity {
            chain,
            key,
            cert_path,
            key_path,
        }))
    }

    /// libpq's rule for a client key file: nobody but its owner may read it, unless root
    /// owns it, when its group may (a Kubernetes Secret mounted with `fsGroup`).
    fn key_permissions_allowed(path: &std::path::Path) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(path).map_err(|e| e.to_string())?;
        let (mode, root) = (metadata.mode() & 0o777, metadata.uid() == 0);
        let forbidden = if root { 0o037 } else { 0o077 };
        match mode & forbidden {
            0 => Ok(()),
            _ => Err(format!(
                "it has group or world access (mode {mode:04o}): it must be u=rw (0600) or \
                 less, or u=rw,g=r (0640) or less if root owns it"
            )),
        }
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
        let (rest, params) = tls::take_params(
            "postgres://u@h/db?sslmode=verify-full&connect_timeout=5&sslrootcert=%2Fetc%2Fca%20x.pem&sslcert=/c.pem&sslkey=/k%2Bey.pem",
        );
        assert_eq!(rest, "postgres://u@h/db?connect_timeout=5");
        assert_eq!(
            params,
            tls::Params {
                sslmode: Some("verify-full".into()),
                sslrootcert: Some("/etc/ca x.pem".into()),
                sslcert: Some("/c.pem".into()),
                sslkey: Some("/k+ey.pem".into()),
            }
        );
        let (rest, params) = tls::take_params("postgres://u@h/db?sslmode=require");
        assert_eq!(rest, "postgres://u@h/db");
        assert_eq!(params.sslmode.as_deref(), Some("require"));
        assert_eq!(
            tls::take_params("postgres://u@h/db"),
            ("postgres://u@h/db".to_string(), tls::Params::default())
        );
    }

    #[test]
    fn snapshots_are_cut_into_chunks_and_an_empty_one_is_one_empty_chunk() {
        let bytes: Vec<u8> = (0..SNAPSHOT_CHUNK * 2 + 5).map(|i| i as u8).collect();
        let chunks: Vec<(i32, &[u8])> = chunks_of(&bytes).collect();
        assert_eq!(
            chunks
                .iter()
                .map(|(i, c)| (*i, c.len()))
                .collect::<Vec<_>>(),
            [(0, SNAPSHOT_CHUNK), (1, SNAPSHOT_CHUNK), (2, 5)]
        );
        assert_eq!(
            chunks.iter().map(|(_, c)| *c).collect::<Vec<_>>().concat(),
            bytes
        );
        assert_eq!(chunks_of(&[]).collect::<Vec<_>>(), [(0, &[][..])]);
        assert_eq!(snapshot_seq(&keys::seq_key(keys::SNAPSHOT, 7)), Some(7));
        assert_eq!(snapshot_seq(&keys::seq_key(keys::ENTRY, 7)), None);
        assert_eq!(snapshot_seq(b"S"), None);
        assert!(chunk_seq(u64::MAX).is_err());
    }

    #[test]
    fn a_snapshot_stream_reads_its_pieces_in_order_and_says_when_its_session_failed() {
        use std::io::Read;
        let stream = |pieces: Vec<Fetched>| {
            let (send, fetched) = mpsc::sync_channel(pieces.len());
            for piece in pieces {
                send.send(piece).unwrap();
            }
            SnapshotStream {
                seq: 9,
                fetched,
                current: b"ab".to_vec(),
                at: 0,
                ended: false,
            }
        };
        let mut whole = Vec::new();
        stream(vec![
            Fetched::Piece(Vec::new()),
            Fetched::Piece(b"cde".to_vec()),
            Fetched::End,
        ])
        .read_to_end(&mut whole)
        .unwrap();
        assert_eq!(whole, b"abcde");
        let all = stream(vec![Fetched::Piece(b"c".to_vec()), Fetched::End]).read_all();
        assert_eq!(all.unwrap(), b"abc");
        // A session that fails, or stops, mid-way is an error, never a shorter snapshot.
        let failed = stream(vec![
            Fetched::Piece(b"c".to_vec()),
            Fetched::Failed(StoreError::Damaged("gone".into())),
        ])
        .read_to_end(&mut Vec::new());
        assert!(failed.unwrap_err().to_string().contains("gone"));
        let stopped = stream(vec![Fetched::Piece(b"c".to_vec())]).read_all();
        assert!(stopped.unwrap_err().to_string().contains("stopped"));
    }
}
