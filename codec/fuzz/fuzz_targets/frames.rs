//! Any bytes, in any chunking, through the frame decoder: frames come out or it refuses a
//! prefix; it never panics and never buffers past the limit plus one push.
#![no_main]

use confab_codec::FrameDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else { return };
    let step = usize::from(step).max(1);
    let mut decoder = FrameDecoder::new(1024);
    for chunk in rest.chunks(step) {
        if decoder.push(chunk).is_err() {
            return;
        }
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => assert!(frame.len() <= 1024),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(decoder.buffered() <= 1024 + 8 + step);
    }
});
