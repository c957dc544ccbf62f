//! Ephemeral photo timers (SPEC §4): the clock starts at the first view; when it runs out
//! every member hears `ephemeral_photo:expired`. Timers are owned by the server's task
//! tracker and end on shutdown; after a restart they are armed again from the store.

use crate::node::Node;
use crate::store::Photo;
use confab_codec::event::{EphemeralExpired, ServerEvent};
use std::sync::Arc;

/// Starts the expiry timer of a viewed photo.
pub(crate) fn arm(node: &Arc<Node>, photo: Photo) {
    let Some(at) = photo.expires_at() else { return };
    let node = Arc::clone(node);
    let tasks = node.tasks.clone();
    tasks.spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep_until(node.clock.deadline_for(at)) => {}
            _ = node.shutdown.cancelled() => return,
        }
        let c = photo.conversation_id;
        let members = match node.hub.members(&c) {
            Some(m) => m,
            None => match node.store.conversation(&c).await {
                Ok(Some(info)) => info.members.into_iter().map(|m| m.user_id).collect(),
                _ => return,
            },
        };
        let t = node.clock.now();
        let ev = ServerEvent::EphemeralExpired(EphemeralExpired {
            photo_id: photo.id,
            conversation_id: c.clone(),
            expired_at: t,
        });
        node.to_users(members.iter(), &node.hub.shared(ev, t, Some(c)), None);
    });
}

/// Re-arms the timers of photos viewed before a restart.
pub async fn rearm_all(node: &Arc<Node>) {
    match node.store.ticking_photos().await {
        Ok(photos) => photos
            .into_iter()
            .filter(|p| p.expires_at().is_some_and(|x| x > node.clock.now()))
            .for_each(|p| arm(node, p)),
        Err(e) => tracing::error!(error = %e, "loading ephemeral photo timers"),
    }
}
