//! The outbox: messages the app sent that the server has not acknowledged yet, in an SQLite
//! file the app names, so that a message sent offline, or just before the app was killed, is
//! sent after the restart. Exactly once: each carries its `local_id`, and the server answers a
//! repeated `local_id` with the message it already stored.

use crate::error::ClientError;
use rusqlite::{Connection, params};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// A message waiting for the server's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    pub(crate) local_id: String,
    pub(crate) conversation_id: String,
    pub(crate) content: String,
}

/// The outbox: in a file, or (without one) in memory only.
#[derive(Debug)]
pub(crate) struct Outbox {
    // A mutex only to make the client's task `Send`: one task uses it.
    db: Option<Mutex<Connection>>,
}

fn err(e: rusqlite::Error) -> ClientError {
    ClientError::Outbox(e.to_string())
}

impl Outbox {
    pub(crate) fn open(path: Option<&Path>) -> Result<Self, ClientError> {
        let Some(path) = path else { return Ok(Self { db: None }) };
        let db = Connection::open(path).map_err(err)?;
        // FULL: an acknowledged `send` survives the phone losing power, not only the app dying.
        db.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS outbox (
                 local_id TEXT PRIMARY KEY,
                 conversation_id TEXT NOT NULL,
                 content TEXT NOT NULL,
                 queued_at INTEGER NOT NULL
             );",
        )
        .map_err(err)?;
        Ok(Self { db: Some(Mutex::new(db)) })
    }

    fn db(&self) -> Option<MutexGuard<'_, Connection>> {
        self.db.as_ref().map(|m| m.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    pub(crate) fn add(&self, p: &Pending) -> Result<(), ClientError> {
        let Some(db) = self.db() else { return Ok(()) };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        db.execute(
            "INSERT OR IGNORE INTO outbox (local_id, conversation_id, content, queued_at) VALUES (?1, ?2, ?3, ?4)",
            params![p.local_id, p.conversation_id, p.content, now],
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_waits_across_opens() {
        let path = std::env::temp_dir().join(format!("confab-outbox-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let p = |id: &str| Pending { local_id: id.into(), conversation_id: "c1".into(), content: format!("m {id}") };
        {
            let o = Outbox::open(Some(&path)).unwrap();
            o.add(&p("a")).unwrap();
            o.add(&p("b")).unwrap();
            o.add(&p("a")).unwrap();
            o.remove("a").unwrap();
        }
        let o = Outbox::open(Some(&path)).unwrap();
        assert_eq!(o.all().unwrap(), vec![p("b")]);
        let _ = std::fs::remove_file(&path);
        assert!(Outbox::open(None).unwrap().all().unwrap().is_empty());
    }
}
