//! The embedded store: SQLite (bundled) in WAL mode, `synchronous = FULL` unless `--sync normal`.
//!
//! Why SQLite: one file, transactions, secondary indexes and ad-hoc queries (history pages,
//! unread counts, a conversation list) without hand-built indexes, and a schema that maps
//! one-to-one onto PostgreSQL later. Why it is fast enough: every write goes through one
//! task on the runtime ([`front`]) that takes all the requests waiting for it as one batch,
//! so durable acks cost a sync per batch, not per message. A batch's messages are journaled
//! with one `write` ([`journal`]), fanned out and answered first, and committed just after by
//! the applier thread, the rows of several batches in one transaction; with `--sync full` the
//! journal's record is on disk (`fdatasync`) before the fan-out, and the applier's commits are
//! synced too, before the journal lets go of what they hold. Reads use their own connection
//! (WAL readers never block the writer).

mod front;
mod journal;
mod rows;
mod schema;
mod writer;

use confab_codec::event::Message;
use confab_codec::event::Metadata;
use confab_codec::{ConversationId, LocalId, MessageId, MessageKind, PhotoId, Seq, Timestamp, UserId};
use confab_core::metrics::Metrics;
use confab_core::store::*;
use front::*;
use journal::*;
use rows::*;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use schema::*;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use writer::*;

/// When a commit counts as done (`--sync`, docs/operations.md "Storage").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Synced to disk before the ack: survives a crash of the process and of the machine.
    Full,
    /// Written to the OS before the ack, synced at checkpoints: survives a crash of the
    /// process (`kill -9`), not a power loss or a kernel crash. About half the 1:1 latency.
    Normal,
}

impl SyncMode {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "full" => Some(Self::Full),
            "normal" => Some(Self::Normal),
            _ => None,
        }
    }
}

/// Most requests applied in one transaction.
const MAX_BATCH: usize = 1024;
/// Requests waiting for the writer; senders wait when it is full.
const QUEUE: usize = 8192;

/// How often the WAL is checkpointed into the database file. Often, so that each checkpoint has
/// little to copy and sync: the commits that meet a checkpoint wait for it (not for CPU: giving
/// the checkpoint thread the idle priority changed nothing), and the longer it is, the longer
/// they wait. Every second, at 5,000 msg/s (tens of MB of WAL a second, four 4 KiB pages a lone
/// commit), that wait was the p99 of the 1:1 runs, 4.5-5.4 ms; every 100 ms it is 1.8-2.5 ms,
/// CPU per message unchanged; without checkpoints, 1.0-1.7 ms (docs/benchmarks.md, issue 19).
/// With nothing new in the WAL a checkpoint is a read of its header.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// Past this many WAL frames (about 64 MB) the writer is asked to rewind the WAL. Under steady
/// writes the checkpoint thread's passive checkpoints never catch up with the last frame (the
/// writer keeps appending while they copy), and SQLite only starts the WAL over once every
/// frame is copied. So the thread copies the bulk, off the writer's path, and then, asked by the
/// writer between two batches, the few frames written since, while the writer waits; the
/// writer's next batch starts the WAL over: a stall of milliseconds. (Before, the WAL grew to [`WAL_FRAMES_MAX`] and a
/// RESTART checkpoint blocked the writer for the whole copy: 250 ms and more, which showed as
/// the p99 of the open-loop throughput runs, docs/benchmarks.md.)
const WAL_FRAMES_REWIND: i64 = 16_384;
/// The backstop: a WAL this many frames long (about 256 MB) is checkpointed even if it must
/// wait for readers and block the writer (RESTART), so that it cannot grow without bound.
const WAL_FRAMES_MAX: i64 = 65_536;

/// A user's conversations, the most recently active first, with their last seq and the
/// user's read mark.
static CONVERSATION_LIST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT c.id, {LAST_SEQ_OF_C} AS last_seq, m.read_seq FROM members m JOIN conversations c ON c.id = m.conversation_id WHERE m.user_id = ?1 ORDER BY last_seq DESC"
    )
});

/// A user's conversations with their members (up to a bound, see `memberships`).
static MEMBERSHIPS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH mine AS MATERIALIZED (
             SELECT me.conversation_id AS id,
                    (SELECT COUNT(*) FROM (SELECT 1 FROM members m
                      WHERE m.conversation_id = me.conversation_id LIMIT ?2)) AS n
             FROM members me WHERE me.user_id = ?1)
         SELECT c.id, other.user_id FROM mine
         JOIN conversations c ON c.id = mine.id
         LEFT JOIN members other ON mine.n < ?2 AND other.conversation_id = mine.id
         ORDER BY {LAST_SEQ_OF_C} DESC, c.id"
    )
});

/// The SQLite store. Cheap to share (`Arc`); the writer and checkpoint threads end when it is
/// dropped.
pub struct SqliteStore {
    writes: mpsc::Sender<Write>,
    reader: Arc<Mutex<Connection>>,
    health: Arc<WriteHealth>,
    /// Set by `close`: reads fail from then on, as writes do once the writer has ended.
    closed: Arc<std::sync::atomic::AtomicBool>,
    /// How far SQLite is behind the journal: reads wait for it.
    applied: Arc<Applied>,
    /// Dropping it (and the writer's) tells the checkpoint thread to do a last checkpoint and
    /// end.
    _checkpoints: std::sync::mpsc::Sender<Rewound>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (or creates) `dir/confab.db`. Each committed message is passed to `sink`, in
    /// commit order, before its `append` call returns.
    pub fn open(
        dir: &Path,
        sync: SyncMode,
        sink: Arc<dyn CommitSink>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        Self::open_holding(dir, sync, sink, metrics, HOLD_FOR)
    }

    /// [`SqliteStore::open`], with the front holding journaled rows for
    /// `hold_for` at most ([`front::HOLD_FOR`] but in tests).
    fn open_holding(
        dir: &Path,
        sync: SyncMode,
        sink: Arc<dyn CommitSink>,
        metrics: Arc<Metrics>,
        hold_for: std::time::Duration,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(format!("{}: {e}", dir.display())))?;
        let path = dir.join("confab.db");
        let mut writer = open(&path, sync)?;
        writer.execute_batch(SCHEMA).map_err(db)?;
        migrate(&writer)?;
        // What the last run journaled and may not have applied (`kill -9`), applied now,
        // whatever `--sync` this run has.
        let (mut journal, unapplied) = Journal::open(dir, sync == SyncMode::Full)?;
        if !unapplied.is_empty() {
            replay(&mut writer, &unapplied)?;
        }
        journal.empty(true)?;
        // Checkpoints run on a thread of their own (a third of the writer's time when it did
        // them itself, on the path of every acknowledgement).
        // (SQLite's default page cache, 2 MiB: a 16 MiB one measured no clearly faster, and it
        // kept filling for the ten minutes of the soak, RSS +22%; docs/benchmarks.md.)
        // A rewound WAL file is cut back to this size, so that disk use follows the bound.
        writer.execute_batch("PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864;").map_err(db)?;
        let reader = open(&path, sync)?;
        let checkpointer = open(&path, sync)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let rewind = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let health = Arc::new(WriteHealth::default());
        let (checkpoints, asks) = std::sync::mpsc::channel();
        let applied = Arc::new(Applied::default());
        let writer = Writer::new(
            writer,
            Arc::clone(&metrics),
            Arc::clone(&rewind),
            checkpoints.clone(),
            Arc::clone(&health),
            Arc::clone(&applied),
        );
        // The front ends when the store is closed or dropped (its queue closes), and the
        // applier after it.
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| StoreError::Database(format!("the SQLite store runs on a tokio runtime: {e}")))?;
        let reads = open(&path, sync)?;
        let mut front = Front::start(reads, journal, writer, sink, Arc::clone(&health), metrics, Arc::clone(&applied))?;
        front.hold_for = hold_for;
        drop(runtime.spawn(front_task(front, rx)));
        std::thread::Builder::new()
            .name("confab-store-checkpoint".into())
            .spawn(move || checkpoint_loop(&checkpointer, &asks, &rewind))
            .map_err(|e| StoreError::Database(format!("checkpoint thread: {e}")))?;
        Ok(Self {
            writes: tx,
            reader: Arc::new(Mutex::new(reader)),
            health,
            closed: Arc::default(),
            applied,
            _checkpoints: checkpoints,
        })
    }

    fn write<T: Send + 'static>(&self, make: impl FnOnce(Reply<T>) -> Write + Send + 'static) -> StoreFuture<'_, T> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            self.writes.send(make(tx)).await.map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        let reader = Arc::clone(&self.reader);
        let closed = Arc::clone(&self.closed);
        let journaled = self.applied.journaled();
        Box::pin(async move {
            if closed.load(std::sync::atomic::Ordering::Acquire) {
                return Err(StoreError::Closed);
            }
            self.applied.caught_up(journaled).await;
            tokio::task::spawn_blocking(move || {
                let conn = reader.lock().map_err(|_| StoreError::Database("reader lock poisoned".into()))?;
                f(&conn)
            })
            .await
            .map_err(|e| StoreError::Database(e.to_string()))?
        })
    }
}

/// Copies the WAL into the database file every [`CHECKPOINT_EVERY`] without blocking the writer (PASSIVE),
/// asks the writer to rewind it past [`WAL_FRAMES_REWIND`], and waits for readers (RESTART)
/// only when it has grown past [`WAL_FRAMES_MAX`] all the same. The writer has it make the
/// rewind's last copy too, while it waits (answered on `asks`). Ends, after a last
/// checkpoint, when the store is dropped.
fn checkpoint_loop(
    conn: &Connection,
    asks: &std::sync::mpsc::Receiver<Rewound>,
    rewind: &std::sync::atomic::AtomicBool,
) {
    // A failure (a full disk) is logged when it begins and when it ends, not at every checkpoint.
    let mut failing = false;
    loop {
        let (asked, last) = match asks.recv_timeout(CHECKPOINT_EVERY) {
            Ok(done) => (Some(done), false),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => (None, false),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => (None, true),
        };
        let passive: Result<(i64, i64, i64), _> =
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)));
        let worked = passive.is_ok();
        match passive {
            Ok((_, frames, _)) if frames > WAL_FRAMES_MAX => {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "WAL checkpoint (restart)");
                }
            }
            // The WAL starts over with the writer's next batch: nothing more to ask.
            Ok(_) if asked.is_some() => {}
            Ok((_, frames, _)) if frames > WAL_FRAMES_REWIND => {
                rewind.store(true, std::sync::atomic::Ordering::Relaxed)
            }
            Ok(_) => {}
            Err(e) if !failing => tracing::warn!(error = %e, "WAL checkpoint fails (logged again when it works)"),
            Err(_) => {}
        }
        if failing && worked {
            tracing::info!("WAL checkpoint works again");
        }
        failing = !worked;
        if let Some(done) = asked {
            let _ = done.send(());
        }
        if last {
            return;
        }
    }
}

impl Store for SqliteStore {
    fn append(&self, m: NewMessage) -> StoreFuture<'_, Appended> {
        self.write(move |r| Write::Append(m, r))
    }

    fn delete_message(&self, c: &ConversationId, m: &MessageId, by: &UserId) -> StoreFuture<'_, Message> {
        let (c, m, by) = (c.clone(), m.clone(), by.clone());
        self.write(move |r| Write::Delete(c, m, by, r))
    }

    fn mark_read(&self, c: &ConversationId, user: &UserId, m: &MessageId) -> StoreFuture<'_, Option<Seq>> {
        let (c, u, m) = (c.clone(), user.clone(), m.clone());
        self.write(move |r| Write::MarkRead(c, u, m, r))
    }

    fn mark_delivered(&self, c: &ConversationId, user: &UserId, seq: Seq) -> StoreFuture<'_, bool> {
        let (c, u) = (c.clone(), user.clone());
        self.write(move |r| Write::MarkDelivered(c, u, seq, r))
    }

    fn message_seqs(&self, c: &ConversationId, ids: &[MessageId]) -> StoreFuture<'_, Vec<(MessageId, Seq)>> {
        let (c, ids) = (c.clone(), ids.to_vec());
        self.read(move |t| {
            let mut stmt = t
                .prepare_cached(
                    "SELECT seq FROM messages WHERE id = ?1 AND conversation_id = ?2 AND deleted_at IS NULL",
                )
                .map_err(db)?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let seq: Option<i64> =
                    stmt.query_row(params![id.as_str(), c.as_str()], |r| r.get(0)).optional().map_err(db)?;
                if let Some(seq) = seq {
                    out.push((id, Seq(seq.max(0) as u64)));
                }
            }
            Ok(out)
        })
    }

    fn messages_after(&self, c: &ConversationId, after: Seq, limit: u32) -> StoreFuture<'_, Vec<Message>> {
        let c = c.clone();
        self.read(move |t| {
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND seq > ?2 AND deleted_at IS NULL ORDER BY seq LIMIT ?3"
            );
            messages(t, &sql, params![c.as_str(), after.0.min(i64::MAX as u64) as i64, limit])
        })
    }

    fn history(&self, c: &ConversationId, before: Option<Seq>, limit: u32) -> StoreFuture<'_, (Vec<Message>, bool)> {
        let c = c.clone();
        self.read(move |t| {
            let before = before.map_or(i64::MAX, |s| s.0.min(i64::MAX as u64) as i64);
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND seq < ?2 AND deleted_at IS NULL ORDER BY seq DESC LIMIT ?3"
            );
            let mut page = messages(t, &sql, params![c.as_str(), before, limit + 1])?;
            let has_more = page.len() > limit as usize;
            page.truncate(limit as usize);
            page.reverse();
            Ok((page, has_more))
        })
    }

    fn conversation(&self, c: &ConversationId) -> StoreFuture<'_, Option<ConversationInfo>> {
        let c = c.clone();
        self.read(move |t| conversation(t, &c))
    }

    fn conversations_of(&self, user: &UserId) -> StoreFuture<'_, Vec<ConversationSummary>> {
        let user = user.clone();
        self.read(move |t| {
            let mut stmt = t
                .prepare_cached(&CONVERSATION_LIST)
                .map_err(db)?;
            let heads = stmt
                .query_map([user.as_str()], |r| {
                    Ok((parse_col(r.get(0)?, ConversationId::parse, "conversation id")?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                })
                .map_err(db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db)?;
            let mut out = Vec::with_capacity(heads.len());
            for (id, last_seq, read_seq) in heads {
                let unread: i64 = query_row(t,
                        "SELECT COUNT(*) FROM messages WHERE conversation_id = ?1 AND seq > ?2 AND sender_id <> ?3 AND deleted_at IS NULL",
                        params![id.as_str(), read_seq, user.as_str()],
                        |r| r.get(0),
                    )
                    .map_err(db)?;
                let last = messages(
                    t,
                    &format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND deleted_at IS NULL ORDER BY seq DESC LIMIT 1"),
                    [id.as_str()],
                )?;
                let members = conversation(t, &id)?.map(|c| c.members.into_iter().map(|m| m.user_id).collect()).unwrap_or_default();
                out.push(ConversationSummary {
                    id,
                    members,
                    last_seq: Seq(last_seq as u64),
                    read_seq: Seq(read_seq as u64),
                    unread_count: unread as u64,
                    last_message: last.into_iter().next(),
                });
            }
            Ok(out)
        })
    }

    fn memberships(&self, user: &UserId) -> StoreFuture<'_, Vec<Membership>> {
        let user = user.clone();
        self.read(move |t| {
            // Each conversation's size is counted once, and only up to the bound (MATERIALIZED:
            // not once per member row); a bigger one comes back as one row without members.
            let mut stmt = t.prepare_cached(&MEMBERSHIPS).map_err(db)?;
            let bound = SMALL_GROUP_MAX as i64 + 1;
            let rows = stmt
                .query_map(params![user.as_str(), bound], |r| {
                    let member: Option<String> = r.get(1)?;
                    Ok((
                        parse_col(r.get(0)?, ConversationId::parse, "conversation id")?,
                        member.map(|m| parse_col(m, UserId::parse, "user id")).transpose()?,
                    ))
                })
                .map_err(db)?;
            let mut out: Vec<Membership> = Vec::new();
            for row in rows {
                let (c, member) = row.map_err(db)?;
                if out.last().is_none_or(|m| m.conversation_id != c) {
                    out.push(Membership { conversation_id: c, members: Vec::new() });
                }
                if let (Some(m), Some(member)) = (out.last_mut(), member) {
                    m.members.push(member);
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
        self.write(move |r| Write::Create(c, members, max_members, r))
    }

    fn set_members(&self, c: &ConversationId, members: Vec<UserId>) -> StoreFuture<'_, ConversationInfo> {
        let c = c.clone();
        self.write(move |r| Write::SetMembers(c, members, r))
    }

    fn delete_conversation(&self, c: &ConversationId) -> StoreFuture<'_, ()> {
        let c = c.clone();
        self.write(move |r| Write::DeleteConversation(c, r))
    }

    fn create_photo(&self, p: Photo) -> StoreFuture<'_, ()> {
        self.write(move |r| Write::CreatePhoto(p, r))
    }

    fn put_attachment(&self, a: Attachment) -> StoreFuture<'_, ()> {
        self.write(move |r| Write::PutAttachment(a, r))
    }

    fn attachment(&self, id: &str) -> StoreFuture<'_, Option<Attachment>> {
        let id = id.to_owned();
        self.read(move |t| {
            query_row(
                t,
                "SELECT id, conversation_id, uploader, kind, filename, bytes, created_at FROM attachments WHERE id = ?1",
                [id.as_str()],
                |r| {
                    Ok(Attachment {
                        id: r.get(0)?,
                        conversation_id: parse_col(r.get(1)?, ConversationId::parse, "conversation id")?,
                        uploader: parse_col(r.get(2)?, UserId::parse, "user id")?,
                        kind: r.get(3)?,
                        filename: r.get(4)?,
                        bytes: r.get(5)?,
                        created_at: Timestamp::from_millis(r.get(6)?),
                    })
                },
            )
            .optional()
            .map_err(db)
        })
    }

    fn writable(&self) -> Result<(), String> {
        self.health.state()
    }

    fn probe_write(&self) -> StoreFuture<'_, ()> {
        self.write(Write::Probe)
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        self.closed.store(true, std::sync::atomic::Ordering::Release);
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            // Closed already: the writer has ended, which is what closing asks for.
            if self.writes.send(Write::Close(tx)).await.is_err() {
                return Ok(());
            }
            rx.await.unwrap_or(Ok(()))
        })
    }

    fn photo(&self, id: &PhotoId) -> StoreFuture<'_, Option<Photo>> {
        let id = id.clone();
        self.read(move |t| photo(t, &id))
    }

    fn view_photo(&self, id: &PhotoId, viewer: &UserId, now: Timestamp) -> StoreFuture<'_, (Photo, bool)> {
        let (id, viewer) = (id.clone(), viewer.clone());
        self.write(move |r| Write::ViewPhoto(id, viewer, now, r))
    }

    fn ticking_photos(&self) -> StoreFuture<'_, Vec<Photo>> {
        self.read(|t| {
            let mut stmt = t
                .prepare(
                    "SELECT id, conversation_id, sender_id, url, expires_in, created_at, first_viewed_at FROM photos WHERE first_viewed_at IS NOT NULL",
                )
                .map_err(db)?;
            stmt.query_map([], row_to_photo).map_err(db)?.collect::<Result<Vec<_>, _>>().map_err(db)
        })
    }

    fn inbox_push(&self, user: &UserId, item: InboxItem) -> StoreFuture<'_, ()> {
        let u = user.clone();
        self.write(move |r| Write::InboxPush(u, item, r))
    }

    fn inbox_take(&self, user: &UserId) -> StoreFuture<'_, Vec<InboxItem>> {
        let u = user.clone();
        self.write(move |r| Write::InboxTake(u, r))
    }
}

/// A store whose commits go nowhere (no hub), for tests of the store alone.
#[cfg(test)]
fn open_without_fanout(dir: &Path, sync: SyncMode) -> SqliteStore {
    SqliteStore::open(dir, sync, Arc::new(NoFanout), Default::default()).unwrap_or_else(|e| panic!("open: {e}"))
}

/// Commits that go nowhere.
#[cfg(test)]
#[derive(Debug)]
struct NoFanout;

#[cfg(test)]
impl CommitSink for NoFanout {
    fn committed(&self, _: &Message, _: Option<&Requester>) -> Vec<UserId> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id<T>(s: &str, p: fn(&str) -> Result<T, String>) -> T {
        p(s).unwrap()
    }

    fn new_message(c: &ConversationId, sender: &UserId, text: &str, local: Option<&str>) -> NewMessage {
        NewMessage {
            conversation_id: c.clone(),
            sender_id: sender.clone(),
            kind: MessageKind::Text,
            content: text.into(),
            metadata: Default::default(),
            local_id: local.map(|l| id(l, LocalId::parse)),
            reply_to: None,
            created_at: Timestamp::from_millis(1_000),
            requester: None,
        }
    }

    /// The contract every store keeps (`confab_core::store::conformance`), on SQLite, with
    /// either `--sync` (the journal synced or not).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_keeps_the_store_contract() {
        for sync in [SyncMode::Full, SyncMode::Normal] {
            let base = std::env::temp_dir().join(format!("confab-store-conformance-{}", rand::random::<u64>()));
            let dirs = Arc::new(std::sync::atomic::AtomicU32::new(0));
            let root = base.clone();
            confab_core::store::conformance::run(move |sink| {
                let dir = root.join(dirs.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_string());
                Box::pin(async move {
                    Arc::new(SqliteStore::open(&dir, sync, sink, Default::default()).unwrap()) as Arc<dyn Store>
                })
            })
            .await;
            let _ = std::fs::remove_dir_all(base);
        }
    }

    /// Under steady writes the WAL is started over past its bound (the writer, thread or task,
    /// has the checkpoint thread make the last copy while it waits), and every append is
    /// answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_bounded_under_steady_writes() {
        for sync in [SyncMode::Normal, SyncMode::Full] {
            let dir = std::env::temp_dir().join(format!("confab-store-wal-{}", rand::random::<u64>()));
            let store = Arc::new(SqliteStore::open(&dir, sync, Arc::new(NoFanout), Default::default()).unwrap());
            let (c, u) = (id("c", ConversationId::parse), id("u", UserId::parse));
            store.create_conversation(c.clone(), vec![u.clone()], None).await.unwrap();
            // About 150 MB of WAL (two 4 KiB pages and more a message), from 16 senders that
            // keep the writer busy: past WAL_FRAMES_REWIND (64 MiB) the WAL must start over
            // (without the rewind it reached 147 MB with `normal`, 180 MB with `full`).
            let senders = (0..16).map(|s| {
                let (store, c, u) = (Arc::clone(&store), c.clone(), u.clone());
                tokio::spawn(async move {
                    for i in 0..1200 {
                        let text = format!("{s}-{i} {}", "x".repeat(4000));
                        let sent = tokio::time::timeout(
                            std::time::Duration::from_secs(30),
                            store.append(new_message(&c, &u, &text, None)),
                        );
                        sent.await.expect("an append is answered").expect("an append is stored");
                    }
                })
            });
            for s in senders.collect::<Vec<_>>() {
                s.await.unwrap();
            }
            let wal = std::fs::metadata(dir.join("confab.db-wal")).map(|m| m.len()).unwrap_or(0);
            assert!(wal < 80 << 20, "{sync:?}: the WAL grew to {wal} bytes");
            let (_, has_more) = store.history(&c, None, 1).await.unwrap();
            assert!(has_more, "the messages are there");
            drop(store);
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    #[tokio::test]
    async fn an_older_data_directory_is_migrated() {
        let dir = std::env::temp_dir().join(format!("confab-store-test-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        {
            let old = Connection::open(dir.join("confab.db")).unwrap();
            old.execute_batch(
                "CREATE TABLE conversations (id TEXT PRIMARY KEY, max_members INTEGER, last_seq INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL);
                 CREATE TABLE members (conversation_id TEXT NOT NULL, user_id TEXT NOT NULL, read_seq INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (conversation_id, user_id)) WITHOUT ROWID;
                 CREATE TABLE messages (conversation_id TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL UNIQUE, sender_id TEXT NOT NULL, kind TEXT NOT NULL, content TEXT NOT NULL, metadata TEXT NOT NULL, created_at INTEGER NOT NULL, local_id TEXT, reply_to TEXT, deleted_at INTEGER, PRIMARY KEY (conversation_id, seq)) WITHOUT ROWID;
                 INSERT INTO conversations VALUES ('c1', NULL, 1, 1);
                 INSERT INTO members VALUES ('c1', 'a', 1), ('c1', 'b', 0);
                 INSERT INTO messages VALUES ('c1', 1, 'msg_old', 'a', 'text', 'from before', '{}', 1, NULL, NULL, NULL);",
            )
            .unwrap();
        }
        let store = open_without_fanout(&dir, SyncMode::Full);
        let (c, a, b) = (id("c1", ConversationId::parse), id("a", UserId::parse), id("b", UserId::parse));
        let old = store.messages_after(&c, Seq(0), 10).await.unwrap();
        assert_eq!((old.len(), old[0].content.as_str()), (1, "from before"));
        let next = store.append(new_message(&c, &b, "after", None)).await.unwrap();
        assert_eq!(next.message.seq, Some(Seq(2)), "the sequence goes on");
        store.mark_delivered(&c, &a, Seq(2)).await.unwrap();
        assert_eq!(store.mark_read(&c, &a, &next.message.id).await.unwrap(), Some(Seq(2)));
        let kept = Attachment {
            id: "att_1".into(),
            conversation_id: c.clone(),
            uploader: b.clone(),
            kind: "file".into(),
            filename: None,
            bytes: vec![1, 2, 3],
            created_at: Timestamp::from_millis(1),
        };
        store.put_attachment(kept).await.unwrap();
        assert_eq!(store.attachment("att_1").await.unwrap().unwrap().bytes, vec![1, 2, 3]);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The front hands out seqs, and read marks are written once per batch: whatever
    /// shares a batch with appends, or reads after them, sees what per-append writes would give,
    /// with either `--sync`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batched_appends_look_like_one_at_a_time() {
        for sync in [SyncMode::Full, SyncMode::Normal] {
            batched_appends_look_like_one_at_a_time_with(sync).await;
        }
    }

    async fn batched_appends_look_like_one_at_a_time_with(sync: SyncMode) {
        let dir = std::env::temp_dir().join(format!("confab-store-test-{}", rand::random::<u64>()));
        let store = Arc::new(open_without_fanout(&dir, sync));
        let (c, d) = (id("c1", ConversationId::parse), id("c2", ConversationId::parse));
        let (a, b) = (id("a", UserId::parse), id("b", UserId::parse));
        store.create_conversation(c.clone(), vec![a.clone(), b.clone()], None).await.unwrap();
        store.create_conversation(d.clone(), vec![a.clone()], None).await.unwrap();
        // Many appends in flight at once (so they share batches), with a member change and a
        // read in the middle of them. The member change goes once an append to `c` has been
        // answered (nothing else orders the tasks), and sees at least that one's seq.
        let answered = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut handles = Vec::new();
        for i in 0..200 {
            let (s, c, d, a, b) = (Arc::clone(&store), c.clone(), d.clone(), a.clone(), b.clone());
            let answered = Arc::clone(&answered);
            handles.push(tokio::spawn(async move {
                match i {
                    100 => {
                        let seen = loop {
                            match answered.load(std::sync::atomic::Ordering::Acquire) {
                                0 => tokio::task::yield_now().await,
                                seen => break seen,
                            }
                        };
                        let info = s.set_members(&c, vec![a.clone(), b.clone()]).await.unwrap();
                        assert!(info.last_seq >= Seq(seen), "set_members after appends sees their seqs");
                    }
                    _ if i % 3 == 0 => {
                        s.append(new_message(&d, &a, "d", None)).await.unwrap();
                    }
                    _ => {
                        let sender = if i % 2 == 0 { &a } else { &b };
                        let seq = s.append(new_message(&c, sender, "c", None)).await.unwrap().message.seq;
                        answered.fetch_max(seq.unwrap_or_default().0, std::sync::atomic::Ordering::Release);
                    }
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let (in_c, in_d) = (
            store.messages_after(&c, Seq(0), 500).await.unwrap(),
            store.messages_after(&d, Seq(0), 500).await.unwrap(),
        );
        let seqs = |v: &[Message]| v.iter().map(|m| m.seq.unwrap().0).collect::<Vec<_>>();
        assert_eq!(seqs(&in_c), (1..=in_c.len() as u64).collect::<Vec<_>>());
        assert_eq!(seqs(&in_d), (1..=in_d.len() as u64).collect::<Vec<_>>());
        assert_eq!(in_c.len() + in_d.len(), 199);
        assert_eq!(store.conversation(&c).await.unwrap().unwrap().last_seq, Seq(in_c.len() as u64));
        assert_eq!(store.conversation(&d).await.unwrap().unwrap().last_seq, Seq(in_d.len() as u64));
        // Each sender's read mark is its last message's seq.
        let last_by = |u: &UserId| in_c.iter().filter(|m| &m.sender_id == u).map(|m| m.seq.unwrap()).max().unwrap();
        for u in [&a, &b] {
            let summary = store.conversations_of(u).await.unwrap();
            let row = summary.iter().find(|r| r.id == c).unwrap();
            assert_eq!(row.read_seq, last_by(u), "{u}");
        }
        // One `local_id` sent 20 times at once (the same batch, and the batches after it): one
        // message, the same id and seq for every answer.
        let tries: Vec<_> = (0..20)
            .map(|_| {
                let (s, c, a) = (Arc::clone(&store), c.clone(), a.clone());
                tokio::spawn(async move { s.append(new_message(&c, &a, "once", Some("l-once"))).await.unwrap() })
            })
            .collect();
        let mut answers = Vec::new();
        for t in tries {
            answers.push(t.await.unwrap());
        }
        assert_eq!(answers.iter().filter(|a| !a.duplicate).count(), 1, "{sync:?}");
        assert!(
            answers.iter().all(|a| a.message.id == answers[0].message.id && a.message.seq == answers[0].message.seq)
        );
        let after = store.messages_after(&c, Seq(in_c.len() as u64), 50).await.unwrap();
        assert_eq!(after.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(), ["once"], "{sync:?}");
        // A conversation deleted and made again starts from 1.
        store.delete_conversation(&d).await.unwrap();
        store.create_conversation(d.clone(), vec![a.clone()], None).await.unwrap();
        assert_eq!(store.append(new_message(&d, &a, "again", None)).await.unwrap().message.seq, Some(Seq(1)));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// `--sync normal`: a message the journal has but SQLite never got (`kill -9` between the
    /// two) is in the store after the next open, once, whatever that run's `--sync`; a torn
    /// record after it is ignored; the journal is empty afterwards, and seqs go on after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_the_journal_holds_is_applied_at_open_once() {
        let dir = std::env::temp_dir().join(format!("confab-store-test-{}", rand::random::<u64>()));
        let (c, a, b) = (id("c1", ConversationId::parse), id("a", UserId::parse), id("b", UserId::parse));
        let stored = {
            let store = open_without_fanout(&dir, SyncMode::Normal);
            store.create_conversation(c.clone(), vec![a.clone(), b.clone()], None).await.unwrap();
            let stored = store.append(new_message(&c, &a, "stored", Some("l1"))).await.unwrap().message;
            store.close().await.unwrap();
            stored
        };
        assert_eq!(std::fs::metadata(dir.join(journal::FILE)).unwrap().len(), 0, "a clean close empties it");
        let mut lost = journal::Row::of(&stored).unwrap();
        (lost.id, lost.seq, lost.content, lost.local_id) = ("m-lost".into(), 2, "journaled".into(), None);
        {
            let (mut journal, held) = Journal::open(&dir, false).unwrap();
            assert!(held.is_empty());
            // The stored one again (a record SQLite had already), then one it never got.
            journal.append(&[journal::Row::of(&stored).unwrap()]).unwrap();
            journal.append(std::slice::from_ref(&lost)).unwrap();
        }
        let torn =
            &journal::encode(&[journal::Row { seq: 3, id: "m-torn".into(), ..lost.clone() }], &[0; 8]).unwrap()[..20];
        let mut file = std::fs::OpenOptions::new().append(true).open(dir.join(journal::FILE)).unwrap();
        std::io::Write::write_all(&mut file, torn).unwrap();

        let store = open_without_fanout(&dir, SyncMode::Full);
        let (page, _) = store.history(&c, None, 10).await.unwrap();
        let got: Vec<_> = page.iter().map(|m| (m.seq.unwrap().0, m.id.as_str(), m.content.as_str())).collect();
        assert_eq!(got, [(1, stored.id.as_str(), "stored"), (2, "m-lost", "journaled")]);
        let summary = store.conversations_of(&a).await.unwrap();
        assert_eq!(summary[0].read_seq, Seq(2), "the sender has read what it sent");
        // With `full` the journal is its spare now: a header and zeros, nothing to read.
        assert_eq!(journal::decode(&std::fs::read(dir.join(journal::FILE)).unwrap()).0, []);
        assert_eq!(store.append(new_message(&c, &b, "next", None)).await.unwrap().message.seq, Some(Seq(3)));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// `--sync normal` fans a message out before SQLite has it: a read that begins after the
    /// fan-out (a client's history fetch on `message:new`) waits until SQLite has it, and finds
    /// it. SQLite is held up here by another connection's write lock, so the applier waits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_right_after_the_fanout_finds_the_message() {
        let dir = std::env::temp_dir().join(format!("confab-store-test-{}", rand::random::<u64>()));
        let store = Arc::new(open_without_fanout(&dir, SyncMode::Normal));
        let (c, a) = (id("c1", ConversationId::parse), id("a", UserId::parse));
        store.create_conversation(c.clone(), vec![a.clone()], None).await.unwrap();
        let blocker = Connection::open(dir.join("confab.db")).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        // Answered (journaled and fanned out) while SQLite cannot take it.
        let sent =
            tokio::time::timeout(std::time::Duration::from_secs(2), store.append(new_message(&c, &a, "hi", None)))
                .await
                .expect("the append waited for SQLite")
                .unwrap();
        let read = {
            let (store, c) = (Arc::clone(&store), c.clone());
            tokio::spawn(async move { store.messages_after(&c, Seq(0), 10).await.unwrap() })
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!read.is_finished(), "a read answered before SQLite had the message fanned out before it");
        blocker.execute_batch("COMMIT").unwrap();
        let got = read.await.unwrap();
        assert_eq!(got.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), [sent.message.id]);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A `normal` store whose front holds journaled rows for an hour (so only a read, or
    /// [`front::HOLD_ROWS`] of them, hands them over), with a conversation of one member.
    async fn holding_an_hour() -> (std::path::PathBuf, SqliteStore, ConversationId, UserId) {
        let dir = std::env::temp_dir().join(format!("confab-store-test-{}", rand::random::<u64>()));
        let hour = std::time::Duration::from_secs(3600);
        let store =
            SqliteStore::open_holding(&dir, SyncMode::Normal, Arc::new(NoFanout), Default::default(), hour).unwrap();
        let (c, a) = (id("c1", ConversationId::parse), id("a", UserId::parse));
        store.create_conversation(c.clone(), vec![a.clone()], None).await.unwrap();
        (dir, store, c, a)
    }

    /// `--sync normal`'s front holds journaled rows before the applier gets them (here for an
    /// hour): a read does not wait for that, and finds what was fanned out before it began.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_does_not_wait_for_the_rows_the_front_holds() {
        let (dir, store, c, a) = holding_an_hour().await;
        let sent = store.append(new_message(&c, &a, "hi", None)).await.unwrap().message;
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), store.messages_after(&c, Seq(0), 10))
            .await
            .expect("the read waited for the rows the front holds")
            .unwrap();
        assert_eq!(got.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), [sent.id]);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A request other than an append goes to SQLite after the rows the front holds: a member
    /// change right after a message (held for an hour here) sees its seq.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_change_after_held_rows_sees_them() {
        let (dir, store, c, a) = holding_an_hour().await;
        let sent = store.append(new_message(&c, &a, "hi", None)).await.unwrap().message;
        let info = store.set_members(&c, vec![a.clone(), id("b", UserId::parse)]).await.unwrap();
        assert_eq!(Some(info.last_seq), sent.seq);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// With no read to ask for them, the rows the front holds reach SQLite within
    /// [`front::HOLD_FOR`]: another connection to the database finds the message.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn held_rows_reach_sqlite_without_a_read() {
        let dir = std::env::temp_dir().join(format!("confab-store-test-{}", rand::random::<u64>()));
        let store = open_without_fanout(&dir, SyncMode::Normal);
        let (c, a) = (id("c1", ConversationId::parse), id("a", UserId::parse));
        store.create_conversation(c.clone(), vec![a.clone()], None).await.unwrap();
        let sent = store.append(new_message(&c, &a, "hi", None)).await.unwrap().message;
        let other = Connection::open(dir.join("confab.db")).unwrap();
        let mut found = None;
        for _ in 0..200 {
            found = other.query_row("SELECT id FROM messages", [], |r| r.get::<_, String>(0)).optional().unwrap();
            if found.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(found.as_deref(), Some(sent.id.as_str()), "SQLite never got the held row");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Under steady appends the front always holds some rows, yet the journal stays bounded:
    /// past its size it starts over with the rows held, once SQLite has every row handed over.
    /// At every step SQLite and the journal hold every message between them (what a `kill -9`
    /// then would leave), and after a reopen each message is there once, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_journal_starts_over_with_the_rows_the_front_holds() {
        let (dir, store, c, a) = holding_an_hour().await;
        let other = Connection::open(dir.join("confab.db")).unwrap();
        let big = "x".repeat(40_000);
        let total = 300;
        let mut largest = 0;
        for i in 1..=total {
            store.append(new_message(&c, &a, &format!("{i} {big}"), None)).await.unwrap();
            if i % 40 != 0 {
                continue;
            }
            // Each append is a batch of its own, and the front hands its rows over every
            // HOLD_ROWS: SQLite is given time to take what was handed over, as when load ebbs.
            let handed = (i / front::HOLD_ROWS * front::HOLD_ROWS) as u64;
            for _ in 0..1000 {
                if store.applied.settled() >= handed {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            let journal = std::fs::read(dir.join(journal::FILE)).unwrap();
            largest = largest.max(journal.len());
            let (rows, ..) = journal::decode(&journal);
            let mut seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
            let mut stmt = other.prepare("SELECT seq FROM messages").unwrap();
            seqs.extend(stmt.query_map([], |r| r.get::<_, i64>(0)).unwrap().map(Result::unwrap));
            seqs.sort_unstable();
            seqs.dedup();
            assert_eq!(seqs, (1..=i as i64).collect::<Vec<_>>(), "after {i} appends");
        }
        let bound = EMPTY_PAST as usize + 2 * front::HOLD_ROWS * 41_000;
        assert!(largest < bound, "the journal grew to {largest} bytes (bound {bound})");
        store.close().await.unwrap();
        drop(store);
        let store = open_without_fanout(&dir, SyncMode::Normal);
        let got = store.messages_after(&c, Seq(0), 500).await.unwrap();
        let seqs: Vec<u64> = got.iter().map(|m| m.seq.unwrap().0).collect();
        assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>());
        assert!(got.iter().enumerate().all(|(i, m)| m.content.starts_with(&format!("{} ", i + 1))));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// `--sync full`: appends that come while a record is being synced are journaled behind
    /// it, and its sync started, before its fan-out. Each conversation's messages are still
    /// fanned out in seq order, each before its sender is answered, and all of them are there
    /// after a reopen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_journaled_behind_a_sync_are_fanned_out_after_it() {
        let dir = std::env::temp_dir().join(format!("confab-store-test-{}", rand::random::<u64>()));
        #[derive(Debug, Default)]
        struct Order(Mutex<Vec<(ConversationId, u64)>>);
        impl CommitSink for Order {
            fn committed(&self, m: &Message, _: Option<&Requester>) -> Vec<UserId> {
                self.0.lock().unwrap().push((m.conversation_id.clone(), m.seq.unwrap_or_default().0));
                Vec::new()
            }
        }
        let sink = Arc::new(Order::default());
        let store =
            Arc::new(SqliteStore::open(&dir, SyncMode::Full, Arc::clone(&sink) as _, Default::default()).unwrap());
        let a = id("a", UserId::parse);
        let convs: Vec<_> = ["c1", "c2", "c3"].iter().map(|c| id(c, ConversationId::parse)).collect();
        for c in &convs {
            store.create_conversation(c.clone(), vec![a.clone()], None).await.unwrap();
        }
        for wave in 0..5 {
            let handles: Vec<_> = (0..60)
                .map(|i| {
                    let (s, sink, c, a) = (Arc::clone(&store), Arc::clone(&sink), convs[i % 3].clone(), a.clone());
                    tokio::spawn(async move {
                        let local = format!("l-{wave}-{i}");
                        let m = s.append(new_message(&c, &a, "m", Some(&local))).await.unwrap().message;
                        let seq = m.seq.unwrap().0;
                        assert!(sink.0.lock().unwrap().contains(&(c, seq)), "fanned out before it is answered");
                    })
                })
                .collect();
            for h in handles {
                h.await.unwrap();
            }
        }
        assert!(
            store.applied.behind.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "no batch was journaled behind a sync"
        );
        let seen = sink.0.lock().unwrap().clone();
        for c in &convs {
            let order: Vec<u64> = seen.iter().filter(|(x, _)| x == c).map(|(_, s)| *s).collect();
            assert_eq!(order, (1..=100).collect::<Vec<_>>(), "{c}: fanned out once each, in seq order");
        }
        store.close().await.unwrap();
        drop(store);
        let store = open_without_fanout(&dir, SyncMode::Full);
        for c in &convs {
            let stored = store.messages_after(c, Seq(0), 500).await.unwrap();
            assert_eq!(stored.iter().map(|m| m.seq.unwrap().0).collect::<Vec<_>>(), (1..=100).collect::<Vec<_>>());
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The fan-out's delivery marks, one per member however many messages reached it, are
    /// written with the next batch: the highest seq, never lowered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delivery_marks_are_written_with_the_next_batch() {
        for sync in [SyncMode::Full, SyncMode::Normal] {
            delivery_marks_are_written_with_the_next_batch_with(sync).await;
        }
    }

    async fn delivery_marks_are_written_with_the_next_batch_with(sync: SyncMode) {
        let dir = std::env::temp_dir().join(format!("confab-store-test-{}", rand::random::<u64>()));
        let b = id("b", UserId::parse);
        #[derive(Debug)]
        struct Reaches(UserId);
        impl CommitSink for Reaches {
            fn committed(&self, _: &Message, _: Option<&Requester>) -> Vec<UserId> {
                vec![self.0.clone()]
            }
        }
        let sink = Arc::new(Reaches(b.clone()));
        let store = Arc::new(SqliteStore::open(&dir, sync, sink, Default::default()).unwrap());
        let (c, a) = (id("c1", ConversationId::parse), id("a", UserId::parse));
        store.create_conversation(c.clone(), vec![a.clone(), b.clone()], None).await.unwrap();
        let handles: Vec<_> = (0..50)
            .map(|_| {
                let (s, c, a) = (Arc::clone(&store), c.clone(), a.clone());
                tokio::spawn(async move { s.append(new_message(&c, &a, "m", None)).await.unwrap() })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        // The next write carries the marks of the 50 commits before it. With the journal the
        // fan-out comes before the transaction, which carries the batch's own marks too.
        store.append(new_message(&c, &a, "last", None)).await.unwrap();
        let info = store.conversation(&c).await.unwrap().unwrap();
        let mark = |u: &UserId| info.members.iter().find(|m| &m.user_id == u).unwrap().delivered;
        assert_eq!(mark(&b), Seq(51));
        assert_eq!(mark(&a), Seq(0), "only the members the fan-out reached");
        // A mark for an older seq does not lower it.
        store.mark_delivered(&c, &b, Seq(3)).await.unwrap();
        let info = store.conversation(&c).await.unwrap().unwrap();
        assert!(info.members.iter().any(|m| m.user_id == b && m.delivered == Seq(51)));
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    /// Tells the writer that the conversation's other member got every message, as the
    /// fan-out does in a 1:1 conversation, so that delivery marks are written too.
    #[derive(Debug)]
    struct OneRecipient(UserId);

    impl CommitSink for OneRecipient {
        fn committed(&self, _: &Message, _: Option<&Requester>) -> Vec<UserId> {
            vec![self.0.clone()]
        }
    }

    /// This process's CPU time (user + system) in µs, and its write syscalls and bytes.
    fn costs() -> (u64, u64, u64) {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split(' ').collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
        let field = |name: &str| {
            io.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0)
        };
        ((ticks(12) + ticks(13)) * 10_000, field("syscw:"), field("wchar:"))
    }

    /// One append at a time in a 1:1 conversation (with a `local_id`, the sender's read mark
    /// and the recipient's delivery mark, as a real message has): latency, and per append the
    /// process's CPU time and write syscalls (WAL frames are two each) and bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement, not a test: cargo test --release -p confab-server append_latency -- --ignored --nocapture"]
    async fn append_latency() {
        for sync in [SyncMode::Full, SyncMode::Normal] {
            let dir = std::env::temp_dir().join(format!("confab-store-timing-{}", rand::random::<u64>()));
            let (c, u, r) =
                (ConversationId::parse("c").unwrap(), UserId::parse("u").unwrap(), UserId::parse("r").unwrap());
            let store = SqliteStore::open(&dir, sync, Arc::new(OneRecipient(r.clone())), Default::default()).unwrap();
            store.create_conversation(c.clone(), vec![u.clone(), r], None).await.unwrap();
            let n = 4000;
            let mut times = Vec::new();
            let before = costs();
            for i in 0..n {
                let m = NewMessage {
                    conversation_id: c.clone(),
                    sender_id: u.clone(),
                    kind: MessageKind::Text,
                    content: format!("t{i} hello from the benchmark"),
                    metadata: Default::default(),
                    local_id: Some(LocalId::parse(&format!("local_{i}")).unwrap()),
                    reply_to: None,
                    created_at: Timestamp::from_millis(1),
                    requester: None,
                };
                let t = std::time::Instant::now();
                store.append(m).await.unwrap();
                times.push(t.elapsed().as_micros());
            }
            let after = costs();
            times.sort_unstable();
            let per = |a: u64, b: u64| (b - a) as f64 / n as f64;
            eprintln!(
                "{sync:?}: append one at a time: p50 {} us, p99 {} us; per append: {:.1} us CPU, {:.2} write syscalls, {:.0} bytes written",
                times[n / 2],
                times[n * 99 / 100],
                per(before.0, after.0),
                per(before.1, after.1),
                per(before.2, after.2),
            );
            drop(store);
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
