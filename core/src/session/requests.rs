//! What each client event does (SPEC §4, client-to-server table). Every rule of the protocol
//! lives here: membership, limits, who hears what. Errors come back as `SessionError`s and the
//! caller turns them into one `error` event; the connection carries on.

use super::Session;
use crate::error::{CloseReason, SessionError};
use crate::limits::Exceeded;
use crate::link::{Route, SharedEvent};
use crate::store::{NewMessage, Photo, Requester};
use confab_codec::event::*;
use confab_codec::{
    ClientEnvelope, ConversationId, DecodeError, ErrorCode, MessageId, PhotoId, RequestId, Seq, UserId,
};
use std::collections::HashMap;
use std::sync::Arc;

/// Messages read from the store per page when replaying a join with `since_seq`.
const REPLAY_PAGE: u32 = 500;

fn limited(e: Exceeded) -> SessionError {
    SessionError::RateLimited {
        limit: e.limit,
        interval_s: e.interval.as_secs().max(1),
        retry_after_s: e.retry_after.as_secs_f64().ceil() as u64,
    }
}

fn conv_route(c: &ConversationId) -> Route {
    Route::Conversation(c.clone())
}

impl Session {
    /// A rate limit refused a request: counted by limit, answered as `RATE_LIMITED`.
    fn limit_hit(&self, limit: &'static str, e: Exceeded) -> SessionError {
        self.node.metrics.rate_limited.get_or_create(&crate::metrics::LimitLabel { limit }).inc();
        limited(e)
    }

    /// One input from the transport. Never fails: a refusal is an `error` event.
    pub(super) async fn handle(&mut self, route: Route, input: Result<ClientEnvelope, DecodeError>) {
        // SPEC §4: per connection 10 frames/s with a burst of 20, good frames or bad.
        match self.frames.admit(self.node.clock.instant()) {
            super::timers::Admit::Yes => {}
            super::timers::Admit::Close => {
                self.conn.closer.close(CloseReason::RateLimited);
                return;
            }
            super::timers::Admit::Refused(e) => {
                let (event, rid) = match &input {
                    Ok(env) => (Some(env.event.name()), env.request_id.as_ref()),
                    Err(d) => (d.request_event.as_deref(), None),
                };
                self.fail(&self.limit_hit("frames", e), event, rid, route);
                return;
            }
        }
        let env = match input {
            Ok(env) => env,
            Err(e) => {
                self.fail(&SessionError::Decode(e), None, None, route);
                return;
            }
        };
        let name = env.event.name();
        self.node.metrics.events_in.get_or_create(&crate::metrics::EventLabel { event: name }).inc();
        let rid = env.request_id;
        if let Err(e) = self.dispatch(env.event, rid.clone()).await {
            self.fail(&e, Some(name), rid.as_ref(), route);
        }
    }

    async fn dispatch(&mut self, event: ClientEvent, rid: Option<RequestId>) -> Result<(), SessionError> {
        match event {
            ClientEvent::Hello(h) => {
                self.client = Some(Box::new(h));
                Ok(())
            }
            ClientEvent::Join(j) => self.join(j, rid).await,
            ClientEvent::Leave(c) => self.leave(c.conversation_id, rid).await,
            ClientEvent::Send(s) => self.send_message(s, rid).await,
            ClientEvent::Read(m) => self.read(m).await,
            ClientEvent::Delete(m) => self.delete(m).await,
            ClientEvent::TypingStart(c) => self.typing(c.conversation_id, true).await,
            ClientEvent::TypingStop(c) => self.typing(c.conversation_id, false).await,
            ClientEvent::SetStatus(s) => self.set_status(s, rid).await,
            ClientEvent::EphemeralSend(e) => self.ephemeral_send(e).await,
            ClientEvent::EphemeralView(v) => self.ephemeral_view(v.photo_id, rid).await,
            ClientEvent::History(h) => self.history(h, rid).await,
            ClientEvent::AuthRefresh(a) => self.refresh(a, rid),
            ClientEvent::Heartbeat(h) => {
                let ack = HeartbeatAck { timestamp: h.timestamp, server_time: Some(self.now()) };
                self.send(ServerEvent::Heartbeat(ack), rid, Route::Control);
                Ok(())
            }
        }
    }

    /// SPEC §4 authorization: members only; an unknown conversation is its own error.
    async fn member(&mut self, c: &ConversationId) -> Result<(), SessionError> {
        let is_member = match self.node.hub.is_member(c, self.user()) {
            Some(m) => m,
            None => {
                let info = self.node.store.conversation(c).await?;
                let info = info.ok_or_else(|| SessionError::ConversationNotFound(c.to_string()))?;
                let m = info.members.iter().any(|m| &m.user_id == self.user());
                self.node.cache_conversation(info, false);
                m
            }
        };
        if is_member { Ok(()) } else { Err(SessionError::NotMember(c.to_string())) }
    }

    /// `conversation:join`: listen, answer `conversation:joined`, then replay what the client
    /// missed (`since_seq`) before the live events held back meanwhile.
    async fn join(&mut self, j: Join, rid: Option<RequestId>) -> Result<(), SessionError> {
        let c = j.conversation_id;
        self.listen(&c).await?;
        let last_seq = self.node.store.conversation(&c).await?.map(|i| i.last_seq);
        // The client's own messages up to these are read (delivered) by everyone else, whatever
        // receipts it missed while away. From the hub, whose delivery marks are ahead of the
        // store's by up to one batch.
        let (others_read_seq, others_delivered_seq) = self.node.hub.others_marks(&c, self.user()).unzip();
        let joined = Joined {
            conversation_id: c.clone(),
            joined_at: self.now(),
            last_seq,
            others_read_seq,
            others_delivered_seq,
        };
        self.send(ServerEvent::Joined(joined), rid, conv_route(&c));
        self.catch_up(&c, j.since_seq).await
    }

    /// Starts listening to `c` (a member only): its live events are held back from now on until
    /// [`Session::catch_up`] (or the hub's `finish_replay`) releases them.
    pub(super) async fn listen(&mut self, c: &ConversationId) -> Result<(), SessionError> {
        self.member(c).await?;
        if self.node.hub.join(c, &self.conn) { Ok(()) } else { Err(SessionError::ConversationNotFound(c.to_string())) }
    }

    /// Replays every message after `since` (if asked), then releases the live events held back
    /// since [`Session::listen`], skipping those the replay sent.
    pub(super) async fn catch_up(&mut self, c: &ConversationId, since: Option<Seq>) -> Result<(), SessionError> {
        let Some(since) = since else {
            // No replay asked: everything held back since the join is new to the client.
            self.node.hub.finish_replay(c, &self.conn.id, Seq::ZERO);
            return Ok(());
        };
        // What the replay sent, even if it stopped on an error: the held-back events up to it
        // are not sent again.
        let (replayed_up_to, result) = self.replay(c, since).await;
        self.node.hub.finish_replay(c, &self.conn.id, replayed_up_to);
        result
    }

    /// Sends every message after `since`, oldest first, waiting for queue space rather than
    /// overflowing it. Returns the last seq sent, and how the replay ended.
    async fn replay(&mut self, c: &ConversationId, since: Seq) -> (Seq, Result<(), SessionError>) {
        let mut after = since;
        let mut delivered_up_to = Seq::ZERO;
        let result = self.replay_pages(c, &mut after, &mut delivered_up_to).await;
        // In a cluster the receipts' claims move the watermark (`Node::tell_delivered`). The
        // watermark is bookkeeping: failing to write it does not fail the join (the next
        // delivery moves it).
        if delivered_up_to > Seq::ZERO && !self.node.claims_receipts() {
            if let Err(e) = self.node.store.mark_delivered(c, self.user(), delivered_up_to).await {
                tracing::warn!(error = %e, conversation = %c, "replay: the delivery watermark was not written");
            }
        }
        (after, result)
    }

    async fn replay_pages(
        &mut self,
        c: &ConversationId,
        after: &mut Seq,
        delivered: &mut Seq,
    ) -> Result<(), SessionError> {
        loop {
            let page = self.node.store.messages_after(c, *after, REPLAY_PAGE).await?;
            let full = page.len() == REPLAY_PAGE as usize;
            // The newest message of each sender that none of this user's devices had yet: its
            // sender hears it once per page (a receipt covers the messages before it).
            // (The event already made holds the message: no copy of it for this.)
            let mut receipts: HashMap<UserId, Arc<SharedEvent>> = HashMap::new();
            let mut gone = false;
            for m in page {
                *after = m.seq.unwrap_or(*after);
                let advanced =
                    m.sender_id != self.identity.user_id && self.node.hub.advance_delivered(c, self.user(), *after);
                let profile = self.node.hub.profile(&m.sender_id);
                let sender =
                    Sender { id: m.sender_id.clone(), username: profile.username, avatar_url: profile.avatar_url };
                let ev = self.node.hub.envelope(
                    ServerEvent::MessageNew(MessageNew { message: m, sender }),
                    self.now(),
                    None,
                );
                let ev = SharedEvent::new(ev, Some(c.clone()));
                if advanced {
                    *delivered = *after;
                    if let ServerEvent::MessageNew(n) = &ev.envelope.event {
                        receipts.insert(n.message.sender_id.clone(), Arc::clone(&ev));
                    }
                }
                if !self.conn.send_waiting(ev).await {
                    gone = true;
                    break;
                }
            }
            for ev in receipts.values() {
                if let ServerEvent::MessageNew(n) = &ev.envelope.event {
                    self.node.tell_delivered(&n.message, self.user().clone(), self.now());
                }
            }
            if gone || !full {
                return Ok(());
            }
        }
    }

    async fn leave(&mut self, c: ConversationId, rid: Option<RequestId>) -> Result<(), SessionError> {
        self.member(&c).await?;
        self.stop_listening(&c);
        self.send(ServerEvent::Left(Left { conversation_id: c.clone(), left_at: self.now() }), rid, conv_route(&c));
        Ok(())
    }

    /// A conversation's stream is gone: leave it without an answer (there is nowhere to send
    /// one), as `conversation:leave` would.
    pub(super) fn route_closed(&mut self, route: Route) {
        if let Route::Conversation(c) = route {
            self.stop_listening(&c);
        }
    }

    /// What leaving means, however it happens: no more live events, and a typing state cleared.
    fn stop_listening(&mut self, c: &ConversationId) {
        self.node.hub.leave(c, &self.conn.id);
        if self.timers.stop_typing(c) {
            self.broadcast_typing(c, false);
        }
    }

    async fn send_message(&mut self, mut s: SendMessage, rid: Option<RequestId>) -> Result<(), SessionError> {
        let c = s.conversation_id.clone();
        self.member(&c).await?;
        self.node
            .hub
            .take_message(self.user(), self.node.clock.instant())
            .map_err(|e| self.limit_hit("messages", e))?;
        if !s.attachments.is_empty() {
            self.keep_attachments(&mut s).await?;
        }
        let m = NewMessage {
            conversation_id: c.clone(),
            sender_id: self.user().clone(),
            kind: s.kind,
            content: s.content,
            metadata: s.metadata,
            local_id: s.local_id,
            reply_to: s.reply_to,
            created_at: self.now(),
            requester: Some(Requester { connection: self.conn.id.clone(), request_id: rid.clone() }),
        };
        // Durable before acknowledged (SPEC §6): the store's commit callback queues
        // `message:sent` for this connection, ahead of the fan-out and so of every receipt;
        // `send_committed` answers the rest (a repeated `local_id`, a failure).
        let store = Arc::clone(&self.node.store);
        self.pending.push_back(Box::pin(async move {
            let result = store.append(m).await;
            super::SendDone { request_id: rid, conversation_id: c, result }
        }));
        Ok(())
    }

    /// Stores a message's inline files and lists them in its metadata as `attachments`
    /// (`id`, `type`, `url`, `filename`, `size`), which is how every dialect shows them. The
    /// URL is absolute (seed 004's React Native client has no page origin to resolve a path
    /// against), on the sender's connection's base.
    async fn keep_attachments(&mut self, s: &mut SendMessage) -> Result<(), SessionError> {
        let mut listed = Vec::with_capacity(s.attachments.len());
        for a in std::mem::take(&mut s.attachments) {
            let id = format!("att_{:026x}", rand::random::<u128>() >> 24);
            listed.push(serde_json::json!({
                "id": id,
                "type": a.kind,
                "url": format!("{}/v1/attachments/{id}", self.base_url.as_deref().unwrap_or("")),
                "filename": a.filename,
                "size": a.bytes.len(),
            }));
            let kept = crate::store::Attachment {
                id,
                conversation_id: s.conversation_id.clone(),
                uploader: self.user().clone(),
                kind: a.kind,
                filename: a.filename,
                bytes: a.bytes,
                created_at: self.now(),
            };
            self.node.store.put_attachment(kept).await?;
        }
        s.metadata.insert("attachments".into(), serde_json::Value::Array(listed));
        Ok(())
    }

    /// Finishes a send once its commit is done, in the order the sends came: a new message was
    /// acknowledged at its commit; a repeated `local_id` is acknowledged with the original; a
    /// failure is an `error`.
    pub(super) fn send_committed(&mut self, done: super::SendDone) {
        let c = done.conversation_id;
        match done.result {
            Ok(appended) => {
                if self.timers.stop_typing(&c) {
                    self.broadcast_typing(&c, false);
                }
                if appended.duplicate {
                    self.send(ServerEvent::MessageSent(appended.message), done.request_id, conv_route(&c));
                }
            }
            Err(e) => {
                let e = SessionError::from(e);
                self.fail(&e, Some("message:send"), done.request_id.as_ref(), conv_route(&c));
            }
        }
    }

    /// Moves the reader's watermark to the newest message named (seed 004 names several, in
    /// any order) and tells who should hear it, naming every message of the request that
    /// exists. Nothing moves, and nobody is told, when the reader had read that far already.
    async fn read(&mut self, r: ReadMark) -> Result<(), SessionError> {
        let c = r.conversation_id.clone();
        self.member(&c).await?;
        let (newest, named) = if r.others.is_empty() {
            (r.message_id, Vec::new())
        } else {
            let ids: Vec<MessageId> = r.ids().cloned().collect();
            let found = self.node.store.message_seqs(&c, &ids).await?;
            let Some((newest, _)) = found.iter().max_by_key(|(_, seq)| *seq).cloned() else {
                return Err(SessionError::NotFound(format!("none of these messages is in conversation {c}")));
            };
            // The request's order, those that exist.
            (newest, ids.into_iter().filter(|id| found.iter().any(|(f, _)| f == id)).collect())
        };
        let Some(seq) = self.node.store.mark_read(&c, self.user(), &newest).await? else {
            return Ok(()); // already read that far: nothing moves, nobody is told
        };
        self.node.hub.set_read(&c, self.user(), seq);
        let t = self.now();
        let ev = ServerEvent::Viewed(Viewed {
            message_id: newest,
            conversation_id: c.clone(),
            viewed_at: t,
            user_id: Some(self.user().clone()),
            seq: Some(seq),
            message_ids: named,
        });
        // The other members, and the reader's other devices; in a big group only the latter
        // (SMALL_GROUP_MAX: every member's read to every member grows with the group's square).
        let ev = self.node.hub.shared(ev, t, Some(c.clone()));
        if self.node.hub.member_count(&c).is_some_and(|n| n > crate::store::SMALL_GROUP_MAX) {
            self.node.to_users(std::iter::once(self.user()), &ev, Some(&self.conn.id));
        } else {
            self.node.to_members(&c, &ev, Some(&self.conn.id));
        }
        Ok(())
    }

    async fn delete(&mut self, m: MessageRef) -> Result<(), SessionError> {
        let c = m.conversation_id;
        self.member(&c).await?;
        self.node.store.delete_message(&c, &m.message_id, self.user()).await?;
        let t = self.now();
        let ev = ServerEvent::Deleted(Deleted {
            message_id: m.message_id,
            conversation_id: c.clone(),
            deleted_by: self.user().clone(),
            deleted_at: t,
        });
        self.node.to_members(&c, &self.node.hub.shared(ev, t, Some(c.clone())), None);
        Ok(())
    }

    async fn typing(&mut self, c: ConversationId, is_typing: bool) -> Result<(), SessionError> {
        self.member(&c).await?;
        if is_typing {
            self.node
                .hub
                .take_typing(self.user(), self.node.clock.instant())
                .map_err(|e| self.limit_hit("typing", e))?;
            self.timers.start_typing(c.clone(), self.node.clock.instant());
        } else {
            self.timers.stop_typing(&c);
        }
        self.broadcast_typing(&c, is_typing);
        Ok(())
    }

    async fn set_status(&mut self, s: SetStatus, rid: Option<RequestId>) -> Result<(), SessionError> {
        self.node.presence.set_status(self.user(), s.status, s.message.clone()).await;
        let t = self.now();
        let updated = StatusUpdated { status: s.status, message: s.message.clone(), updated_at: Some(t) };
        self.send(ServerEvent::StatusUpdated(updated), rid, Route::Control);
        let contacts = super::contacts_of(&self.node.store.memberships(self.user()).await?, self.user());
        let ev = ServerEvent::StatusUpdate(StatusUpdate {
            user_id: self.user().clone(),
            status: s.status,
            message: s.message,
            last_seen: Some(t),
        });
        self.node.to_users(contacts.iter(), &self.node.hub.shared(ev, t, None), None);
        Ok(())
    }

    async fn ephemeral_send(&mut self, e: EphemeralSend) -> Result<(), SessionError> {
        let c = e.conversation_id;
        self.member(&c).await?;
        self.node
            .hub
            .take_message(self.user(), self.node.clock.instant())
            .map_err(|e| self.limit_hit("messages", e))?;
        let id = PhotoId::generate("photo_", rand::random::<u128>() >> 32);
        let t = self.now();
        let photo = Photo {
            id: id.clone(),
            conversation_id: c.clone(),
            sender_id: self.user().clone(),
            url: e.photo_url.clone(),
            expires_in: e.expires_in,
            created_at: t,
            first_viewed_at: None,
        };
        self.node.store.create_photo(photo).await?;
        let ev = ServerEvent::EphemeralNew(EphemeralNew {
            id: id.clone(),
            photo_id: id,
            conversation_id: c.clone(),
            sender_id: self.user().clone(),
            photo_url: e.photo_url,
            expires_in: e.expires_in,
            created_at: t,
        });
        self.node.to_members(&c, &self.node.hub.shared(ev, t, Some(c.clone())), None);
        Ok(())
    }

    async fn ephemeral_view(&mut self, id: PhotoId, rid: Option<RequestId>) -> Result<(), SessionError> {
        let not_found = || SessionError::NotFound(format!("photo {id} not found"));
        let photo = self.node.store.photo(&id).await?.ok_or_else(not_found)?;
        self.member(&photo.conversation_id).await?;
        let t = self.now();
        if photo.expires_at().is_some_and(|x| x <= t) {
            // SPEC §4: a view after expiry is an error, and the URL is never served again.
            return Err(SessionError::NotFound(format!("photo {id} has expired")));
        }
        let (viewed, started) = self.node.store.view_photo(&id, self.user(), t).await?;
        let Some(expires_at) = viewed.expires_at() else {
            // The sender looking at their own photo: no clock, no notice.
            return Ok(());
        };
        // The node whose view started the clock times it (of two at once, the store picks one).
        if started {
            super::expiry::arm(&self.node, viewed.clone());
        }
        let c = viewed.conversation_id.clone();
        let to_viewer = EphemeralViewed {
            photo_id: id.clone(),
            conversation_id: c.clone(),
            viewer_id: self.user().clone(),
            viewed_at: t,
            expires_at,
            photo_url: Some(viewed.url.clone()),
        };
        let to_sender = EphemeralViewed { photo_url: None, ..to_viewer.clone() };
        self.send(ServerEvent::EphemeralViewed(to_viewer), rid, conv_route(&c));
        let ev = self.node.hub.shared(ServerEvent::EphemeralViewed(to_sender), t, Some(c));
        self.node.to_users(std::iter::once(&viewed.sender_id), &ev, None);
        Ok(())
    }

    async fn history(&mut self, h: HistoryQuery, rid: Option<RequestId>) -> Result<(), SessionError> {
        let c = h.conversation_id;
        self.member(&c).await?;
        let (messages, has_more) = self.node.store.history(&c, h.before_seq, h.limit).await?;
        let ev = ServerEvent::History(History { conversation_id: c.clone(), messages, has_more });
        self.send(ev, rid, conv_route(&c));
        Ok(())
    }

    /// SPEC §4 `auth:refresh`: a new token for the same user extends the connection.
    fn refresh(&mut self, a: AuthRefresh, rid: Option<RequestId>) -> Result<(), SessionError> {
        let id = self
            .node
            .auth
            .verify(&a.token)
            .map_err(|e| SessionError::Token { code: e.code(), message: e.to_string() })?;
        if id.user_id != self.identity.user_id {
            return Err(SessionError::Token {
                code: ErrorCode::TokenInvalid,
                message: "the new token belongs to another user".into(),
            });
        }
        self.timers.set_token(self.node.clock.deadline_for(id.expires_at));
        let ev = ServerEvent::Authenticated(Authenticated { user_id: id.user_id.clone(), expires_at: id.expires_at });
        self.identity = id;
        self.send(ev, rid, Route::Control);
        Ok(())
    }
}
