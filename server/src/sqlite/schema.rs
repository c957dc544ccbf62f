//! The schema, and opening a connection with the pragmas every connection needs.

use super::*;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    max_members INTEGER,
    last_seq INTEGER NOT NULL DEFAULT 0, -- no longer written: see LAST_SEQ_OF_C
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
CREATE TABLE IF NOT EXISTS probe (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS attachments (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    uploader TEXT NOT NULL,
    kind TEXT NOT NULL,
    filename TEXT,
    bytes BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
";

/// The last seq of the conversation `c.id` in a query on `conversations c`: its highest
/// stored seq, 0 before its first message. The `conversations.last_seq` column is not kept up
/// to date any more (messages are only ever deleted with their conversation, so the highest
/// seq is the last one; docs/operations.md, Storage).
pub(super) const LAST_SEQ_OF_C: &str =
    "COALESCE((SELECT MAX(seq) FROM messages WHERE messages.conversation_id = c.id), 0)";

/// A conversation's last seq; no row if there is no such conversation.
pub(super) static LAST_SEQ: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("SELECT {LAST_SEQ_OF_C} FROM conversations c WHERE c.id = ?1"));

pub(super) const MESSAGE_COLUMNS: &str =
    "id, conversation_id, seq, sender_id, content, kind, metadata, created_at, local_id, reply_to";

pub(super) fn open(path: &Path, sync: SyncMode) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(db)?;
    // FULL: a commit is on disk when it returns, even across a power loss. NORMAL: it is in
    // the WAL file (the OS's page cache), which survives the process (kill -9) but not the
    // machine; the WAL is synced at checkpoints.
    let synchronous = match sync {
        SyncMode::Full => "FULL",
        SyncMode::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA busy_timeout = 5000;"
    ))
    .map_err(db)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Brings a data directory made by an earlier version up to the current schema.
pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let has_delivered: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('members') WHERE name = 'delivered_seq'")
        .and_then(|mut s| s.exists([]))
        .map_err(db)?;
    if !has_delivered {
        conn.execute_batch("ALTER TABLE members ADD COLUMN delivered_seq INTEGER NOT NULL DEFAULT 0").map_err(db)?;
    }
    Ok(())
}
