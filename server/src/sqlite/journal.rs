//! The store's journal: the messages of a batch in one `write` to a file, before they are
//! fanned out and acknowledged; SQLite gets them just after. With `normal` a message is safe
//! from a crash of the process once the kernel has it (page cache), and one `write` of a few
//! hundred bytes gets it there sooner than SQLite's transaction (its statements, then a WAL
//! frame of a header and a page for each page it dirtied: 7.8 `pwrite`s a message,
//! docs/benchmarks.md issue 19, eighth pass). With `full` the record is also synced
//! (`fdatasync`) before the fan-out: one sync of a few hundred bytes written over blocks already
//! on disk (a spare file, [`SPARE_BYTES`]) instead of SQLite's WAL frames and their sync
//! (docs/benchmarks.md, issue 19's thirteenth pass).
//!
//! A journal file begins with [`MAGIC`] and a salt of its own. A record is the batch's rows as
//! JSON, framed by its length and the first bytes of the SHA-256 of the salt and the rows, so
//! that a torn or garbled tail (a power loss, which `normal` does not promise to survive, or a
//! full disk) ends the replay instead of applying garbage, and so does a record of an earlier
//! use of the file: with `full`, the journal a restart leaves is the next spare, its blocks on
//! disk already, instead of a new file of zeros. At open, what the
//! journal holds is applied again: an insert of a message already stored does nothing (its
//! conversation and seq are its key). Past [`EMPTY_PAST`], once SQLite holds every row the
//! front handed over, the journal starts over with the rows the front still holds
//! ([`Journal::restart`]); it is emptied before a conversation is deleted (replaying an older
//! record afterwards would bring its messages back), and when the store closes.

use super::*;
use std::io::Read;
use std::os::unix::fs::FileExt as _;

/// The journal's file name, beside `confab.db`.
pub(super) const FILE: &str = "confab.journal";

/// Where a restarted journal is written before it takes the journal's name.
const NEXT: &str = "confab.journal.next";

/// `--sync full`: a file of at least [`SPARE_BYTES`] on disk beside the journal, that the next
/// restart (or emptying) writes its first record into and swaps with the journal: the journal
/// the restart before left, or, at first, zeros written off the runtime's thread.
const SPARE: &str = "confab.journal.spare";

/// The spare's size: a restart comes a little past [`EMPTY_PAST`]. While the journal is within
/// it, a record overwrites zeros that are on disk already, and its `fdatasync` has no size
/// or block allocation to commit: p50 127 µs against 202 for one that grows the file, here
/// (docs/benchmarks.md, issue 19's thirteenth pass).
const SPARE_BYTES: u64 = 2 * EMPTY_PAST;

/// Past this size the journal starts over once SQLite holds everything handed to it: every ten
/// thousand messages or so, and little to replay after a crash. Past four times
/// this, the front waits for SQLite to hold all of it (the applier is that far behind).
pub(super) const EMPTY_PAST: u64 = 4 << 20;

/// What a journal file begins with, then its salt (8 bytes). A file written before the salt
/// (records from its first byte) is still read: a record's length is never this (as a u32,
/// little-endian, it is past [`RECORD_MAX`]).
const MAGIC: &[u8; 4] = b"CFJ2";

/// [`MAGIC`] and the salt.
const FILE_HEADER: usize = 12;

/// A record's header: its length (u32, little-endian) and the first 8 bytes of the SHA-256 of
/// the file's salt and the record.
const HEADER: usize = 12;

type Salt = [u8; 8];

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

/// The journal file, written by the store's front alone.
pub(super) struct Journal {
    /// Shared with the thread that syncs it (`--sync full`).
    file: Arc<std::fs::File>,
    /// What the file holds that is known good: a failed write is cut back to it.
    len: u64,
    path: std::path::PathBuf,
    /// `--sync full`: a record counts once the disk has it, and the journal is replaced or
    /// emptied only in ways that a power loss cannot undo halfway.
    durable: bool,
    /// This file's salt, in its first record's checksum and every one after it.
    salt: Salt,
    /// The next spare, with `--sync full`.
    spare: Option<Spare>,
    /// Whether the old journal may become the spare: not once the file system refused to swap
    /// two names (`RENAME_EXCHANGE`); then each spare is zeros written anew.
    recycle: bool,
}

/// The file a restart moves the journal into.
enum Spare {
    /// Zeros, being written on a thread of its own.
    Making(std::sync::mpsc::Receiver<std::io::Result<std::fs::File>>),
    /// The journal before the last restart: its old records fail the checksum under the salt
    /// it is given next.
    Recycled(Arc<std::fs::File>),
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, and reads what it holds: the rows of every
    /// whole record, in order. A torn or garbled record ends the reading (logged).
    pub(super) fn open(dir: &Path, durable: bool) -> Result<(Self, Vec<Row>), StoreError> {
        let path = dir.join(FILE);
        let io = |e: std::io::Error| unavailable(&path, &e);
        // A restart that a crash cut short (the journal it was to replace is whole), and a
        // spare an earlier run left (with `--sync full` a new one is made; with `normal` none
        // is used).
        for left in [NEXT, SPARE] {
            match std::fs::remove_file(dir.join(left)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
                _ => {}
            }
        }
        // Written at its end (`len`), not in append mode: a spare has zeros past it.
        let mut file =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let (rows, good, salt) = decode(&bytes);
        if good < bytes.len() {
            tracing::warn!(
                journal = %path.display(),
                ignored_bytes = bytes.len() - good,
                "store: the journal ends in a torn or garbled record (a crash mid-write); what came before it is kept"
            );
        }
        if durable {
            // A journal just made is found after a power loss only once its directory is synced.
            sync_dir(dir).map_err(io)?;
        }
        // A file written before the salt is emptied before anything is appended to it (the
        // store does, once its rows are applied): a salted record must not follow unsalted ones.
        let salt = salt.unwrap_or_else(rand::random);
        let mut journal =
            Self { file: Arc::new(file), len: good as u64, path, durable, salt, spare: None, recycle: true };
        journal.make_spare();
        Ok((journal, rows))
    }

    /// Appends one record of `rows` with one `write`. On failure (a full disk) the file is cut
    /// back to what it held, so that a later record is not stranded behind a torn one.
    pub(super) fn append(&mut self, rows: &[Row]) -> Result<(), StoreError> {
        let mut record = encode(rows, &self.salt)?;
        if self.len == 0 {
            record.splice(0..0, file_header(&self.salt));
        }
        match self.file.write_all_at(&record, self.len) {
            Ok(()) => {
                self.len += record.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.cut_back(self.len);
                Err(unavailable(&self.path, &e))
            }
        }
    }

    /// With `--sync full`, the sync of every record written so far, started on a blocking
    /// thread (`fdatasync`): the runtime goes on meanwhile, and what arrives is gathered into
    /// the next record. `None` with `--sync normal`.
    pub(super) fn sync(&self) -> Option<tokio::task::JoinHandle<std::io::Result<()>>> {
        if !self.durable {
            return None;
        }
        let file = Arc::clone(&self.file);
        Some(tokio::task::spawn_blocking(move || file.sync_data()))
    }

    /// A sync that failed: the records from `from` on are cut off again, so that the senders
    /// hear the store is unavailable and a replay does not bring their messages back.
    pub(super) fn unsynced(&mut self, from: u64, e: &std::io::Error) -> StoreError {
        self.cut_back(from);
        unavailable(&self.path, e)
    }

    /// Cuts the file back to `len` bytes, the end of its last good record. In a spare, zeros
    /// over the next record's header end the reading there instead, and keep the file's size.
    fn cut_back(&mut self, len: u64) {
        self.len = len;
        let size = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        let cut = if size >= len + HEADER as u64 && self.durable {
            self.file.write_all_at(&[0u8; HEADER], len)
        } else {
            self.file.set_len(len)
        };
        if let Err(cut) = cut {
            // The next replay stops at the torn record: what was acknowledged before it is
            // still read; what comes after it is refused until a cut works.
            tracing::error!(error = %cut, "store: cannot cut the journal back after a failed write");
        }
    }

    /// Empties the journal: SQLite holds everything it had. With `--sync full` the spare
    /// takes its place when it is ready (`wait`: waited for, at open).
    pub(super) fn empty(&mut self, wait: bool) -> Result<(), StoreError> {
        if self.len == 0 && !wait {
            return Ok(());
        }
        if let Some(spare) = self.take_spare(wait) {
            return self.take_place(spare, &self.path.with_file_name(SPARE), &[]);
        }
        let io = |e: std::io::Error| unavailable(&self.path, &e);
        self.file.set_len(0).map_err(io)?;
        if self.durable {
            // Emptied before a conversation is deleted: a power loss must not bring back the
            // records of its messages.
            self.file.sync_data().map_err(io)?;
        }
        self.len = 0;
        Ok(())
    }

    /// Starts making the spare, on a thread of its own, unless one is made or being made. The
    /// thread ends when the file is written, whatever becomes of the journal.
    fn make_spare(&mut self) {
        if !self.durable || self.spare.is_some() {
            return;
        }
        let path = self.path.with_file_name(SPARE);
        let (made, spare) = std::sync::mpsc::sync_channel(1);
        let started = std::thread::Builder::new().name("confab-journal-spare".into()).spawn(move || {
            let spare = zeroed(&path, SPARE_BYTES);
            if spare.is_err() {
                // A full disk: what was written of it would only take the room others need.
                let _ = std::fs::remove_file(&path);
            }
            let _ = made.send(spare);
        });
        match started {
            Ok(_) => self.spare = Some(Spare::Making(spare)),
            Err(e) => tracing::warn!(error = %e, "store: cannot start making the journal's spare"),
        }
    }

    /// The spare, if it is ready (or, with `wait`, once it is).
    fn take_spare(&mut self, wait: bool) -> Option<Arc<std::fs::File>> {
        let made = match self.spare.take()? {
            Spare::Recycled(file) => return Some(file),
            Spare::Making(spare) if wait => spare.recv().ok(),
            Spare::Making(spare) => match spare.try_recv() {
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    self.spare = Some(Spare::Making(spare));
                    return None;
                }
                got => got.ok(),
            },
        };
        match made {
            Some(Ok(file)) => Some(Arc::new(file)),
            Some(Err(e)) => {
                // A full disk: the journal goes on growing its own file.
                tracing::warn!(error = %e, "store: cannot make the journal's spare");
                None
            }
            None => None,
        }
    }

    /// Waits until the spare is made, and keeps it for the next restart.
    #[cfg(test)]
    fn wait_for_spare(&mut self) {
        if let Some(Spare::Making(spare)) = &self.spare {
            if let Ok(made) = spare.recv() {
                let (keep, spare) = std::sync::mpsc::sync_channel(1);
                let _ = keep.send(made);
                self.spare = Some(Spare::Making(spare));
            }
        }
    }

    /// `file` (at `from`), with a new salt and a record of `rows` written at its start, takes
    /// the journal's name and becomes the journal. The spare (`from`) swaps names with the
    /// journal and is the next spare, if it is as big as one; otherwise it is renamed over
    /// the journal and a new spare is begun. With `--sync full` a rename may reach the disk
    /// before the data: the file is synced first (a recycled spare's old records, under its
    /// old salt, are then no longer the file's), and the directory after, before a later record
    /// is appended (and acknowledged) to a file that a power loss could leave under `from`'s
    /// name.
    fn take_place(&mut self, file: Arc<std::fs::File>, from: &Path, rows: &[Row]) -> Result<(), StoreError> {
        let io = |e: std::io::Error| unavailable(from, &e);
        let salt: Salt = rand::random();
        let mut start = file_header(&salt).to_vec();
        if !rows.is_empty() {
            start.extend(encode(rows, &salt)?);
        }
        file.write_all_at(&start, 0).map_err(io)?;
        if self.durable {
            file.sync_data().map_err(io)?;
        }
        let swapped = self.durable
            && self.recycle
            && from.file_name() == Some(std::ffi::OsStr::new(SPARE))
            && self.file.metadata().is_ok_and(|m| m.len() >= SPARE_BYTES)
            && self.swap(from);
        if !swapped {
            std::fs::rename(from, &self.path).map_err(io)?;
        }
        // The handles follow the files across the renames, before the directory's sync: if
        // that fails, what is appended next still goes to the file under the journal's name.
        let old = std::mem::replace(&mut self.file, file);
        self.salt = salt;
        self.len = start.len() as u64;
        if swapped {
            self.spare = Some(Spare::Recycled(old));
        } else {
            self.make_spare();
        }
        if self.durable {
            sync_dir(self.path.parent().unwrap_or(Path::new("."))).map_err(io)?;
        }
        Ok(())
    }

    /// Swaps the names of the spare at `from` and the journal in one step, so that a crash
    /// leaves each name on a whole file; false where the file system cannot (then it is not
    /// tried again).
    fn swap(&mut self, from: &Path) -> bool {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        let swapped = {
            use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
            renameat2(AT_FDCWD, from, AT_FDCWD, &self.path, RenameFlags::RENAME_EXCHANGE)
                .inspect_err(|e| {
                    tracing::info!(
                        error = %e,
                        "store: the file system cannot swap the journal and its spare; each spare is written anew"
                    );
                })
                .is_ok()
        };
        #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
        let swapped = {
            let _ = from;
            false
        };
        self.recycle = swapped;
        swapped
    }

    /// At a clean stop: emptied in place, and no spare made again (what is made or being made
    /// is left to the next open, which removes it).
    pub(super) fn close(&mut self) -> Result<(), StoreError> {
        self.spare = None;
        self.empty(false)
    }

    /// Replaces the journal with one holding only `rows` (SQLite has the rest). The new
    /// journal is written beside the old one and then takes its name, so a crash at any point
    /// leaves one or the other whole.
    pub(super) fn restart(&mut self, rows: &[Row]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return self.empty(false);
        }
        if let Some(spare) = self.take_spare(false) {
            return self.take_place(spare, &self.path.with_file_name(SPARE), rows);
        }
        let next = self.path.with_file_name(NEXT);
        // What an earlier try left is cut first.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&next)
            .map_err(|e| unavailable(&next, &e))?;
        self.take_place(Arc::new(file), &next, rows)
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

/// A file of `bytes` zeros at `path`, on disk (written, not only allocated: a write into an
/// allocated but unwritten range still has the extent's state to commit at the sync).
fn zeroed(path: &Path, bytes: u64) -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < bytes {
        let n = zeros.len().min(usize::try_from(bytes - at).unwrap_or(usize::MAX));
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    file.sync_all()?;
    Ok(file)
}

/// Syncs a directory's entries (a file made or renamed in it).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The first 8 bytes of the SHA-256 of `salt` (none in a file written before the salt) and
/// `payload`.
fn checksum(salt: Option<&Salt>, payload: &[u8]) -> [u8; 8] {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    if let Some(salt) = salt {
        digest.update(salt);
    }
    digest.update(payload);
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest.finish().as_ref()[..8]);
    out
}

fn file_header(salt: &Salt) -> [u8; FILE_HEADER] {
    let mut header = [0u8; FILE_HEADER];
    header[..4].copy_from_slice(MAGIC);
    header[4..].copy_from_slice(salt);
    header
}

/// One record of `rows`, for a file whose salt is `salt`.
pub(super) fn encode(rows: &[Row], salt: &Salt) -> Result<Vec<u8>, StoreError> {
    let mut record = vec![0u8; HEADER];
    serde_json::to_writer(&mut record, rows).map_err(|e| StoreError::Database(e.to_string()))?;
    let len =
        u32::try_from(record.len() - HEADER).map_err(|_| StoreError::Database("a journal record over 4 GiB".into()))?;
    let sum = checksum(Some(salt), &record[HEADER..]);
    record[..4].copy_from_slice(&len.to_le_bytes());
    record[4..HEADER].copy_from_slice(&sum);
    Ok(record)
}

/// The rows of every whole, intact record of the file `bytes`, how many bytes the file's
/// header and those records take, and the file's salt (none in a file written before the
/// salt, or an empty one).
pub(super) fn decode(bytes: &[u8]) -> (Vec<Row>, usize, Option<Salt>) {
    let mut rows = Vec::new();
    let (mut at, salt) = match bytes.get(..FILE_HEADER) {
        Some(header) if header.starts_with(MAGIC) => {
            let mut salt = Salt::default();
            salt.copy_from_slice(&header[MAGIC.len()..]);
            (FILE_HEADER, Some(salt))
        }
        _ => (0, None),
    };
    while let Some(header) = bytes.get(at..at + HEADER) {
        let mut len = [0u8; 4];
        len.copy_from_slice(&header[..4]);
        let len = u32::from_le_bytes(len) as usize;
        if len > RECORD_MAX {
            break;
        }
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else { break };
        if checksum(salt.as_ref(), payload) != header[4..HEADER] {
            break;
        }
        let Ok(mut record) = serde_json::from_slice::<Vec<Row>>(payload) else { break };
        rows.append(&mut record);
        at += HEADER + len;
    }
    (rows, at, salt)
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

    const SALT: Salt = *b"saltsalt";

    /// A file of `records` under [`SALT`].
    fn file(records: &[&[Row]]) -> Vec<u8> {
        let mut bytes = file_header(&SALT).to_vec();
        for rows in records {
            bytes.extend(encode(rows, &SALT).unwrap());
        }
        bytes
    }

    #[test]
    fn whole_records_are_read_back_and_a_torn_or_garbled_tail_ends_the_reading() {
        let bytes = file(&[&[row(1), row(2)], &[row(3)]]);
        let whole = bytes.len();
        assert_eq!(decode(&bytes), (vec![row(1), row(2), row(3)], whole, Some(SALT)));

        // Torn: a fourth record cut anywhere is ignored, whole records before it are kept.
        let fourth = encode(&[row(4)], &SALT).unwrap();
        for cut in 1..fourth.len() {
            let mut torn = bytes.clone();
            torn.extend(&fourth[..cut]);
            assert_eq!(decode(&torn), (vec![row(1), row(2), row(3)], whole, Some(SALT)), "cut at {cut}");
        }
        // Garbled: one flipped byte in the second record's payload ends the reading there.
        let first = file(&[&[row(1), row(2)]]).len();
        let mut garbled = bytes.clone();
        garbled[first + HEADER + 3] ^= 0x20;
        assert_eq!(decode(&garbled), (vec![row(1), row(2)], first, Some(SALT)));
        // A whole record under another salt (one of the file's earlier use) ends it too.
        let mut stale = bytes.clone();
        stale.extend(encode(&[row(4)], b"oldsalt!").unwrap());
        assert_eq!(decode(&stale).0, [row(1), row(2), row(3)]);
        // A length that no record has, and zeros (a file extended but never written).
        let mut huge = bytes.clone();
        huge.extend(u32::MAX.to_le_bytes());
        huge.extend([0u8; 20]);
        assert_eq!(decode(&huge).1, whole);
        assert_eq!(decode(&[0u8; 64]), (Vec::new(), 0, None));
        let mut header_only = file(&[]);
        assert_eq!(decode(&header_only), (Vec::new(), FILE_HEADER, Some(SALT)));
        header_only.extend([0u8; 64]);
        assert_eq!(decode(&header_only), (Vec::new(), FILE_HEADER, Some(SALT)));
    }

    /// A journal an earlier version wrote (records from the first byte, checksums without a
    /// salt) is still read, and a torn record ends it as before.
    #[test]
    fn a_journal_written_before_the_salt_is_read() {
        let legacy = |rows: &[Row]| {
            let payload = serde_json::to_vec(rows).unwrap();
            let mut record = (payload.len() as u32).to_le_bytes().to_vec();
            record.extend(checksum(None, &payload));
            record.extend(payload);
            record
        };
        let mut bytes = legacy(&[row(1), row(2)]);
        bytes.extend(legacy(&[row(3)]));
        let whole = bytes.len();
        bytes.extend(&legacy(&[row(4)])[..20]);
        assert_eq!(decode(&bytes), (vec![row(1), row(2), row(3)], whole, None));
        // A salted record does not pass for an unsalted one.
        let mut mixed = legacy(&[row(1)]);
        mixed.extend(encode(&[row(2)], &SALT).unwrap());
        assert_eq!(decode(&mixed).0, [row(1)]);
    }

    /// A restarted journal holds the rows it was given, then what is appended after them; a
    /// restart that a crash cut short (its file written, not renamed) leaves the old journal,
    /// which the next open reads whole and the half-made file does not outlive; nor does a spare.
    #[test]
    fn a_restart_keeps_only_the_rows_given_and_a_cut_short_one_changes_nothing() {
        let dir = std::env::temp_dir().join(format!("confab-journal-test-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let (mut journal, held) = Journal::open(&dir, false).unwrap();
        assert!(held.is_empty());
        journal.append(&[row(1), row(2)]).unwrap();
        journal.append(&[row(3)]).unwrap();
        journal.restart(&[row(3)]).unwrap();
        journal.append(&[row(4)]).unwrap();
        assert_eq!(journal.len(), std::fs::metadata(dir.join(FILE)).unwrap().len());
        drop(journal);
        let (journal, held) = Journal::open(&dir, false).unwrap();
        assert_eq!(held, [row(3), row(4)]);

        std::fs::write(dir.join(NEXT), file(&[&[row(9)]])).unwrap();
        drop(journal);
        let (journal, held) = Journal::open(&dir, false).unwrap();
        assert_eq!(held, [row(3), row(4)]);
        assert!(!dir.join(NEXT).exists());

        // A spare left by a run with `--sync full` is removed by one without it.
        std::fs::write(dir.join(SPARE), [0u8; 64]).unwrap();
        drop(journal);
        let (mut journal, held) = Journal::open(&dir, false).unwrap();
        assert_eq!(held, [row(3), row(4)]);
        assert!(!dir.join(SPARE).exists());

        // Emptied, then appended to: the file begins anew, with its header.
        journal.empty(false).unwrap();
        journal.append(&[row(5)]).unwrap();
        drop(journal);
        let (journal, held) = Journal::open(&dir, false).unwrap();
        assert_eq!(held, [row(5)]);
        drop(journal);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// `--sync full`: the journal is a spare of zeros made beside it, records overwrite the
    /// zeros (the file keeps its size) and are read back as any others; a restart moves into
    /// the spare with only the rows given, and the journal it leaves is the next spare, whose
    /// old records (under the old salt) are not read back once it is the journal again.
    #[test]
    fn a_durable_journal_writes_into_its_spare_and_restarts_into_the_next() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = std::env::temp_dir().join(format!("confab-journal-test-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let size = || std::fs::metadata(dir.join(FILE)).unwrap().len();
        let inode = |name: &str| std::fs::metadata(dir.join(name)).unwrap().ino();
        let (mut journal, held) = Journal::open(&dir, true).unwrap();
        assert!(held.is_empty());
        journal.empty(true).unwrap();
        assert_eq!(size(), SPARE_BYTES, "the spare is the journal");
        journal.append(&[row(1), row(2)]).unwrap();
        journal.append(&[row(3)]).unwrap();
        assert_eq!(size(), SPARE_BYTES, "records are written into the zeros");
        drop(journal);
        let (mut journal, held) = Journal::open(&dir, true).unwrap();
        assert_eq!(held, [row(1), row(2), row(3)]);
        assert_eq!(journal.len(), file(&[&[row(1), row(2)], &[row(3)]]).len() as u64);

        journal.wait_for_spare();
        let first = inode(FILE);
        journal.restart(&[row(3)]).unwrap();
        assert_eq!(size(), SPARE_BYTES, "the restart moved into the spare");
        assert_eq!(inode(SPARE), first, "the journal it left is the next spare");
        journal.append(&[row(4)]).unwrap();
        // Into the first file again, with rows as long as its first record was: its second
        // record ([3]) follows, whole, and is not read under the new salt.
        let second = inode(FILE);
        journal.restart(&[row(1), row(2)]).unwrap();
        assert_eq!((inode(FILE), inode(SPARE)), (first, second), "swapped back");
        assert_eq!(size(), SPARE_BYTES);
        drop(journal);
        let (journal, held) = Journal::open(&dir, true).unwrap();
        assert_eq!(held, [row(1), row(2)]);
        drop(journal);
        let _ = std::fs::remove_dir_all(dir);
    }
}
