//! The IPC frame decoder fed the input in chunks chosen by the input itself, checked against a
//! plain model: split on `\n`, drop one trailing `\r`, skip blank lines; a line over the limit is
//! an error, after which nothing more is expected. With the seed's high bit set, each 0xFF byte
//! stands for 4 KiB of `a` (the first 20 of them), so short inputs reach the 64 KiB limit from
//! either side.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xrat::ipc::{FrameDecoder, FrameError, FRAME_BYTES_MAX};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk sizes; the rest is the stream.
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let big = seed & 0x80 != 0;
    let expanded: Vec<u8>;
    let stream = if big {
        let mut budget = 20;
        let mut out = Vec::with_capacity(stream.len() + 20 * 4096);
        for &b in stream {
            if b == 0xFF && budget > 0 {
                budget -= 1;
                out.resize(out.len() + 4096, b'a');
            } else {
                out.push(b);
            }
        }
        expanded = out;
        &expanded[..]
    } else {
        stream
    };
    let scale = if big { 256 } else { 1 };
    let mut decoder = FrameDecoder::default();
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut failed = false;
    let mut offset = 0;
    let mut step = 0usize;
    'feed: while offset < stream.len() {
        step += 1;
        let size = 1 + (usize::from(seed).wrapping_mul(step) % 97) * scale;
        let chunk = &stream[offset..stream.len().min(offset + size)];
        offset += chunk.len();
        let mut pos = 0;
        loop {
            match decoder.next_frame(chunk, &mut pos) {
                Ok(Some(line)) => {
                    assert!(line.len() <= FRAME_BYTES_MAX);
                    got.push(line.to_vec());
                }
                Ok(None) => break,
                Err(FrameError::TooLarge) => {
                    failed = true;
                    break 'feed;
                }
            }
            assert!(pos <= chunk.len());
        }
        assert_eq!(pos, chunk.len(), "a chunk was not consumed whole");
        assert!(decoder.pending_bytes() <= FRAME_BYTES_MAX + 1);
    }

    // The model.
    let mut want: Vec<Vec<u8>> = Vec::new();
    let mut model_fails = false;
    let mut pieces = stream.split(|&b| b == b'\n').peekable();
    let mut tail: &[u8] = &[];
    while let Some(piece) = pieces.next() {
        if pieces.peek().is_none() {
            tail = piece;
            break;
        }
        let line = piece.strip_suffix(b"\r").unwrap_or(piece);
        if line.len() > FRAME_BYTES_MAX {
            model_fails = true;
            break;
        }
        if !line.iter().all(u8::is_ascii_whitespace) {
            want.push(line.to_vec());
        }
    }
    if !model_fails && tail.len() > FRAME_BYTES_MAX + 1 {
        model_fails = true;
    }
    assert_eq!(
        failed, model_fails,
        "the size limit disagrees with the model"
    );
    if failed {
        assert!(want.starts_with(&got), "frames before the error differ");
    } else {
        assert_eq!(got, want);
        assert_eq!(decoder.pending_bytes(), tail.len());
    }
});
