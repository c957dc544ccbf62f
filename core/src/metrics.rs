//! Prometheus metrics (`GET /metrics`, text format): connections by transport, codec and
//! dialect, sessions and why they closed, events in and out by type, errors by code, rate-limit
//! hits, queue depths, message latency, the store's batches and commit latency, and the
//! process's tasks, file descriptors and memory (to see leaks). Label values are the
//! protocol's own static names, so counting allocates nothing.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnLabels {
    pub transport: &'static str,
    pub codec: &'static str,
    pub dialect: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    /// `frames`, `messages`, `typing` or `connections`.
    pub limit: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    pub event: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: &'static str,
}

/// Every metric the server keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub connections: Family<ConnLabels, Gauge>,
    pub sessions_opened: Family<ConnLabels, Counter>,
    pub sessions_closed: Family<ReasonLabel, Counter>,
    pub events_in: Family<EventLabel, Counter>,
    pub errors: Family<CodeLabel, Counter>,
    pub events_out: Family<EventLabel, Counter>,
    /// Latest-wins events (typing) dropped because a connection's queue was full.
    pub events_dropped: Counter,
    pub rate_limited: Family<LimitLabel, Counter>,
    /// A connection's queue length when an event joins it.
    pub outbound_queue_depth: Histogram,
    /// From a message's acceptance (before its commit) to its bytes going to a recipient's
    /// socket or stream. Millisecond resolution: `created_at` is the message's wall time.
    pub message_latency_seconds: Histogram,
    pub messages_stored: Counter,
    pub users_online: Gauge,
    pub store_batch_size: Histogram,
    pub store_commit_seconds: Histogram,
    pub store_writable: Gauge,
    pub store_write_refusals: Counter,
    /// Cluster mode: publications sent to the broker, received from it, dropped before it (a
    /// full queue, a broker away), and conversation gaps filled from the store.
    pub broker_published: Counter,
    pub broker_received: Counter,
    pub broker_dropped: Counter,
    pub broker_gaps_repaired: Counter,
    /// Cluster mode: delivery receipts this node won in the store and sent, and claims dropped
    /// with their queue full.
    pub receipts_claimed: Counter,
    pub receipts_dropped: Counter,
    /// 1 while the broker is connected (always 1 for a node alone).
    pub broker_connected: Gauge,
    pub tasks: Gauge,
    pub open_fds: Gauge,
    pub resident_memory_bytes: Gauge,
    /// The TLS certificate's end of validity, Unix seconds (0: no TLS listener).
    pub certificate_expiry_seconds: Gauge,
    /// The message latencies since the admin console's sampler last looked (`LatencyWindow`).
    pub latency_window: LatencyWindow,
}

/// Message latencies counted in power-of-two millisecond buckets since the last `take`: what
/// the admin console draws, without reading the Prometheus histogram back. One relaxed atomic
/// add per observation.
#[derive(Debug, Default)]
pub struct LatencyWindow {
    /// Bucket `i` counts latencies below `2^i` ms (bucket 0: under 1 ms), the last one the rest.
    buckets: [std::sync::atomic::AtomicU64; LATENCY_BUCKETS],
}

const LATENCY_BUCKETS: usize = 16;

impl LatencyWindow {
    pub fn observe(&self, ms: u64) {
        let i = (u64::BITS - ms.leading_zeros()) as usize;
        self.buckets[i.min(LATENCY_BUCKETS - 1)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The latencies since the last call, and starts a new window.
    pub fn take(&self) -> LatencySample {
        let counts = self.buckets.each_ref().map(|b| b.swap(0, std::sync::atomic::Ordering::Relaxed));
        LatencySample { counts }
    }
}

/// One window of [`LatencyWindow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySample {
    counts: [u64; LATENCY_BUCKETS],
}

impl LatencySample {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The latency (ms) below which the fraction `q` of the window fell: the upper bound of its
    /// bucket, so within a factor of two. `None` for an empty window.
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(if i == 0 { 1 } else { 1 << i });
            }
        }
        Some(1 << (LATENCY_BUCKETS - 1))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("confab");
        let m = Self {
            connections: Family::default(),
            sessions_opened: Family::default(),
            sessions_closed: Family::default(),
            events_in: Family::default(),
            errors: Family::default(),
            events_out: Family::default(),
            events_dropped: Counter::default(),
            rate_limited: Family::default(),
            outbound_queue_depth: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            // 1 ms to about 4 s.
            message_latency_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 13)),
            messages_stored: Counter::default(),
            users_online: Gauge::default(),
            store_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            // 50 µs to about 0.8 s.
            store_commit_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 15)),
            store_writable: Gauge::default(),
            store_write_refusals: Counter::default(),
            broker_published: Counter::default(),
            broker_received: Counter::default(),
            broker_dropped: Counter::default(),
            broker_gaps_repaired: Counter::default(),
            receipts_claimed: Counter::default(),
            receipts_dropped: Counter::default(),
            broker_connected: Gauge::default(),
            tasks: Gauge::default(),
            open_fds: Gauge::default(),
            resident_memory_bytes: Gauge::default(),
            certificate_expiry_seconds: Gauge::default(),
            latency_window: LatencyWindow::default(),
            registry: Registry::default(),
        };
        registry.register("connections", "Open client connections", m.connections.clone());
        registry.register("sessions_opened", "Sessions opened", m.sessions_opened.clone());
        registry.register("sessions_closed", "Sessions closed, by close reason", m.sessions_closed.clone());
        registry.register("events_in", "Client events decoded, by type", m.events_in.clone());
        registry.register("errors", "Error events sent to clients, by code", m.errors.clone());
        registry.register("events_out", "Events queued to connections, by type", m.events_out.clone());
        registry.register(
            "events_dropped",
            "Typing events dropped at a full connection queue",
            m.events_dropped.clone(),
        );
        registry.register("rate_limited", "Requests refused by a rate limit, by limit", m.rate_limited.clone());
        registry.register(
            "outbound_queue_depth",
            "Events already waiting in a connection's queue when another joins it",
            m.outbound_queue_depth.clone(),
        );
        registry.register(
            "message_latency_seconds",
            "From a message's acceptance to its write to a recipient's connection",
            m.message_latency_seconds.clone(),
        );
        registry.register("tasks", "Connection and timer tasks the server owns", m.tasks.clone());
        registry.register("open_fds", "Open file descriptors of the process", m.open_fds.clone());
        registry.register("resident_memory_bytes", "Resident memory of the process", m.resident_memory_bytes.clone());
        registry.register("messages_stored", "Messages durably committed", m.messages_stored.clone());
        registry.register("users_online", "Users with at least one connection", m.users_online.clone());
        registry.register("store_batch_size", "Requests per store transaction", m.store_batch_size.clone());
        registry.register(
            "store_commit_seconds",
            "Time to apply and commit one store batch",
            m.store_commit_seconds.clone(),
        );
        registry.register(
            "store_writable",
            "1 while the store takes writes, 0 while they fail (disk full, I/O errors)",
            m.store_writable.clone(),
        );
        registry.register(
            "store_write_refusals",
            "Store requests refused because the store could not write (disk full, I/O errors)",
            m.store_write_refusals.clone(),
        );
        registry.register("broker_published", "Publications sent to the other nodes", m.broker_published.clone());
        registry.register("broker_received", "Publications received from the other nodes", m.broker_received.clone());
        registry.register(
            "broker_dropped",
            "Publications not sent (the broker's queue full or the broker away); receivers repair from the store",
            m.broker_dropped.clone(),
        );
        registry.register(
            "receipts_claimed",
            "Delivery watermarks this node moved in the store, each sending one message:delivered",
            m.receipts_claimed.clone(),
        );
        registry.register(
            "receipts_dropped",
            "Delivery receipts not claimed, their queue full (the next message claims the watermark)",
            m.receipts_dropped.clone(),
        );
        registry.register(
            "broker_gaps_repaired",
            "Conversation gaps (lost or late publications) filled by reading the store",
            m.broker_gaps_repaired.clone(),
        );
        registry.register(
            "broker_connected",
            "1 while the broker to the other nodes is connected (always 1 for a node alone)",
            m.broker_connected.clone(),
        );
        registry.register(
            "certificate_expiry_seconds",
            "When the TLS certificate new handshakes get stops being valid, Unix seconds (0: no TLS)",
            m.certificate_expiry_seconds.clone(),
        );
        m.broker_connected.set(1);
        Self { registry, ..m }
    }
}

impl Metrics {
    /// Samples what is only known by looking (the process's descriptors and memory, on Linux;
    /// the task count from the caller), just before a scrape.
    pub fn sample_process(&self, tasks: usize) {
        self.tasks.set(i64::try_from(tasks).unwrap_or(i64::MAX));
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(dir.count() as i64);
        }
        let resident_kib = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        });
        if let Some(kib) = resident_kib {
            self.resident_memory_bytes.set(kib.saturating_mul(1024));
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::LatencyWindow;

    #[test]
    fn latency_windows_give_quantiles_within_a_factor_of_two_and_start_afresh() {
        let w = LatencyWindow::default();
        assert_eq!(w.take().quantile_ms(0.5), None);
        for ms in [0, 3, 3, 3, 3, 3, 3, 3, 3, 900] {
            w.observe(ms);
        }
        let s = w.take();
        assert_eq!(s.count(), 10);
        assert_eq!(s.quantile_ms(0.5), Some(4));
        assert_eq!(s.quantile_ms(0.99), Some(1024));
        assert_eq!(s.quantile_ms(0.0), Some(1));
        assert_eq!(w.take().count(), 0);
        w.observe(u64::MAX);
        assert_eq!(w.take().quantile_ms(1.0), Some(1 << 15));
    }
}
