//! What the API asks of the process that feeds the ledger: whether its data is fresh
//! enough to answer from (binding rule check 7), and the counters `/metrics` exports. The
//! binary implements [`Freshness`] over its watchers (or, on a follower replica, over how
//! far behind the writer it is).

/// Freshness of the data (binding rule check 7), implemented by the binary over the watcher.
pub trait Freshness: Send + Sync + 'static {
    /// Whether every watcher has finished its initial list and its watch is healthy.
    fn ready(&self) -> bool;
    /// Per-stream detail, shown by `/readyz`.
    fn report(&self) -> serde_json::Value;
    /// For a replica of a shared ledger, its role, the writer's identity and how far it
    /// is behind (`/metrics`); `None` for a ledger of its own.
    fn replica(&self) -> Option<ReplicaReport> {
        None
    }
    /// Watch counters, exported by `/metrics`.
    fn counters(&self) -> WatchCounters;
    /// The watcher's batch flushes so far, if it measures them: exported as
    /// `claim_ledger_flushes_total` and `claim_ledger_flush_seconds_total` (their ratio
    /// over a window is the mean flush latency). `None` (the default) exports neither.
    fn flushes(&self) -> Option<FlushStats> {
        None
    }
    /// The writer's backlog (observed changes not yet durable), if the source tracks it:
    /// exported as `claim_ledger_writer_backlog_events` and
    /// `claim_ledger_writer_backlog_seconds`. A source whose backlog is past its bound
    /// answers `false` from [`Freshness::ready`].
    fn backlog(&self) -> Option<WriterBacklog> {
        None
    }
}

/// Observed changes waiting to become durable entries.
#[derive(Clone, Copy, Default, Debug, PartialEq)]
pub struct WriterBacklog {
    /// Changes in the group commit under way.
    pub events: u64,
    /// How long the oldest waiting change has waited, in seconds.
    pub age_seconds: f64,
    /// The bound past which checks answer `not_ready`, in seconds.
    pub limit_seconds: f64,
}

/// The watcher's ledger flushes since start.
#[derive(Clone, Copy, Default, Debug, PartialEq)]
pub struct FlushStats {
    /// Flushes done.
    pub count: u64,
    /// Time spent in them, in seconds.
    pub seconds: f64,
}

/// Counters of the watchers since start, for `/metrics`.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct WatchCounters {
    /// Watch streams that failed and were restarted.
    pub watch_errors: u64,
    /// Relists (initial lists after the first, e.g. after `410 Gone`).
    pub relists: u64,
    /// Objects recorded as missing on resync.
    pub resync_deletions: u64,
    /// Objects the normalizer refused.
    pub rejected_objects: u64,
}

/// Where a replica of a shared ledger stands, for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplicaReport {
    /// `true` on a follower, `false` on the writer.
    pub follower: bool,
    /// The writer's identity (host and process): this replica's own on the writer, the
    /// one the writer last published on a follower (`None` before any).
    pub writer: Option<String>,
    /// On a follower: the entries the writer had made durable at its last published
    /// status that this replica has not applied yet.
    pub lag_entries: Option<u64>,
    /// On a follower: how long ago it last read the whole log.
    pub caught_up_age_seconds: Option<f64>,
    /// On a follower: how long ago (by its own clock) the writer's status last changed.
    pub writer_status_age_seconds: Option<f64>,
}
