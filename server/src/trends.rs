//! What the admin console draws over time: every [`STEP`], the messages stored per second, the
//! message latency's median and 99th percentile in that step, and the open connections. The
//! last [`KEPT`] steps (ten minutes) are kept; one task samples them until shutdown.

use confab_core::node::Node;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often a point is taken.
pub const STEP: Duration = Duration::from_secs(2);
/// Points kept: ten minutes.
pub const KEPT: usize = 300;

/// One step's figures.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Point {
    /// The end of the step, Unix milliseconds.
    pub at_ms: i64,
    /// Messages durably stored per second over the step.
    pub messages_per_s: f64,
    /// Messages handed to recipients' connections in the step (the latency's sample size).
    pub deliveries: u64,
    /// The latency from a message's acceptance to its write to a recipient, in ms: the upper
    /// bound of its power-of-two bucket. Absent in a step with no delivery.
    pub p50_ms: Option<u64>,
    pub p99_ms: Option<u64>,
    /// Connections open on this node at the end of the step.
    pub connections: i64,
}

/// The kept points, oldest first.
#[derive(Debug)]
pub struct Trends {
    points: Mutex<VecDeque<Point>>,
    /// When the node started, Unix milliseconds.
    pub started_ms: i64,
}

impl Trends {
    pub fn new(started_ms: i64) -> Self {
        Self { points: Mutex::default(), started_ms }
    }

    pub fn points(&self) -> Vec<Point> {
        self.points.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().copied().collect()
    }

    fn push(&self, p: Point) {
        let mut points = self.points.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if points.len() == KEPT {
            points.pop_front();
        }
        points.push_back(p);
    }

    /// Samples `node` every [`STEP`] until it shuts down.
    pub async fn sample(self: Arc<Self>, node: Arc<Node>) {
        let mut tick = tokio::time::interval(STEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stored = node.metrics.messages_stored.get();
        let mut last = tokio::time::Instant::now();
        // Latencies from before the first step belong to none.
        node.metrics.latency_window.take();
        loop {
            tokio::select! {
                _ = node.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = tokio::time::Instant::now();
            let elapsed = now.duration_since(last).as_secs_f64().max(0.001);
            last = now;
            let total = node.metrics.messages_stored.get();
            let window = node.metrics.latency_window.take();
            self.push(Point {
                at_ms: node.clock.now().as_millis(),
                messages_per_s: (total.saturating_sub(stored)) as f64 / elapsed,
                deliveries: window.count(),
                p50_ms: window.quantile_ms(0.5),
                p99_ms: window.quantile_ms(0.99),
                connections: i64::try_from(node.presence.online_count().1).unwrap_or(i64::MAX),
            });
            stored = total;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_ten_minutes() {
        let t = Trends::new(0);
        for i in 0..KEPT as i64 + 10 {
            t.push(Point { at_ms: i, messages_per_s: 0.0, deliveries: 0, p50_ms: None, p99_ms: None, connections: 0 });
        }
        let points = t.points();
        assert_eq!(points.len(), KEPT);
        assert_eq!((points[0].at_ms, points[KEPT - 1].at_ms), (10, KEPT as i64 + 9));
    }
}
