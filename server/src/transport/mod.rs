//! Transports: they move frames between sockets and the session layer, through the `link`.
//!
//! - `ws`: WebSocket on `/ws` and `/v1/ws` (SPEC §3), JSON text or MessagePack binary frames.
//! - `wt`: WebTransport over HTTP/3 on `/wt`: a control stream, one stream per conversation,
//!   length-prefixed frames, datagrams for typing.

pub mod ws;
pub mod wt;

use crate::app::App;
use crate::auth::AuthError;
use crate::link::ConnOutput;
use crate::session::{self, Opening, Session};

/// A connection's session, opened before the transport answers, or why it was refused.
pub(crate) type Opened = Result<(Box<Session>, ConnOutput), AuthError>;

/// What both transports do between reading a connection's request and answering it: verify
/// its token (and, for a socket that names its user, that the token is theirs), then open the
/// session, so that it listens before the client can know it is connected. Should the answer
/// fail from here on, dropping the session unregisters it.
pub(crate) async fn open_session(app: &App, token: Option<&str>, owner: Option<&str>, opening: Opening) -> Opened {
    let identity = match token {
        Some(t) => app.node.auth.verify(t)?,
        None => return Err(AuthError::Missing),
    };
    if owner.is_some_and(|o| o != identity.user_id.as_str()) {
        return Err(AuthError::OtherUser);
    }
    Ok(session::open(&app.node, identity, opening).await)
}
