//! Cluster mode: which node sends `message:delivered`. A recipient may have devices on several
//! nodes, and each node that reaches one of them would otherwise tell the sender. Instead each
//! node hands the recipients it reached to a bounded queue ([`Claims`]); [`claim_loop`] moves
//! their delivery watermarks in the store in one statement per batch, and only for the marks
//! that moved (the store's conditional update, which one node wins) does it send the receipt,
//! to the sender's connections here and on the other nodes. A node alone decides in its hub.

use crate::metrics::Metrics;
use crate::node::Node;
use crate::store::DeliveryMark;
use confab_codec::event::Message;
use confab_codec::{ConversationId, UserId};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Most claims waiting; past it a claim is dropped (its receipt is not sent, and the next
/// message to that recipient claims the watermark again).
const QUEUE: usize = 65_536;
/// Most claims settled by one statement.
const BATCH: usize = 1024;
/// How long the first claim of a batch waits for others: a receipt a few milliseconds later
/// costs nobody anything, and a statement for every message would double PostgreSQL's
/// transactions.
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

#[derive(Debug)]
struct Claim {
    message: Arc<Message>,
    recipient: UserId,
}

/// The recipients whose devices on this node got a message, waiting to claim its receipt.
#[derive(Debug)]
pub struct Claims {
    tx: mpsc::Sender<Claim>,
    rx: Mutex<Option<mpsc::Receiver<Claim>>>,
    metrics: Arc<Metrics>,
}

impl Claims {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self { tx, rx: Mutex::new(Some(rx)), metrics }
    }

    /// Queues the receipts of `reached` (recipients whose devices here just got `message`).
    /// Never waits: it runs on the store's writer and the broker's subscriber.
    pub fn claim(&self, message: &Message, reached: Vec<UserId>) {
        if reached.is_empty() {
            return;
        }
        let message = Arc::new(message.clone());
        for recipient in reached {
            if self.tx.try_send(Claim { message: Arc::clone(&message), recipient }).is_err() {
                self.metrics.receipts_dropped.inc();
            }
        }
    }

    fn take_receiver(&self) -> Option<mpsc::Receiver<Claim>> {
        self.rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

/// Settles the node's claims until shutdown: one store statement per batch, then a receipt for
/// each watermark this node moved.
pub async fn claim_loop(node: Arc<Node>) {
    let Some(mut rx) = node.claims.as_ref().and_then(|c| c.take_receiver()) else { return };
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        batch.clear();
        tokio::select! {
            () = node.shutdown.cancelled() => return,
            n = rx.recv_many(&mut batch, BATCH) => if n == 0 { return },
        }
        if batch.len() < BATCH {
            tokio::time::sleep(LINGER).await;
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(claim) => batch.push(claim),
                    Err(_) => break,
                }
            }
        }
        let (marks, messages) = newest_per_member(batch.drain(..));
        match node.store.claim_delivered(&marks).await {
            Ok(won) => {
                for i in won {
                    if let (Some((_, recipient, _)), Some(m)) = (marks.get(i), messages.get(i)) {
                        node.metrics.receipts_claimed.inc();
                        node.send_receipt(m, recipient.clone());
                    }
                }
            }
            // The marks did not move: the recipients' next messages claim them again.
            Err(e) => tracing::warn!(error = %e, claims = marks.len(), "claiming delivery receipts"),
        }
    }
}

/// One mark per conversation and member, at the newest message (a receipt covers the
/// messages before it), with that message.
fn newest_per_member(claims: impl Iterator<Item = Claim>) -> (Vec<DeliveryMark>, Vec<Arc<Message>>) {
    let mut newest: HashMap<(ConversationId, UserId), Arc<Message>> = HashMap::new();
    for Claim { message, recipient } in claims {
        match newest.entry((message.conversation_id.clone(), recipient)) {
            Entry::Occupied(mut e) if e.get().seq < message.seq => {
                e.insert(message);
            }
            Entry::Occupied(_) => {}
            Entry::Vacant(e) => {
                e.insert(message);
            }
        }
    }
    newest.into_iter().map(|((c, u), m)| ((c, u, m.seq.unwrap_or_default()), m)).unzip()
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_codec::{MessageId, MessageKind, Seq, Timestamp};

    fn message(c: &str, seq: u64) -> Arc<Message> {
        Arc::new(Message {
            id: MessageId::parse(&format!("msg_{c}{seq}")).unwrap(),
            conversation_id: ConversationId::parse(c).unwrap(),
            seq: Some(Seq(seq)),
            sender_id: UserId::parse("alice").unwrap(),
            content: String::new(),
            kind: MessageKind::Text,
            metadata: Default::default(),
            created_at: Timestamp::from_millis(0),
            updated_at: None,
            is_read: None,
            local_id: None,
            reply_to: None,
        })
    }

    #[test]
    fn one_mark_per_member_at_the_newest_message_whatever_the_order() {
        let bob = UserId::parse("bob").unwrap();
        let carol = UserId::parse("carol").unwrap();
        let claims = [("c1", 3, &bob), ("c1", 5, &bob), ("c1", 4, &bob), ("c1", 4, &carol), ("c2", 1, &bob)]
            .map(|(c, s, u)| Claim { message: message(c, s), recipient: u.clone() });
        let (mut marks, messages) = newest_per_member(claims.into_iter());
        assert!(marks.iter().zip(&messages).all(|((_, _, s), m)| m.seq == Some(*s)));
        marks.sort();
        let c = |s: &str| ConversationId::parse(s).unwrap();
        assert_eq!(marks, [(c("c1"), bob.clone(), Seq(5)), (c("c1"), carol, Seq(4)), (c("c2"), bob, Seq(1))]);
    }
}
