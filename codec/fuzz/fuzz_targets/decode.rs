//! Any bytes, as a client or a server frame, in either format: an error or an event, never a
//! panic; and a decoded client event re-encodes and decodes to itself. The other seeds'
//! dialects read the same bytes too.
#![no_main]

use confab_codec::{Codec, Dialect, Format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for format in [Format::Json, Format::MsgPack] {
        let codec = Codec::new(Dialect::Winkr, format);
        if let Ok(env) = codec.decode_client(data) {
            let again = codec.encode_client(&env).map(|b| codec.with_max_frame(usize::MAX).decode_client(&b));
            assert_eq!(again.ok().and_then(Result::ok).as_ref(), Some(&env));
        }
        let _ = codec.decode_server(data);
        let scope = confab_codec::ConversationId::parse("c1").ok();
        for d in [Dialect::Systimz, Dialect::Chatrooms, Dialect::ChatroomsPersonal, Dialect::Actions] {
            let _ = Codec::new(d, format).with_scope(scope.clone()).decode_client(data);
        }
    }
});
