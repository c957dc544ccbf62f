//! The embedded store: SQLite (bundled) in WAL mode with `synchronous = FULL`.
//!
//! Why SQLite: one file, transactions, secondary indexes and ad-hoc queries (history pages,
//! unread counts, a conversation list) without hand-built indexes, and a schema that maps
//! one-to-one onto PostgreSQL later. Why it is fast enough: every write goes through one
//! writer thread that applies all the requests waiting for it in one transaction (one fsync
//! for the lot), so durable acks cost a sync per batch, not per message. Reads use their own
//! connection (WAL readers never block the writer).

use super::*;
use confab_codec::event::Message;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Most requests applied in one transaction.
const MAX_BATCH: usize = 1024;
/// Requests waiting for the writer; senders wait when it is full.
const QUEUE: usize = 8192;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    max_members INTEGER,
    last_seq INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    conversation_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    read_seq INTEGER NOT NULL DEFAULT 0,
    delivered_seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_by_user ON members (user_id);
CREATE TABLE IF NOT EXISTS messages (
    conversation_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL UNIQUE,
    sender_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    content TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    local_id TEXT,
    reply_to TEXT,
    deleted_at INTEGER,
    PRIMARY KEY (conversation_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_local_id
    ON messages (conversation_id, sender_id, local_id) WHERE local_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS photos (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    sender_id TEXT NOT NULL,
    url TEXT NOT NULL,
    expires_in INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    first_viewed_at INTEGER
);
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_by_user ON inbox (user_id, id);
";

const MESSAGE_COLUMNS: &str =
    "id, conversation_id, seq, sender_id, content, kind, metadata, created_at, local_id, reply_to";

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Write {
    Append(NewMessage, Reply<Appended>),
    Delete(ConversationId, MessageId, UserId, Reply<Message>),
    MarkRead(ConversationId, UserId, MessageId, Reply<Option<Seq>>),
    MarkDelivered(ConversationId, UserId, Seq, Reply<()>),
    Create(ConversationId, Vec<UserId>, Option<u32>, Reply<ConversationInfo>),
    SetMembers(ConversationId, Vec<UserId>, Reply<ConversationInfo>),
    DeleteConversation(ConversationId, Reply<()>),
    CreatePhoto(Photo, Reply<()>),
    ViewPhoto(PhotoId, UserId, Timestamp, Reply<Photo>),
    InboxPush(UserId, InboxItem, Reply<()>),
    InboxTake(UserId, Reply<Vec<InboxItem>>),
}

/// The SQLite store. Cheap to share (`Arc`); the writer thread ends when it is dropped.
pub struct SqliteStore {
    writes: mpsc::Sender<Write>,
    reader: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// Runs a statement from the connection's statement cache: the hot paths run the same few
/// statements for every message, and parsing them each time showed up in profiles.
fn exec(t: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    t.prepare_cached(sql)?.execute(params)
}

fn query_row<T>(
    t: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    t.prepare_cached(sql)?.query_row(params, f)
}

fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(db)?;
    // WAL + FULL: a commit is on disk when it returns, even across power loss.
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;")
        .map_err(db)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl SqliteStore {
    /// Opens (or creates) `dir/confab.db`. Each committed message is passed to `on_commit`, in
    /// commit order, before its `append` call returns.
    pub fn open(dir: &Path, on_commit: OnCommit) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(format!("{}: {e}", dir.display())))?;
        let path = dir.join("confab.db");
        let writer = open(&path)?;
        writer.execute_batch(SCHEMA).map_err(db)?;
        migrate(&writer)?;
        let reader = open(&path)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("confab-store-writer".into())
            .spawn(move || writer_loop(writer, rx, on_commit))
            .map_err(|e| StoreError::Database(format!("writer thread: {e}")))?;
        Ok(Self { writes: tx, reader: Arc::new(Mutex::new(reader)) })
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
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let conn = reader.lock().map_err(|_| StoreError::Database("reader lock poisoned".into()))?;
                f(&conn)
            })
            .await
            .map_err(|e| StoreError::Database(e.to_string()))?
        })
    }
}

/// Brings a data directory made by an earlier version up to the current schema.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let has_delivered: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('members') WHERE name = 'delivered_seq'")
        .and_then(|mut s| s.exists([]))
        .map_err(db)?;
    if !has_delivered {
        conn.execute_batch("ALTER TABLE members ADD COLUMN delivered_seq INTEGER NOT NULL DEFAULT 0").map_err(db)?;
    }
    Ok(())
}

fn writer_loop(mut conn: Connection, mut rx: mpsc::Receiver<Write>, on_commit: OnCommit) {
    // Delivery watermarks the fan-out advanced, written with the next batch rather than in a
    // commit of their own (a crash before then costs a repeated `message:delivered`, not data).
    let mut delivered: Vec<(ConversationId, UserId, Seq)> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        for (c, u, seq) in delivered.drain(..) {
            let (tx, _rx) = oneshot::channel();
            batch.push(Write::MarkDelivered(c, u, seq, tx));
        }
        apply_batch(&mut conn, batch, &on_commit, &mut delivered);
    }
}

/// A request applied inside the transaction, with its answer waiting for the commit.
enum Done {
    Appended(Result<Appended, StoreError>, Reply<Appended>),
    Other(Box<dyn FnOnce(Option<StoreError>) + Send>),
}

fn apply_batch(
    conn: &mut Connection,
    batch: Vec<Write>,
    on_commit: &OnCommit,
    delivered: &mut Vec<(ConversationId, UserId, Seq)>,
) {
    let mut done = Vec::with_capacity(batch.len());
    let tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => {
            fail_all(batch, db(e));
            return;
        }
    };
    let mut tx = tx;
    for w in batch {
        done.push(apply_one(&mut tx, w));
    }
    let committed = tx.commit().map_err(db);
    for d in done {
        match d {
            Done::Appended(result, reply) => {
                let result = match (&committed, result) {
                    (Err(e), _) => Err(e.clone()),
                    (Ok(()), Ok(a)) => {
                        if !a.duplicate {
                            // In commit order, before the sender hears `message:sent`.
                            let seq = a.message.seq.unwrap_or_default();
                            for user in on_commit(&a.message) {
                                delivered.push((a.message.conversation_id.clone(), user, seq));
                            }
                        }
                        Ok(a)
                    }
                    (Ok(()), Err(e)) => Err(e),
                };
                let _ = reply.send(result);
            }
            Done::Other(finish) => finish(committed.as_ref().err().cloned()),
        }
    }
}

fn fail_all(batch: Vec<Write>, e: StoreError) {
    for w in batch {
        match w {
            Write::Append(_, r) => drop(r.send(Err(e.clone()))),
            Write::Delete(.., r) => drop(r.send(Err(e.clone()))),
            Write::MarkRead(.., r) => drop(r.send(Err(e.clone()))),
            Write::MarkDelivered(.., r) => drop(r.send(Err(e.clone()))),
            Write::Create(.., r) | Write::SetMembers(.., r) => drop(r.send(Err(e.clone()))),
            Write::DeleteConversation(_, r) | Write::CreatePhoto(_, r) | Write::InboxPush(_, _, r) => {
                drop(r.send(Err(e.clone())))
            }
            Write::ViewPhoto(.., r) => drop(r.send(Err(e.clone()))),
            Write::InboxTake(_, r) => drop(r.send(Err(e.clone()))),
        }
    }
}

/// Runs `f` in a savepoint, so a request that fails leaves nothing behind and the rest of the
/// batch still commits; the answer is sent after the commit (or replaced by its failure).
fn step<T: Send + 'static>(
    tx: &mut Transaction<'_>,
    reply: Reply<T>,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Done {
    let result = savepoint(tx, f);
    Done::Other(Box::new(move |commit_error| {
        let _ = reply.send(match commit_error {
            Some(e) => Err(e),
            None => result,
        });
    }))
}

/// Runs `f` inside a savepoint: on error everything it did is undone and the rest of the
/// batch goes on. Cached statements, because rusqlite's savepoints parse SQL every time.
fn savepoint<T>(t: &Connection, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
    exec(t, "SAVEPOINT request", []).map_err(db)?;
    let r = f(t);
    let end = if r.is_ok() {
        exec(t, "RELEASE request", [])
    } else {
        exec(t, "ROLLBACK TO request", []).and_then(|_| exec(t, "RELEASE request", []))
    };
    end.map_err(db).and(r)
}

fn apply_one(tx: &mut Transaction<'_>, w: Write) -> Done {
    match w {
        Write::Append(m, reply) => Done::Appended(savepoint(tx, |t| append(t, m)), reply),
        Write::Delete(c, m, by, reply) => step(tx, reply, |t| delete_message(t, &c, &m, &by)),
        Write::MarkRead(c, u, m, reply) => step(tx, reply, |t| mark_read(t, &c, &u, &m)),
        Write::MarkDelivered(c, u, seq, reply) => step(tx, reply, |t| mark_delivered(t, &c, &u, seq)),
        Write::Create(c, members, max, reply) => step(tx, reply, |t| {
            let exists: Option<i64> =
                query_row(t, "SELECT 1 FROM conversations WHERE id = ?1", [c.as_str()], |r| r.get(0))
                    .optional()
                    .map_err(db)?;
            if exists.is_some() {
                return Err(StoreError::ConversationExists(c.to_string()));
            }
            exec(
                t,
                "INSERT INTO conversations (id, max_members, created_at) VALUES (?1, ?2, ?3)",
                params![c.as_str(), max, now_ms()],
            )
            .map_err(db)?;
            replace_members(t, &c, &members)?;
            conversation(t, &c)?.ok_or_else(|| StoreError::ConversationNotFound(c.to_string()))
        }),
        Write::SetMembers(c, members, reply) => step(tx, reply, |t| {
            if conversation(t, &c)?.is_none() {
                return Err(StoreError::ConversationNotFound(c.to_string()));
            }
            replace_members(t, &c, &members)?;
            conversation(t, &c)?.ok_or_else(|| StoreError::ConversationNotFound(c.to_string()))
        }),
        Write::DeleteConversation(c, reply) => step(tx, reply, |t| {
            let n = exec(t, "DELETE FROM conversations WHERE id = ?1", [c.as_str()]).map_err(db)?;
            if n == 0 {
                return Err(StoreError::ConversationNotFound(c.to_string()));
            }
            for table in ["members", "messages", "photos"] {
                exec(t, &format!("DELETE FROM {table} WHERE conversation_id = ?1"), [c.as_str()]).map_err(db)?;
            }
            Ok(())
        }),
        Write::CreatePhoto(p, reply) => step(tx, reply, |t| {
            exec(t,
                "INSERT INTO photos (id, conversation_id, sender_id, url, expires_in, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![p.id.as_str(), p.conversation_id.as_str(), p.sender_id.as_str(), p.url, p.expires_in, p.created_at.as_millis()],
            )
            .map_err(db)?;
            Ok(())
        }),
        Write::ViewPhoto(id, viewer, now, reply) => step(tx, reply, |t| {
            let mut p = photo(t, &id)?.ok_or_else(|| StoreError::NotFound(format!("photo {id} not found")))?;
            if p.first_viewed_at.is_none() && p.sender_id != viewer {
                exec(t, "UPDATE photos SET first_viewed_at = ?1 WHERE id = ?2", params![now.as_millis(), id.as_str()])
                    .map_err(db)?;
                p.first_viewed_at = Some(now);
            }
            Ok(p)
        }),
        Write::InboxPush(u, item, reply) => step(tx, reply, |t| {
            let data = serde_json::to_string(&item.data).map_err(|e| StoreError::Database(e.to_string()))?;
            exec(
                t,
                "INSERT INTO inbox (user_id, kind, data) VALUES (?1, ?2, ?3)",
                params![u.as_str(), item.kind, data],
            )
            .map_err(db)?;
            Ok(())
        }),
        Write::InboxTake(u, reply) => step(tx, reply, |t| {
            let mut stmt = t.prepare("SELECT kind, data FROM inbox WHERE user_id = ?1 ORDER BY id").map_err(db)?;
            let rows = stmt
                .query_map([u.as_str()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db)?;
            exec(t, "DELETE FROM inbox WHERE user_id = ?1", [u.as_str()]).map_err(db)?;
            Ok(rows
                .into_iter()
                .filter_map(|(kind, data)| {
                    serde_json::from_str::<Metadata>(&data).ok().map(|data| InboxItem { kind, data })
                })
                .collect())
        }),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn new_message_id() -> MessageId {
    // 96 random bits; the prefix keeps ids recognisable in logs.
    MessageId::generate("msg_", rand::random::<u128>() >> 32)
}

fn append(t: &Connection, m: NewMessage) -> Result<Appended, StoreError> {
    if let Some(local) = &m.local_id {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND sender_id = ?2 AND local_id = ?3"
        );
        let existing = query_row(
            t,
            &sql,
            params![m.conversation_id.as_str(), m.sender_id.as_str(), local.as_str()],
            row_to_message,
        )
        .optional()
        .map_err(db)?;
        if let Some(message) = existing {
            return Ok(Appended { message: message?, duplicate: true });
        }
    }
    let seq: Option<i64> = query_row(
        t,
        "UPDATE conversations SET last_seq = last_seq + 1 WHERE id = ?1 RETURNING last_seq",
        [m.conversation_id.as_str()],
        |r| r.get(0),
    )
    .optional()
    .map_err(db)?;
    let seq = seq.ok_or_else(|| StoreError::ConversationNotFound(m.conversation_id.to_string()))?;
    let id = new_message_id();
    let metadata = serde_json::to_string(&m.metadata).map_err(|e| StoreError::Database(e.to_string()))?;
    exec(
        t,
        &format!("INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
        params![
            id.as_str(),
            m.conversation_id.as_str(),
            seq,
            m.sender_id.as_str(),
            m.content,
            m.kind.as_str(),
            metadata,
            m.created_at.as_millis(),
            m.local_id.as_ref().map(|l| l.as_str()),
            m.reply_to.as_ref().map(|r| r.as_str()),
        ],
    )
    .map_err(db)?;
    // Sending implies having read everything before (SPEC §4 unread counts).
    exec(
        t,
        "UPDATE members SET read_seq = MAX(read_seq, ?1) WHERE conversation_id = ?2 AND user_id = ?3",
        params![seq, m.conversation_id.as_str(), m.sender_id.as_str()],
    )
    .map_err(db)?;
    let message = Message {
        id,
        conversation_id: m.conversation_id,
        seq: Some(Seq(seq as u64)),
        sender_id: m.sender_id,
        content: m.content,
        kind: m.kind,
        metadata: m.metadata,
        created_at: m.created_at,
        updated_at: None,
        is_read: None,
        local_id: m.local_id,
        reply_to: m.reply_to,
    };
    Ok(Appended { message, duplicate: false })
}

fn find_message(t: &Connection, c: &ConversationId, m: &MessageId) -> Result<Message, StoreError> {
    let sql =
        format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1 AND conversation_id = ?2 AND deleted_at IS NULL");
    query_row(t, &sql, params![m.as_str(), c.as_str()], row_to_message)
        .optional()
        .map_err(db)?
        .ok_or_else(|| StoreError::NotFound(format!("message {m} not found in conversation {c}")))?
}

fn delete_message(t: &Connection, c: &ConversationId, m: &MessageId, by: &UserId) -> Result<Message, StoreError> {
    let message = find_message(t, c, m)?;
    if &message.sender_id != by {
        return Err(StoreError::NotOwner);
    }
    exec(t, "UPDATE messages SET deleted_at = ?1 WHERE id = ?2", params![now_ms(), m.as_str()]).map_err(db)?;
    Ok(message)
}

fn mark_read(t: &Connection, c: &ConversationId, u: &UserId, m: &MessageId) -> Result<Option<Seq>, StoreError> {
    let seq = find_message(t, c, m)?.seq.unwrap_or_default();
    let n = exec(
        t,
        "UPDATE members SET read_seq = ?1 WHERE conversation_id = ?2 AND user_id = ?3 AND read_seq < ?1",
        params![seq.0 as i64, c.as_str(), u.as_str()],
    )
    .map_err(db)?;
    Ok((n > 0).then_some(seq))
}

fn mark_delivered(t: &Connection, c: &ConversationId, u: &UserId, seq: Seq) -> Result<(), StoreError> {
    exec(
        t,
        "UPDATE members SET delivered_seq = ?1 WHERE conversation_id = ?2 AND user_id = ?3 AND delivered_seq < ?1",
        params![seq.0 as i64, c.as_str(), u.as_str()],
    )
    .map_err(db)?;
    Ok(())
}

fn replace_members(t: &Connection, c: &ConversationId, members: &[UserId]) -> Result<(), StoreError> {
    let placeholders = vec!["?"; members.len()].join(",");
    if members.is_empty() {
        exec(t, "DELETE FROM members WHERE conversation_id = ?1", [c.as_str()]).map_err(db)?;
    } else {
        let sql = format!("DELETE FROM members WHERE conversation_id = ? AND user_id NOT IN ({placeholders})");
        let mut args: Vec<&str> = vec![c.as_str()];
        args.extend(members.iter().map(|m| m.as_str()));
        exec(t, &sql, rusqlite::params_from_iter(args)).map_err(db)?;
    }
    for m in members {
        exec(
            t,
            "INSERT OR IGNORE INTO members (conversation_id, user_id) VALUES (?1, ?2)",
            params![c.as_str(), m.as_str()],
        )
        .map_err(db)?;
    }
    Ok(())
}

fn corrupt(what: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnName(format!("corrupt {what} in store"))
}

fn parse_col<T>(s: String, parse: fn(&str) -> Result<T, String>, what: &str) -> rusqlite::Result<T> {
    parse(&s).map_err(|_| corrupt(what))
}

/// Reads a message row; an outer `Result` for SQLite errors, an inner one never fails today
/// but keeps the call sites honest about rows written by an older version.
fn row_to_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Message, StoreError>> {
    let metadata: String = r.get(6)?;
    let kind: String = r.get(5)?;
    Ok(Ok(Message {
        id: parse_col(r.get(0)?, MessageId::parse, "message id")?,
        conversation_id: parse_col(r.get(1)?, ConversationId::parse, "conversation id")?,
        seq: Some(Seq(r.get::<_, i64>(2)? as u64)),
        sender_id: parse_col(r.get(3)?, UserId::parse, "user id")?,
        content: r.get(4)?,
        kind: MessageKind::from_name(&kind).ok_or_else(|| corrupt("message kind"))?,
        metadata: serde_json::from_str(&metadata).map_err(|_| corrupt("metadata"))?,
        created_at: Timestamp::from_millis(r.get(7)?),
        updated_at: None,
        is_read: None,
        local_id: r.get::<_, Option<String>>(8)?.map(|l| parse_col(l, LocalId::parse, "local id")).transpose()?,
        reply_to: r.get::<_, Option<String>>(9)?.map(|l| parse_col(l, MessageId::parse, "reply_to")).transpose()?,
    }))
}

fn messages(t: &Connection, sql: &str, args: impl rusqlite::Params) -> Result<Vec<Message>, StoreError> {
    let mut stmt = t.prepare_cached(sql).map_err(db)?;
    let rows = stmt.query_map(args, row_to_message).map_err(db)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.map_err(db)??);
    }
    Ok(out)
}

fn conversation(t: &Connection, c: &ConversationId) -> Result<Option<ConversationInfo>, StoreError> {
    let head: Option<(Option<u32>, i64)> =
        query_row(t, "SELECT max_members, last_seq FROM conversations WHERE id = ?1", [c.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(db)?;
    let Some((max_members, last_seq)) = head else { return Ok(None) };
    let mut stmt = t
        .prepare_cached("SELECT user_id, read_seq, delivered_seq FROM members WHERE conversation_id = ?1")
        .map_err(db)?;
    let members = stmt
        .query_map([c.as_str()], |r| {
            Ok(Member {
                user_id: parse_col(r.get(0)?, UserId::parse, "user id")?,
                read: Seq(r.get::<_, i64>(1)? as u64),
                delivered: Seq(r.get::<_, i64>(2)? as u64),
            })
        })
        .map_err(db)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db)?;
    Ok(Some(ConversationInfo { id: c.clone(), members, max_members, last_seq: Seq(last_seq as u64) }))
}

fn photo(t: &Connection, id: &PhotoId) -> Result<Option<Photo>, StoreError> {
    query_row(
        t,
        "SELECT id, conversation_id, sender_id, url, expires_in, created_at, first_viewed_at FROM photos WHERE id = ?1",
        [id.as_str()],
        row_to_photo,
    )
    .optional()
    .map_err(db)
}

fn row_to_photo(r: &rusqlite::Row<'_>) -> rusqlite::Result<Photo> {
    Ok(Photo {
        id: parse_col(r.get(0)?, PhotoId::parse, "photo id")?,
        conversation_id: parse_col(r.get(1)?, ConversationId::parse, "conversation id")?,
        sender_id: parse_col(r.get(2)?, UserId::parse, "user id")?,
        url: r.get(3)?,
        expires_in: r.get(4)?,
        created_at: Timestamp::from_millis(r.get(5)?),
        first_viewed_at: r.get::<_, Option<i64>>(6)?.map(Timestamp::from_millis),
    })
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

    fn mark_delivered(&self, c: &ConversationId, user: &UserId, seq: Seq) -> StoreFuture<'_, ()> {
        let (c, u) = (c.clone(), user.clone());
        self.write(move |r| Write::MarkDelivered(c, u, seq, r))
    }

    fn messages_after(&self, c: &ConversationId, after: Seq, limit: u32) -> StoreFuture<'_, Vec<Message>> {
        let c = c.clone();
        self.read(move |t| {
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND seq > ?2 AND deleted_at IS NULL ORDER BY seq LIMIT ?3"
            );
            messages(t, &sql, params![c.as_str(), after.0 as i64, limit])
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
                .prepare_cached(
                    "SELECT c.id, c.last_seq, m.read_seq FROM members m JOIN conversations c ON c.id = m.conversation_id WHERE m.user_id = ?1 ORDER BY c.last_seq DESC",
                )
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

    fn photo(&self, id: &PhotoId) -> StoreFuture<'_, Option<Photo>> {
        let id = id.clone();
        self.read(move |t| photo(t, &id))
    }

    fn view_photo(&self, id: &PhotoId, viewer: &UserId, now: Timestamp) -> StoreFuture<'_, Photo> {
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
        }
    }

    #[tokio::test]
    async fn appends_get_gap_free_seqs_and_local_ids_deduplicate() {
        let dir = std::env::temp_dir().join(format!("confab-store-test-{}", rand::random::<u64>()));
        let (feed_tx, mut feed) = mpsc::unbounded_channel();
        let store = SqliteStore::open(
            &dir,
            Box::new(move |m: &Message| {
                let _ = feed_tx.send(m.clone());
                Vec::new()
            }),
        )
        .unwrap();
        let c = id("c1", ConversationId::parse);
        let (a, b) = (id("a", UserId::parse), id("b", UserId::parse));
        store.create_conversation(c.clone(), vec![a.clone(), b.clone()], None).await.unwrap();
        let first = store.append(new_message(&c, &a, "one", Some("l1"))).await.unwrap();
        let again = store.append(new_message(&c, &a, "one", Some("l1"))).await.unwrap();
        let second = store.append(new_message(&c, &b, "two", None)).await.unwrap();
        assert_eq!(first.message.seq, Some(Seq(1)));
        assert!(again.duplicate && again.message.id == first.message.id);
        assert_eq!(second.message.seq, Some(Seq(2)));
        // Only new messages are published, in order.
        assert_eq!(feed.recv().await.unwrap().seq, Some(Seq(1)));
        assert_eq!(feed.recv().await.unwrap().seq, Some(Seq(2)));
        let (page, more) = store.history(&c, None, 1).await.unwrap();
        assert_eq!((page.len(), more, page[0].content.as_str()), (1, true, "two"));
        assert_eq!(store.messages_after(&c, Seq(0), 10).await.unwrap().len(), 2);
        assert_eq!(store.mark_read(&c, &b, &first.message.id).await.unwrap(), None, "b sent seq 2, so read 1 already");
        let missing = store.append(new_message(&id("nope", ConversationId::parse), &a, "x", None)).await;
        assert!(matches!(missing, Err(StoreError::ConversationNotFound(_))));
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement, not a test: cargo test --release -p confab-server append_latency -- --ignored --nocapture"]
    async fn append_latency() {
        let dir = std::env::temp_dir().join(format!("confab-store-timing-{}", rand::random::<u64>()));
        let store = SqliteStore::open(&dir, Box::new(|_: &Message| Vec::new())).unwrap();
        let c = ConversationId::parse("c").unwrap();
        let u = UserId::parse("u").unwrap();
        store.create_conversation(c.clone(), vec![u.clone()], None).await.unwrap();
        let mut times = Vec::new();
        for i in 0..2000 {
            let m = NewMessage {
                conversation_id: c.clone(),
                sender_id: u.clone(),
                kind: MessageKind::Text,
                content: format!("m{i}"),
                metadata: Default::default(),
                local_id: None,
                reply_to: None,
                created_at: Timestamp::from_millis(1),
            };
            let t = std::time::Instant::now();
            store.append(m).await.unwrap();
            times.push(t.elapsed().as_micros());
        }
        times.sort_unstable();
        eprintln!("append one at a time: p50 {} us, p99 {} us", times[1000], times[1980]);
        let _ = std::fs::remove_dir_all(dir);
    }
}
