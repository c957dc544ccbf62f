//! Prometheus metrics (`GET /metrics`, text format): connections, sessions and why they
//! closed, events in by type, errors by code, and the store's batches and commit latency.
//! Label values are the protocol's own static names, so counting allocates nothing.

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
    pub messages_stored: Counter,
    pub users_online: Gauge,
    pub store_batch_size: Histogram,
    pub store_commit_seconds: Histogram,
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
            messages_stored: Counter::default(),
            users_online: Gauge::default(),
            store_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            // 50 µs to about 0.8 s.
            store_commit_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 15)),
            registry: Registry::default(),
        };
        registry.register("connections", "Open client connections", m.connections.clone());
        registry.register("sessions_opened", "Sessions opened", m.sessions_opened.clone());
        registry.register("sessions_closed", "Sessions closed, by close reason", m.sessions_closed.clone());
        registry.register("events_in", "Client events decoded, by type", m.events_in.clone());
        registry.register("errors", "Error events sent to clients, by code", m.errors.clone());
        registry.register("messages_stored", "Messages durably committed", m.messages_stored.clone());
        registry.register("users_online", "Users with at least one connection", m.users_online.clone());
        registry.register("store_batch_size", "Requests per store transaction", m.store_batch_size.clone());
        registry.register(
            "store_commit_seconds",
            "Time to apply and commit one store batch",
            m.store_commit_seconds.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
