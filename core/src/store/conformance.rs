//! The one suite every [`Store`] passes: the contract the rest of the server relies on, run
//! against the in-memory store here and against SQLite (and each engine to come) in its own
//! crate's tests, each from a fresh, empty store.
//!
//! ```ignore
//! store::conformance::run(|sink| Box::pin(async move { Arc::new(MyStore::open(sink)) as Arc<dyn Store> })).await;
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use confab_codec::event::Message;
use futures_util::future::BoxFuture;
use std::sync::{Arc, Mutex};

/// What the store handed to its sink: each commit's seq and requester, in order.
#[derive(Debug, Default)]
struct Recorder {
    commits: Mutex<Vec<(ConversationId, Seq, Option<ConnectionId>)>>,
    /// The members the fan-out reports as reached by every message.
    reached: Mutex<Vec<UserId>>,
}

impl CommitSink for Recorder {
    fn committed(&self, m: &Message, r: Option<&Requester>) -> Vec<UserId> {
        let entry = (m.conversation_id.clone(), m.seq.unwrap(), r.map(|r| r.connection.clone()));
        self.commits.lock().unwrap().push(entry);
        self.reached.lock().unwrap().clone()
    }
}

fn c(s: &str) -> ConversationId {
    ConversationId::parse(s).unwrap()
}

fn u(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn text(conv: &ConversationId, sender: &UserId, content: &str, local: Option<&str>) -> NewMessage {
    NewMessage {
        conversation_id: conv.clone(),
        sender_id: sender.clone(),
        kind: MessageKind::Text,
        content: content.into(),
        metadata: Metadata::default(),
        local_id: local.map(|l| LocalId::parse(l).unwrap()),
        reply_to: None,
        created_at: Timestamp::from_millis(1_700_000_000_000),
        requester: None,
    }
}

fn seqs(ms: &[Message]) -> Vec<u64> {
    ms.iter().map(|m| m.seq.unwrap().0).collect()
}

/// Runs the whole suite on stores made by `open` (one per part, each empty), which hands
/// its commits to the sink it is given.
pub async fn run<F>(open: F)
where
    F: Fn(Arc<dyn CommitSink>) -> BoxFuture<'static, Arc<dyn Store>>,
{
    let fresh = || {
        let rec = Arc::new(Recorder::default());
        (Arc::clone(&rec), open(rec as Arc<dyn CommitSink>))
    };
    let (rec, store) = fresh();
    appends(&*store.await, &rec).await;
    let (rec, store) = fresh();
    marks(&*store.await, &rec).await;
    let (_, store) = fresh();
    reads_and_deletes(&*store.await).await;
    let (_, store) = fresh();
    conversations(&*store.await).await;
    let (_, store) = fresh();
    photos_inbox_attachments(&*store.await).await;
    let (_, store) = fresh();
    closing(&*store.await).await;
}

/// Gap-free seqs from 1, commits handed on in order with their requester, `local_id`s
/// deduplicated (and not committed twice), unknown conversations refused.
async fn appends(store: &dyn Store, rec: &Recorder) {
    let (conv, a, b) = (c("c1"), u("a"), u("b"));
    store.create_conversation(conv.clone(), vec![a.clone(), b.clone()], None).await.unwrap();
    let mut m = text(&conv, &a, "one", Some("l1"));
    let requester = Requester { connection: ConnectionId::parse("conn_1").unwrap(), request_id: None };
    m.requester = Some(requester.clone());
    let first = store.append(m).await.unwrap();
    assert!(!first.duplicate);
    assert_eq!((first.message.seq, first.message.content.as_str()), (Some(Seq(1)), "one"));
    for i in 2..=5 {
        let appended = store.append(text(&conv, &b, &format!("m{i}"), None)).await.unwrap();
        assert_eq!(appended.message.seq, Some(Seq(i)));
    }
    let again = store.append(text(&conv, &a, "one, resent", Some("l1"))).await.unwrap();
    assert!(again.duplicate, "same sender and local_id");
    assert_eq!((again.message.id, again.message.seq), (first.message.id.clone(), Some(Seq(1))));
    let other_sender = store.append(text(&conv, &b, "b's l1", Some("l1"))).await.unwrap();
    assert!(!other_sender.duplicate, "a local_id is the sender's own");
    let commits = rec.commits.lock().unwrap().clone();
    assert_eq!(commits.iter().map(|(_, s, _)| s.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6], "in order, once each");
    assert_eq!(commits[0].2.as_ref(), Some(&requester.connection));
    assert_eq!(
        store.append(text(&c("nope"), &a, "x", None)).await.unwrap_err(),
        StoreError::ConversationNotFound("nope".into())
    );
    let info = store.conversation(&conv).await.unwrap().unwrap();
    assert_eq!(info.last_seq, Seq(6));
    let marks: Vec<(String, Seq)> = info.members.iter().map(|m| (m.user_id.to_string(), m.read)).collect();
    assert_eq!(marks, [("a".into(), Seq(1)), ("b".into(), Seq(6))], "a sender has read what they sent");
}

/// Read marks only move forward; delivery marks reported by the sink are recorded.
async fn marks(store: &dyn Store, rec: &Recorder) {
    let (conv, a, b) = (c("c1"), u("a"), u("b"));
    store.create_conversation(conv.clone(), vec![a.clone(), b.clone()], None).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(store.append(text(&conv, &a, &format!("m{i}"), None)).await.unwrap().message.id);
    }
    assert_eq!(store.mark_read(&conv, &b, &ids[1]).await.unwrap(), Some(Seq(2)));
    assert_eq!(store.mark_read(&conv, &b, &ids[0]).await.unwrap(), None, "never backwards");
    assert_eq!(store.mark_read(&conv, &b, &ids[1]).await.unwrap(), None, "already there");
    let missing = MessageId::parse("msg_missing").unwrap();
    assert!(matches!(store.mark_read(&conv, &b, &missing).await, Err(StoreError::NotFound(_))));
    let mut found = store.message_seqs(&conv, &[ids[2].clone(), missing, ids[0].clone()]).await.unwrap();
    found.sort_by_key(|(_, s)| *s);
    assert_eq!(found, [(ids[0].clone(), Seq(1)), (ids[2].clone(), Seq(3))]);
    assert!(store.mark_delivered(&conv, &b, Seq(2)).await.unwrap(), "moved");
    assert!(!store.mark_delivered(&conv, &b, Seq(1)).await.unwrap(), "not moved");
    let delivered = |info: ConversationInfo| info.members.iter().find(|m| m.user_id == b).unwrap().delivered;
    assert_eq!(delivered(store.conversation(&conv).await.unwrap().unwrap()), Seq(2), "never backwards");
    // Claims (cluster mode's receipts): each mark that moves is reported once, to one caller.
    let marks =
        [(conv.clone(), b.clone(), Seq(3)), (conv.clone(), a.clone(), Seq(1)), (conv.clone(), b.clone(), Seq(1))];
    let mut won = store.claim_delivered(&marks[..2]).await.unwrap();
    won.sort_unstable();
    assert_eq!(won, [0, 1]);
    assert!(store.claim_delivered(&marks).await.unwrap().is_empty(), "claimed already, or behind");
    assert_eq!(delivered(store.conversation(&conv).await.unwrap().unwrap()), Seq(3));
    // The fan-out reached b with the next message: recorded by the store (with a later write).
    *rec.reached.lock().unwrap() = vec![b.clone()];
    store.append(text(&conv, &a, "m3", None)).await.unwrap();
    *rec.reached.lock().unwrap() = Vec::new();
    store.append(text(&conv, &a, "m4", None)).await.unwrap();
    assert_eq!(delivered(store.conversation(&conv).await.unwrap().unwrap()), Seq(4));
}

/// Replay and history pages in seq order; a deleted message is gone from every read, only
/// its sender may delete it, and its seq is never given again.
async fn reads_and_deletes(store: &dyn Store) {
    let (conv, a, b) = (c("c1"), u("a"), u("b"));
    store.create_conversation(conv.clone(), vec![a.clone(), b.clone()], None).await.unwrap();
    let mut ids = Vec::new();
    for i in 1..=10 {
        ids.push(store.append(text(&conv, &a, &format!("m{i}"), None)).await.unwrap().message.id);
    }
    assert_eq!(seqs(&store.messages_after(&conv, Seq(7), 100).await.unwrap()), [8, 9, 10]);
    assert_eq!(seqs(&store.messages_after(&conv, Seq::ZERO, 2).await.unwrap()), [1, 2]);
    let (page, more) = store.history(&conv, None, 4).await.unwrap();
    assert_eq!((seqs(&page), more), (vec![7, 8, 9, 10], true));
    let (page, more) = store.history(&conv, Some(Seq(3)), 4).await.unwrap();
    assert_eq!((seqs(&page), more), (vec![1, 2], false));
    assert_eq!(store.delete_message(&conv, &ids[4], &b).await.unwrap_err(), StoreError::NotOwner);
    let deleted = store.delete_message(&conv, &ids[4], &a).await.unwrap();
    assert_eq!(deleted.seq, Some(Seq(5)));
    assert!(matches!(store.delete_message(&conv, &ids[4], &a).await, Err(StoreError::NotFound(_))));
    assert_eq!(seqs(&store.messages_after(&conv, Seq(3), 3).await.unwrap()), [4, 6, 7]);
    assert!(store.message_seqs(&conv, &[ids[4].clone()]).await.unwrap().is_empty());
    assert!(matches!(store.mark_read(&conv, &b, &ids[4]).await, Err(StoreError::NotFound(_))));
    let next = store.append(text(&conv, &a, "m11", None)).await.unwrap();
    assert_eq!(next.message.seq, Some(Seq(11)));
    let unknown = c("unknown");
    assert!(store.messages_after(&unknown, Seq::ZERO, 10).await.unwrap().is_empty());
}

/// Creating, members, lists with unread counts, memberships (small groups listed), deletion.
async fn conversations(store: &dyn Store) {
    let (c1, c2, big, a, b) = (c("c1"), c("c2"), c("big"), u("a"), u("b"));
    let created = store.create_conversation(c1.clone(), vec![a.clone(), b.clone()], Some(5)).await.unwrap();
    assert_eq!((created.max_members, created.last_seq, created.members.len()), (Some(5), Seq::ZERO, 2));
    assert_eq!(
        store.create_conversation(c1.clone(), vec![a.clone()], None).await.unwrap_err(),
        StoreError::ConversationExists("c1".into())
    );
    store.create_conversation(c2.clone(), vec![a.clone()], None).await.unwrap();
    let many: Vec<UserId> = (0..=SMALL_GROUP_MAX).map(|i| u(&format!("u{i}"))).chain([a.clone()]).collect();
    store.create_conversation(big.clone(), many, None).await.unwrap();
    store.append(text(&c2, &a, "x", None)).await.unwrap();
    for i in 0..3 {
        store.append(text(&c1, &b, &format!("b{i}"), None)).await.unwrap();
    }
    let list = store.conversations_of(&a).await.unwrap();
    assert_eq!(list.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["c1", "c2", "big"], "most active first");
    assert_eq!((list[0].unread_count, list[0].last_seq, list[0].read_seq), (3, Seq(3), Seq::ZERO));
    assert_eq!(list[0].last_message.as_ref().map(|m| m.content.as_str()), Some("b2"));
    assert_eq!(list[1].unread_count, 0, "one's own messages are not unread");
    let mut lasts = store.last_seqs(&[c1.clone(), c("missing"), c2.clone()]).await.unwrap();
    lasts.sort_by(|x, y| x.0.as_str().cmp(y.0.as_str()));
    assert_eq!(lasts, [(c1.clone(), Seq(3)), (c2.clone(), Seq(1))], "the missing one left out");
    let mut many = store.conversations(&[c2.clone(), c("missing"), c1.clone()]).await.unwrap();
    many.sort_by(|x, y| x.id.as_str().cmp(y.id.as_str()));
    assert_eq!(
        many,
        [store.conversation(&c1).await.unwrap().unwrap(), store.conversation(&c2).await.unwrap().unwrap()]
    );
    let mine = store.memberships(&a).await.unwrap();
    assert_eq!(mine.iter().map(|m| m.conversation_id.as_str()).collect::<Vec<_>>(), ["c1", "c2", "big"]);
    let mut members: Vec<&str> = mine[0].members.iter().map(UserId::as_str).collect();
    members.sort_unstable();
    assert_eq!(members, ["a", "b"]);
    assert!(mine[2].members.is_empty(), "a big group's members are not listed");
    let changed = store.set_members(&c1, vec![b.clone(), u("d")]).await.unwrap();
    let mut now: Vec<&str> = changed.members.iter().map(|m| m.user_id.as_str()).collect();
    now.sort_unstable();
    assert_eq!(now, ["b", "d"]);
    assert_eq!(changed.members.iter().find(|m| m.user_id == b).unwrap().read, Seq(3), "kept members keep marks");
    assert!(store.conversations_of(&a).await.unwrap().iter().all(|s| s.id != c1));
    assert!(matches!(store.set_members(&c("nope"), vec![]).await, Err(StoreError::ConversationNotFound(_))));
    store.delete_conversation(&c2).await.unwrap();
    assert!(store.conversation(&c2).await.unwrap().is_none());
    assert!(matches!(store.delete_conversation(&c2).await, Err(StoreError::ConversationNotFound(_))));
    store.create_conversation(c2.clone(), vec![a.clone()], None).await.unwrap();
    let again = store.append(text(&c2, &a, "again", None)).await.unwrap();
    assert_eq!(again.message.seq, Some(Seq(1)), "a conversation made again starts from 1");
    assert!(store.messages_after(&c2, Seq::ZERO, 10).await.unwrap().len() == 1);
}

async fn photos_inbox_attachments(store: &dyn Store) {
    let (conv, a, b) = (c("c1"), u("a"), u("b"));
    store.create_conversation(conv.clone(), vec![a.clone(), b.clone()], None).await.unwrap();
    let id = PhotoId::parse("ph_1").unwrap();
    let photo = Photo {
        id: id.clone(),
        conversation_id: conv.clone(),
        sender_id: a.clone(),
        url: "https://example.com/p.jpg".into(),
        expires_in: 10,
        created_at: Timestamp::from_millis(1_000),
        first_viewed_at: None,
    };
    store.create_photo(photo.clone()).await.unwrap();
    assert_eq!(store.photo(&id).await.unwrap(), Some(photo));
    assert!(store.ticking_photos().await.unwrap().is_empty());
    let (by_sender, started) = store.view_photo(&id, &a, Timestamp::from_millis(2_000)).await.unwrap();
    assert_eq!((by_sender.first_viewed_at, started), (None, false), "the sender's view starts nothing");
    let (first, started_first) = store.view_photo(&id, &b, Timestamp::from_millis(3_000)).await.unwrap();
    let (second, started_second) = store.view_photo(&id, &b, Timestamp::from_millis(4_000)).await.unwrap();
    assert_eq!(
        (first.first_viewed_at, second.first_viewed_at),
        (Some(Timestamp::from_millis(3_000)), first.first_viewed_at)
    );
    assert_eq!((started_first, started_second), (true, false), "one view starts the clock");
    assert_eq!(second.expires_at(), Some(Timestamp::from_millis(13_000)));
    assert_eq!(store.ticking_photos().await.unwrap().len(), 1);
    assert!(store.claim_expiry(&id).await.unwrap(), "the first announcer of the expiry");
    let missing = PhotoId::parse("ph_missing").unwrap();
    assert!(matches!(store.view_photo(&missing, &b, Timestamp::from_millis(1)).await, Err(StoreError::NotFound(_))));

    let item = |n: i64| InboxItem {
        kind: "match:new".into(),
        data: serde_json::from_value(serde_json::json!({ "n": n })).unwrap(),
    };
    for n in 0..3 {
        store.inbox_push(&b, item(n)).await.unwrap();
    }
    assert_eq!(store.inbox_take(&b).await.unwrap(), [item(0), item(1), item(2)], "oldest first");
    assert!(store.inbox_take(&b).await.unwrap().is_empty(), "taken means removed");

    let file = Attachment {
        id: "att_0123456789abcdef0123456789".into(),
        conversation_id: conv.clone(),
        uploader: a.clone(),
        kind: "image".into(),
        filename: Some("cat.png".into()),
        bytes: vec![0, 1, 2, 255],
        created_at: Timestamp::from_millis(5),
    };
    store.put_attachment(file.clone()).await.unwrap();
    assert_eq!(store.attachment(&file.id).await.unwrap(), Some(file));
    assert_eq!(store.attachment("att_missing").await.unwrap(), None);
    assert_eq!(store.writable(), Ok(()));
    store.probe_write().await.unwrap();
}

/// After `close`, every call fails with `Closed`; closing again is fine.
async fn closing(store: &dyn Store) {
    let (conv, a) = (c("c1"), u("a"));
    store.create_conversation(conv.clone(), vec![a.clone()], None).await.unwrap();
    store.append(text(&conv, &a, "kept", None)).await.unwrap();
    store.close().await.unwrap();
    store.close().await.unwrap();
    assert_eq!(store.append(text(&conv, &a, "late", None)).await.unwrap_err(), StoreError::Closed);
    assert_eq!(store.conversation(&conv).await.unwrap_err(), StoreError::Closed);
}
