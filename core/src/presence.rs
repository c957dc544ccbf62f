//! Presence: how many connections each user has, across every node, and their status. It
//! decides the transitions that others hear about: a user's first connection (0→1, they come
//! online) and their last (1→0, they go offline), and it enforces the per-user connection
//! limit where it can count every connection.
//!
//! [`LocalPresence`] counts the connections of one node (a node alone). A cluster's presence
//! counts in the shared store (`confab-server`'s `PgPresence`), so that a user on two nodes is
//! online once: that is why the calls return futures.

use confab_codec::{PresenceStatus, Timestamp, UserId};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};

/// What a presence call returns: boxed so that `dyn Presence` works.
pub type PresenceFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a user looks like to others right now.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceInfo {
    pub online: bool,
    pub status: PresenceStatus,
    pub message: Option<String>,
    /// When they went offline last (while offline).
    pub last_seen: Option<Timestamp>,
    pub connections: usize,
}

/// Why a connection may not be counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresenceError {
    #[error("the user has {0} connections already")]
    TooManyConnections(usize),
    /// The shared store that counts connections cannot be reached.
    #[error("presence unavailable: {0}")]
    Unavailable(String),
}

/// Counts connections per user and keeps their status.
pub trait Presence: Send + Sync + std::fmt::Debug + 'static {
    /// Counts a new connection of `user`, unless they have `limit` already. `Ok(true)` when
    /// it is their first (0→1: they just came online).
    fn connected(&self, user: &UserId, limit: usize) -> PresenceFuture<'_, Result<bool, PresenceError>>;
    /// Uncounts a connection. `true` when it was their last (1→0: they just went offline, at
    /// `at`, which is kept as when they were last seen).
    fn disconnected(&self, user: &UserId, at: Timestamp) -> PresenceFuture<'_, bool>;
    /// Sets an online user's status (ignored while offline).
    fn set_status(&self, user: &UserId, status: PresenceStatus, message: Option<String>) -> PresenceFuture<'_, ()>;
    fn get(&self, user: &UserId) -> PresenceFuture<'_, PresenceInfo>;
    /// Users online and their connections, on this node (a gauge per node).
    fn online_count(&self) -> (usize, usize);
    /// The nodes that count presence together (cluster mode), for the admin console; none for
    /// a node alone.
    fn nodes(&self) -> PresenceFuture<'_, Result<Vec<NodeState>, PresenceError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// A node of a cluster, as presence sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeState {
    pub id: String,
    /// The node that answers.
    pub this_node: bool,
    /// Its lease: a node that stops renewing it is swept, and its users counted offline.
    pub lease_until: Timestamp,
    pub live: bool,
    pub users: u64,
    pub connections: u64,
}

#[derive(Debug)]
struct Online {
    connections: usize,
    status: PresenceStatus,
    message: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    online: HashMap<UserId, Online>,
    last_seen: HashMap<UserId, Timestamp>,
    connections: usize,
}

/// The presence of one node's users, in memory.
#[derive(Debug, Default)]
pub struct LocalPresence {
    state: Mutex<State>,
}

impl LocalPresence {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl LocalPresence {
    fn connect(&self, user: &UserId, limit: usize) -> Result<bool, PresenceError> {
        let mut s = self.lock();
        let now = s.online.get(user).map_or(0, |u| u.connections);
        if now >= limit {
            return Err(PresenceError::TooManyConnections(now));
        }
        let online = Online { connections: 0, status: PresenceStatus::Online, message: None };
        s.online.entry(user.clone()).or_insert(online).connections += 1;
        s.connections += 1;
        Ok(now == 0)
    }

    fn disconnect(&self, user: &UserId, at: Timestamp) -> bool {
        let mut s = self.lock();
        let Some(entry) = s.online.get_mut(user) else { return false };
        entry.connections -= 1;
        let last = entry.connections == 0;
        s.connections -= 1;
        if last {
            s.online.remove(user);
            s.last_seen.insert(user.clone(), at);
        }
        last
    }

    fn set(&self, user: &UserId, status: PresenceStatus, message: Option<String>) {
        if let Some(u) = self.lock().online.get_mut(user) {
            u.status = status;
            u.message = message;
        }
    }

    fn info(&self, user: &UserId) -> PresenceInfo {
        let s = self.lock();
        match s.online.get(user) {
            Some(u) => PresenceInfo {
                online: true,
                status: u.status,
                message: u.message.clone(),
                last_seen: None,
                connections: u.connections,
            },
            None => PresenceInfo {
                online: false,
                status: PresenceStatus::Offline,
                message: None,
                last_seen: s.last_seen.get(user).copied(),
                connections: 0,
            },
        }
    }
}

impl Presence for LocalPresence {
    fn connected(&self, user: &UserId, limit: usize) -> PresenceFuture<'_, Result<bool, PresenceError>> {
        Box::pin(std::future::ready(self.connect(user, limit)))
    }

    fn disconnected(&self, user: &UserId, at: Timestamp) -> PresenceFuture<'_, bool> {
        Box::pin(std::future::ready(self.disconnect(user, at)))
    }

    fn set_status(&self, user: &UserId, status: PresenceStatus, message: Option<String>) -> PresenceFuture<'_, ()> {
        self.set(user, status, message);
        Box::pin(std::future::ready(()))
    }

    fn get(&self, user: &UserId) -> PresenceFuture<'_, PresenceInfo> {
        Box::pin(std::future::ready(self.info(user)))
    }

    fn online_count(&self) -> (usize, usize) {
        let s = self.lock();
        (s.online.len(), s.connections)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn transitions_limits_status_and_last_seen() {
        let p = LocalPresence::default();
        let u = UserId::parse("u").unwrap();
        assert_eq!(p.connect(&u, 2), Ok(true), "0→1");
        assert_eq!(p.connect(&u, 2), Ok(false));
        assert_eq!(p.connect(&u, 2), Err(PresenceError::TooManyConnections(2)));
        p.set(&u, PresenceStatus::Away, Some("lunch".into()));
        assert_eq!((p.info(&u).status, p.info(&u).connections), (PresenceStatus::Away, 2));
        assert_eq!(p.online_count(), (1, 2));
        assert!(!p.disconnect(&u, Timestamp::from_millis(5)));
        assert!(p.disconnect(&u, Timestamp::from_millis(7)), "1→0");
        let info = p.info(&u);
        assert_eq!((info.online, info.last_seen), (false, Some(Timestamp::from_millis(7))));
        assert!(!p.disconnect(&u, Timestamp::from_millis(9)), "nothing to uncount");
        assert_eq!(p.connect(&u, 0), Err(PresenceError::TooManyConnections(0)));
        assert_eq!(p.online_count(), (0, 0));
        assert_eq!(p.connect(&u, 1), Ok(true), "status starts over");
        assert_eq!(p.info(&u).status, PresenceStatus::Online);
    }
}
