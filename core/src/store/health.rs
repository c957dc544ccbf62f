//! Whether a store can write: shared by the engines, read by `/readyz` (`Store::writable`).

use std::sync::Mutex;

/// Whether the store's writer's last batch could be written: from the first batch refused as
/// `Unavailable` (a full disk, an I/O error) until one commits again. Logged once per episode
/// and counted, not once per message.
#[derive(Debug, Default)]
pub struct WriteHealth {
    /// Whether `failing` holds an episode: every committed batch reads it, so the usual case
    /// is one load, not a lock.
    any: std::sync::atomic::AtomicBool,
    /// The reason, and how many requests were refused since it began.
    failing: Mutex<Option<(String, u64)>>,
}

impl WriteHealth {
    pub fn state(&self) -> Result<(), String> {
        if !self.any.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        self.lock().as_ref().map_or(Ok(()), |(why, _)| Err(why.clone()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(String, u64)>> {
        // Plain data, consistent between statements: a panic elsewhere leaves it usable.
        self.failing.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn committed(&self, metrics: &crate::metrics::Metrics) {
        if !self.any.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let mut failing = self.lock();
        if let Some((why, refused)) = failing.take() {
            self.any.store(false, std::sync::atomic::Ordering::Release);
            metrics.store_writable.set(1);
            tracing::warn!(refused, was = %why, "store: writes succeed again");
        }
    }

    pub fn refused(&self, why: &str, requests: usize, metrics: &crate::metrics::Metrics) {
        metrics.store_write_refusals.inc_by(requests as u64);
        let mut failing = self.lock();
        self.any.store(true, std::sync::atomic::Ordering::Release);
        match &mut *failing {
            Some((_, refused)) => *refused += requests as u64,
            None => {
                metrics.store_writable.set(0);
                tracing::error!(
                    reason = why,
                    "store: writes fail; requests are refused with SERVICE_UNAVAILABLE until one succeeds"
                );
                *failing = Some((why.to_owned(), requests as u64));
            }
        }
    }
}
