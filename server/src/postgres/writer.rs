//! The append writer: a task with a connection of its own that takes what has queued while its
//! last batch was in flight and writes it as one `confab_append` call (one statement, one
//! transaction, one round trip). After the commit it hands each new message to the fan-out in
//! commit order, then answers. The fan-out's delivery marks ride with the next batch.

use super::*;
use std::collections::HashMap;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub(super) enum Write {
    Append(NewMessage, Reply<Appended>),
    /// `Store::close`: answered after the appends queued before it, and the writer ends.
    Close(Reply<()>),
}

/// Row k answers append k: its outcome, then [`MESSAGE_COLUMNS`] (filled for a duplicate).
const APPEND: &str =
    "SELECT o_i, o_outcome, o_id, o_conv, o_seq, o_sender, o_content, o_kind, o_meta, o_created, o_local, o_reply
     FROM confab_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";

/// The writer's connection and what goes with it.
pub(super) struct Writer {
    config: tokio_postgres::Config,
    /// The connection and its prepared `APPEND`; none after a failure, until the next batch
    /// connects again.
    link: Option<(Client, tokio_postgres::Statement)>,
    sink: Arc<dyn CommitSink>,
    metrics: Arc<Metrics>,
    health: Arc<WriteHealth>,
    /// Delivery watermarks the fan-out advanced, highest per member, for the next batch (a
    /// crash before then costs a repeated `message:delivered`, not data).
    delivered: HashMap<(ConversationId, UserId), i64>,
    /// Messages per minute, hour and day per user, charged in the batch (cluster mode); empty
    /// where each node counts its own.
    rates: Vec<i32>,
}

impl Writer {
    pub(super) async fn new(
        config: tokio_postgres::Config,
        client: Client,
        sink: Arc<dyn CommitSink>,
        metrics: Arc<Metrics>,
        health: Arc<WriteHealth>,
        limits: Option<MessageLimits>,
    ) -> Result<Self, StoreError> {
        let stmt = timely(client.prepare(APPEND)).await?;
        metrics.store_writable.set(1);
        let rates =
            limits.map_or_else(Vec::new, |l| l.per.iter().map(|n| i32::try_from(*n).unwrap_or(i32::MAX)).collect());
        Ok(Self { config, link: Some((client, stmt)), sink, metrics, health, delivered: HashMap::new(), rates })
    }

    /// The connection, made again if the last one failed.
    async fn link(&mut self) -> Result<(&Client, &tokio_postgres::Statement), StoreError> {
        if self.link.as_ref().is_some_and(|(c, _)| c.is_closed()) {
            self.link = None;
        }
        if self.link.is_none() {
            let client = connect(&self.config).await?;
            let stmt = timely(client.prepare(APPEND)).await?;
            self.link = Some((client, stmt));
        }
        let (client, stmt) = self.link.as_ref().ok_or(StoreError::Closed)?;
        Ok((client, stmt))
    }

    async fn write(&mut self, batch: Vec<(NewMessage, Reply<Appended>)>) {
        let requests = batch.len();
        self.metrics.store_batch_size.observe(requests as f64);
        let started = std::time::Instant::now();
        let delivered = std::mem::take(&mut self.delivered);
        // Proposed ids: a new message keeps its own, a duplicate gets the stored one back.
        let ids: Vec<MessageId> = batch.iter().map(|_| new_message_id()).collect();
        match self.commit(&batch, &ids, &delivered).await {
            Ok(rows) => {
                self.health.committed(&self.metrics);
                self.metrics.store_commit_seconds.observe(started.elapsed().as_secs_f64());
                for (((m, reply), id), row) in batch.into_iter().zip(ids).zip(rows) {
                    let _ = reply.send(self.outcome(m, id, &row));
                }
            }
            Err(e) => {
                if let StoreError::Unavailable(why) = &e {
                    self.health.refused(why, requests, &self.metrics);
                    // What the connection was doing is unknown: the next batch makes a new one.
                    self.link = None;
                }
                // Rolled back (or not known to have committed): the marks go with a later batch.
                for (key, s) in delivered {
                    let mark = self.delivered.entry(key).or_insert(s);
                    *mark = (*mark).max(s);
                }
                for (_, reply) in batch {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// One append's answer from its row of the committed batch; a new message goes to the
    /// fan-out first (in commit order, before the sender hears `message:sent`).
    fn outcome(&mut self, mut m: NewMessage, id: MessageId, row: &Row) -> Result<Appended, StoreError> {
        let outcome: i16 = row.try_get(1).map_err(pg)?;
        let stored_seq: Option<i64> = row.try_get(4).map_err(pg)?;
        match (outcome, stored_seq) {
            (0, Some(s)) => {
                let requester = m.requester.take();
                let message = m.into_message(id, seq(s));
                for user in self.sink.committed(&message, requester.as_ref()) {
                    let mark = self.delivered.entry((message.conversation_id.clone(), user)).or_insert(s);
                    *mark = (*mark).max(s);
                }
                Ok(Appended { message, duplicate: false })
            }
            (1, Some(_)) => Ok(Appended { message: message_at(row, 2)?, duplicate: true }),
            (2, _) => Err(StoreError::ConversationNotFound(m.conversation_id.to_string())),
            (3, Some(wait_ms)) => {
                let bucket: Option<i64> = row.try_get(9).map_err(pg)?;
                let i = usize::try_from(bucket.unwrap_or(1) - 1).unwrap_or(0).min(2);
                Err(StoreError::RateLimited {
                    limit: u32::try_from(self.rates.get(i).copied().unwrap_or(0)).unwrap_or(0),
                    interval_s: [60, 3600, 86_400][i],
                    retry_after_s: u64::try_from(wait_ms).unwrap_or(0).div_ceil(1000).max(1),
                })
            }
            _ => Err(StoreError::Database(format!("confab_append: outcome {outcome} without a seq"))),
        }
    }

    async fn commit(
        &mut self,
        batch: &[(NewMessage, Reply<Appended>)],
        ids: &[MessageId],
        delivered: &HashMap<(ConversationId, UserId), i64>,
    ) -> Result<Vec<Row>, StoreError> {
        let mut metadata = Vec::with_capacity(batch.len());
        for (m, _) in batch {
            metadata.push(serde_json::to_string(&m.metadata).map_err(|e| StoreError::Database(e.to_string()))?);
        }
        let conv: Vec<&str> = batch.iter().map(|(m, _)| m.conversation_id.as_str()).collect();
        let sender: Vec<&str> = batch.iter().map(|(m, _)| m.sender_id.as_str()).collect();
        let id: Vec<&str> = ids.iter().map(MessageId::as_str).collect();
        let kind: Vec<&str> = batch.iter().map(|(m, _)| m.kind.as_str()).collect();
        let content: Vec<&str> = batch.iter().map(|(m, _)| m.content.as_str()).collect();
        let created: Vec<i64> = batch.iter().map(|(m, _)| m.created_at.as_millis()).collect();
        let local: Vec<Option<&str>> = batch.iter().map(|(m, _)| m.local_id.as_ref().map(LocalId::as_str)).collect();
        let reply: Vec<Option<&str>> = batch.iter().map(|(m, _)| m.reply_to.as_ref().map(MessageId::as_str)).collect();
        let d_conv: Vec<&str> = delivered.keys().map(|(c, _)| c.as_str()).collect();
        let d_user: Vec<&str> = delivered.keys().map(|(_, u)| u.as_str()).collect();
        let d_seq: Vec<i64> = delivered.values().copied().collect();
        let now = confab_core::clock::system_now().as_millis();
        let rates = self.rates.clone();
        // A client's message is charged to its sender; the server API's are not limited.
        let charge: Vec<bool> = batch.iter().map(|(m, _)| m.requester.is_some()).collect();
        let (client, stmt) = self.link().await?;
        let mut rows = timely(client.query(
            stmt,
            &[
                &conv, &sender, &id, &kind, &content, &metadata, &created, &local, &reply, &d_conv, &d_user, &d_seq,
                &now, &rates, &charge,
            ],
        ))
        .await?;
        // Row k answers append k (the function returns them in order; sorted to be sure).
        rows.sort_by_key(|r| r.try_get::<_, i32>(0).unwrap_or(i32::MAX));
        if rows.len() != batch.len() {
            return Err(StoreError::Database(format!(
                "confab_append answered {} of {} appends",
                rows.len(),
                batch.len()
            )));
        }
        Ok(rows)
    }
}

/// The writer task: each batch is what queued while the last one was in flight. Ends when the
/// store is closed (after answering what was queued before the close) or dropped.
pub(super) async fn run(mut writer: Writer, mut rx: mpsc::Receiver<Write>) {
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::with_capacity(1);
        let mut close = None;
        let mut next = Some(first);
        while let Some(w) = next {
            match w {
                Write::Append(m, reply) => batch.push((m, reply)),
                Write::Close(reply) => {
                    close = Some(reply);
                    break;
                }
            }
            next = if batch.len() < MAX_BATCH { rx.try_recv().ok() } else { None };
        }
        if !batch.is_empty() {
            writer.write(batch).await;
        }
        if let Some(reply) = close {
            rx.close();
            while let Ok(w) = rx.try_recv() {
                match w {
                    Write::Append(_, r) => drop(r.send(Err(StoreError::Closed))),
                    Write::Close(r) => drop(r.send(Ok(()))),
                }
            }
            drop(reply.send(Ok(())));
            return;
        }
    }
}
