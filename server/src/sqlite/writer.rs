//! The applier thread ([`applier_loop`]), behind the front's journal ([`front`]): the rows the
//! front journaled, the rows of several of its batches in one transaction, with the senders'
//! read marks and the fan-out's delivery marks once per transaction; and the other requests,
//! in the front's order, each in a savepoint, answered once committed. A conversation's last
//! seq is not written at all: it is its highest stored seq ([`LAST_SEQ`]), one step down the
//! messages' primary key, so a commit does not dirty the conversation's page (a WAL frame, a
//! fifth of a lone message's, docs/benchmarks.md issue 19).

use super::*;
use std::collections::HashMap;

/// Conversations whose last seq the writer remembers; past this it forgets them all (a cache
/// refilled by one indexed read per conversation).
const SEQ_CACHE: usize = 100_000;

/// Each conversation's last seq as the front handed them out, and the delivery watermarks not
/// written yet. The applier writes those inside its transaction before any other request runs
/// and before the commit, so every reader (in the batch or after the commit) sees the same
/// state as if each delivery had written its own. A failed commit clears it all: the database
/// is the truth.
#[derive(Default)]
pub(super) struct Seqs {
    last: HashMap<ConversationId, i64>,
    /// Delivery watermarks the fan-out advanced after earlier commits, highest per member:
    /// written with the next batch rather than in a commit of their own (a crash before then
    /// costs a repeated `message:delivered`, not data), and once per member however many
    /// messages reached it (one `UPDATE` per delivery was half the writer's statements when a
    /// conversation is busy, a thousand per message in a group of a thousand).
    delivered: HashMap<(ConversationId, UserId), i64>,
}

impl Seqs {
    /// The seq the next message of `c` gets; `ConversationNotFound` if there is no such
    /// conversation.
    pub(super) fn next(&mut self, t: &Connection, c: &ConversationId) -> Result<i64, StoreError> {
        if let Some(last) = self.last.get(c) {
            return Ok(last + 1);
        }
        let last: Option<i64> = query_row(t, &LAST_SEQ, [c.as_str()], |r| r.get(0)).optional().map_err(db)?;
        let last = last.ok_or_else(|| StoreError::ConversationNotFound(c.to_string()))?;
        self.last.insert(c.clone(), last);
        Ok(last + 1)
    }

    /// Forgets every conversation's last seq once there are too many. Only between batches:
    /// within one, a seq handed out but not yet in SQLite (journaled, or inserted but not
    /// committed) is known only here, and a conversation forgotten then would hand it out twice.
    pub(super) fn trim(&mut self) {
        if self.full() {
            self.last.clear();
        }
    }

    /// Whether it holds as many conversations as it may.
    pub(super) fn full(&self) -> bool {
        self.last.len() >= SEQ_CACHE
    }

    /// Records a seq handed out to a journaled message (its sender's read mark is written with
    /// its row, `journal::insert_rows`).
    pub(super) fn assigned(&mut self, c: &ConversationId, seq: i64) {
        self.last.insert(c.clone(), seq);
    }

    /// Records that `user` has been handed every message of `c` up to `seq`.
    pub(super) fn delivered(&mut self, c: &ConversationId, user: UserId, seq: i64) {
        let mark = self.delivered.entry((c.clone(), user)).or_insert(seq);
        *mark = (*mark).max(seq);
    }

    /// Writes what the batch's appends (and earlier fan-outs) have not written yet.
    fn flush(&mut self, t: &Connection) -> Result<(), StoreError> {
        for ((c, u), seq) in self.delivered.drain() {
            mark_delivered(t, &c, &u, Seq(seq as u64))?;
        }
        Ok(())
    }

    /// The delivery marks not written yet, for the applier to write.
    pub(super) fn take_delivered(&mut self) -> Vec<((ConversationId, UserId), i64)> {
        self.delivered.drain().collect()
    }

    /// Forgets a conversation that is created or deleted.
    pub(super) fn forget(&mut self, c: &ConversationId) {
        self.last.remove(c);
    }

    fn reset(&mut self) {
        *self = Self::default();
    }
}

pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// The checkpoint thread's answer to a writer that asked it for the rewind's last copy.
pub(super) type Rewound = oneshot::Sender<()>;

pub(super) enum Write {
    Append(NewMessage, Reply<Appended>),
    Delete(ConversationId, MessageId, UserId, Reply<Message>),
    MarkRead(ConversationId, UserId, MessageId, Reply<Option<Seq>>),
    MarkDelivered(ConversationId, UserId, Seq, Reply<bool>),
    Create(ConversationId, Vec<UserId>, Option<u32>, Reply<ConversationInfo>),
    SetMembers(ConversationId, Vec<UserId>, Reply<ConversationInfo>),
    DeleteConversation(ConversationId, Reply<()>),
    CreatePhoto(Photo, Reply<()>),
    ViewPhoto(PhotoId, UserId, Timestamp, Reply<(Photo, bool)>),
    InboxPush(UserId, InboxItem, Reply<()>),
    InboxTake(UserId, Reply<Vec<InboxItem>>),
    PutAttachment(Attachment, Reply<()>),
    /// A write of no consequence (`Store::probe_write`).
    Probe(Reply<()>),
    /// `Store::close`: the writer answers it after the writes queued before it and ends.
    Close(Reply<()>),
}

/// The applier's connection and what goes with it.
pub(super) struct Writer {
    conn: Connection,
    seqs: Seqs,
    metrics: Arc<crate::metrics::Metrics>,
    rewind: Arc<std::sync::atomic::AtomicBool>,
    /// Where the rewind's last copy is asked for (the checkpoint thread).
    checkpoints: std::sync::mpsc::Sender<Rewound>,
    health: Arc<WriteHealth>,
    /// Journaled rows whose transaction failed (a full disk): applied before anything else is
    /// written, and until then everything else is refused (the front refuses appends while
    /// the store's health says so).
    backlog: Vec<Row>,
    applied: Arc<Applied>,
}

/// How far SQLite is behind the journal, in batches: a read waits until SQLite holds every
/// batch journaled (and so possibly fanned out) before it began, so that a history fetched
/// right after a `message:new` has the message.
#[derive(Debug)]
pub(super) struct Applied {
    journaled: std::sync::atomic::AtomicU64,
    /// The last batch SQLite holds, or whose transaction failed (reads do not wait for a disk
    /// to have room again); `u64::MAX` once the writer has ended.
    settled: tokio::sync::watch::Sender<u64>,
    /// A read waits for rows that the front may be holding.
    wanted: tokio::sync::Notify,
    /// Batches journaled while the one before was being synced (tests: the path was taken).
    #[cfg(test)]
    pub(super) behind: std::sync::atomic::AtomicU64,
}

impl Default for Applied {
    fn default() -> Self {
        Self {
            journaled: Default::default(),
            #[cfg(test)]
            behind: Default::default(),
            settled: tokio::sync::watch::Sender::new(0),
            wanted: tokio::sync::Notify::new(),
        }
    }
}

impl Applied {
    /// The batches journaled so far: what a read that begins now waits for.
    pub(super) fn journaled(&self) -> u64 {
        self.journaled.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Counts one more batch journaled (by the front, the only one that journals).
    pub(super) fn journaled_one(&self) {
        self.journaled.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// The last batch SQLite holds (or whose transaction failed).
    pub(super) fn settled(&self) -> u64 {
        *self.settled.borrow()
    }

    /// Returns once a read waits for SQLite (at once if one began waiting since the last call).
    pub(super) async fn wanted(&self) {
        self.wanted.notified().await;
    }

    /// Waits until SQLite holds the first `want` batches journaled.
    pub(super) async fn caught_up(&self, want: u64) {
        if *self.settled.borrow() >= want {
            return;
        }
        self.wanted.notify_one();
        let _ = self.settled.subscribe().wait_for(|settled| *settled >= want).await;
    }
}

impl Drop for Writer {
    /// Reads never wait for a writer that has gone (closed, or panicked).
    fn drop(&mut self) {
        self.applied.settled.send_replace(u64::MAX);
    }
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        metrics: Arc<crate::metrics::Metrics>,
        rewind: Arc<std::sync::atomic::AtomicBool>,
        checkpoints: std::sync::mpsc::Sender<Rewound>,
        health: Arc<WriteHealth>,
        applied: Arc<Applied>,
    ) -> Self {
        metrics.store_writable.set(1);
        Self { conn, seqs: Seqs::default(), metrics, rewind, checkpoints, health, backlog: Vec::new(), applied }
    }

    fn write(&mut self, batch: Vec<Write>) {
        write_batch(&mut self.conn, batch, &mut self.seqs, &self.metrics, &self.health);
    }

    /// Requests other than appends behind journaled rows: after the backlog (if any),
    /// committed then answered.
    fn write_others(&mut self, batch: Vec<Write>) {
        match self.settle_backlog() {
            Ok(()) => self.write(batch),
            Err(e) => {
                self.refused(&e, batch.len());
                fail_all(batch, e);
            }
        }
    }

    fn refused(&self, e: &StoreError, requests: usize) {
        refused(&self.health, &self.metrics, e, requests);
    }

    /// Applies the rows queued (those of batches up to `batch`): in SQLite, or in the backlog
    /// if the transaction failed. Reads waiting for those batches go on either way.
    fn apply_queued(&mut self, rows: &mut Vec<Row>, batch: u64) {
        if rows.is_empty() {
            return;
        }
        // A failed transaction leaves its rows in the backlog; rows behind a backlog join it
        // (no more come while the store fails: the front refuses appends).
        let _ = if self.backlog.is_empty() {
            self.apply(std::mem::take(rows))
        } else {
            self.backlog.append(rows);
            self.settle_backlog()
        };
        self.applied.settled.send_replace(batch);
    }

    /// Applies the backlog, if there is one; an error while it still fails.
    fn settle_backlog(&mut self) -> Result<(), StoreError> {
        if self.backlog.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.backlog);
        self.apply(rows)
    }

    /// One transaction of journaled rows (and the marks waiting to be written). On failure the
    /// rows wait in the backlog: they are acknowledged, and in the journal.
    fn apply(&mut self, rows: Vec<Row>) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        self.metrics.store_batch_size.observe(rows.len() as f64);
        let done = (|| {
            let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db)?;
            let inserted = insert_rows(&tx, &rows)?;
            self.seqs.flush(&tx)?;
            tx.commit().map_err(db)?;
            Ok(inserted)
        })();
        self.metrics.store_commit_seconds.observe(started.elapsed().as_secs_f64());
        match done {
            Ok(inserted) => {
                if inserted < rows.len() {
                    // Each seq was decided against SQLite and the batch: never expected.
                    tracing::error!(journaled = rows.len(), inserted, "store: journaled messages found stored already");
                }
                self.health.committed(&self.metrics);
                Ok(())
            }
            Err(e) => {
                self.refused(&e, 0);
                self.backlog = rows;
                Err(e)
            }
        }
    }

    /// When the checkpoint thread has asked for the WAL to be rewound ([`WAL_FRAMES_REWIND`]):
    /// asks it for the last copy, and gives back its answer, for the writer to wait on before
    /// its next batch (so that no batch writes meanwhile).
    fn rewind(&self) -> Option<oneshot::Receiver<()>> {
        if !self.rewind.swap(false, std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let (done, rewound) = oneshot::channel();
        self.checkpoints.send(done).ok()?;
        Some(rewound)
    }
}

/// Records `requests` refused for `e` in the store's health (a transaction of journaled rows
/// that failed counts none: they were acknowledged).
pub(super) fn refused(health: &WriteHealth, metrics: &crate::metrics::Metrics, e: &StoreError, requests: usize) {
    let why = match e {
        StoreError::Unavailable(why) => why.clone(),
        other => other.to_string(),
    };
    health.refused(&why, requests, metrics);
}

/// After a close: what was queued after it is refused, and nothing more can be queued.
pub(super) fn refuse_the_rest(rx: &mut mpsc::Receiver<Write>) {
    rx.close();
    while let Ok(w) = rx.try_recv() {
        fail_all(vec![w], StoreError::Closed);
    }
}

/// What the front hands the applier thread, in the order it decided them.
pub(super) enum Apply {
    /// Journaled rows, answered and fanned out already; the number of their batch; the
    /// delivery marks their fan-out advanced.
    Rows(Vec<Row>, u64, Vec<((ConversationId, UserId), i64)>),
    /// Other requests: committed, then answered; then `done` says whether SQLite holds every
    /// journaled row (no backlog).
    Requests(Vec<Write>, oneshot::Sender<bool>),
    /// The rows queued and the backlog tried: whether SQLite now holds every journaled row.
    Barrier(oneshot::Sender<bool>),
}

/// The applier thread: journaled rows into SQLite (synced with `--sync full`), several of the front's
/// batches in one transaction when they have queued up, and the other requests, in the
/// front's order. Its writes wait for the disk at times (a checkpoint's sync holds the WAL's
/// pages for milliseconds); here they hold no thread of the runtime. Ends when the front has.
pub(super) fn applier_loop(mut writer: Writer, mut rx: mpsc::Receiver<Apply>) {
    let mut rows = Vec::new();
    let mut batch = 0;
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Apply::Rows(more, number, delivered) => {
                    rows.extend(more);
                    batch = number;
                    for ((c, u), seq) in delivered {
                        writer.seqs.delivered(&c, u, seq);
                    }
                    if rows.len() < MAX_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                Apply::Requests(requests, done) => {
                    writer.apply_queued(&mut rows, batch);
                    writer.write_others(requests);
                    let _ = done.send(writer.backlog.is_empty());
                }
                Apply::Barrier(done) => {
                    writer.apply_queued(&mut rows, batch);
                    let _ = done.send(writer.settle_backlog().is_ok());
                }
            }
        }
        writer.apply_queued(&mut rows, batch);
        if let Some(rewound) = writer.rewind() {
            let _ = rewound.blocking_recv();
        }
    }
}

/// `first` and what is queued behind it, up to [`MAX_BATCH`], as one batch; and a close, if one
/// came (what is queued after it is not taken).
pub(super) fn gather(first: Write, rx: &mut mpsc::Receiver<Write>) -> (Vec<Write>, Option<Reply<()>>) {
    let mut batch = Vec::with_capacity(1);
    let mut next = Some(first);
    while let Some(w) = next {
        match w {
            Write::Close(reply) => return (batch, Some(reply)),
            w => batch.push(w),
        }
        next = if batch.len() < MAX_BATCH { rx.try_recv().ok() } else { None };
    }
    (batch, None)
}

fn write_batch(
    conn: &mut Connection,
    batch: Vec<Write>,
    seqs: &mut Seqs,
    metrics: &crate::metrics::Metrics,
    health: &WriteHealth,
) {
    let requests = batch.len();
    metrics.store_batch_size.observe(requests as f64);
    let started = std::time::Instant::now();
    match apply_batch(conn, batch, seqs) {
        Ok(()) => health.committed(metrics),
        Err(StoreError::Unavailable(why)) => health.refused(&why, requests, metrics),
        Err(_) => {}
    }
    metrics.store_commit_seconds.observe(started.elapsed().as_secs_f64());
}

/// A request applied inside the transaction: its answer, waiting for the commit's outcome.
pub(super) struct Done(Box<dyn FnOnce(Option<StoreError>) + Send>);

/// Applies and commits one batch, answers every request in it, and returns how the commit went.
pub(super) fn apply_batch(conn: &mut Connection, batch: Vec<Write>, seqs: &mut Seqs) -> Result<(), StoreError> {
    let mut done = Vec::with_capacity(batch.len());
    seqs.trim();
    // IMMEDIATE: the write lock is taken (waiting up to the busy timeout) before the batch reads
    // anything. A deferred transaction that has read cannot wait for the lock: while the
    // checkpoint thread held it for a RESTART, a batch failed at once with "database is locked"
    // (found by the 10-minute soak, where the WAL reaches the RESTART bound).
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let e = db(e);
            fail_all(batch, e.clone());
            return Err(e);
        }
    };
    let mut tx = tx;
    let mut flushed: Result<(), StoreError> = Ok(());
    let mut requests = batch.into_iter();
    while let Some(w) = requests.next() {
        if !matches!(w, Write::Append(..)) && flushed.is_ok() {
            flushed = seqs.flush(&tx);
        }
        done.push(apply_one(&mut tx, w, seqs));
        // SQLite may roll the whole transaction back itself on a full disk or an I/O error;
        // statements after that would each commit on their own. Nothing more runs, and the
        // batch fails whole: nothing of it is stored, nothing acknowledged.
        if tx.is_autocommit() {
            let e = StoreError::Unavailable("the store rolled the batch back (disk full or I/O error)".into());
            fail_all(requests.collect(), e.clone());
            flushed = Err(e);
            break;
        }
    }
    // A batch whose seqs could not be written is not committed (dropping it rolls it back).
    let committed = flushed.and_then(|()| seqs.flush(&tx)).and_then(|()| tx.commit().map_err(db));
    if committed.is_err() {
        seqs.reset();
    }
    for Done(finish) in done {
        finish(committed.as_ref().err().cloned());
    }
    committed
}

pub(super) fn fail_all(batch: Vec<Write>, e: StoreError) {
    for w in batch {
        match w {
            Write::Append(_, r) => drop(r.send(Err(e.clone()))),
            Write::Delete(.., r) => drop(r.send(Err(e.clone()))),
            Write::MarkRead(.., r) => drop(r.send(Err(e.clone()))),
            Write::MarkDelivered(.., r) => drop(r.send(Err(e.clone()))),
            Write::Create(.., r) | Write::SetMembers(.., r) => drop(r.send(Err(e.clone()))),
            Write::DeleteConversation(_, r)
            | Write::CreatePhoto(_, r)
            | Write::InboxPush(_, _, r)
            | Write::PutAttachment(_, r) => drop(r.send(Err(e.clone()))),
            Write::ViewPhoto(.., r) => drop(r.send(Err(e.clone()))),
            Write::InboxTake(_, r) => drop(r.send(Err(e.clone()))),
            Write::Probe(r) => drop(r.send(Err(e.clone()))),
            // The close itself succeeds whatever the batch before it did.
            Write::Close(r) => drop(r.send(Ok(()))),
        }
    }
}

/// Runs `f` in a savepoint, so a request that fails leaves nothing behind and the rest of the
/// batch still commits; the answer is sent after the commit (or replaced by its failure).
pub(super) fn step<T: Send + 'static>(
    tx: &mut Transaction<'_>,
    reply: Reply<T>,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Done {
    let result = savepoint(tx, f);
    Done(Box::new(move |commit_error| {
        let _ = reply.send(match commit_error {
            Some(e) => Err(e),
            None => result,
        });
    }))
}

/// Runs `f` inside a savepoint: on error everything it did is undone and the rest of the
/// batch goes on. Cached statements, because rusqlite's savepoints parse SQL every time.
pub(super) fn savepoint<T>(
    t: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    exec(t, "SAVEPOINT request", []).map_err(db)?;
    let r = f(t);
    let end = if r.is_ok() {
        exec(t, "RELEASE request", [])
    } else {
        exec(t, "ROLLBACK TO request", []).and_then(|_| exec(t, "RELEASE request", []))
    };
    end.map_err(db).and(r)
}

pub(super) fn apply_one(tx: &mut Transaction<'_>, w: Write, seqs: &mut Seqs) -> Done {
    match w {
        // Appends are decided and journaled by the front, which never hands one on.
        Write::Append(_, reply) => {
            Done(Box::new(move |_| drop(reply.send(Err(StoreError::Database("an append reached the applier".into()))))))
        }
        Write::Delete(c, m, by, reply) => step(tx, reply, |t| delete_message(t, &c, &m, &by)),
        Write::MarkRead(c, u, m, reply) => step(tx, reply, |t| mark_read(t, &c, &u, &m)),
        Write::MarkDelivered(c, u, seq, reply) => step(tx, reply, |t| mark_delivered(t, &c, &u, seq)),
        Write::Create(c, members, max, reply) => step(tx, reply, |t| {
            seqs.forget(&c);
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
            seqs.forget(&c);
            let n = exec(t, "DELETE FROM conversations WHERE id = ?1", [c.as_str()]).map_err(db)?;
            if n == 0 {
                return Err(StoreError::ConversationNotFound(c.to_string()));
            }
            for table in ["members", "messages", "photos"] {
                exec(t, &format!("DELETE FROM {table} WHERE conversation_id = ?1"), [c.as_str()]).map_err(db)?;
            }
            Ok(())
        }),
        // Taken out of every batch by the front; answered if one ever got here.
        Write::Close(reply) => Done(Box::new(move |_| drop(reply.send(Ok(()))))),
        Write::Probe(reply) => step(tx, reply, |t| {
            exec(t, "INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?1)", [now_ms()]).map_err(db)?;
            Ok(())
        }),
        Write::PutAttachment(a, reply) => step(tx, reply, |t| {
            exec(t,
                "INSERT INTO attachments (id, conversation_id, uploader, kind, filename, bytes, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![a.id, a.conversation_id.as_str(), a.uploader.as_str(), a.kind, a.filename, a.bytes, a.created_at.as_millis()],
            )
            .map_err(db)?;
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
            let started = p.first_viewed_at.is_none() && p.sender_id != viewer;
            if started {
                exec(t, "UPDATE photos SET first_viewed_at = ?1 WHERE id = ?2", params![now.as_millis(), id.as_str()])
                    .map_err(db)?;
                p.first_viewed_at = Some(now);
            }
            Ok((p, started))
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

/// The wall clock in milliseconds, for the store's own columns (`created_at`, `deleted_at`).
pub(super) fn now_ms() -> i64 {
    confab_core::clock::system_now().as_millis()
}

pub(super) static BY_LOCAL_ID: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND sender_id = ?2 AND local_id = ?3")
});

pub(super) fn delete_message(
    t: &Connection,
    c: &ConversationId,
    m: &MessageId,
    by: &UserId,
) -> Result<Message, StoreError> {
    let message = find_message(t, c, m)?;
    if &message.sender_id != by {
        return Err(StoreError::NotOwner);
    }
    exec(t, "UPDATE messages SET deleted_at = ?1 WHERE id = ?2", params![now_ms(), m.as_str()]).map_err(db)?;
    Ok(message)
}

pub(super) fn mark_read(
    t: &Connection,
    c: &ConversationId,
    u: &UserId,
    m: &MessageId,
) -> Result<Option<Seq>, StoreError> {
    let seq = find_message(t, c, m)?.seq.unwrap_or_default();
    let n = exec(
        t,
        "UPDATE members SET read_seq = ?1 WHERE conversation_id = ?2 AND user_id = ?3 AND read_seq < ?1",
        params![seq.0 as i64, c.as_str(), u.as_str()],
    )
    .map_err(db)?;
    Ok((n > 0).then_some(seq))
}

/// Moves a member's read mark up to `seq` (never down).
pub(super) fn raise_read_mark(t: &Connection, c: &str, u: &str, seq: i64) -> Result<(), StoreError> {
    exec(
        t,
        "UPDATE members SET read_seq = MAX(read_seq, ?1) WHERE conversation_id = ?2 AND user_id = ?3",
        params![seq, c, u],
    )
    .map_err(db)?;
    Ok(())
}

pub(super) fn mark_delivered(t: &Connection, c: &ConversationId, u: &UserId, seq: Seq) -> Result<bool, StoreError> {
    let n = exec(
        t,
        "UPDATE members SET delivered_seq = ?1 WHERE conversation_id = ?2 AND user_id = ?3 AND delivered_seq < ?1",
        params![seq.0 as i64, c.as_str(), u.as_str()],
    )
    .map_err(db)?;
    Ok(n > 0)
}

pub(super) fn replace_members(t: &Connection, c: &ConversationId, members: &[UserId]) -> Result<(), StoreError> {
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
