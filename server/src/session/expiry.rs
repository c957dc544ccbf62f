//! Ephemeral photo timers (SPEC §4): the clock starts at the first view; when it runs out
//! every member hears `ephemeral_photo:expired`. Timers are owned by the server's task
//! tracker and end on shutdown; after a restart they are armed again from the store.

use super::{Ctx, now};
use crate::store::Photo;
use confab_codec::event::{EphemeralExpired, ServerEvent};
use std::time::Duration;

/// Starts the expiry timer of a viewed photo.
pub(crate) fn arm(ctx: &Ctx, photo: Photo) {
    let Some(at) = photo.expires_at() else { return };
    let ctx = ctx.clone();
    let tasks = ctx.tasks.clone();
    tasks.spawn(async move {
        let wait = at.as_millis().saturating_sub(now().as_millis()).max(0);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
            _ = ctx.shutdown.cancelled() => return,
        }
        let c = photo.conversation_id;
        let members = match ctx.hub.members(&c) {
            Some(m) => m,
            None => match ctx.store.conversation(&c).await {
                Ok(Some(info)) => info.members.into_iter().map(|m| m.user_id).collect(),
                _ => return,
            },
        };
        let t = now();
        let ev = ServerEvent::EphemeralExpired(EphemeralExpired {
            photo_id: photo.id,
            conversation_id: c.clone(),
            expired_at: t,
        });
        ctx.hub.to_users(members.iter(), &ctx.hub.shared(ev, t, Some(c)), None);
    });
}

/// Re-arms the timers of photos viewed before a restart.
pub async fn rearm_all(ctx: &Ctx) {
    match ctx.store.ticking_photos().await {
        Ok(photos) => {
            photos.into_iter().filter(|p| p.expires_at().is_some_and(|x| x > now())).for_each(|p| arm(ctx, p))
        }
        Err(e) => tracing::error!(error = %e, "loading ephemeral photo timers"),
    }
}
