//! Presence across nodes (cluster mode): every node's connection counts in PostgreSQL rows, so
//! that a user connected to two nodes is online once, the per-user connection limit counts
//! every node, and the users of a node that died are reported offline by a survivor.
//!
//! Each node holds a lease (`nodes.lease_until`), renewed every [`RENEW_EVERY`]; counts on a
//! node whose lease has run out do not count. A connect or disconnect is one call of
//! `confab_connect` / `confab_disconnect`, which serialize per user (an advisory lock for the
//! length of the statement) and answer the count before or after: PostgreSQL decides the 0→1
//! and 1→0 transitions, so exactly one node announces each. Every node sweeps for expired
//! leases; deleting the dead node's row is what one survivor wins, and it announces
//! `user:offline` for the users left with no connection anywhere.

use super::*;
use confab_codec::PresenceStatus;
use confab_core::presence::{NodeState, Presence, PresenceError, PresenceFuture, PresenceInfo};
use std::collections::HashMap;
use std::sync::Mutex;

/// How long a node's lease lasts without renewal: a node killed with `kill -9` has its users
/// reported offline within this and a sweep (SPEC §8: 30 s).
const LEASE: Duration = Duration::from_secs(10);
/// How often a node renews its lease and sweeps the expired ones.
const RENEW_EVERY: Duration = Duration::from_secs(2);

/// Presence in PostgreSQL, for one node.
pub struct PgPresence {
    pool: deadpool_postgres::Pool,
    /// This node's id in `nodes` (random at each start).
    node: String,
    /// This node's own connections per user, for `online_count` (a gauge of this node).
    local: Mutex<HashMap<UserId, usize>>,
    /// Disconnects that could not be counted (PostgreSQL away), counted at the next renewal:
    /// otherwise they would keep their users online until this node stops.
    uncounted: Mutex<Vec<(UserId, Timestamp)>>,
}

impl std::fmt::Debug for PgPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPresence").field("node", &self.node).finish_non_exhaustive()
    }
}

impl PgPresence {
    /// Registers this node (a fresh id and lease) on the store's database.
    pub async fn start(store: &PgStore) -> Result<Self, StoreError> {
        let node = format!("node_{:016x}", rand::random::<u64>());
        let presence = Self { pool: store.pool.clone(), node, local: Mutex::default(), uncounted: Mutex::default() };
        presence.renew().await?;
        Ok(presence)
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, usize>> {
        self.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn uncounted(&self) -> std::sync::MutexGuard<'_, Vec<(UserId, Timestamp)>> {
        self.uncounted.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let client = match tokio::time::timeout(IO_TIMEOUT, self.pool.get()).await {
            Ok(r) => r.map_err(pool_error)?,
            Err(_) => return Err(StoreError::Unavailable(format!("no PostgreSQL connection within {IO_TIMEOUT:?}"))),
        };
        let stmt = timely(client.prepare_cached(sql)).await?;
        timely(client.query(&stmt, params)).await
    }

    /// Renews this node's lease (or takes it again, if it was swept while this node was cut off).
    /// Whether the lease was still held (false when it is taken afresh).
    pub async fn renew(&self) -> Result<bool, StoreError> {
        let lease = i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX);
        let rows = self
            .query(
                "INSERT INTO nodes (id, lease_until) VALUES ($1, now() + make_interval(secs => $2::bigint / 1000.0))
                 ON CONFLICT (id) DO UPDATE SET lease_until = excluded.lease_until
                 RETURNING xmax <> 0",
                &[&self.node, &lease],
            )
            .await?;
        Ok(rows.first().and_then(|r| r.try_get::<_, bool>(0).ok()).unwrap_or(false))
    }

    /// Removes the nodes whose lease ran out, and their counts; returns the users who were
    /// counted there and now have no connection anywhere (this node announces them offline:
    /// of several sweepers, only the one whose delete took the rows sees them).
    pub async fn sweep(&self, at: Timestamp) -> Result<Vec<UserId>, StoreError> {
        let rows = self
            .query(
                "WITH dead AS (DELETE FROM nodes WHERE lease_until < now() RETURNING id),
                      gone AS (DELETE FROM presence p USING dead WHERE p.node_id = dead.id RETURNING p.user_id)
                 SELECT DISTINCT user_id FROM gone",
                &[],
            )
            .await?;
        let mut offline = Vec::new();
        for r in &rows {
            let user = parse(r.try_get(0).map_err(pg)?, UserId::parse, "user id")?;
            let left = self.query("SELECT confab_disconnect($1, NULL, $2)", &[&user.as_str(), &at.as_millis()]).await?;
            if left.first().and_then(|r| r.try_get::<_, i32>(0).ok()) == Some(0) {
                offline.push(user);
            }
        }
        Ok(offline)
    }

    /// Renews this node's lease every [`RENEW_EVERY`] and sweeps the expired ones, telling the
    /// contacts of the users a dead node left offline. Ends on shutdown.
    pub async fn keep_lease(self: Arc<Self>, node: Arc<confab_core::node::Node>) {
        let mut tick = tokio::time::interval(RENEW_EVERY);
        loop {
            tokio::select! {
                () = node.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.renew().await {
                Ok(true) => {}
                Ok(false) => {
                    // Cut off past its lease, this node was swept: the others have counted its
                    // users out and announced them offline. Its clients must connect again to
                    // be counted (on any node), as after the node's death.
                    tracing::warn!("presence: this node's lease ran out while it was cut off; closing its connections");
                    self.local().clear();
                    self.uncounted().clear();
                    node.hub.close_all(confab_core::error::CloseReason::ServerShutdown);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "presence: renewing this node's lease");
                    continue;
                }
            }
            self.count_late_disconnects(&node).await;
            let at = node.clock.now();
            match self.sweep(at).await {
                Ok(users) => {
                    if !users.is_empty() {
                        tracing::info!(users = users.len(), "presence: a node's lease ran out; its users are offline");
                    }
                    for user in users {
                        confab_core::session::tell_offline(&node, user, at).await;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "presence: sweeping expired leases"),
            }
        }
    }

    /// Counts the disconnects that PostgreSQL missed, announcing the users they leave offline.
    async fn count_late_disconnects(&self, node: &Arc<confab_core::node::Node>) {
        let late = std::mem::take(&mut *self.uncounted());
        for (i, (user, at)) in late.iter().enumerate() {
            match self.uncount(user, *at).await {
                Ok(true) => confab_core::session::tell_offline(node, user.clone(), *at).await,
                Ok(false) => {}
                Err(_) => {
                    self.uncounted().extend(late[i..].iter().cloned());
                    return;
                }
            }
        }
    }

    /// One disconnect from this node in PostgreSQL: true when the user has no connection left.
    async fn uncount(&self, user: &UserId, at: Timestamp) -> Result<bool, StoreError> {
        let rows =
            self.query("SELECT confab_disconnect($1, $2, $3)", &[&user.as_str(), &self.node, &at.as_millis()]).await?;
        Ok(rows.first().and_then(|r| r.try_get::<_, i32>(0).ok()) == Some(0))
    }

    /// Leaves the cluster on a clean shutdown: this node's counts go at once.
    pub async fn leave(&self) -> Result<(), StoreError> {
        self.query("DELETE FROM presence WHERE node_id = $1", &[&self.node]).await?;
        self.query("DELETE FROM nodes WHERE id = $1", &[&self.node]).await.map(drop)
    }
}

impl Presence for PgPresence {
    fn nodes(&self) -> PresenceFuture<'_, Result<Vec<NodeState>, PresenceError>> {
        Box::pin(async move {
            let rows = self
                .query(
                    "SELECT n.id, (extract(epoch FROM n.lease_until) * 1000)::bigint, n.lease_until > now(),
                            count(p.user_id), coalesce(sum(p.conns), 0)::bigint
                     FROM nodes n LEFT JOIN presence p ON p.node_id = n.id GROUP BY n.id ORDER BY n.id",
                    &[],
                )
                .await
                .map_err(|e| PresenceError::Unavailable(e.to_string()))?;
            let state = |r: &Row| -> Result<NodeState, tokio_postgres::Error> {
                let id: String = r.try_get(0)?;
                Ok(NodeState {
                    this_node: id == self.node,
                    id,
                    lease_until: Timestamp::from_millis(r.try_get(1)?),
                    live: r.try_get(2)?,
                    users: u64::try_from(r.try_get::<_, i64>(3)?).unwrap_or(0),
                    connections: u64::try_from(r.try_get::<_, i64>(4)?).unwrap_or(0),
                })
            };
            rows.iter().map(state).collect::<Result<_, _>>().map_err(|e| PresenceError::Unavailable(e.to_string()))
        })
    }

    fn connected(&self, user: &UserId, limit: usize) -> PresenceFuture<'_, Result<bool, PresenceError>> {
        let user = user.clone();
        Box::pin(async move {
            let limit = i32::try_from(limit).unwrap_or(i32::MAX);
            let rows = self
                .query("SELECT confab_connect($1, $2, $3)", &[&user.as_str(), &self.node, &limit])
                .await
                .map_err(|e| PresenceError::Unavailable(e.to_string()))?;
            let before: i32 = rows
                .first()
                .and_then(|r| r.try_get(0).ok())
                .ok_or_else(|| PresenceError::Unavailable("confab_connect answered nothing".into()))?;
            if before < 0 {
                return Err(PresenceError::TooManyConnections((-1 - before).max(0) as usize));
            }
            *self.local().entry(user).or_default() += 1;
            Ok(before == 0)
        })
    }

    fn disconnected(&self, user: &UserId, at: Timestamp) -> PresenceFuture<'_, bool> {
        let user = user.clone();
        Box::pin(async move {
            {
                let mut local = self.local();
                match local.get_mut(&user) {
                    Some(n) if *n > 1 => *n -= 1,
                    Some(_) => {
                        local.remove(&user);
                    }
                    // Counted out already: this node's lease ran out and a survivor swept it.
                    None => return false,
                }
            }
            match self.uncount(&user, at).await {
                Ok(offline) => offline,
                Err(e) => {
                    // Counted at the next renewal (or by the lease sweep if this node dies).
                    tracing::warn!(error = %e, user = %user, "presence: counting a disconnect, later");
                    self.uncounted().push((user, at));
                    false
                }
            }
        })
    }

    fn set_status(&self, user: &UserId, status: PresenceStatus, message: Option<String>) -> PresenceFuture<'_, ()> {
        let user = user.clone();
        Box::pin(async move {
            let set = self
                .query(
                    "UPDATE user_status SET status = $2, message = $3 WHERE user_id = $1",
                    &[&user.as_str(), &status.as_str(), &message],
                )
                .await;
            if let Err(e) = set {
                tracing::warn!(error = %e, "presence: setting a status");
            }
        })
    }

    fn get(&self, user: &UserId) -> PresenceFuture<'_, PresenceInfo> {
        let user = user.clone();
        Box::pin(async move {
            let rows = self
                .query(
                    "SELECT confab_live_conns($1), s.status, s.message, s.last_seen
                     FROM (SELECT 1) one LEFT JOIN user_status s ON s.user_id = $1",
                    &[&user.as_str()],
                )
                .await;
            let offline = PresenceInfo {
                online: false,
                status: PresenceStatus::Offline,
                message: None,
                last_seen: None,
                connections: 0,
            };
            let Ok(rows) = rows else { return offline };
            let Some(r) = rows.first() else { return offline };
            let connections = r.try_get::<_, i32>(0).unwrap_or(0).max(0) as usize;
            let status: Option<&str> = r.try_get(1).unwrap_or(None);
            let last_seen: Option<i64> = r.try_get(3).unwrap_or(None);
            if connections == 0 {
                return PresenceInfo { last_seen: last_seen.map(Timestamp::from_millis), ..offline };
            }
            PresenceInfo {
                online: true,
                status: status.and_then(PresenceStatus::from_name).unwrap_or(PresenceStatus::Online),
                message: r.try_get(2).unwrap_or(None),
                last_seen: None,
                connections,
            }
        })
    }

    fn online_count(&self) -> (usize, usize) {
        let local = self.local();
        (local.len(), local.values().sum())
    }
}
