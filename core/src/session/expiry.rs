//! Ephemeral photo timers (SPEC §4): the clock starts at the first view; when it runs out
//! every member hears `ephemeral_photo:expired`, once: the node that announces it first marks
//! it in the store ([`Store::claim_expiry`](crate::store::Store::claim_expiry)). Timers are
//! owned by the server's task tracker and end on shutdown; after a restart they are armed
//! again from the store, and in a cluster the repair loop's sweep announces the photos whose
//! timer died with its node ([`announce_overdue`]).

use crate::node::Node;
use crate::store::Photo;
use confab_codec::event::{EphemeralExpired, ServerEvent};
use std::sync::Arc;

/// How long past its expiry a photo's announcement is taken over by the sweep.
const OVERDUE_AFTER_MS: i64 = 2_000;

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
        announce(&node, photo).await;
    });
}

/// Tells every member that `photo` expired, unless another node has.
async fn announce(node: &Node, photo: Photo) {
    match node.store.claim_expiry(&photo.id).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            // Left unmarked: the sweep of a cluster tries again; a node alone has said nothing.
            tracing::warn!(error = %e, photo = %photo.id, "marking a photo's expiry");
            return;
        }
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
}

/// Cluster mode: announces the photos whose expiry passed unannounced (the node timing them
/// died, or its claim failed).
pub async fn announce_overdue(node: &Node) {
    match node.store.ticking_photos().await {
        Ok(photos) => {
            let now = node.clock.now();
            // Past a grace, so that the node timing a photo announces it (clocks differ a little).
            let overdue = |p: &Photo| p.expires_at().is_some_and(|x| x.plus_millis(OVERDUE_AFTER_MS) <= now);
            for p in photos.into_iter().filter(overdue) {
                announce(node, p).await;
            }
        }
        Err(e) => tracing::debug!(error = %e, "looking for overdue photo expiries"),
    }
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
