//! `--sync normal`'s journal: the messages of a batch in one `write` to an append-only file,
//! before they are fanned out and acknowledged; SQLite gets them just after. With `normal` a
//! message is safe from a crash of the process once the kernel has it (page cache), and one
//! `write` of a few hundred bytes gets it there sooner than SQLite's transaction (its
//! statements, then a WAL frame of a header and a page for each page it dirtied: 7.8 `pwrite`s
//! a message, docs/benchmarks.md issue 19, eighth pass).
//!
//! A record is the batch's rows as JSON, framed by its length and the first bytes of its
//! SHA-256, so that a torn or garbled tail (a power loss, which `normal` does not promise to
//! survive, or a full disk) ends the replay instead of applying garbage. At open, what the
//! journal holds is applied again: an insert of a message already stored does nothing (its
//! conversation and seq are its key). Past [`EMPTY_PAST`], once SQLite holds every row the
//! front handed over, the journal starts over with the rows the front still holds
//! ([`Journal::restart`]); it is emptied before a conversation is deleted (replaying an older
//! record afterwards would bring its messages back), and when the store closes.

use super::*;
use std::io::{Read, Seek, Write as _};

/// The journal's file name, beside `confab.db`.
pub(super) const FILE: &str = "confab.journal";

/// Where a restarted journal is written before it takes the journal's name.
const NEXT: &str = "confab.journal.next";

/// Past this size the journal starts over once SQLite holds everything handed to it: every ten
/// thousand messages or so, and little to replay after a crash. Past four times
/// this, the front waits for SQLite to hold all of it (the applier is that far behind).
pub(super) const EMPTY_PAST: u64 = 4 << 20;

/// A record's header: its length (u32, little-endian) and the first 8 bytes of its SHA-256.
const HEADER: usize = 12;

/// A record bigger than this is not one the writer wrote (a batch is at most `MAX_BATCH`
/// messages of at most 64 KiB each): the header is garbage.
const RECORD_MAX: usize = 256 << 20;

/// A message as its row in `messages`: what the journal holds, and what is inserted.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct Row {
    pub(super) id: String,
    pub(super) conversation_id: String,
    pub(super) seq: i64,
    pub(super) sender_id: String,
    pub(super) kind: String,
    pub(super) content: String,
    pub(super) metadata: String,
    pub(super) created_at: i64,
    pub(super) local_id: Option<String>,
    pub(super) reply_to: Option<String>,
}

impl Row {
    pub(super) fn of(m: &Message) -> Result<Self, StoreError> {
        Ok(Self {
            id: m.id.as_str().to_owned(),
            conversation_id: m.conversation_id.as_str().to_owned(),
            seq: m.seq.unwrap_or_default().0 as i64,
            sender_id: m.sender_id.as_str().to_owned(),
            kind: m.kind.as_str().to_owned(),
            content: m.content.clone(),
            metadata: serde_json::to_string(&m.metadata).map_err(|e| StoreError::Database(e.to_string()))?,
            created_at: m.created_at.as_millis(),
            local_id: m.local_id.as_ref().map(|l| l.as_str().to_owned()),
            reply_to: m.reply_to.as_ref().map(|r| r.as_str().to_owned()),
        })
    }
}

/// The journal file, written by the store's writer alone.
pub(super) struct Journal {
    file: std::fs::File,
    /// What the file holds that is known good: a failed write is cut back to it.
    len: u64,
    path: std::path::PathBuf,
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, and reads what it holds: the rows of every
    /// whole record, in order. A torn or garbled record ends the reading (logged).
    pub(super) fn open(dir: &Path) -> Result<(Self, Vec<Row>), StoreError> {
        let path = dir.join(FILE);
        let io = |e: std::io::Error| unavailable(&path, &e);
        // A restart that a crash cut short: the journal it was to replace is whole.
        match std::fs::remove_file(dir.join(NEXT)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        let mut file = std::fs::OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let (rows, good) = decode(&bytes);
        if good < bytes.len() {
            tracing::warn!(
                journal = %path.display(),
                ignored_bytes = bytes.len() - good,
                "store: the journal ends in a torn or garbled record (a crash mid-write); what came before it is kept"
            );
        }
        file.seek(std::io::SeekFrom::End(0)).map_err(io)?;
        Ok((Self { file, len: bytes.len() as u64, path }, rows))
    }

    /// Appends one record of `rows` with one `write`. On failure (a full disk) the file is cut
    /// back to what it held, so that a later record is not stranded behind a torn one.
    pub(super) fn append(&mut self, rows: &[Row]) -> Result<(), StoreError> {
        let record = encode(rows)?;
        match self.file.write_all(&record) {
            Ok(()) => {
                self.len += record.len() as u64;
                Ok(())
            }
            Err(e) => {
                let why = unavailable(&self.path, &e);
                if let Err(cut) = self.file.set_len(self.len) {
                    // The next replay stops at the torn record: what was acknowledged before it
                    // is still read; what comes after it is refused below until a cut works.
                    tracing::error!(error = %cut, "store: cannot cut the journal back after a failed write");
                }
                Err(why)
            }
        }
    }

    /// Empties the journal: SQLite holds everything it had.
    pub(super) fn empty(&mut self) -> Result<(), StoreError> {
        if self.len == 0 {
            return Ok(());
        }
        self.file.set_len(0).map_err(|e| unavailable(&self.path, &e))?;
        self.len = 0;
        Ok(())
    }

    /// Replaces the journal with one holding only `rows` (SQLite has the rest). The new
    /// journal is written beside the old one and then takes its name, so a crash at any point
    /// leaves one or the other whole.
    pub(super) fn restart(&mut self, rows: &[Row]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return self.empty();
        }
        let next = self.path.with_file_name(NEXT);
        let io = |e: std::io::Error| unavailable(&next, &e);
        let record = encode(rows)?;
        // In append mode, as the journal is opened; what an earlier try left is cut first.
        let mut file = std::fs::OpenOptions::new().append(true).create(true).open(&next).map_err(io)?;
        file.set_len(0).map_err(io)?;
        file.write_all(&record).map_err(io)?;
        std::fs::rename(&next, &self.path).map_err(io)?;
        // The handle follows the file across the rename.
        self.file = file;
        self.len = record.len() as u64;
        Ok(())
    }

    /// The bytes it holds.
    pub(super) fn len(&self) -> u64 {
        self.len
    }
}

/// A journal file that cannot be written: the store refuses writes for now. A full disk is
/// named as SQLite names it, which is what `/readyz` shows the operator (docs/operations.md).
fn unavailable(path: &Path, e: &std::io::Error) -> StoreError {
    match e.kind() {
        std::io::ErrorKind::StorageFull => {
            StoreError::Unavailable(format!("database or disk is full ({}: {e})", path.display()))
        }
        _ => StoreError::Unavailable(format!("{}: {e}", path.display())),
    }
}

fn checksum(payload: &[u8]) -> [u8; 8] {
    let digest = ring::digest::digest(&ring::digest::SHA256, payload);
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest.as_ref()[..8]);
    out
}

pub(super) fn encode(rows: &[Row]) -> Result<Vec<u8>, StoreError> {
    let mut record = vec![0u8; HEADER];
    serde_json::to_writer(&mut record, rows).map_err(|e| StoreError::Database(e.to_string()))?;
    let len =
        u32::try_from(record.len() - HEADER).map_err(|_| StoreError::Database("a journal record over 4 GiB".into()))?;
    let sum = checksum(&record[HEADER..]);
    record[..4].copy_from_slice(&len.to_le_bytes());
    record[4..HEADER].copy_from_slice(&sum);
    Ok(record)
}

/// The rows of every whole, intact record from the start of `bytes`, and how many bytes those
/// records take.
pub(super) fn decode(bytes: &[u8]) -> (Vec<Row>, usize) {
    let mut rows = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + HEADER) {
        let mut len = [0u8; 4];
        len.copy_from_slice(&header[..4]);
        let len = u32::from_le_bytes(len) as usize;
        if len > RECORD_MAX {
            break;
        }
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else { break };
        if checksum(payload) != header[4..HEADER] {
            break;
        }
        let Ok(mut record) = serde_json::from_slice::<Vec<Row>>(payload) else { break };
        rows.append(&mut record);
        at += HEADER + len;
    }
    (rows, at)
}

static INSERT_ROW: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("INSERT OR IGNORE INTO messages ({MESSAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)")
});

/// Inserts `rows` (a message already stored is left as it is) and moves each sender's read mark
/// up to its last message (sending implies having read everything before, SPEC §4); returns
/// how many rows were new.
pub(super) fn insert_rows(t: &Connection, rows: &[Row]) -> Result<usize, StoreError> {
    let mut inserted = 0;
    let mut marks: HashMap<(&str, &str), i64> = HashMap::new();
    for r in rows {
        inserted += exec(
            t,
            &INSERT_ROW,
            params![
                r.id,
                r.conversation_id,
                r.seq,
                r.sender_id,
                r.content,
                r.kind,
                r.metadata,
                r.created_at,
                r.local_id,
                r.reply_to
            ],
        )
        .map_err(db)?;
        let mark = marks.entry((&r.conversation_id, &r.sender_id)).or_insert(r.seq);
        *mark = (*mark).max(r.seq);
    }
    for ((c, u), seq) in marks {
        raise_read_mark(t, c, u, seq)?;
    }
    Ok(inserted)
}

/// Applies what a journal held at open, in one transaction.
pub(super) fn replay(conn: &mut Connection, rows: &[Row]) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db)?;
    let inserted = insert_rows(&tx, rows)?;
    tx.commit().map_err(db)?;
    tracing::info!(journaled = rows.len(), inserted, "store: the journal applied again after an unclean stop");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64) -> Row {
        Row {
            id: format!("m{seq}"),
            conversation_id: "c".into(),
            seq,
            sender_id: "u".into(),
            kind: "text".into(),
            content: format!("hello {seq} ✓"),
            metadata: "{}".into(),
            created_at: 1_000,
            local_id: (seq % 2 == 0).then(|| format!("l{seq}")),
            reply_to: None,
        }
    }

    #[test]
    fn whole_records_are_read_back_and_a_torn_or_garbled_tail_ends_the_reading() {
        let mut bytes = encode(&[row(1), row(2)]).unwrap();
        bytes.extend(encode(&[row(3)]).unwrap());
        let whole = bytes.len();
        assert_eq!(decode(&bytes), (vec![row(1), row(2), row(3)], whole));

        // Torn: a fourth record cut anywhere is ignored, whole records before it are kept.
        let fourth = encode(&[row(4)]).unwrap();
        for cut in 1..fourth.len() {
            let mut torn = bytes.clone();
            torn.extend(&fourth[..cut]);
            assert_eq!(decode(&torn), (vec![row(1), row(2), row(3)], whole), "cut at {cut}");
        }
        // Garbled: one flipped byte in the second record's payload ends the reading there.
        let first = encode(&[row(1), row(2)]).unwrap().len();
        let mut garbled = bytes.clone();
        garbled[first + HEADER + 3] ^= 0x20;
        assert_eq!(decode(&garbled), (vec![row(1), row(2)], first));
        // A length that no record has, and zeros (a file extended but never written).
        let mut huge = bytes.clone();
        huge.extend(u32::MAX.to_le_bytes());
        huge.extend([0u8; 20]);
        assert_eq!(decode(&huge).1, whole);
        assert_eq!(decode(&[0u8; 64]), (Vec::new(), 0));
    }

    /// A restarted journal holds the rows it was given, then what is appended after them; a
    /// restart that a crash cut short (its file written, not renamed) leaves the old journal,
    /// which the next open reads whole and the half-made file does not outlive.
    #[test]
    fn a_restart_keeps_only_the_rows_given_and_a_cut_short_one_changes_nothing() {
        let dir = std::env::temp_dir().join(format!("confab-journal-test-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let (mut journal, held) = Journal::open(&dir).unwrap();
        assert!(held.is_empty());
        journal.append(&[row(1), row(2)]).unwrap();
        journal.append(&[row(3)]).unwrap();
        journal.restart(&[row(3)]).unwrap();
        journal.append(&[row(4)]).unwrap();
        assert_eq!(journal.len(), std::fs::metadata(dir.join(FILE)).unwrap().len());
        drop(journal);
        let (journal, held) = Journal::open(&dir).unwrap();
        assert_eq!(held, [row(3), row(4)]);

        std::fs::write(dir.join(NEXT), encode(&[row(9)]).unwrap()).unwrap();
        drop(journal);
        let (journal, held) = Journal::open(&dir).unwrap();
        assert_eq!(held, [row(3), row(4)]);
        assert!(!dir.join(NEXT).exists());
        drop(journal);
        let _ = std::fs::remove_dir_all(dir);
    }
}
