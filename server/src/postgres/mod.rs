//! Cluster mode's store: PostgreSQL (`--store postgres://USER@HOST:PORT/DB`), the record that
//! every node shares (docs/cluster.md).
//!
//! Appends go through one group-commit writer per node, on a connection of its own: each batch
//! is one call of the `confab_append` function, so one statement, one transaction and one
//! round trip however many messages it carries. Seqs come from the conversation's row, under its
//! lock, so they stay gap-free and in commit order across nodes without a leader. Everything
//! else is a single conditional statement, or a short transaction, on a pooled connection:
//! where two nodes race (a read mark, a photo's first view), exactly one statement wins.

mod presence;
mod rows;
mod schema;
mod writer;

pub use presence::PgPresence;

use confab_codec::event::{Message, Metadata};
use confab_codec::{ConversationId, LocalId, MessageId, MessageKind, PhotoId, Seq, Timestamp, UserId};
use confab_core::metrics::Metrics;
use confab_core::store::*;
use rows::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, NoTls, Row};

/// How long any call to PostgreSQL may take before it fails as `Unavailable`: a node cut off
/// from its store stops acknowledging within this, and `/readyz` says so (SPEC §8: within 8 s).
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections for reads and the writes that are not appends.
const POOL_SIZE: usize = 16;
/// Most appends in one batch.
const MAX_BATCH: usize = 1024;
/// Appends waiting for the writer; senders wait when it is full.
const QUEUE: usize = 8192;

/// The connection settings of a `postgres://` URL, with confab's own: a name in
/// `pg_stat_activity`, bounded connects, and keepalives plus a TCP user timeout, so that a
/// connection whose peer vanished (a black-holed link) is closed by the kernel within seconds
/// instead of waiting for minutes of retransmissions.
pub fn connection_config(url: &str) -> Result<tokio_postgres::Config, String> {
    let mut config: tokio_postgres::Config =
        url.parse().map_err(|e| format!("not a PostgreSQL URL ({e}); use postgres://USER[:PASSWORD]@HOST:PORT/DB"))?;
    if config.get_hosts().is_empty() {
        return Err("a PostgreSQL URL needs a host: postgres://USER[:PASSWORD]@HOST:PORT/DB".into());
    }
    if config.get_user().is_none() {
        return Err("a PostgreSQL URL needs a user: postgres://USER[:PASSWORD]@HOST:PORT/DB".into());
    }
    config
        .application_name("confab")
        .connect_timeout(IO_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .tcp_user_timeout(Duration::from_secs(10));
    Ok(config)
}

/// Connects one client; its connection runs in a task of its own that ends when the client is
/// dropped or the link breaks.
async fn connect(config: &tokio_postgres::Config) -> Result<Client, StoreError> {
    let (client, connection) = timely(config.connect(NoTls)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "store: a PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Messages per user per minute, hour and day (`--messages-per-minute`, ...), each also the
/// burst, as the hub's buckets have them.
#[derive(Debug, Clone, Copy)]
pub struct MessageLimits {
    pub per: [u32; 3],
}

/// The PostgreSQL store. Cheap to share (`Arc`); its writer task ends when it is closed or
/// dropped.
pub struct PgStore {
    pool: deadpool_postgres::Pool,
    writes: mpsc::Sender<writer::Write>,
    health: Arc<WriteHealth>,
    metrics: Arc<Metrics>,
    closed: AtomicBool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects, migrates the schema (one node at a time), and starts the writer. Each committed
    /// message is passed to `sink`, in commit order, before its `append` returns.
    pub async fn open(url: &str, sink: Arc<dyn CommitSink>, metrics: Arc<Metrics>) -> Result<Self, StoreError> {
        Self::open_with(url, sink, metrics, None).await
    }

    /// [`PgStore::open`], charging each new message to its sender's `limits` in the append's
    /// transaction (cluster mode: one count for every node's messages).
    pub async fn open_with(
        url: &str,
        sink: Arc<dyn CommitSink>,
        metrics: Arc<Metrics>,
        limits: Option<MessageLimits>,
    ) -> Result<Self, StoreError> {
        let config = connection_config(url).map_err(StoreError::Database)?;
        let mut first = connect(&config).await?;
        schema::migrate(&mut first).await?;
        let manager = deadpool_postgres::Manager::from_config(
            config.clone(),
            NoTls,
            deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(IO_TIMEOUT))
            .create_timeout(Some(IO_TIMEOUT))
            .recycle_timeout(Some(IO_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Database(format!("PostgreSQL pool: {e}")))?;
        let health = Arc::new(WriteHealth::default());
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer =
            writer::Writer::new(config, first, sink, Arc::clone(&metrics), Arc::clone(&health), limits).await?;
        // Ends when the store is closed or dropped (its queue closes).
        drop(tokio::spawn(writer::run(writer, rx)));
        Ok(Self { pool, writes: tx, health, metrics, closed: AtomicBool::new(false) })
    }

    /// A pooled connection, unless the store is closed.
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        match tokio::time::timeout(IO_TIMEOUT, self.pool.get()).await {
            Ok(r) => r.map_err(pool_error),
            Err(_) => Err(StoreError::Unavailable(format!("no PostgreSQL connection within {IO_TIMEOUT:?}"))),
        }
    }

    /// Rows of one statement on a pooled connection.
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let client = self.client().await?;
        let stmt = timely(client.prepare_cached(sql)).await?;
        timely(client.query(&stmt, params)).await
    }

    /// [`CLAIM_DELIVERED`] in a transaction that commits without waiting for its WAL to reach
    /// the disk: a receipt's mark is not worth an fsync (one a message, doubling PostgreSQL's
    /// commit work). Should PostgreSQL crash within its WAL writer's delay, the mark is lost and
    /// a later delivery claims it again: a repeated receipt, never a lost message. The three
    /// statements go out together (one round trip); in a failed transaction COMMIT rolls back.
    async fn claim_rows(&self, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        let client = self.client().await?;
        let stmt = timely(client.prepare_cached(CLAIM_DELIVERED)).await?;
        let (begun, rows, done) = timely(async {
            let (b, r, d) = tokio::join!(
                client.batch_execute("BEGIN; SET LOCAL synchronous_commit = off"),
                client.query(&stmt, params),
                client.batch_execute("COMMIT"),
            );
            Ok::<_, tokio_postgres::Error>((b, r, d))
        })
        .await?;
        begun.map_err(pg)?;
        let rows = rows.map_err(pg)?;
        done.map_err(pg)?;
        Ok(rows)
    }

    /// Rows changed by one statement on a pooled connection.
    async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let stmt = timely(client.prepare_cached(sql)).await?;
        timely(client.execute(&stmt, params)).await
    }

    /// A write that fails its health like the writer's do: the node reports not ready while
    /// writes fail, and ready again once one works.
    fn track<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        match &r {
            Err(StoreError::Unavailable(why)) => self.health.refused(why, 1, &self.metrics),
            Ok(_) => self.health.committed(&self.metrics),
            Err(_) => {}
        }
        r
    }

    async fn conversation_info(&self, c: &ConversationId) -> Result<Option<ConversationInfo>, StoreError> {
        let rows = self.query(CONVERSATION, &[&c.as_str()]).await?;
        conversation(c, &rows)
    }

    /// Runs `f` in a transaction on a pooled connection (a few statements, off the message path).
    async fn transaction<T>(
        &self,
        f: impl AsyncFnOnce(&tokio_postgres::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut client = self.client().await?;
        let tx = timely(client.transaction()).await?;
        let out = tokio::time::timeout(IO_TIMEOUT, f(&tx))
            .await
            .map_err(|_| StoreError::Unavailable(format!("PostgreSQL did not answer within {IO_TIMEOUT:?}")))??;
        timely(tx.commit()).await?;
        Ok(out)
    }
}

/// One statement in a transaction, with the deadline of every call.
async fn tx_query(
    tx: &tokio_postgres::Transaction<'_>,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Row>, StoreError> {
    timely(tx.query(sql, params)).await
}

fn strs<'a>(ids: impl IntoIterator<Item = &'a UserId>) -> Vec<&'a str> {
    ids.into_iter().map(UserId::as_str).collect()
}

/// Replaces a conversation's members (its row is locked, or new, in the caller's transaction).
async fn replace_members(
    tx: &tokio_postgres::Transaction<'_>,
    c: &ConversationId,
    members: &[UserId],
) -> Result<(), StoreError> {
    let ids = strs(members);
    tx_query(tx, "DELETE FROM members WHERE conversation_id = $1 AND user_id <> ALL ($2)", &[&c.as_str(), &ids])
        .await?;
    tx_query(
        tx,
        "INSERT INTO members (conversation_id, user_id) SELECT $1, u FROM unnest($2::text[]) AS u ON CONFLICT DO NOTHING",
        &[&c.as_str(), &ids],
    )
    .await?;
    Ok(())
}

async fn conversation_in(
    tx: &tokio_postgres::Transaction<'_>,
    c: &ConversationId,
) -> Result<ConversationInfo, StoreError> {
    let rows = tx_query(tx, CONVERSATION, &[&c.as_str()]).await?;
    conversation(c, &rows)?.ok_or_else(|| StoreError::ConversationNotFound(c.to_string()))
}

fn now_ms() -> i64 {
    confab_core::clock::system_now().as_millis()
}

fn boxed<'a, T: Send + 'a>(
    f: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'a,
) -> StoreFuture<'a, T> {
    Box::pin(f)
}

static MESSAGES_AFTER: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND seq > $2 AND deleted_at IS NULL ORDER BY seq LIMIT $3"
    )
});

static HISTORY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND seq < $2 AND deleted_at IS NULL ORDER BY seq DESC LIMIT $3"
    )
});

static DELETE_MESSAGE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "UPDATE messages SET deleted_at = $4 WHERE conversation_id = $1 AND id = $2 AND sender_id = $3 AND deleted_at IS NULL RETURNING {MESSAGE_COLUMNS}"
    )
});

/// A user's conversations, the most recently active first, with their members, unread count
/// and last message: one query.
static CONVERSATION_LIST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let last = MESSAGE_COLUMNS.split(", ").map(|c| format!("last.{c}")).collect::<Vec<_>>().join(", ");
    format!(
        "SELECT c.id, c.last_seq, m.read_seq,
            (SELECT count(*) FROM messages x WHERE x.conversation_id = c.id AND x.seq > m.read_seq
                AND x.sender_id <> $1 AND x.deleted_at IS NULL) AS unread,
            ARRAY(SELECT o.user_id FROM members o WHERE o.conversation_id = c.id ORDER BY o.user_id) AS members,
            {last}
         FROM members m JOIN conversations c ON c.id = m.conversation_id
         LEFT JOIN LATERAL (SELECT {MESSAGE_COLUMNS} FROM messages x WHERE x.conversation_id = c.id
             AND x.deleted_at IS NULL ORDER BY x.seq DESC LIMIT 1) last ON true
         WHERE m.user_id = $1 ORDER BY c.last_seq DESC, c.id"
    )
});

/// A user's conversations and, for those of up to `$2 - 1` members, the members (each size is
/// counted only up to the bound).
const MEMBERSHIPS: &str = "WITH mine AS MATERIALIZED (
         SELECT me.conversation_id AS id,
                (SELECT count(*) FROM (SELECT 1 FROM members m WHERE m.conversation_id = me.conversation_id LIMIT $2) t) AS n
         FROM members me WHERE me.user_id = $1)
     SELECT c.id, other.user_id FROM mine
     JOIN conversations c ON c.id = mine.id
     LEFT JOIN members other ON mine.n < $2 AND other.conversation_id = mine.id
     ORDER BY c.last_seq DESC, c.id, other.user_id";

/// Moves delivery watermarks that are behind (members only); returns the pairs that moved. Of
/// two claims of one row, the later waits for the earlier's commit and then re-checks
/// `seq < excluded.seq` on the row it wrote, so one claim of a seq wins and the other sees it
/// done (the same when both insert: the loser's insert turns into that conditional update).
const CLAIM_DELIVERED: &str = "INSERT INTO deliveries (conversation_id, user_id, seq)
     SELECT d.c, d.u, d.s FROM unnest($1::text[], $2::text[], $3::bigint[]) AS d(c, u, s)
     JOIN members m ON m.conversation_id = d.c AND m.user_id = d.u AND m.delivered_seq < d.s
     ORDER BY d.c, d.u
     ON CONFLICT (conversation_id, user_id) DO UPDATE SET seq = excluded.seq WHERE deliveries.seq < excluded.seq
     RETURNING conversation_id, user_id";

impl Store for PgStore {
    fn append(&self, m: NewMessage) -> StoreFuture<'_, Appended> {
        boxed(async move {
            if self.closed.load(Ordering::Acquire) {
                return Err(StoreError::Closed);
            }
            let (tx, rx) = oneshot::channel();
            self.writes.send(writer::Write::Append(m, tx)).await.map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn delete_message(&self, c: &ConversationId, m: &MessageId, by: &UserId) -> StoreFuture<'_, Message> {
        let (c, m, by) = (c.clone(), m.clone(), by.clone());
        boxed(async move {
            let rows = self.query(&DELETE_MESSAGE, &[&c.as_str(), &m.as_str(), &by.as_str(), &now_ms()]).await;
            let rows = self.track(rows)?;
            if let Some(r) = rows.first() {
                return message(r);
            }
            let exists = self
                .query(
                    "SELECT 1 FROM messages WHERE conversation_id = $1 AND id = $2 AND deleted_at IS NULL",
                    &[&c.as_str(), &m.as_str()],
                )
                .await?;
            Err(if exists.is_empty() {
                StoreError::NotFound(format!("message {m} not found in conversation {c}"))
            } else {
                StoreError::NotOwner
            })
        })
    }

    fn mark_read(&self, c: &ConversationId, user: &UserId, m: &MessageId) -> StoreFuture<'_, Option<Seq>> {
        let (c, u, m) = (c.clone(), user.clone(), m.clone());
        boxed(async move {
            // One statement: the message's seq, and the mark moved forward only if it was behind
            // (so of two nodes marking at once, one wins and only it tells the others).
            let rows = self
                .query(
                    "WITH msg AS (SELECT seq FROM messages WHERE conversation_id = $1 AND id = $3 AND deleted_at IS NULL),
                          moved AS (UPDATE members SET read_seq = msg.seq FROM msg
                                    WHERE conversation_id = $1 AND user_id = $2 AND read_seq < msg.seq
                                    RETURNING members.read_seq)
                     SELECT (SELECT seq FROM msg), (SELECT read_seq FROM moved)",
                    &[&c.as_str(), &u.as_str(), &m.as_str()],
                )
                .await;
            let rows = self.track(rows)?;
            let row = rows.first().ok_or_else(|| StoreError::Database("mark_read returned no row".into()))?;
            let found: Option<i64> = row.try_get(0).map_err(pg)?;
            let moved: Option<i64> = row.try_get(1).map_err(pg)?;
            if found.is_none() {
                return Err(StoreError::NotFound(format!("message {m} not found in conversation {c}")));
            }
            Ok(moved.map(seq))
        })
    }

    fn mark_delivered(&self, c: &ConversationId, user: &UserId, s: Seq) -> StoreFuture<'_, bool> {
        let (c, u) = (c.clone(), user.clone());
        boxed(async move {
            let n = self
                .execute(
                    "UPDATE members SET delivered_seq = $3 WHERE conversation_id = $1 AND user_id = $2 AND delivered_seq < $3",
                    &[&c.as_str(), &u.as_str(), &sql_seq(s)],
                )
                .await;
            self.track(n).map(|n| n > 0)
        })
    }

    fn claim_delivered(&self, marks: &[DeliveryMark]) -> StoreFuture<'_, Vec<usize>> {
        let marks = marks.to_vec();
        boxed(async move {
            let convs: Vec<&str> = marks.iter().map(|m| m.0.as_str()).collect();
            let users: Vec<&str> = marks.iter().map(|m| m.1.as_str()).collect();
            let seqs: Vec<i64> = marks.iter().map(|m| sql_seq(m.2)).collect();
            // Rows are written in one order on every node (ORDER BY): two claims never wait on
            // each other in a cycle.
            let rows = self.claim_rows(&[&convs, &users, &seqs]).await;
            let moved: std::collections::HashSet<(String, String)> = self
                .track(rows)?
                .iter()
                .map(|r| Ok((r.try_get(0).map_err(pg)?, r.try_get(1).map_err(pg)?)))
                .collect::<Result<_, StoreError>>()?;
            let won = |m: &DeliveryMark| moved.contains(&(m.0.as_str().to_owned(), m.1.as_str().to_owned()));
            Ok(marks.iter().enumerate().filter(|(_, m)| won(m)).map(|(i, _)| i).collect())
        })
    }

    fn message_seqs(&self, c: &ConversationId, ids: &[MessageId]) -> StoreFuture<'_, Vec<(MessageId, Seq)>> {
        let (c, ids) = (c.clone(), ids.to_vec());
        boxed(async move {
            let wanted: Vec<&str> = ids.iter().map(MessageId::as_str).collect();
            let rows = self
                .query(
                    "SELECT id, seq FROM messages WHERE conversation_id = $1 AND id = ANY ($2) AND deleted_at IS NULL",
                    &[&c.as_str(), &wanted],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    Ok((
                        parse(r.try_get(0).map_err(pg)?, MessageId::parse, "message id")?,
                        seq(r.try_get(1).map_err(pg)?),
                    ))
                })
                .collect()
        })
    }

    fn messages_after(&self, c: &ConversationId, after: Seq, limit: u32) -> StoreFuture<'_, Vec<Message>> {
        let c = c.clone();
        boxed(async move {
            let rows = self.query(&MESSAGES_AFTER, &[&c.as_str(), &sql_seq(after), &i64::from(limit)]).await?;
            messages(&rows)
        })
    }

    fn history(&self, c: &ConversationId, before: Option<Seq>, limit: u32) -> StoreFuture<'_, (Vec<Message>, bool)> {
        let c = c.clone();
        boxed(async move {
            let before = before.map_or(i64::MAX, sql_seq);
            let rows = self.query(&HISTORY, &[&c.as_str(), &before, &(i64::from(limit) + 1)]).await?;
            let mut page = messages(&rows)?;
            let has_more = page.len() > limit as usize;
            page.truncate(limit as usize);
            page.reverse();
            Ok((page, has_more))
        })
    }

    fn conversation(&self, c: &ConversationId) -> StoreFuture<'_, Option<ConversationInfo>> {
        let c = c.clone();
        boxed(async move { self.conversation_info(&c).await })
    }

    fn conversations(&self, cs: &[ConversationId]) -> StoreFuture<'_, Vec<ConversationInfo>> {
        let ids: Vec<String> = cs.iter().map(|c| c.as_str().to_owned()).collect();
        boxed(async move {
            let rows = self.query(CONVERSATIONS, &[&ids]).await?;
            let mut out = Vec::new();
            for group in rows.chunk_by(|a, b| a.get::<_, &str>(5) == b.get::<_, &str>(5)) {
                let id = parse(group[0].try_get(5).map_err(pg)?, ConversationId::parse, "conversation id")?;
                out.extend(conversation(&id, group)?);
            }
            Ok(out)
        })
    }

    fn last_seqs(&self, cs: &[ConversationId]) -> StoreFuture<'_, Vec<(ConversationId, Seq)>> {
        let ids: Vec<String> = cs.iter().map(|c| c.as_str().to_owned()).collect();
        boxed(async move {
            let rows = self.query("SELECT id, last_seq FROM conversations WHERE id = ANY ($1)", &[&ids]).await?;
            rows.iter()
                .map(|r| {
                    Ok((
                        parse(r.try_get(0).map_err(pg)?, ConversationId::parse, "conversation id")?,
                        seq(r.try_get(1).map_err(pg)?),
                    ))
                })
                .collect()
        })
    }

    fn conversations_of(&self, user: &UserId) -> StoreFuture<'_, Vec<ConversationSummary>> {
        let user = user.clone();
        boxed(async move {
            let rows = self.query(&CONVERSATION_LIST, &[&user.as_str()]).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let members: Vec<&str> = r.try_get(4).map_err(pg)?;
                let has_last = r.try_get::<_, Option<&str>>(5).map_err(pg)?.is_some();
                out.push(ConversationSummary {
                    id: parse(r.try_get(0).map_err(pg)?, ConversationId::parse, "conversation id")?,
                    members: members
                        .into_iter()
                        .map(|m| parse(m, UserId::parse, "user id"))
                        .collect::<Result<_, _>>()?,
                    last_seq: seq(r.try_get(1).map_err(pg)?),
                    read_seq: seq(r.try_get(2).map_err(pg)?),
                    unread_count: r.try_get::<_, i64>(3).map_err(pg)?.max(0) as u64,
                    last_message: if has_last { Some(message_at(r, 5)?) } else { None },
                });
            }
            Ok(out)
        })
    }

    fn memberships(&self, user: &UserId) -> StoreFuture<'_, Vec<Membership>> {
        let user = user.clone();
        boxed(async move {
            let bound = SMALL_GROUP_MAX as i64 + 1;
            let rows = self.query(MEMBERSHIPS, &[&user.as_str(), &bound]).await?;
            let mut out: Vec<Membership> = Vec::new();
            for r in &rows {
                let c = parse(r.try_get(0).map_err(pg)?, ConversationId::parse, "conversation id")?;
                let member: Option<&str> = r.try_get(1).map_err(pg)?;
                if out.last().is_none_or(|m| m.conversation_id != c) {
                    out.push(Membership { conversation_id: c, members: Vec::new() });
                }
                if let (Some(m), Some(member)) = (out.last_mut(), member) {
                    m.members.push(parse(member, UserId::parse, "user id")?);
                }
            }
            Ok(out)
        })
    }

    fn create_conversation(
        &self,
        c: ConversationId,
        members: Vec<UserId>,
        max_members: Option<u32>,
    ) -> StoreFuture<'_, ConversationInfo> {
        boxed(async move {
            let max = max_members.map(|m| i32::try_from(m).unwrap_or(i32::MAX));
            let made = self
                .transaction(async |tx| {
                    let inserted = tx_query(
                        tx,
                        "INSERT INTO conversations (id, max_members, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1",
                        &[&c.as_str(), &max, &now_ms()],
                    )
                    .await?;
                    if inserted.is_empty() {
                        return Err(StoreError::ConversationExists(c.to_string()));
                    }
                    replace_members(tx, &c, &members).await?;
                    conversation_in(tx, &c).await
                })
                .await;
            self.track(made)
        })
    }

    fn set_members(&self, c: &ConversationId, members: Vec<UserId>) -> StoreFuture<'_, ConversationInfo> {
        let c = c.clone();
        boxed(async move {
            let set = self
                .transaction(async |tx| {
                    // The conversation's lock first, as the writer takes it: member rows are
                    // only written under it.
                    let found =
                        tx_query(tx, "SELECT 1 FROM conversations WHERE id = $1 FOR NO KEY UPDATE", &[&c.as_str()])
                            .await?;
                    if found.is_empty() {
                        return Err(StoreError::ConversationNotFound(c.to_string()));
                    }
                    replace_members(tx, &c, &members).await?;
                    conversation_in(tx, &c).await
                })
                .await;
            self.track(set)
        })
    }

    fn delete_conversation(&self, c: &ConversationId) -> StoreFuture<'_, ()> {
        let c = c.clone();
        boxed(async move {
            let deleted = self
                .transaction(async |tx| {
                    let gone =
                        tx_query(tx, "DELETE FROM conversations WHERE id = $1 RETURNING 1", &[&c.as_str()]).await?;
                    if gone.is_empty() {
                        return Err(StoreError::ConversationNotFound(c.to_string()));
                    }
                    for table in ["members", "messages", "photos"] {
                        tx_query(tx, &format!("DELETE FROM {table} WHERE conversation_id = $1"), &[&c.as_str()])
                            .await?;
                    }
                    Ok(())
                })
                .await;
            self.track(deleted)
        })
    }

    fn create_photo(&self, p: Photo) -> StoreFuture<'_, ()> {
        boxed(async move {
            let expires = i32::try_from(p.expires_in).unwrap_or(i32::MAX);
            let n = self
                .execute(
                    &format!("INSERT INTO photos ({PHOTO_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, NULL)"),
                    &[
                        &p.id.as_str(),
                        &p.conversation_id.as_str(),
                        &p.sender_id.as_str(),
                        &p.url,
                        &expires,
                        &p.created_at.as_millis(),
                    ],
                )
                .await;
            self.track(n).map(drop)
        })
    }

    fn photo(&self, id: &PhotoId) -> StoreFuture<'_, Option<Photo>> {
        let id = id.clone();
        boxed(async move {
            let rows =
                self.query(&format!("SELECT {PHOTO_COLUMNS} FROM photos WHERE id = $1"), &[&id.as_str()]).await?;
            rows.first().map(photo).transpose()
        })
    }

    fn view_photo(&self, id: &PhotoId, viewer: &UserId, now: Timestamp) -> StoreFuture<'_, (Photo, bool)> {
        let (id, viewer) = (id.clone(), viewer.clone());
        boxed(async move {
            // The first view by someone other than the sender starts the clock: a conditional
            // update, so of two nodes one wins and the other reads what it set.
            let started = self
                .query(
                    &format!(
                        "UPDATE photos SET first_viewed_at = $3 WHERE id = $1 AND first_viewed_at IS NULL AND sender_id <> $2 RETURNING {PHOTO_COLUMNS}"
                    ),
                    &[&id.as_str(), &viewer.as_str(), &now.as_millis()],
                )
                .await;
            if let Some(r) = self.track(started)?.first() {
                return Ok((photo(r)?, true));
            }
            let rows =
                self.query(&format!("SELECT {PHOTO_COLUMNS} FROM photos WHERE id = $1"), &[&id.as_str()]).await?;
            let p = rows.first().map(photo).transpose()?;
            Ok((p.ok_or_else(|| StoreError::NotFound(format!("photo {id} not found")))?, false))
        })
    }

    fn ticking_photos(&self) -> StoreFuture<'_, Vec<Photo>> {
        boxed(async move {
            let rows = self
                .query(
                    &format!(
                        "SELECT {PHOTO_COLUMNS} FROM photos WHERE first_viewed_at IS NOT NULL AND NOT expiry_announced"
                    ),
                    &[],
                )
                .await?;
            rows.iter().map(photo).collect()
        })
    }

    fn claim_expiry(&self, id: &PhotoId) -> StoreFuture<'_, bool> {
        let id = id.clone();
        boxed(async move {
            let n = self
                .execute(
                    "UPDATE photos SET expiry_announced = true WHERE id = $1 AND NOT expiry_announced",
                    &[&id.as_str()],
                )
                .await;
            self.track(n).map(|n| n > 0)
        })
    }

    fn inbox_push(&self, user: &UserId, item: InboxItem) -> StoreFuture<'_, ()> {
        let u = user.clone();
        boxed(async move {
            let data = serde_json::to_string(&item.data).map_err(|e| StoreError::Database(e.to_string()))?;
            let n = self
                .execute(
                    "INSERT INTO inbox (user_id, kind, data) VALUES ($1, $2, $3)",
                    &[&u.as_str(), &item.kind, &data],
                )
                .await;
            self.track(n).map(drop)
        })
    }

    fn inbox_take(&self, user: &UserId) -> StoreFuture<'_, Vec<InboxItem>> {
        let u = user.clone();
        boxed(async move {
            // A delete that returns what it took: of two nodes taking at once, each item goes to
            // one of them.
            let rows =
                self.query("DELETE FROM inbox WHERE user_id = $1 RETURNING id, kind, data", &[&u.as_str()]).await;
            let mut rows = self.track(rows)?;
            rows.sort_by_key(|r| r.get::<_, i64>(0));
            Ok(rows
                .iter()
                .filter_map(|r| {
                    let data = serde_json::from_str::<Metadata>(r.try_get(2).ok()?).ok()?;
                    Some(InboxItem { kind: r.try_get(1).ok()?, data })
                })
                .collect())
        })
    }

    fn put_attachment(&self, a: Attachment) -> StoreFuture<'_, ()> {
        boxed(async move {
            let n = self
                .execute(
                    "INSERT INTO attachments (id, conversation_id, uploader, kind, filename, bytes, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        &a.id,
                        &a.conversation_id.as_str(),
                        &a.uploader.as_str(),
                        &a.kind,
                        &a.filename,
                        &a.bytes,
                        &a.created_at.as_millis(),
                    ],
                )
                .await;
            self.track(n).map(drop)
        })
    }

    fn attachment(&self, id: &str) -> StoreFuture<'_, Option<Attachment>> {
        let id = id.to_owned();
        boxed(async move {
            let rows = self
                .query(
                    "SELECT id, conversation_id, uploader, kind, filename, bytes, created_at FROM attachments WHERE id = $1",
                    &[&id],
                )
                .await?;
            let Some(r) = rows.first() else { return Ok(None) };
            Ok(Some(Attachment {
                id: r.try_get(0).map_err(pg)?,
                conversation_id: parse(r.try_get(1).map_err(pg)?, ConversationId::parse, "conversation id")?,
                uploader: parse(r.try_get(2).map_err(pg)?, UserId::parse, "user id")?,
                kind: r.try_get(3).map_err(pg)?,
                filename: r.try_get(4).map_err(pg)?,
                bytes: r.try_get(5).map_err(pg)?,
                created_at: Timestamp::from_millis(r.try_get(6).map_err(pg)?),
            }))
        })
    }

    fn writable(&self) -> Result<(), String> {
        self.health.state()
    }

    fn probe_write(&self) -> StoreFuture<'_, ()> {
        boxed(async move {
            let n = self
                .execute(
                    "INSERT INTO probe (id, at) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                    &[&now_ms()],
                )
                .await;
            self.track(n).map(drop)
        })
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        self.closed.store(true, Ordering::Release);
        boxed(async move {
            let (tx, rx) = oneshot::channel();
            // The writer has ended already: closed, which is what closing asks for.
            if self.writes.send(writer::Write::Close(tx)).await.is_ok() {
                let _ = rx.await;
            }
            self.pool.close();
            Ok(())
        })
    }
}

/// Where tests find a PostgreSQL server they may create databases in: `CONFAB_TEST_POSTGRES`,
/// else the local one this project's machines run.
pub fn test_server_url() -> String {
    std::env::var("CONFAB_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Creates an empty database on the server of `server_url` (a URL of any database there) and
/// returns the URL of the new one: each test gets a store of its own.
pub async fn create_scratch_database(server_url: &str, prefix: &str) -> Result<String, StoreError> {
    let config = connection_config(server_url).map_err(StoreError::Database)?;
    let client = connect(&config).await?;
    let name = format!("{prefix}_{:016x}", rand::random::<u64>());
    timely(client.batch_execute(&format!("CREATE DATABASE {name}"))).await?;
    let base = server_url.rsplit_once('/').map_or(server_url, |(base, _)| base);
    Ok(format!("{base}/{name}"))
}

/// Drops a database made by [`create_scratch_database`] (its connections are ended first).
pub async fn drop_scratch_database(server_url: &str, url: &str) -> Result<(), StoreError> {
    let config = connection_config(server_url).map_err(StoreError::Database)?;
    let client = connect(&config).await?;
    let name = url.rsplit('/').next().unwrap_or_default();
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(StoreError::Database(format!("not a scratch database: {name:?}")));
    }
    timely(client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).await
}

/// The server's WAL position in bytes and the committed transactions of the database at `url`
/// so far (the cluster bench reads them before and after a case; the latter lags by up to a
/// second, PostgreSQL's statistics flush).
pub async fn wal_and_commits(url: &str) -> Result<(i64, i64), StoreError> {
    let config = connection_config(url).map_err(StoreError::Database)?;
    let client = connect(&config).await?;
    let sql = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint,
                      (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database())";
    let row = timely(client.query_one(sql, &[])).await?;
    Ok((row.try_get(0).map_err(pg)?, row.try_get(1).map_err(pg)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[derive(Debug)]
    struct NoFanout;

    impl CommitSink for NoFanout {
        fn committed(&self, _: &Message, _: Option<&Requester>) -> Vec<UserId> {
            Vec::new()
        }
    }

    /// A scratch database, or `None` (with a message) where no PostgreSQL runs; under `CI=true`
    /// a missing PostgreSQL fails the test instead.
    async fn scratch() -> Option<String> {
        match create_scratch_database(&test_server_url(), "confab_test").await {
            Ok(url) => Some(url),
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("PostgreSQL at {} is needed under CI=true: {e}", test_server_url())
            }
            Err(e) => {
                eprintln!("skipped: no PostgreSQL at {} ({e}); set CONFAB_TEST_POSTGRES", test_server_url());
                None
            }
        }
    }

    fn id<T>(s: &str, p: fn(&str) -> Result<T, String>) -> T {
        p(s).unwrap()
    }

    fn text(c: &ConversationId, sender: &UserId, local: Option<&str>) -> NewMessage {
        NewMessage {
            conversation_id: c.clone(),
            sender_id: sender.clone(),
            kind: MessageKind::Text,
            content: "hi".into(),
            metadata: Default::default(),
            local_id: local.map(|l| id(l, LocalId::parse)),
            reply_to: None,
            created_at: Timestamp::from_millis(1_000),
            requester: None,
        }
    }

    /// The contract every store keeps (`confab_core::store::conformance`), on PostgreSQL: each
    /// part on a database of its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_keeps_the_store_contract() {
        let Some(first) = scratch().await else { return };
        let made = Arc::new(std::sync::Mutex::new(vec![first]));
        let handed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (m, h) = (Arc::clone(&made), Arc::clone(&handed));
        confab_core::store::conformance::run(move |sink| {
            let (made, handed) = (Arc::clone(&m), Arc::clone(&h));
            Box::pin(async move {
                // The first part uses the database made above; each later one a new one.
                let url = if handed.fetch_add(1, Ordering::Relaxed) == 0 {
                    made.lock().unwrap()[0].clone()
                } else {
                    let url = create_scratch_database(&test_server_url(), "confab_test").await.unwrap();
                    made.lock().unwrap().push(url.clone());
                    url
                };
                Arc::new(PgStore::open(&url, sink, Default::default()).await.unwrap()) as Arc<dyn Store>
            })
        })
        .await;
        let made = made.lock().unwrap().clone();
        for url in made {
            drop_scratch_database(&test_server_url(), &url).await.unwrap();
        }
    }

    /// Nodes that start at once on a new database migrate it once between them, and what one
    /// appends the others see, with seqs from one count: appends from three stores (three
    /// nodes' writers) into one conversation at once get 1..N, each once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_nodes_share_one_gap_free_sequence() {
        let Some(url) = scratch().await else { return };
        let opens = (0..3).map(|_| PgStore::open(&url, Arc::new(NoFanout), Default::default()));
        let stores: Vec<Arc<PgStore>> =
            futures_util::future::join_all(opens).await.into_iter().map(|s| Arc::new(s.unwrap())).collect();
        let (c, u) = (id("c", ConversationId::parse), id("u", UserId::parse));
        stores[0].create_conversation(c.clone(), vec![u.clone()], None).await.unwrap();
        let mut senders = Vec::new();
        for (n, store) in stores.iter().enumerate() {
            for i in 0..200 {
                let (store, c, u) = (Arc::clone(store), c.clone(), u.clone());
                // Every tenth message is sent twice (a client's retry), on another node too.
                let local = format!("l{n}-{i}");
                senders.push(tokio::spawn(async move { store.append(text(&c, &u, Some(&local))).await.unwrap() }));
            }
        }
        for i in (0..200).step_by(10) {
            let (store, c, u) = (Arc::clone(&stores[(i / 10) % 3]), c.clone(), u.clone());
            let local = format!("l0-{i}");
            senders.push(tokio::spawn(async move { store.append(text(&c, &u, Some(&local))).await.unwrap() }));
        }
        let mut fresh = 0;
        for s in senders {
            fresh += usize::from(!s.await.unwrap().duplicate);
        }
        assert_eq!(fresh, 600, "each local_id stored once");
        let all = stores[2].messages_after(&c, Seq(0), 1000).await.unwrap();
        let seqs: Vec<u64> = all.iter().map(|m| m.seq.unwrap().0).collect();
        assert_eq!(seqs, (1..=600).collect::<Vec<_>>(), "gap-free, each once");
        assert_eq!(stores[1].conversation(&c).await.unwrap().unwrap().last_seq, Seq(600));
        let versions = {
            let client = connect(&connection_config(&url).unwrap()).await.unwrap();
            client.query_one("SELECT count(*) FROM confab_migrations", &[]).await.unwrap().get::<_, i64>(0)
        };
        assert_eq!(versions, schema::VERSIONS as i64, "each migration applied once");
        for s in &stores {
            s.close().await.unwrap();
        }
        drop_scratch_database(&test_server_url(), &url).await.unwrap();
    }

    /// What an append costs PostgreSQL: latency one at a time, and under concurrent senders the
    /// transactions (so batches, each one round trip) and WAL bytes per message.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement: cargo test --release -p confab-server postgres_append_costs -- --ignored --nocapture"]
    async fn postgres_append_costs() {
        let Some(url) = scratch().await else { return };
        let metrics = Arc::new(Metrics::default());
        let store = Arc::new(PgStore::open(&url, Arc::new(NoFanout), Arc::clone(&metrics)).await.unwrap());
        let admin = connect(&connection_config(&url).unwrap()).await.unwrap();
        let (c, u, r) = (id("c", ConversationId::parse), id("u", UserId::parse), id("r", UserId::parse));
        store.create_conversation(c.clone(), vec![u.clone(), r], None).await.unwrap();
        // The WAL's position, and the writer's batches (each one statement, one round trip).
        let counters = async || {
            let lsn: String = admin.query_one("SELECT pg_current_wal_lsn()::text", &[]).await.unwrap().get(0);
            let (hi, lo) = lsn.split_once('/').unwrap();
            let bytes = (u64::from_str_radix(hi, 16).unwrap() << 32) + u64::from_str_radix(lo, 16).unwrap();
            let rendered = metrics.render();
            let batches = rendered
                .lines()
                .find_map(|l| l.strip_prefix("confab_store_batch_size_count "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            (bytes, batches as i64)
        };
        let n = 2000;
        let before = counters().await;
        let mut times = Vec::with_capacity(n);
        for i in 0..n {
            let t = std::time::Instant::now();
            store.append(text(&c, &u, Some(&format!("one-{i}")))).await.unwrap();
            times.push(t.elapsed().as_micros());
        }
        let after = counters().await;
        times.sort_unstable();
        eprintln!(
            "one at a time: p50 {} us, p99 {} us; per append {:.0} WAL bytes, {:.2} batches",
            times[n / 2],
            times[n * 99 / 100],
            (after.0 - before.0) as f64 / n as f64,
            (after.1 - before.1) as f64 / n as f64,
        );
        let (senders, each) = (32, 250);
        let before = counters().await;
        let t = std::time::Instant::now();
        let tasks: Vec<_> = (0..senders)
            .map(|s| {
                let (store, c, u) = (Arc::clone(&store), c.clone(), u.clone());
                tokio::spawn(async move {
                    for i in 0..each {
                        store.append(text(&c, &u, Some(&format!("many-{s}-{i}")))).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let elapsed = t.elapsed();
        let after = counters().await;
        let total = (senders * each) as f64;
        eprintln!(
            "{senders} senders: {:.0} appends/s; per append {:.0} WAL bytes, {:.3} batches ({:.1} appends a batch)",
            total / elapsed.as_secs_f64(),
            (after.0 - before.0) as f64 / total,
            (after.1 - before.1) as f64 / total,
            total / (after.1 - before.1).max(1) as f64,
        );
        store.close().await.unwrap();
        drop_scratch_database(&test_server_url(), &url).await.unwrap();
    }
}
