//! Reading rows back into domain values, and the statement helpers every query uses.

use super::*;

/// A SQLite error as the store's: the ones that come from the machine (a full disk, an I/O
/// error, a read-only file system, a lock held too long) pass by themselves and are
/// `Unavailable`; the rest are `Database`.
pub(super) fn db(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(C::DiskFull | C::SystemIoFailure | C::ReadOnly | C::CannotOpen | C::DatabaseBusy | C::DatabaseLocked) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Database(e.to_string()),
    }
}

/// Runs a statement from the connection's statement cache: the hot paths run the same few
/// statements for every message, and parsing them each time showed up in profiles.
pub(super) fn exec(t: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    t.prepare_cached(sql)?.execute(params)
}

pub(super) fn query_row<T>(
    t: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    t.prepare_cached(sql)?.query_row(params, f)
}

pub(super) fn find_message(t: &Connection, c: &ConversationId, m: &MessageId) -> Result<Message, StoreError> {
    let sql =
        format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1 AND conversation_id = ?2 AND deleted_at IS NULL");
    query_row(t, &sql, params![m.as_str(), c.as_str()], row_to_message)
        .optional()
        .map_err(db)?
        .ok_or_else(|| StoreError::NotFound(format!("message {m} not found in conversation {c}")))?
}

pub(super) fn corrupt(what: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnName(format!("corrupt {what} in store"))
}

pub(super) fn parse_col<T>(s: String, parse: fn(&str) -> Result<T, String>, what: &str) -> rusqlite::Result<T> {
    parse(&s).map_err(|_| corrupt(what))
}

/// Reads a message row; an outer `Result` for SQLite errors, an inner one never fails today
/// but keeps the call sites honest about rows written by an older version.
pub(super) fn row_to_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Message, StoreError>> {
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

pub(super) fn messages(t: &Connection, sql: &str, args: impl rusqlite::Params) -> Result<Vec<Message>, StoreError> {
    let mut stmt = t.prepare_cached(sql).map_err(db)?;
    let rows = stmt.query_map(args, row_to_message).map_err(db)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.map_err(db)??);
    }
    Ok(out)
}

static CONVERSATION_HEAD: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("SELECT c.max_members, {LAST_SEQ_OF_C} FROM conversations c WHERE c.id = ?1"));

pub(super) fn conversation(t: &Connection, c: &ConversationId) -> Result<Option<ConversationInfo>, StoreError> {
    let head: Option<(Option<u32>, i64)> =
        query_row(t, &CONVERSATION_HEAD, [c.as_str()], |r| Ok((r.get(0)?, r.get(1)?))).optional().map_err(db)?;
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

pub(super) fn photo(t: &Connection, id: &PhotoId) -> Result<Option<Photo>, StoreError> {
    query_row(
        t,
        "SELECT id, conversation_id, sender_id, url, expires_in, created_at, first_viewed_at FROM photos WHERE id = ?1",
        [id.as_str()],
        row_to_photo,
    )
    .optional()
    .map_err(db)
}

pub(super) fn row_to_photo(r: &rusqlite::Row<'_>) -> rusqlite::Result<Photo> {
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
