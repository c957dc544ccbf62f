//! The client's file: one SQLite database the app names, holding
//! - the outbox: messages the app sent that the server has not acknowledged yet, so that a
//!   message sent offline, or just before the app was killed, is sent after the restart. Exactly
//!   once: each carries its `local_id`, and the server answers a repeated `local_id` with the
//!   message it already stored;
//! - the recent messages of each conversation (the last [`RECENT`]), so that a cold start shows
//!   the chat before the network answers, and resumes each conversation from where it stopped;
//! - per network, the transport that worked there, so that a network that blocks UDP is not
//!   given the WebTransport deadline again at every connect.
//!
//! Without a file the outbox lives in memory and nothing else is kept.

use crate::error::ClientError;
use crate::event::TransportKind;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// Messages kept per conversation.
pub const RECENT: usize = 200;

/// A message waiting for the server's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    pub(crate) local_id: String,
    pub(crate) conversation_id: String,
    pub(crate) content: String,
}

/// A message to keep in the cache: its conversation, `seq` and the server's object as JSON.
pub(crate) type Recent = (String, u64, String);

#[derive(Debug)]
pub(crate) struct Store {
    // A mutex because the app's handle reads the cache while the client's task writes.
    db: Option<Mutex<Connection>>,
}

fn err(e: rusqlite::Error) -> ClientError {
    ClientError::Outbox(e.to_string())
}

/// Milliseconds since the epoch, as the store keeps times.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

impl Store {
    pub(crate) fn open(path: Option<&Path>) -> Result<Self, ClientError> {
        let Some(path) = path else { return Ok(Self { db: None }) };
        let db = Connection::open(path).map_err(err)?;
        // FULL: an acknowledged `send` survives the phone losing power, not only the app dying.
        // The cache's writes lower it for their own transactions (`remember`).
        db.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 2000;
             CREATE TABLE IF NOT EXISTS outbox (
                 local_id TEXT PRIMARY KEY,
                 conversation_id TEXT NOT NULL,
                 content TEXT NOT NULL,
                 queued_at INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS recent (
                 conversation_id TEXT NOT NULL,
                 seq INTEGER NOT NULL,
                 message TEXT NOT NULL,
                 PRIMARY KEY (conversation_id, seq)
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS networks (
                 network TEXT PRIMARY KEY,
                 transport TEXT NOT NULL,
                 at INTEGER NOT NULL
             );",
        )
        .map_err(err)?;
        Ok(Self { db: Some(Mutex::new(db)) })
    }

    /// Whether there is a file to keep things in.
    pub(crate) fn keeps(&self) -> bool {
        self.db.is_some()
    }

    fn db(&self) -> Option<MutexGuard<'_, Connection>> {
        self.db.as_ref().map(|m| m.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    pub(crate) fn add(&self, p: &Pending) -> Result<(), ClientError> {
        let Some(db) = self.db() else { return Ok(()) };
        db.execute(
            "INSERT OR IGNORE INTO outbox (local_id, conversation_id, content, queued_at) VALUES (?1, ?2, ?3, ?4)",
            params![p.local_id, p.conversation_id, p.content, now_ms()],
        )
        .map(drop)
        .map_err(err)
    }

    pub(crate) fn remove(&self, local_id: &str) -> Result<(), ClientError> {
        let Some(db) = self.db() else { return Ok(()) };
        db.execute("DELETE FROM outbox WHERE local_id = ?1", params![local_id]).map(drop).map_err(err)
    }

    /// Everything waiting, oldest first.
    pub(crate) fn all(&self) -> Result<Vec<Pending>, ClientError> {
        let Some(db) = self.db() else { return Ok(Vec::new()) };
        let mut stmt = db
            .prepare("SELECT local_id, conversation_id, content FROM outbox ORDER BY queued_at, rowid")
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| Ok(Pending { local_id: r.get(0)?, conversation_id: r.get(1)?, content: r.get(2)? }))
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    /// Keeps messages in the cache, in one transaction, and trims each conversation to its
    /// last [`RECENT`]. Not synced at commit (WAL with `synchronous = NORMAL`): the cache is
    /// a convenience the server can always refill, unlike the outbox.
    pub(crate) fn remember(&self, batch: &[Recent]) -> Result<(), ClientError> {
        let Some(mut db) = self.db() else { return Ok(()) };
        if batch.is_empty() {
            return Ok(());
        }
        db.execute_batch("PRAGMA synchronous = NORMAL").map_err(err)?;
        let outcome = (|| {
            let tx = db.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO recent (conversation_id, seq, message) VALUES (?1, ?2, ?3)",
                )?;
                for (conv, seq, message) in batch {
                    insert.execute(params![conv, *seq as i64, message])?;
                }
                let mut trim = tx.prepare_cached(
                    "DELETE FROM recent WHERE conversation_id = ?1 AND seq <= (SELECT seq FROM recent
                     WHERE conversation_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
                )?;
                let mut convs: Vec<&str> = batch.iter().map(|(c, _, _)| c.as_str()).collect();
                convs.sort_unstable();
                convs.dedup();
                for conv in convs {
                    trim.execute(params![conv, RECENT as i64])?;
                }
            }
            tx.commit()
        })();
        let _ = db.execute_batch("PRAGMA synchronous = FULL");
        outcome.map_err(err)
    }

    /// The last `limit` cached messages of a conversation, oldest first.
    pub(crate) fn recent(&self, conversation_id: &str, limit: usize) -> Result<Vec<Value>, ClientError> {
        let Some(db) = self.db() else { return Ok(Vec::new()) };
        let mut stmt = db
            .prepare_cached("SELECT message FROM recent WHERE conversation_id = ?1 ORDER BY seq DESC LIMIT ?2")
            .map_err(err)?;
        let rows = stmt.query_map(params![conversation_id, limit as i64], |r| r.get::<_, String>(0)).map_err(err)?;
        let mut out = Vec::new();
        for row in rows {
            // A row this client wrote from a server's object; one that does not parse is skipped.
            if let Ok(v) = serde_json::from_str(&row.map_err(err)?) {
                out.push(v);
            }
        }
        out.reverse();
        Ok(out)
    }

    /// The highest cached `seq` of a conversation: where a cold start resumes it from.
    pub(crate) fn last_seq(&self, conversation_id: &str) -> Option<u64> {
        let db = self.db()?;
        db.query_row("SELECT MAX(seq) FROM recent WHERE conversation_id = ?1", params![conversation_id], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .ok()
        .flatten()
        .map(|s| s as u64)
    }

    /// The transport that last worked on `network`, and when (ms since the epoch).
    pub(crate) fn transport_for(&self, network: &str) -> Option<(TransportKind, i64)> {
        let db = self.db()?;
        let row: Option<(String, i64)> = db
            .query_row("SELECT transport, at FROM networks WHERE network = ?1", params![network], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .ok()
            .flatten();
        let (name, at) = row?;
        let kind = match name.as_str() {
            "webtransport" => TransportKind::WebTransport,
            "websocket" => TransportKind::WebSocket,
            _ => return None,
        };
        Some((kind, at))
    }

    pub(crate) fn set_transport(&self, network: &str, kind: TransportKind) -> Result<(), ClientError> {
        let Some(db) = self.db() else { return Ok(()) };
        db.execute(
            "INSERT INTO networks (network, transport, at) VALUES (?1, ?2, ?3)
             ON CONFLICT (network) DO UPDATE SET transport = excluded.transport, at = excluded.at",
            params![network, kind.name(), now_ms()],
        )
        .map(drop)
        .map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("confab-store-{name}-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn keeps_what_waits_across_opens() {
        let path = scratch("outbox");
        let p = |id: &str| Pending { local_id: id.into(), conversation_id: "c1".into(), content: format!("m {id}") };
        {
            let o = Store::open(Some(&path)).unwrap();
            o.add(&p("a")).unwrap();
            o.add(&p("b")).unwrap();
            o.add(&p("a")).unwrap();
            o.remove("a").unwrap();
        }
        let o = Store::open(Some(&path)).unwrap();
        assert_eq!(o.all().unwrap(), vec![p("b")]);
        let _ = std::fs::remove_file(&path);
        assert!(Store::open(None).unwrap().all().unwrap().is_empty());
    }

    #[test]
    fn the_cache_keeps_the_last_messages_of_each_conversation() {
        let path = scratch("recent");
        let m = |conv: &str, seq: u64| (conv.to_owned(), seq, format!(r#"{{"seq":{seq},"conversation_id":"{conv}"}}"#));
        {
            let s = Store::open(Some(&path)).unwrap();
            let batch: Vec<Recent> = (1..=RECENT as u64 + 50).map(|i| m("c1", i)).chain([m("c2", 7)]).collect();
            s.remember(&batch[..100]).unwrap();
            s.remember(&batch[100..]).unwrap();
            // A repeat changes nothing.
            s.remember(&[m("c2", 7)]).unwrap();
        }
        let s = Store::open(Some(&path)).unwrap();
        let c1 = s.recent("c1", 1000).unwrap();
        assert_eq!(c1.len(), RECENT);
        assert_eq!(c1.first().unwrap()["seq"], 51);
        assert_eq!(c1.last().unwrap()["seq"], RECENT as u64 + 50);
        assert_eq!(
            s.recent("c1", 3).unwrap().iter().map(|v| v["seq"].as_u64().unwrap()).collect::<Vec<_>>(),
            [248, 249, 250]
        );
        assert_eq!(s.last_seq("c1"), Some(RECENT as u64 + 50));
        assert_eq!(s.last_seq("c2"), Some(7));
        assert_eq!(s.last_seq("c3"), None);
        assert!(s.recent("c3", 10).unwrap().is_empty());

        assert_eq!(s.transport_for("10.0.0.2"), None);
        s.set_transport("10.0.0.2", TransportKind::WebSocket).unwrap();
        s.set_transport("10.0.0.2", TransportKind::WebTransport).unwrap();
        assert_eq!(s.transport_for("10.0.0.2").map(|t| t.0), Some(TransportKind::WebTransport));
        let _ = std::fs::remove_file(&path);
    }
}
