//! Durable state behind one interface: conversations and members, messages with their
//! gap-free seqs, read watermarks, ephemeral photos, and the offline inbox.
//!
//! The engines live elsewhere: the embedded SQLite store in `confab-server` (the default),
//! [`memory::MemoryStore`] here for tests. Each hands every committed
//! message to its [`CommitSink`], in commit order, before the `append` returns. Every store
//! passes the one suite in [`conformance`].

pub mod conformance;
pub mod health;
pub mod memory;

pub use health::WriteHealth;

use confab_codec::event::{Message, Metadata};
use confab_codec::{
    ConnectionId, ConversationId, LocalId, MessageId, MessageKind, PhotoId, RequestId, Seq, Timestamp, UserId,
};
use std::future::Future;
use std::pin::Pin;

/// What a store call returns: boxed so that `dyn Store` works.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error("conversation {0} not found")]
    ConversationNotFound(String),
    #[error("conversation {0} already exists")]
    ConversationExists(String),
    #[error("{0}")]
    NotFound(String),
    /// Only a message's sender may delete it.
    #[error("not the owner")]
    NotOwner,
    /// The database failed in a way that retrying will not fix (a bug, corrupt data); the
    /// request was not applied. A transient failure is [`StoreError::Unavailable`].
    #[error("database: {0}")]
    Database(String),
    /// The store cannot write now (its disk is full, an I/O error): nothing was applied. It
    /// passes by itself once the cause does; the request may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store is shutting down.
    #[error("store closed")]
    Closed,
    /// The sender is over a per-user message limit that the store counts (cluster mode: every
    /// node's messages in one count); nothing was stored.
    #[error("{limit} messages per {interval_s} s")]
    RateLimited { limit: u32, interval_s: u64, retry_after_s: u64 },
}

/// A message to append; the store assigns `id`, `seq` and keeps `created_at`.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub conversation_id: ConversationId,
    pub sender_id: UserId,
    pub kind: MessageKind,
    pub content: String,
    pub metadata: Metadata,
    pub local_id: Option<LocalId>,
    pub reply_to: Option<MessageId>,
    pub created_at: Timestamp,
    /// Who to acknowledge the commit to (`message:sent`); none for the server API's messages.
    /// The store only hands it to the commit callback with the committed message.
    pub requester: Option<Requester>,
}

impl NewMessage {
    /// The message as stored, with the `id` and `seq` the store gave it (the requester is
    /// not part of it).
    pub fn into_message(self, id: MessageId, seq: Seq) -> Message {
        Message {
            id,
            conversation_id: self.conversation_id,
            seq: Some(seq),
            sender_id: self.sender_id,
            content: self.content,
            kind: self.kind,
            metadata: self.metadata,
            created_at: self.created_at,
            updated_at: None,
            is_read: None,
            local_id: self.local_id,
            reply_to: self.reply_to,
        }
    }
}

/// A fresh message id: the wall clock's milliseconds first, then 56 random bits, so that ids
/// made later sort after earlier ones (the hex keeps its length until the year 2527) and a
/// database's id index grows at its right edge. The prefix keeps ids recognisable in logs.
pub fn new_message_id() -> MessageId {
    let ms = u64::try_from(crate::clock::system_now().as_millis()).unwrap_or(0);
    let random = rand::random::<u64>() >> 8;
    MessageId::generate("msg_", (u128::from(ms) << 56) | u128::from(random))
}

/// The connection that asked for an append, and the request it answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Requester {
    pub connection: ConnectionId,
    pub request_id: Option<RequestId>,
}

/// The stored message, and whether it was already there (same sender and `local_id`).
#[derive(Debug, Clone)]
pub struct Appended {
    pub message: Message,
    pub duplicate: bool,
}

/// A conversation's membership and position.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationInfo {
    pub id: ConversationId,
    pub members: Vec<Member>,
    pub max_members: Option<u32>,
    pub last_seq: Seq,
}

/// A member of a conversation and their watermarks.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub user_id: UserId,
    /// The seq they have read up to.
    pub read: Seq,
    /// The seq up to which their devices have had the messages (`message:delivered` sent).
    pub delivered: Seq,
}

/// Conversations of up to this many members are where presence and reads travel: their
/// members hear each other come and go (`user:online`, `user:offline`, `status:update`) and
/// read (`message:viewed`). In a bigger group each would be a notice to every member for every
/// member's every connect or read, a cost that grows with the square of the group.
pub const SMALL_GROUP_MAX: usize = 100;

/// A conversation the user is in, with everyone in it when it has at most
/// [`SMALL_GROUP_MAX`] members (else none are listed: reading ten thousand members at
/// every connect would serve nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct Membership {
    pub conversation_id: ConversationId,
    pub members: Vec<UserId>,
}

/// One row of a user's conversation list (`GET /v1/chat/conversations`).
#[derive(Debug, Clone)]
pub struct ConversationSummary {
    pub id: ConversationId,
    pub members: Vec<UserId>,
    pub last_seq: Seq,
    pub read_seq: Seq,
    pub unread_count: u64,
    pub last_message: Option<Message>,
}

/// An ephemeral photo's state.
#[derive(Debug, Clone, PartialEq)]
pub struct Photo {
    pub id: PhotoId,
    pub conversation_id: ConversationId,
    pub sender_id: UserId,
    pub url: String,
    pub expires_in: u32,
    pub created_at: Timestamp,
    /// Set at the first view by someone other than the sender: the clock starts then.
    pub first_viewed_at: Option<Timestamp>,
}

impl Photo {
    pub fn expires_at(&self) -> Option<Timestamp> {
        self.first_viewed_at.map(|t| t.plus_millis(i64::from(self.expires_in) * 1000))
    }
}

/// A file sent inline with a message (seed 004), kept for its URL.
#[derive(Clone, PartialEq)]
pub struct Attachment {
    /// `att_` and 26 random hex digits: the URL is the capability to read it.
    pub id: String,
    pub conversation_id: ConversationId,
    pub uploader: UserId,
    /// What the client called it (`image`, `file`, ...).
    pub kind: String,
    pub filename: Option<String>,
    pub bytes: Vec<u8>,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment").field("id", &self.id).field("len", &self.bytes.len()).finish_non_exhaustive()
    }
}

/// An event the app backend published for a user who was offline.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxItem {
    pub kind: String,
    pub data: Metadata,
}

/// A member's delivery watermark to move: conversation, member, seq.
pub type DeliveryMark = (ConversationId, UserId, Seq);

/// Where a store hands each newly committed message (and who asked for it), in commit order,
/// before its `append` returns: the node's fan-out. "Committed" is durable as the store's
/// setting promises: with SQLite's `--sync normal`, journaled (in the kernel's hands), before
/// SQLite has it; the store's reads then wait until it does. It runs on the store's writer, so it must
/// not block (it only fills bounded queues). It returns the members whose delivery watermark
/// the message advanced; the store records them with a later write. A repeated `local_id` is
/// not a new message: its append returns the original, and its requester is answered by the
/// caller.
pub trait CommitSink: Send + Sync + std::fmt::Debug + 'static {
    fn committed(&self, message: &Message, requester: Option<&Requester>) -> Vec<UserId>;
}

/// The durable store.
pub trait Store: Send + Sync + 'static {
    /// Appends a message durably; duplicates (same sender and `local_id`) return the original.
    fn append(&self, m: NewMessage) -> StoreFuture<'_, Appended>;
    /// Marks a message deleted (its sender only); returns the message.
    fn delete_message(&self, c: &ConversationId, m: &MessageId, by: &UserId) -> StoreFuture<'_, Message>;
    /// Moves a member's read watermark forward to the message; `None` if it was already past it.
    fn mark_read(&self, c: &ConversationId, user: &UserId, m: &MessageId) -> StoreFuture<'_, Option<Seq>>;
    /// Moves a member's delivery watermark forward to `seq`; true if it moved (a conditional
    /// update: of several nodes marking the same seq, one is told so).
    fn mark_delivered(&self, c: &ConversationId, user: &UserId, seq: Seq) -> StoreFuture<'_, bool>;
    /// Moves many delivery watermarks (distinct conversation and member pairs); the indices of
    /// `marks` that moved. Cluster mode: the node told so alone sends `message:delivered`.
    fn claim_delivered(&self, marks: &[DeliveryMark]) -> StoreFuture<'_, Vec<usize>> {
        let marks = marks.to_vec();
        Box::pin(async move {
            let mut won = Vec::new();
            for (i, (c, u, s)) in marks.iter().enumerate() {
                if self.mark_delivered(c, u, *s).await? {
                    won.push(i);
                }
            }
            Ok(won)
        })
    }
    /// The seqs of those of `ids` that are messages of `c` (not deleted), in no order.
    fn message_seqs(&self, c: &ConversationId, ids: &[MessageId]) -> StoreFuture<'_, Vec<(MessageId, Seq)>>;
    /// Messages with seq greater than `after`, oldest first, at most `limit`.
    fn messages_after(&self, c: &ConversationId, after: Seq, limit: u32) -> StoreFuture<'_, Vec<Message>>;
    /// Messages with seq less than `before` (the newest if `None`), oldest first; and whether
    /// older ones exist.
    fn history(&self, c: &ConversationId, before: Option<Seq>, limit: u32) -> StoreFuture<'_, (Vec<Message>, bool)>;
    fn conversation(&self, c: &ConversationId) -> StoreFuture<'_, Option<ConversationInfo>>;
    /// Those of `cs` that exist, in no order (cluster mode's connect, `Node::follow`: one read
    /// for many).
    fn conversations(&self, cs: &[ConversationId]) -> StoreFuture<'_, Vec<ConversationInfo>> {
        let cs = cs.to_vec();
        Box::pin(async move {
            let mut out = Vec::with_capacity(cs.len());
            for c in cs {
                out.extend(self.conversation(&c).await?);
            }
            Ok(out)
        })
    }
    /// The last seq of each of `cs` that exists (cluster mode's sweep: one read for many).
    fn last_seqs(&self, cs: &[ConversationId]) -> StoreFuture<'_, Vec<(ConversationId, Seq)>> {
        let cs = cs.to_vec();
        Box::pin(async move {
            let mut out = Vec::with_capacity(cs.len());
            for c in cs {
                if let Some(info) = self.conversation(&c).await? {
                    out.push((c, info.last_seq));
                }
            }
            Ok(out)
        })
    }
    /// The user's conversations with unread counts and last messages (the REST list).
    fn conversations_of(&self, user: &UserId) -> StoreFuture<'_, Vec<ConversationSummary>>;
    /// The user's conversations and their members (for conversations of up to
    /// [`SMALL_GROUP_MAX`] members), most recently active first: one query, for what every
    /// connect, disconnect and status change needs.
    fn memberships(&self, user: &UserId) -> StoreFuture<'_, Vec<Membership>>;
    fn create_conversation(
        &self,
        c: ConversationId,
        members: Vec<UserId>,
        max_members: Option<u32>,
    ) -> StoreFuture<'_, ConversationInfo>;
    fn set_members(&self, c: &ConversationId, members: Vec<UserId>) -> StoreFuture<'_, ConversationInfo>;
    fn delete_conversation(&self, c: &ConversationId) -> StoreFuture<'_, ()>;
    fn create_photo(&self, p: Photo) -> StoreFuture<'_, ()>;
    fn photo(&self, id: &PhotoId) -> StoreFuture<'_, Option<Photo>>;
    /// Records a view by `viewer`; the first view by someone other than the sender starts the
    /// clock (a conditional update: of several nodes, one starts it). Returns the photo as it
    /// is after the view, and whether this view started the clock.
    fn view_photo(&self, id: &PhotoId, viewer: &UserId, now: Timestamp) -> StoreFuture<'_, (Photo, bool)>;
    /// Photos viewed, to arm their timers after a restart (and in a cluster to announce those
    /// a dead node was timing); a store that records [`Store::claim_expiry`] leaves out those
    /// already announced.
    fn ticking_photos(&self) -> StoreFuture<'_, Vec<Photo>>;
    /// Records that a photo's expiry is being announced; true for the one caller that did it
    /// first. A store of one node needs no record: a photo's timer runs once there.
    fn claim_expiry(&self, id: &PhotoId) -> StoreFuture<'_, bool> {
        let _ = id;
        Box::pin(async { Ok(true) })
    }
    fn inbox_push(&self, user: &UserId, item: InboxItem) -> StoreFuture<'_, ()>;
    /// Takes (and removes) a user's inbox, oldest first.
    fn inbox_take(&self, user: &UserId) -> StoreFuture<'_, Vec<InboxItem>>;
    /// Keeps a file durably, before the message that links it is appended.
    fn put_attachment(&self, a: Attachment) -> StoreFuture<'_, ()>;
    fn attachment(&self, id: &str) -> StoreFuture<'_, Option<Attachment>>;
    /// `Err(reason)` while writes fail as [`StoreError::Unavailable`]: from the first such
    /// failure until a write succeeds again.
    fn writable(&self) -> Result<(), String>;
    /// A small write of no consequence, to learn whether writes work again when no client is
    /// writing (the node is not ready meanwhile, so none may be).
    fn probe_write(&self) -> StoreFuture<'_, ()>;
    /// Finishes the writes accepted so far and stops: later calls fail with
    /// [`StoreError::Closed`]. Closing twice is closing once.
    fn close(&self) -> StoreFuture<'_, ()>;
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}
