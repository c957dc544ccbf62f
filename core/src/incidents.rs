//! The recent errors sent to clients and the connections closed for cause (rate limits, slow
//! consumers, timeouts), newest first, for the admin console. Bounded: the oldest is dropped, so
//! a client that provokes errors on purpose costs a fixed amount of memory.

use confab_codec::{ConnectionId, Timestamp, UserId};
use std::collections::VecDeque;
use std::sync::Mutex;

/// How many incidents are kept.
pub const KEPT: usize = 200;
/// The longest message kept (a client's own text may be quoted in one).
const MESSAGE_CHARS: usize = 200;

/// One error or close.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub at: Timestamp,
    /// The protocol's error code (`RATE_LIMITED`...) or the close reason (`slow_consumer`...).
    pub code: &'static str,
    pub user_id: UserId,
    pub connection_id: ConnectionId,
    /// The request that failed, if any (`message:send`...).
    pub event: Option<String>,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Incidents {
    recent: Mutex<VecDeque<Incident>>,
}

impl Incidents {
    pub fn record(&self, mut incident: Incident) {
        if let Some((cut, _)) = incident.message.char_indices().nth(MESSAGE_CHARS) {
            incident.message.truncate(cut);
        }
        let mut recent = self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() == KEPT {
            recent.pop_back();
        }
        recent.push_front(incident);
    }

    /// Up to `limit`, newest first.
    pub fn recent(&self, limit: usize) -> Vec<Incident> {
        let recent = self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        recent.iter().take(limit).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_short_messages() {
        let log = Incidents::default();
        let user = UserId::parse("u").unwrap();
        let conn = ConnectionId::parse("c").unwrap();
        for i in 0..KEPT + 5 {
            log.record(Incident {
                at: Timestamp::from_millis(i as i64),
                code: "RATE_LIMITED",
                user_id: user.clone(),
                connection_id: conn.clone(),
                event: None,
                message: "é".repeat(1000),
            });
        }
        let recent = log.recent(usize::MAX);
        assert_eq!(recent.len(), KEPT);
        assert_eq!(recent[0].at, Timestamp::from_millis((KEPT + 4) as i64));
        assert_eq!(recent[0].message.chars().count(), MESSAGE_CHARS);
        assert_eq!(log.recent(3).len(), 3);
    }
}
