//! `/metrics`: Prometheus (OpenMetrics) text through the `prometheus-client` crate.
//!
//! Counted here: checks by decision and reason, check latency, denial records (appended,
//! dropped, failed) and their flush latency, refused bearer tokens, open HTTP connections,
//! connections closed for idleness, accept errors and request heads refused before
//! routing. Read at scrape time:
//! the ledger's counters since open (appends, duplicates, stale, ignored), its head and
//! durable seq, readiness, and the watchers' counters from [`crate::Freshness`].
//!
//! The watcher's batch flush latency is exported when its [`crate::Freshness`] reports
//! it ([`crate::Freshness::flushes`]: total count and seconds); the flushes of denial
//! records, which this crate performs, are measured here as a histogram.

use std::sync::Arc;

use ledger::{Decision, LedgerReader};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::denials::Denials;
use crate::freshness::{Freshness, ReplicaReport};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    decision: &'static str,
    reason: &'static str,
}

/// The service's metrics and the registry that encodes them.
pub(crate) struct Metrics {
    registry: Registry,
    checks: Family<CheckLabels, Counter>,
    check_seconds: Histogram,
    denial_records: Counter,
    denials_dropped: Counter,
    denial_records_failed: Counter,
    denial_flush_seconds: Histogram,
    unauthorized: Counter,
    checkpoints_signed: Counter,
    checkpoint_size: prometheus_client::metrics::gauge::Gauge,
    connections_open: prometheus_client::metrics::gauge::Gauge,
    connections_timed_out: Counter,
    connections_stalled: Counter,
    accept_errors: Counter,
    requests_refused: Counter,
}

impl Metrics {
    pub(crate) fn new(
        ledger: LedgerReader,
        freshness: Arc<dyn Freshness>,
        denials: Arc<Denials>,
    ) -> Metrics {
        let mut registry = Registry::with_prefix("claim_ledger");
        let checks = Family::<CheckLabels, Counter>::default();
        registry.register(
            "checks",
            "Identity checks answered, by decision and reason",
            checks.clone(),
        );
        // 1 µs to about 0.5 s.
        let check_seconds = Histogram::new(exponential_buckets(1e-6, 2.0, 20));
        registry.register_with_unit(
            "check_duration",
            "Time to answer an identity check (lock, rule, not the HTTP round trip)",
            Unit::Seconds,
            check_seconds.clone(),
        );
        let denial_records = Counter::default();
        registry.register(
            "denial_records",
            "check_denied entries appended to the ledger",
            denial_records.clone(),
        );
        let denials_dropped = Counter::default();
        registry.register(
            "denials_dropped",
            "Denied checks not recorded because too many (pod uid, reason, minute) keys were pending",
            denials_dropped.clone(),
        );
        let denial_records_failed = Counter::default();
        registry.register(
            "denial_records_failed",
            "check_denied records lost because the ledger refused the append or the flush",
            denial_records_failed.clone(),
        );
        let denial_flush_seconds = Histogram::new(exponential_buckets(1e-4, 2.0, 16));
        registry.register_with_unit(
            "denial_flush_duration",
            "Time to append and flush a batch of check_denied records",
            Unit::Seconds,
            denial_flush_seconds.clone(),
        );
        let unauthorized = Counter::default();
        registry.register(
            "unauthorized_requests",
            "Requests refused for a missing or invalid bearer token",
            unauthorized.clone(),
        );
        let checkpoints_signed = Counter::default();
        registry.register(
            "checkpoints_signed",
            "Calls that left a signed checkpoint of the head (a new one, or the latest when it already covered the head)",
            checkpoints_signed.clone(),
        );
        let checkpoint_size = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "checkpoint_tree_size",
            "Tree size of the latest checkpoint this process signed",
            checkpoint_size.clone(),
        );
        let connections_open = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "http_connections",
            "HTTP connections open",
            connections_open.clone(),
        );
        let connections_timed_out = Counter::default();
        registry.register(
            "http_connections_timed_out",
            "Connections closed for sending no complete request head within the header timeout",
            connections_timed_out.clone(),
        );
        let connections_stalled = Counter::default();
        registry.register(
            "http_connections_stalled",
            "Connections closed for a response the client read nothing of within the stalled-write timeout",
            connections_stalled.clone(),
        );
        let accept_errors = Counter::default();
        registry.register(
            "http_accept_errors",
            "Connections that could not be accepted (out of file descriptors, ...)",
            accept_errors.clone(),
        );
        let requests_refused = Counter::default();
        registry.register(
            "http_requests_refused",
            "HTTP/1 request heads refused before routing (malformed, URI too long, headers too large)",
            requests_refused.clone(),
        );
        registry.register_collector(Box::new(Live {
            ledger,
            freshness,
            denials,
        }));
        Metrics {
            registry,
            checks,
            check_seconds,
            denial_records,
            denials_dropped,
            denial_records_failed,
            denial_flush_seconds,
            unauthorized,
            checkpoints_signed,
            checkpoint_size,
            connections_open,
            connections_timed_out,
            connections_stalled,
            accept_errors,
            requests_refused,
        }
    }

    pub(crate) fn connection_opened(&self) {
        self.connections_open.inc();
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_open.dec();
    }

    pub(crate) fn connection_timed_out(&self) {
        self.connections_timed_out.inc();
    }

    pub(crate) fn connection_stalled(&self) {
        self.connections_stalled.inc();
    }

    pub(crate) fn accept_error(&self) {
        self.accept_errors.inc();
    }

    pub(crate) fn request_refused(&self) {
        self.requests_refused.inc();
    }

    pub(crate) fn checkpoint_signed(&self, size: u64) {
        self.checkpoints_signed.inc();
        self.checkpoint_size
            .set(i64::try_from(size).unwrap_or(i64::MAX));
    }

    /// Counts one answered check.
    pub(crate) fn check(&self, decision: &Decision, seconds: f64) {
        let labels = CheckLabels {
            decision: match decision.decision {
                ledger::Verdict::Allow => "allow",
                ledger::Verdict::Deny => "deny",
                ledger::Verdict::NotReady => "not_ready",
            },
            reason: decision.reason.map_or("none", |r| r.code()),
        };
        self.checks.get_or_create(&labels).inc();
        self.check_seconds.observe(seconds);
    }

    pub(crate) fn denial_dropped(&self) {
        self.denials_dropped.inc();
    }

    pub(crate) fn denial_flushed(&self, records: usize, seconds: f64) {
        self.denial_records.inc_by(records as u64);
        self.denial_flush_seconds.observe(seconds);
    }

    pub(crate) fn denial_flush_failed(&self, records: usize) {
        self.denial_records_failed.inc_by(records as u64);
    }

    pub(crate) fn unauthorized(&self) {
        self.unauthorized.inc();
    }

    /// The text exposition.
    pub(crate) fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Values read at scrape time.
struct Live {
    ledger: LedgerReader,
    freshness: Arc<dyn Freshness>,
    denials: Arc<Denials>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (stats, head, durable, verified) = {
            let ledger = self.ledger.view();
            (
                ledger.stats(),
                ledger.head().seq,
                ledger.durable_seq(),
                ledger.corruption().is_none(),
            )
        };
        let watch = self.freshness.counters();
        if let Some(backlog) = self.freshness.backlog() {
            gauge(
                &mut encoder,
                "writer_backlog_events",
                "Observed changes in the group commit under way (not yet durable)",
                saturate(backlog.events),
            )?;
            let age = ConstGauge::new(backlog.age_seconds);
            age.encode(encoder.encode_descriptor(
                "writer_backlog",
                "How long the oldest observed change not yet durable has waited; past --max-backlog-seconds checks answer not_ready",
                Some(&Unit::Seconds),
                age.metric_type(),
            )?)?;
        }
        if let Some(replica) = self.freshness.replica() {
            replica_metrics(&mut encoder, &replica)?;
        }
        let flushes = self.freshness.flushes();
        let ready = verified && self.freshness.ready();
        let e = &mut encoder;
        counter(
            e,
            "appends",
            "Ledger entries appended since open",
            stats.appended,
        )?;
        counter(
            e,
            "duplicates",
            "Changes refused as duplicates (uid and resourceVersion already recorded)",
            stats.duplicates,
        )?;
        counter(
            e,
            "stale",
            "Changes refused as older than the recorded resourceVersion",
            stats.stale,
        )?;
        counter(
            e,
            "ignored",
            "Changes ignored (status churn, objects not controlled by a Sandbox)",
            stats.ignored,
        )?;
        gauge(e, "head_seq", "Seq of the newest entry", saturate(head))?;
        gauge(
            e,
            "durable_seq",
            "Seq of the newest entry known durable",
            saturate(durable),
        )?;
        gauge(
            e,
            "ready",
            "1 when the watchers are synced and the ledger verified at open",
            i64::from(ready),
        )?;
        counter(
            e,
            "watch_errors",
            "Watch streams that failed and were restarted",
            watch.watch_errors,
        )?;
        counter(
            e,
            "relists",
            "Relists after the initial list",
            watch.relists,
        )?;
        counter(
            e,
            "resync_deletions",
            "Objects recorded as missing on resync",
            watch.resync_deletions,
        )?;
        counter(
            e,
            "rejected_objects",
            "Objects the normalizer refused",
            watch.rejected_objects,
        )?;
        if let Some(flushes) = flushes {
            counter(
                e,
                "flushes",
                "Batch flushes of the watcher (appends made durable)",
                flushes.count,
            )?;
            let seconds = ConstCounter::new(flushes.seconds);
            seconds.encode(e.encode_descriptor(
                "flush_seconds",
                "Time the watcher spent flushing batches",
                None,
                seconds.metric_type(),
            )?)?;
        }
        gauge(
            e,
            "denials_pending",
            "Distinct (pod uid, reason, minute) denial keys waiting to be recorded",
            saturate(self.denials.len() as u64),
        )
    }
}

/// A replica's role and writer as an info-style gauge, and on a follower how far it is
/// behind the writer.
fn replica_metrics(
    encoder: &mut DescriptorEncoder,
    replica: &ReplicaReport,
) -> Result<(), std::fmt::Error> {
    let role = match replica.follower {
        true => "follower",
        false => "writer",
    };
    let labels = [
        ("role", role.to_string()),
        ("writer", replica.writer.clone().unwrap_or_default()),
    ];
    let info = ConstGauge::new(1i64);
    info.encode(
        encoder
            .encode_descriptor(
                "replica",
                "1, labelled with this replica's role (writer or follower) and the writer's identity (host/pid)",
                None,
                info.metric_type(),
            )?
            .encode_family(&labels)?,
    )?;
    if let Some(lag) = replica.lag_entries {
        gauge(
            encoder,
            "replica_lag_entries",
            "Entries the writer had made durable at its last published status that this follower has not applied",
            saturate(lag),
        )?;
    }
    for (name, help, value) in [
        (
            "replica_caught_up_age",
            "How long ago this follower last read the whole shared log",
            replica.caught_up_age_seconds,
        ),
        (
            "replica_writer_status_age",
            "How long ago (by this follower's clock) the writer's published status last changed",
            replica.writer_status_age_seconds,
        ),
    ] {
        if let Some(value) = value {
            let age = ConstGauge::new(value);
            age.encode(encoder.encode_descriptor(
                name,
                help,
                Some(&Unit::Seconds),
                age.metric_type(),
            )?)?;
        }
    }
    Ok(())
}

fn saturate(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
