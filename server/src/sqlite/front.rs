//! The store's front: the task on the runtime that takes the store's writes. Appends are
//! decided here (seqs, and `local_id` repeats against SQLite and what is journaled but not
//! applied yet), journaled with one `write` per batch, fanned out and answered, and held for
//! up to [`HOLD_FOR`]; the applier thread ([`applier_loop`]) then puts them into SQLite, off
//! the runtime. Other requests go to the applier in order, after the rows held, and are
//! answered once committed. With `--sync full` the journal's record is synced before the
//! fan-out ([`Journal::sync`]), and what arrives meanwhile is journaled, and its sync started,
//! as soon as that sync ends, before that batch's fan-out ([`Front::after_sync`]).

use super::*;

/// The applier's queue, in batches: when it is full (SQLite this far behind), the front waits.
const APPLIER_QUEUE: usize = 64;

/// How long journaled rows wait in the front before the applier gets them, at most, unless a
/// read waits for them or [`HOLD_ROWS`] have gathered. The messages of that time then go into
/// SQLite in one transaction, with one wake-up of the applier, instead of one of each for every
/// batch of the front: at 5,000 msg/s the applier's CPU a message fell from about 20 µs to 12,
/// on the core the runtime shares (docs/benchmarks.md, issue 19's twelfth pass). They are
/// journaled already, so holding them changes nothing a crash can lose.
pub(super) const HOLD_FOR: std::time::Duration = std::time::Duration::from_millis(50);

/// Journaled rows the front holds, at most, before it hands them to the applier. A bigger
/// transaction holds the core longer: with 1,024 the closed loop's p99 doubled.
pub(super) const HOLD_ROWS: usize = 64;

/// A `local_id` journaled and not yet in SQLite: the message it got, and the batch that has it.
type Pending = HashMap<(ConversationId, UserId, LocalId), (Message, u64)>;

/// An append's outcome, its answer, and who asked (the fan-out's exception).
type Decided = (Result<Appended, StoreError>, Reply<Appended>, Option<Requester>);

/// A run of appends decided and journaled, waiting for its record's sync (`--sync full`)
/// before it is answered and fanned out ([`Front::finish`]).
struct Journaled {
    batch: u64,
    /// Where its record starts in the journal: cut back to here if the sync fails.
    from: u64,
    decided: Vec<Decided>,
    rows: Vec<Row>,
    /// Each conversation's last seq before the batch, put back if it fails.
    before: Vec<(ConversationId, i64)>,
    synced: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Journaled {
    /// Until the disk has its record; at once without a sync (`--sync normal`, no rows).
    async fn synced(&mut self) -> std::io::Result<()> {
        match self.synced.take() {
            None => Ok(()),
            Some(sync) => sync.await.unwrap_or_else(|e| Err(std::io::Error::other(e))),
        }
    }
}

pub(super) struct Front {
    /// Reads only (seqs, `local_id`s): SQLite is written by the applier.
    conn: Connection,
    seqs: Seqs,
    journal: Journal,
    pending: Pending,
    sink: Arc<dyn CommitSink>,
    health: Arc<WriteHealth>,
    metrics: Arc<Metrics>,
    applied: Arc<Applied>,
    applier: mpsc::Sender<Apply>,
    /// Journaled rows not handed to the applier yet, and the last batch among them.
    held: Vec<Row>,
    held_batch: u64,
    /// The last batch handed to the applier.
    handed: u64,
    /// When the rows held now go to the applier, whatever else happens.
    hand_over_at: Option<tokio::time::Instant>,
    /// The batch whose record is being synced, answered once it is (`--sync full`): always
    /// one with rows, and a sync.
    in_flight: Option<Journaled>,
    /// [`HOLD_FOR`], but in tests.
    pub(super) hold_for: std::time::Duration,
}

impl Front {
    /// The front, and the applier thread it hands to (which ends after the front).
    pub(super) fn start(
        conn: Connection,
        journal: Journal,
        writer: Writer,
        sink: Arc<dyn CommitSink>,
        health: Arc<WriteHealth>,
        metrics: Arc<Metrics>,
        applied: Arc<Applied>,
    ) -> Result<Self, StoreError> {
        let (applier, rx) = mpsc::channel(APPLIER_QUEUE);
        std::thread::Builder::new()
            .name("confab-store-applier".into())
            .spawn(move || applier_loop(writer, rx))
            .map_err(|e| StoreError::Database(format!("applier thread: {e}")))?;
        Ok(Self {
            conn,
            seqs: Seqs::default(),
            journal,
            pending: Pending::new(),
            sink,
            health,
            metrics,
            applied,
            applier,
            held: Vec::new(),
            held_batch: 0,
            handed: 0,
            hand_over_at: None,
            in_flight: None,
            hold_for: HOLD_FOR,
        })
    }

    /// A batch of requests: each run of appends journaled, answered and handed on; each run of
    /// other requests handed on and answered once committed, after the appends before it. A
    /// last run of appends whose record is being synced is left in flight ([`Front::after_sync`]).
    /// Nothing is in flight when it is called.
    async fn write(&mut self, batch: Vec<Write>) {
        let mut rest = batch.into_iter().peekable();
        while rest.peek().is_some() {
            let mut appends = Vec::new();
            while let Some(Write::Append(..)) = rest.peek() {
                if let Some(Write::Append(m, reply)) = rest.next() {
                    appends.push((m, reply));
                }
            }
            if let Some(mut journaled) = self.journal_appends(appends).await {
                if rest.peek().is_none() && journaled.synced.is_some() {
                    self.in_flight = Some(journaled);
                    return;
                }
                let synced = journaled.synced().await;
                self.finish(journaled, synced).await;
            }
            let mut others = Vec::new();
            while rest.peek().is_some_and(|w| !matches!(w, Write::Append(..))) {
                others.extend(rest.next());
            }
            if !others.is_empty() {
                self.others(others).await;
            }
        }
    }

    /// Waits until SQLite holds everything journaled; false if some of it failed to go in (a
    /// full disk) and waits in the applier's backlog.
    async fn barrier(&mut self) -> bool {
        self.hand_over().await;
        let (done, all_in) = oneshot::channel();
        if self.applier.send(Apply::Barrier(done)).await.is_err() {
            return false;
        }
        all_in.await.unwrap_or(false)
    }

    /// Requests other than appends, through the applier. The seqs they change (a conversation
    /// made or deleted) are forgotten here. A deletion first empties the journal, once SQLite
    /// holds all of it, so that no replay can bring the conversation's messages back.
    async fn others(&mut self, batch: Vec<Write>) {
        // The applier applies in the order it is handed things: the rows journaled before
        // these requests go first.
        self.hand_over().await;
        let deletes = batch.iter().any(|w| matches!(w, Write::DeleteConversation(..)));
        if deletes {
            let emptied = match self.barrier().await {
                true => self.journal.empty(false),
                false => Err(StoreError::Unavailable("earlier messages are not in the store yet".into())),
            };
            if let Err(e) = emptied {
                self.refused(&e, batch.len());
                return fail_all(batch, e);
            }
        }
        for w in &batch {
            if let Write::Create(c, ..) | Write::DeleteConversation(c, _) = w {
                self.seqs.forget(c);
            }
        }
        let (done, committed) = oneshot::channel();
        if let Err(mpsc::error::SendError(Apply::Requests(batch, _))) =
            self.applier.send(Apply::Requests(batch, done)).await
        {
            return fail_all(batch, StoreError::Closed);
        }
        let _ = committed.await;
    }

    fn refused(&self, e: &StoreError, requests: usize) {
        refused(&self.health, &self.metrics, e, requests);
    }

    /// Whether the next run of appends may have to wait for SQLite or start the journal over
    /// ([`Front::journal_appends`]): then nothing may be in flight, since both go by the rows
    /// held, and a batch in flight has not joined them yet.
    fn needs_care(&self) -> bool {
        self.health.state().is_err() || self.journal.len() > EMPTY_PAST || self.seqs.full()
    }

    /// A run of appends decided, and the new ones journaled in one `write`, their sync started
    /// (`--sync full`); answered and fanned out by [`Front::finish`]. `None` when it was
    /// answered here already (refused, or the journal's write failed).
    async fn journal_appends(&mut self, appends: Vec<(NewMessage, Reply<Appended>)>) -> Option<Journaled> {
        if appends.is_empty() {
            return None;
        }
        // Read before the health: a batch counted as settled whose transaction failed had
        // made the store unhealthy first, so its `local_id`s are not dropped from `pending`
        // below while SQLite does not have them.
        let settled = self.applied.settled();
        // While SQLite refuses what is journaled, nothing more is taken: the backlog stays
        // bounded, and the sender hears the store is unavailable. The backlog is tried again
        // first; with none left (or a failure that was not the journal's), this batch's
        // journal write is the next try.
        if self.health.state().is_err() && !self.barrier().await {
            let e = StoreError::Unavailable(self.health.state().err().unwrap_or_default());
            self.refused(&e, appends.len());
            for (_, reply) in appends {
                let _ = reply.send(Err(e.clone()));
            }
            return None;
        }
        if self.journal.len() > EMPTY_PAST {
            // `settled` was read before the health: every batch up to it is in SQLite. When
            // SQLite holds every row handed over, the journal need keep only the rows held.
            let restarted = if settled >= self.handed {
                let restarted = self.journal.restart(&self.held);
                if restarted.is_err() {
                    // No room for a new journal (a full disk): the rows held go to SQLite now,
                    // so that a later batch can empty the journal, which needs no room.
                    self.hand_over().await;
                }
                Some(restarted)
            } else if self.journal.len() > 4 * EMPTY_PAST && self.barrier().await {
                Some(self.journal.empty(false))
            } else {
                None
            };
            if let Some(Err(e)) = restarted {
                tracing::warn!(error = %e, "store: cannot start the journal over (tried again later)");
            }
        }
        self.pending.retain(|_, (_, batch)| *batch > settled);
        // Forgetting the seqs is safe only once SQLite has every seq handed out; with rows
        // always held under load that moment may not come by itself, so it is waited for.
        if self.seqs.full() && (settled >= self.applied.journaled() || self.barrier().await) {
            self.seqs.trim();
        }
        // After the batch in flight, if one is: it is counted as journaled once finished.
        let batch = self.applied.journaled() + 1 + u64::from(self.in_flight.is_some());
        let mut journaled = Journaled {
            batch,
            from: self.journal.len(),
            decided: Vec::with_capacity(appends.len()),
            rows: Vec::with_capacity(appends.len()),
            before: Vec::new(),
            synced: None,
        };
        for (mut m, reply) in appends {
            let requester = m.requester.take();
            let result = self.decide(m, batch, &mut journaled.rows, &mut journaled.before);
            journaled.decided.push((result, reply, requester));
        }
        if !journaled.rows.is_empty() {
            if let Err(e) = self.journal.append(&journaled.rows) {
                self.unjournaled(journaled, &e);
                return None;
            }
            journaled.synced = self.journal.sync();
        }
        Some(journaled)
    }

    /// A journaled run of appends whose record is on disk (`synced`): fanned out and answered
    /// in order, its rows held for the applier. If the sync failed, its record is cut off and
    /// the run refused.
    async fn finish(&mut self, journaled: Journaled, synced: std::io::Result<()>) {
        if journaled.rows.is_empty() {
            for (result, reply, _) in journaled.decided {
                let _ = reply.send(result);
            }
            return;
        }
        if let Err(e) = synced {
            let e = self.journal.unsynced(journaled.from, &e);
            return self.unjournaled(journaled, &e);
        }
        self.applied.journaled_one();
        let Journaled { batch, decided, mut rows, .. } = journaled;
        for (result, reply, requester) in decided {
            if let Ok(a) = &result {
                if !a.duplicate {
                    let seq = a.message.seq.unwrap_or_default().0 as i64;
                    for user in self.sink.committed(&a.message, requester.as_ref()) {
                        self.seqs.delivered(&a.message.conversation_id, user, seq);
                    }
                }
            }
            let _ = reply.send(result);
        }
        self.held.append(&mut rows);
        self.held_batch = batch;
        self.hand_over_at.get_or_insert_with(|| tokio::time::Instant::now() + self.hold_for);
        if self.held.len() >= HOLD_ROWS {
            // The fan-out has woken the recipients' connections: on a busy core their writes
            // go before the applier's wake-up.
            tokio::task::yield_now().await;
            self.hand_over().await;
        }
    }

    /// A run of appends whose record is not in the journal (its write or its sync failed):
    /// nothing of it is anywhere, so its seqs and `local_id`s are free again, and its new
    /// messages are refused (a repeat of one stored earlier is still answered with it).
    fn unjournaled(&mut self, journaled: Journaled, e: &StoreError) {
        for (c, last) in journaled.before {
            self.seqs.assigned(&c, last);
        }
        self.pending.retain(|_, (_, b)| *b != journaled.batch);
        self.refused(e, journaled.rows.len());
        for (result, reply, _) in journaled.decided {
            let _ = reply.send(match result {
                Ok(a) if !a.duplicate => Err(e.clone()),
                other => other,
            });
        }
    }

    /// The batch in flight, if one is, answered once its sync is done.
    async fn settle(&mut self) {
        if let Some(journaled) = self.in_flight.as_mut() {
            let synced = journaled.synced().await;
            self.finish_in_flight(synced).await;
        }
    }

    /// Once the batch in flight is synced, what came during its sync is journaled, and its
    /// sync started, before that batch is fanned out and answered: the fan-out's CPU then
    /// overlaps the next sync instead of coming before it (a sync here is 130-200 µs, and a
    /// batch's fan-out as long). Not after a failed sync (the next record would follow one
    /// that is cut off), nor when what came is more than appends or may wait for SQLite (they
    /// go by the rows held, which the batch in flight has not joined yet): then the batch in
    /// flight is finished first, and the rest written after it. Returns a close that came.
    async fn after_sync(&mut self, rx: &mut mpsc::Receiver<Write>) -> Option<Reply<()>> {
        let synced = match self.in_flight.as_mut() {
            Some(journaled) => journaled.synced().await,
            None => return None,
        };
        let (mut rest, mut close) = (Vec::new(), None);
        if synced.is_ok() {
            // The tasks that are ready run first, so that what they send joins the next record.
            tokio::task::yield_now().await;
            if let Ok(first) = rx.try_recv() {
                (rest, close) = gather(first, rx);
            }
        }
        if close.is_none() && !rest.is_empty() && !self.needs_care() {
            match only_appends(rest) {
                Ok(appends) => {
                    let behind = self.journal_appends(appends).await;
                    #[cfg(test)]
                    self.applied.behind.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.finish_in_flight(synced).await;
                    match behind {
                        Some(behind) if behind.synced.is_some() => self.in_flight = Some(behind),
                        // Nothing journaled (repeats, refusals): answered now.
                        Some(behind) => self.finish(behind, Ok(())).await,
                        None => {}
                    }
                    // Under steady load the front stays on this path: the hold's end and a read
                    // waiting for the rows held are seen to here, as in [`front_task`]'s
                    // `select!`.
                    let hold_over = self.hand_over_at.is_some_and(|at| at <= tokio::time::Instant::now());
                    if hold_over || futures_util::FutureExt::now_or_never(self.applied.wanted()).is_some() {
                        self.hand_over().await;
                    }
                    return None;
                }
                Err(batch) => rest = batch,
            }
        }
        self.finish_in_flight(synced).await;
        if !rest.is_empty() {
            self.write(rest).await;
        }
        close
    }

    /// The batch in flight, answered with the outcome of its sync.
    async fn finish_in_flight(&mut self, synced: std::io::Result<()>) {
        if let Some(journaled) = self.in_flight.take() {
            self.finish(journaled, synced).await;
        }
    }

    /// The rows held go to the applier, with the delivery marks their fan-out advanced.
    async fn hand_over(&mut self) {
        self.hand_over_at = None;
        if self.held.is_empty() {
            return;
        }
        let rows = std::mem::take(&mut self.held);
        self.handed = self.held_batch;
        let delivered = self.seqs.take_delivered();
        if self.applier.send(Apply::Rows(rows, self.held_batch, delivered)).await.is_err() {
            // The applier has gone (a panic): what is journaled is applied at the next open.
            tracing::error!("store: the applier has ended; journaled messages wait for the next start");
        }
    }

    /// One append's outcome: a new message with the next seq, a repeat of a `local_id` already
    /// stored, journaled or earlier in the batch (the message stored, `duplicate`), or an error.
    fn decide(
        &mut self,
        m: NewMessage,
        batch: u64,
        rows: &mut Vec<Row>,
        before: &mut Vec<(ConversationId, i64)>,
    ) -> Result<Appended, StoreError> {
        let seq = self.seqs.next(&self.conn, &m.conversation_id)?;
        let key = match &m.local_id {
            Some(local) => {
                let key = (m.conversation_id.clone(), m.sender_id.clone(), local.clone());
                // Journaled but maybe not in SQLite (pruned only once SQLite had it, so one of
                // the two has it), or in SQLite.
                if let Some((message, _)) = self.pending.get(&key) {
                    return Ok(Appended { message: message.clone(), duplicate: true });
                }
                let stored = query_row(
                    &self.conn,
                    &BY_LOCAL_ID,
                    params![m.conversation_id.as_str(), m.sender_id.as_str(), local.as_str()],
                    row_to_message,
                )
                .optional()
                .map_err(db)?;
                if let Some(stored) = stored {
                    return Ok(Appended { message: stored?, duplicate: true });
                }
                Some(key)
            }
            None => None,
        };
        let message = m.into_message(new_message_id(), Seq(seq as u64));
        rows.push(Row::of(&message)?);
        if let Some(key) = key {
            self.pending.insert(key, (message.clone(), batch));
        }
        if !before.iter().any(|(c, _)| c == &message.conversation_id) {
            before.push((message.conversation_id.clone(), seq - 1));
        }
        self.seqs.assigned(&message.conversation_id, seq);
        Ok(Appended { message, duplicate: false })
    }

    /// `Store::close`: everything before the close into SQLite, then the journal emptied.
    async fn close(&mut self, reply: Reply<()>, rx: &mut mpsc::Receiver<Write>) {
        self.settle().await;
        refuse_the_rest(rx);
        if self.barrier().await {
            if let Err(e) = self.journal.close() {
                tracing::warn!(error = %e, "store: cannot empty the journal at close (it is applied again at open)");
            }
        }
        drop(reply.send(Ok(())));
    }
}

/// The batch as appends, if it holds nothing else.
fn only_appends(batch: Vec<Write>) -> Result<Vec<(NewMessage, Reply<Appended>)>, Vec<Write>> {
    if !batch.iter().all(|w| matches!(w, Write::Append(..))) {
        return Err(batch);
    }
    Ok(batch
        .into_iter()
        .filter_map(|w| match w {
            Write::Append(m, reply) => Some((m, reply)),
            _ => None,
        })
        .collect())
}

/// The front as a task on the runtime. Ends when the store is closed or dropped (its queue
/// closes); the applier then ends too, after what the front held.
pub(super) async fn front_task(mut front: Front, mut rx: mpsc::Receiver<Write>) {
    let applied = Arc::clone(&front.applied);
    // One timer for the task's life, moved to each new deadline: not one registered and
    // dropped with every batch.
    let hold = tokio::time::sleep(std::time::Duration::ZERO);
    tokio::pin!(hold);
    loop {
        if front.in_flight.is_some() {
            if let Some(reply) = front.after_sync(&mut rx).await {
                return front.close(reply, &mut rx).await;
            }
            continue;
        }
        let next = match front.hand_over_at {
            None => rx.recv().await,
            Some(at) => tokio::select! {
                biased;
                next = rx.recv() => next,
                () = {
                    if hold.deadline() != at {
                        hold.as_mut().reset(at);
                    }
                    &mut hold
                } => {
                    front.hand_over().await;
                    continue;
                }
                () = applied.wanted() => {
                    front.hand_over().await;
                    continue;
                }
            },
        };
        let Some(first) = next else {
            front.settle().await;
            return front.hand_over().await;
        };
        // The tasks that are ready (frames read in the same wake-up) run first, so that what
        // they send joins this batch: one journal write and one fan-out pass for them all.
        tokio::task::yield_now().await;
        let (batch, close) = gather(first, &mut rx);
        if !batch.is_empty() {
            front.write(batch).await;
        }
        if let Some(reply) = close {
            return front.close(reply, &mut rx).await;
        }
    }
}
