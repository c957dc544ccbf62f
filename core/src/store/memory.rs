//! The in-memory store: every rule of the [`Store`] contract, nothing durable. For the
//! session's tests (no disk, no threads: a paused clock stays paused). It passes the same
//! conformance suite as SQLite.

use super::*;
use confab_codec::event::Message;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug)]
struct Conversation {
    members: BTreeMap<UserId, Member>,
    max_members: Option<u32>,
    last_seq: Seq,
    /// By seq; a deleted message is removed from reads but keeps its seq taken.
    messages: BTreeMap<Seq, Stored>,
    by_local_id: HashMap<(UserId, LocalId), Seq>,
}

#[derive(Debug)]
struct Stored {
    message: Message,
    deleted: bool,
}

#[derive(Debug, Default)]
struct State {
    conversations: HashMap<ConversationId, Conversation>,
    photos: HashMap<PhotoId, Photo>,
    inbox: HashMap<UserId, Vec<InboxItem>>,
    attachments: HashMap<String, Attachment>,
}

/// A [`Store`] in memory. Commits are handed to its sink under its lock, so in commit order.
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    sink: Arc<dyn CommitSink>,
    closed: AtomicBool,
}

impl MemoryStore {
    pub fn new(sink: Arc<dyn CommitSink>) -> Self {
        Self { state: Mutex::default(), sink, closed: AtomicBool::new(false) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on the state, unless the store is closed.
    fn with<T: Send + 'static>(&self, f: impl FnOnce(&mut State) -> Result<T, StoreError>) -> StoreFuture<'_, T> {
        let out = if self.closed.load(Ordering::Acquire) { Err(StoreError::Closed) } else { f(&mut self.lock()) };
        Box::pin(std::future::ready(out))
    }
}

fn not_found(c: &ConversationId) -> StoreError {
    StoreError::ConversationNotFound(c.to_string())
}

fn live<'a>(conv: &'a Conversation, m: &MessageId) -> Result<&'a Message, StoreError> {
    conv.messages
        .values()
        .find(|s| !s.deleted && &s.message.id == m)
        .map(|s| &s.message)
        .ok_or_else(|| StoreError::NotFound(format!("message {m} not found")))
}

/// Inserts under a fresh key: ids are made by the server, so a repeat is a bug (as the SQLite
/// store's primary key says).
fn insert_new<K: std::hash::Hash + Eq + std::fmt::Display, V>(
    map: &mut HashMap<K, V>,
    key: K,
    value: V,
    what: &str,
) -> Result<(), StoreError> {
    match map.entry(key) {
        std::collections::hash_map::Entry::Occupied(e) => {
            Err(StoreError::Database(format!("{what} {} exists", e.key())))
        }
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(value);
            Ok(())
        }
    }
}

fn info(id: &ConversationId, c: &Conversation) -> ConversationInfo {
    ConversationInfo {
        id: id.clone(),
        members: c.members.values().cloned().collect(),
        max_members: c.max_members,
        last_seq: c.last_seq,
    }
}

fn set_members(c: &mut Conversation, members: Vec<UserId>) {
    c.members.retain(|u, _| members.contains(u));
    for u in members {
        c.members.entry(u.clone()).or_insert(Member { user_id: u, read: Seq::ZERO, delivered: Seq::ZERO });
    }
}

impl Store for MemoryStore {
    fn append(&self, mut m: NewMessage) -> StoreFuture<'_, Appended> {
        self.with(|s| {
            let requester = m.requester.take();
            let conv = s.conversations.get_mut(&m.conversation_id).ok_or_else(|| not_found(&m.conversation_id))?;
            if let Some(local) = &m.local_id {
                if let Some(seq) = conv.by_local_id.get(&(m.sender_id.clone(), local.clone())) {
                    let message = conv.messages[seq].message.clone();
                    return Ok(Appended { message, duplicate: true });
                }
            }
            let seq = Seq(conv.last_seq.0 + 1);
            let message = m.into_message(new_message_id(), seq);
            conv.last_seq = seq;
            if let Some(local) = &message.local_id {
                conv.by_local_id.insert((message.sender_id.clone(), local.clone()), seq);
            }
            if let Some(sender) = conv.members.get_mut(&message.sender_id) {
                sender.read = sender.read.max(seq);
            }
            conv.messages.insert(seq, Stored { message: message.clone(), deleted: false });
            for user in self.sink.committed(&message, requester.as_ref()) {
                if let Some(member) = conv.members.get_mut(&user) {
                    member.delivered = member.delivered.max(seq);
                }
            }
            Ok(Appended { message, duplicate: false })
        })
    }

    fn delete_message(&self, c: &ConversationId, m: &MessageId, by: &UserId) -> StoreFuture<'_, Message> {
        self.with(|s| {
            let conv =
                s.conversations.get_mut(c).ok_or_else(|| StoreError::NotFound(format!("message {m} not found")))?;
            let message = live(conv, m)?.clone();
            if &message.sender_id != by {
                return Err(StoreError::NotOwner);
            }
            if let Some(stored) = message.seq.and_then(|seq| conv.messages.get_mut(&seq)) {
                stored.deleted = true;
            }
            Ok(message)
        })
    }

    fn mark_read(&self, c: &ConversationId, user: &UserId, m: &MessageId) -> StoreFuture<'_, Option<Seq>> {
        self.with(|s| {
            let conv =
                s.conversations.get_mut(c).ok_or_else(|| StoreError::NotFound(format!("message {m} not found")))?;
            let seq = live(conv, m)?.seq.unwrap_or_default();
            Ok(match conv.members.get_mut(user) {
                Some(member) if member.read < seq => {
                    member.read = seq;
                    Some(seq)
                }
                _ => None,
            })
        })
    }

    fn mark_delivered(&self, c: &ConversationId, user: &UserId, seq: Seq) -> StoreFuture<'_, bool> {
        self.with(|s| {
            Ok(match s.conversations.get_mut(c).and_then(|conv| conv.members.get_mut(user)) {
                Some(member) if member.delivered < seq => {
                    member.delivered = seq;
                    true
                }
                _ => false,
            })
        })
    }

    fn message_seqs(&self, c: &ConversationId, ids: &[MessageId]) -> StoreFuture<'_, Vec<(MessageId, Seq)>> {
        self.with(|s| {
            let Some(conv) = s.conversations.get(c) else { return Ok(Vec::new()) };
            Ok(ids.iter().filter_map(|id| Some((id.clone(), live(conv, id).ok()?.seq?))).collect())
        })
    }

    fn messages_after(&self, c: &ConversationId, after: Seq, limit: u32) -> StoreFuture<'_, Vec<Message>> {
        self.with(|s| {
            let Some(conv) = s.conversations.get(c) else { return Ok(Vec::new()) };
            let later = conv.messages.range(Seq(after.0.saturating_add(1))..).map(|(_, m)| m);
            Ok(later.filter(|m| !m.deleted).take(limit as usize).map(|m| m.message.clone()).collect())
        })
    }

    fn history(&self, c: &ConversationId, before: Option<Seq>, limit: u32) -> StoreFuture<'_, (Vec<Message>, bool)> {
        self.with(|s| {
            let Some(conv) = s.conversations.get(c) else { return Ok((Vec::new(), false)) };
            let older = conv.messages.range(..before.unwrap_or(Seq(u64::MAX))).rev().map(|(_, m)| m);
            let mut page: Vec<Message> =
                older.filter(|m| !m.deleted).take(limit as usize + 1).map(|m| m.message.clone()).collect();
            let has_more = page.len() > limit as usize;
            page.truncate(limit as usize);
            page.reverse();
            Ok((page, has_more))
        })
    }

    fn conversation(&self, c: &ConversationId) -> StoreFuture<'_, Option<ConversationInfo>> {
        self.with(|s| Ok(s.conversations.get(c).map(|conv| info(c, conv))))
    }

    fn conversations_of(&self, user: &UserId) -> StoreFuture<'_, Vec<ConversationSummary>> {
        self.with(|s| {
            let mut out: Vec<ConversationSummary> = s
                .conversations
                .iter()
                .filter_map(|(id, conv)| {
                    let read = conv.members.get(user)?.read;
                    let live = || conv.messages.values().filter(|m| !m.deleted);
                    Some(ConversationSummary {
                        id: id.clone(),
                        members: conv.members.keys().cloned().collect(),
                        last_seq: conv.last_seq,
                        read_seq: read,
                        unread_count: live()
                            .filter(|m| m.message.seq.is_some_and(|s| s > read) && &m.message.sender_id != user)
                            .count() as u64,
                        last_message: live().next_back().map(|m| m.message.clone()),
                    })
                })
                .collect();
            out.sort_by_key(|s| std::cmp::Reverse(s.last_seq));
            Ok(out)
        })
    }

    fn memberships(&self, user: &UserId) -> StoreFuture<'_, Vec<Membership>> {
        self.with(|s| {
            let mut mine: Vec<(&ConversationId, &Conversation)> =
                s.conversations.iter().filter(|(_, conv)| conv.members.contains_key(user)).collect();
            mine.sort_by(|(a, x), (b, y)| y.last_seq.cmp(&x.last_seq).then_with(|| a.cmp(b)));
            Ok(mine
                .into_iter()
                .map(|(id, conv)| Membership {
                    conversation_id: id.clone(),
                    members: if conv.members.len() <= SMALL_GROUP_MAX {
                        conv.members.keys().cloned().collect()
                    } else {
                        Vec::new()
                    },
                })
                .collect())
        })
    }

    fn create_conversation(
        &self,
        c: ConversationId,
        members: Vec<UserId>,
        max_members: Option<u32>,
    ) -> StoreFuture<'_, ConversationInfo> {
        self.with(move |s| {
            if s.conversations.contains_key(&c) {
                return Err(StoreError::ConversationExists(c.to_string()));
            }
            let mut conv = Conversation {
                members: BTreeMap::new(),
                max_members,
                last_seq: Seq::ZERO,
                messages: BTreeMap::new(),
                by_local_id: HashMap::new(),
            };
            set_members(&mut conv, members);
            let out = info(&c, &conv);
            s.conversations.insert(c, conv);
            Ok(out)
        })
    }

    fn set_members(&self, c: &ConversationId, members: Vec<UserId>) -> StoreFuture<'_, ConversationInfo> {
        self.with(move |s| {
            let conv = s.conversations.get_mut(c).ok_or_else(|| not_found(c))?;
            set_members(conv, members);
            Ok(info(c, conv))
        })
    }

    fn delete_conversation(&self, c: &ConversationId) -> StoreFuture<'_, ()> {
        self.with(|s| {
            s.conversations.remove(c).ok_or_else(|| not_found(c))?;
            s.photos.retain(|_, p| &p.conversation_id != c);
            Ok(())
        })
    }

    fn create_photo(&self, p: Photo) -> StoreFuture<'_, ()> {
        self.with(move |s| insert_new(&mut s.photos, p.id.clone(), p, "photo"))
    }

    fn photo(&self, id: &PhotoId) -> StoreFuture<'_, Option<Photo>> {
        self.with(|s| Ok(s.photos.get(id).cloned()))
    }

    fn view_photo(&self, id: &PhotoId, viewer: &UserId, now: Timestamp) -> StoreFuture<'_, (Photo, bool)> {
        self.with(|s| {
            let p = s.photos.get_mut(id).ok_or_else(|| StoreError::NotFound(format!("photo {id} not found")))?;
            let started = p.first_viewed_at.is_none() && &p.sender_id != viewer;
            if started {
                p.first_viewed_at = Some(now);
            }
            Ok((p.clone(), started))
        })
    }

    fn ticking_photos(&self) -> StoreFuture<'_, Vec<Photo>> {
        self.with(|s| Ok(s.photos.values().filter(|p| p.first_viewed_at.is_some()).cloned().collect()))
    }

    fn inbox_push(&self, user: &UserId, item: InboxItem) -> StoreFuture<'_, ()> {
        self.with(move |s| {
            s.inbox.entry(user.clone()).or_default().push(item);
            Ok(())
        })
    }

    fn inbox_take(&self, user: &UserId) -> StoreFuture<'_, Vec<InboxItem>> {
        self.with(|s| Ok(s.inbox.remove(user).unwrap_or_default()))
    }

    fn put_attachment(&self, a: Attachment) -> StoreFuture<'_, ()> {
        self.with(move |s| insert_new(&mut s.attachments, a.id.clone(), a, "attachment"))
    }

    fn attachment(&self, id: &str) -> StoreFuture<'_, Option<Attachment>> {
        self.with(|s| Ok(s.attachments.get(id).cloned()))
    }

    fn writable(&self) -> Result<(), String> {
        if self.closed.load(Ordering::Acquire) { Err("store closed".into()) } else { Ok(()) }
    }

    fn probe_write(&self) -> StoreFuture<'_, ()> {
        self.with(|_| Ok(()))
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        self.closed.store(true, Ordering::Release);
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_store_keeps_the_store_contract() {
        conformance::run(|sink| Box::pin(async move { Arc::new(MemoryStore::new(sink)) as Arc<dyn Store> })).await;
    }
}
