//! PostgreSQL errors as the store's, and rows read back into domain values.

use super::*;

/// A PostgreSQL error as the store's. What passes by itself is `Unavailable`: a lost or
/// refused connection, a transaction PostgreSQL rolled back (a deadlock, a serialization
/// failure), a server out of resources or shutting down, a read-only standby. The rest (a bug,
/// corrupt data) is `Database`.
pub(super) fn pg(e: tokio_postgres::Error) -> StoreError {
    let Some(code) = e.code() else {
        return StoreError::Unavailable(format!("PostgreSQL: {e}"));
    };
    let class = code.code().get(..2).unwrap_or("");
    match class {
        // Connection exception, transaction rollback, insufficient resources, operator
        // intervention, system error.
        "08" | "40" | "53" | "57" | "58" => StoreError::Unavailable(format!("PostgreSQL: {e}")),
        _ if code == &tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION => {
            StoreError::Unavailable(format!("PostgreSQL is read-only (a standby?): {e}"))
        }
        _ => StoreError::Database(format!("PostgreSQL: {e}")),
    }
}

pub(super) fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg(e),
        deadpool_postgres::PoolError::Closed => StoreError::Closed,
        e => StoreError::Unavailable(format!("PostgreSQL pool: {e}")),
    }
}

/// Runs `f` with a deadline: a PostgreSQL that stops answering (a black-holed link) makes the
/// call fail as `Unavailable`, not hang its caller.
pub(super) async fn timely<T>(
    f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(IO_TIMEOUT, f).await {
        Ok(r) => r.map_err(pg),
        Err(_) => Err(StoreError::Unavailable(format!("PostgreSQL did not answer within {IO_TIMEOUT:?}"))),
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Database(format!("corrupt {what} in store"))
}

pub(super) fn parse<T>(s: &str, parse: fn(&str) -> Result<T, String>, what: &str) -> Result<T, StoreError> {
    parse(s).map_err(|_| corrupt(what))
}

pub(super) fn seq(v: i64) -> Seq {
    Seq(v.max(0) as u64)
}

/// A seq as PostgreSQL's `bigint`.
pub(super) fn sql_seq(s: Seq) -> i64 {
    s.0.min(i64::MAX as u64) as i64
}

pub(super) const MESSAGE_COLUMNS: &str =
    "id, conversation_id, seq, sender_id, content, kind, metadata, created_at, local_id, reply_to";

/// A row of [`MESSAGE_COLUMNS`].
pub(super) fn message(r: &Row) -> Result<Message, StoreError> {
    message_at(r, 0)
}

/// A message whose [`MESSAGE_COLUMNS`] start at column `at` of a wider row.
pub(super) fn message_at(r: &Row, at: usize) -> Result<Message, StoreError> {
    let col = |i: usize| at + i;
    let kind: &str = r.try_get(col(5)).map_err(pg)?;
    let metadata: &str = r.try_get(col(6)).map_err(pg)?;
    Ok(Message {
        id: parse(r.try_get(col(0)).map_err(pg)?, MessageId::parse, "message id")?,
        conversation_id: parse(r.try_get(col(1)).map_err(pg)?, ConversationId::parse, "conversation id")?,
        seq: Some(seq(r.try_get(col(2)).map_err(pg)?)),
        sender_id: parse(r.try_get(col(3)).map_err(pg)?, UserId::parse, "user id")?,
        content: r.try_get(col(4)).map_err(pg)?,
        kind: MessageKind::from_name(kind).ok_or_else(|| corrupt("message kind"))?,
        metadata: serde_json::from_str(metadata).map_err(|_| corrupt("metadata"))?,
        created_at: Timestamp::from_millis(r.try_get(col(7)).map_err(pg)?),
        updated_at: None,
        is_read: None,
        local_id: r
            .try_get::<_, Option<&str>>(col(8))
            .map_err(pg)?
            .map(|l| parse(l, LocalId::parse, "local id"))
            .transpose()?,
        reply_to: r
            .try_get::<_, Option<&str>>(col(9))
            .map_err(pg)?
            .map(|l| parse(l, MessageId::parse, "reply_to"))
            .transpose()?,
    })
}

pub(super) fn messages(rows: &[Row]) -> Result<Vec<Message>, StoreError> {
    rows.iter().map(message).collect()
}

pub(super) const PHOTO_COLUMNS: &str = "id, conversation_id, sender_id, url, expires_in, created_at, first_viewed_at";

/// A row of [`PHOTO_COLUMNS`].
pub(super) fn photo(r: &Row) -> Result<Photo, StoreError> {
    Ok(Photo {
        id: parse(r.try_get(0).map_err(pg)?, PhotoId::parse, "photo id")?,
        conversation_id: parse(r.try_get(1).map_err(pg)?, ConversationId::parse, "conversation id")?,
        sender_id: parse(r.try_get(2).map_err(pg)?, UserId::parse, "user id")?,
        url: r.try_get(3).map_err(pg)?,
        expires_in: u32::try_from(r.try_get::<_, i32>(4).map_err(pg)?).map_err(|_| corrupt("photo expiry"))?,
        created_at: Timestamp::from_millis(r.try_get(5).map_err(pg)?),
        first_viewed_at: r.try_get::<_, Option<i64>>(6).map_err(pg)?.map(Timestamp::from_millis),
    })
}

/// A conversation from the rows of [`CONVERSATION`]: its head repeated on each member's row
/// (one row with no member if it has none).
pub(super) fn conversation(c: &ConversationId, rows: &[Row]) -> Result<Option<ConversationInfo>, StoreError> {
    let Some(head) = rows.first() else { return Ok(None) };
    let max_members: Option<i32> = head.try_get(0).map_err(pg)?;
    let last_seq: i64 = head.try_get(1).map_err(pg)?;
    let mut members = Vec::with_capacity(rows.len());
    for r in rows {
        let Some(user) = r.try_get::<_, Option<&str>>(2).map_err(pg)? else { continue };
        members.push(Member {
            user_id: parse(user, UserId::parse, "user id")?,
            read: seq(r.try_get(3).map_err(pg)?),
            delivered: seq(r.try_get(4).map_err(pg)?),
        });
    }
    Ok(Some(ConversationInfo {
        id: c.clone(),
        members,
        max_members: max_members.map(|m| m.max(0) as u32),
        last_seq: seq(last_seq),
    }))
}

/// Many conversations and their members, in one round trip: [`CONVERSATION`]'s columns, then
/// the conversation's id, ordered by it.
pub(super) const CONVERSATIONS: &str = "SELECT c.max_members, c.last_seq, m.user_id, m.read_seq,
            GREATEST(m.delivered_seq, d.seq), c.id
     FROM conversations c LEFT JOIN members m ON m.conversation_id = c.id
     LEFT JOIN deliveries d ON d.conversation_id = m.conversation_id AND d.user_id = m.user_id
     WHERE c.id = ANY ($1) ORDER BY c.id, m.user_id";

/// A conversation and its members, in one round trip.
pub(super) const CONVERSATION: &str = "SELECT c.max_members, c.last_seq, m.user_id, m.read_seq,
            GREATEST(m.delivered_seq, d.seq)
     FROM conversations c LEFT JOIN members m ON m.conversation_id = c.id
     LEFT JOIN deliveries d ON d.conversation_id = m.conversation_id AND d.user_id = m.user_id
     WHERE c.id = $1 ORDER BY m.user_id";
