//! Incremental newline framing with a size limit (DESIGN §4), in the style of mini-redis:
//! an incomplete frame yields `Ok(None)`, an oversized one is an error that closes the connection.
//!
//! Complete lines are handed out straight from the received bytes; only the tail of a line that
//! straddles two reads is copied into the decoder's own buffer.

use thiserror::Error;

/// Longest request line, not counting its line ending.
pub const FRAME_BYTES_MAX: usize = 64 * 1024;

/// Framing failures. Each closes the connection after its reply.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A line grew past [`FRAME_BYTES_MAX`] before its newline arrived.
    #[error("request line exceeds {FRAME_BYTES_MAX} bytes; split the input into one JSON object per line")]
    TooLarge,
}

/// Per-connection framing state: the unfinished tail of the last read.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    partial: Vec<u8>,
    /// The previous frame was returned from `partial`, which must be emptied before reuse.
    partial_consumed: bool,
}

impl FrameDecoder {
    /// Returns the next complete line of `input[*pos..]`, advancing `pos` past it.
    ///
    /// `Ok(None)` means the rest of `input` was kept as an incomplete line; feed the next read.
    /// Blank lines are skipped and a trailing `\r` is removed.
    pub fn next_frame<'a>(
        &'a mut self,
        input: &'a [u8],
        pos: &mut usize,
    ) -> Result<Option<&'a [u8]>, FrameError> {
        if self.partial_consumed {
            self.partial.clear();
            self.partial_consumed = false;
        }
        loop {
            let rest = &input[*pos..];
            let Some(newline) = memchr(rest) else {
                if self.partial.len() + rest.len() > FRAME_BYTES_MAX + 1 {
                    return Err(FrameError::TooLarge);
                }
                self.partial.extend_from_slice(rest);
                *pos = input.len();
                return Ok(None);
            };
            let start = *pos;
            *pos += newline + 1;
            if self.partial.len() + newline > FRAME_BYTES_MAX + 1 {
                return Err(FrameError::TooLarge);
            }
            let from_partial = !self.partial.is_empty();
            if from_partial {
                self.partial.extend_from_slice(&rest[..newline]);
            }
            let line = if from_partial {
                trim(&self.partial)
            } else {
                trim(&input[start..start + newline])
            };
            if line.len() > FRAME_BYTES_MAX {
                return Err(FrameError::TooLarge);
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                self.partial.clear();
                continue;
            }
            self.partial_consumed = from_partial;
            return Ok(Some(if from_partial {
                trim(&self.partial)
            } else {
                trim(&input[start..start + newline])
            }));
        }
    }

    /// The end of the stream: a non-blank unfinished line is the final frame (the way clients
    /// that write a request and then shut down their write side talk), under the same limit.
    /// Returns `Ok(None)` when nothing is pending; the decoder is empty afterwards.
    pub fn finish(&mut self) -> Result<Option<&[u8]>, FrameError> {
        if self.partial_consumed {
            self.partial.clear();
            self.partial_consumed = false;
        }
        if self.partial.iter().all(u8::is_ascii_whitespace) {
            self.partial.clear();
            return Ok(None);
        }
        if trim(&self.partial).len() > FRAME_BYTES_MAX {
            self.partial.clear();
            return Err(FrameError::TooLarge);
        }
        self.partial_consumed = true;
        Ok(Some(trim(&self.partial)))
    }

    /// Bytes of an unfinished line held between reads.
    pub fn pending_bytes(&self) -> usize {
        if self.partial_consumed {
            0
        } else {
            self.partial.len()
        }
    }
}

fn trim(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn memchr(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(decoder: &mut FrameDecoder, input: &[u8]) -> Result<Vec<String>, FrameError> {
        let mut pos = 0;
        let mut out = Vec::new();
        while let Some(line) = decoder.next_frame(input, &mut pos)? {
            out.push(String::from_utf8(line.to_vec()).unwrap());
        }
        assert_eq!(pos, input.len());
        Ok(out)
    }

    #[test]
    fn splits_lines_and_keeps_partial_tails() {
        let mut d = FrameDecoder::default();
        assert_eq!(frames(&mut d, b"a\nbb\r\n\n  \ncc").unwrap(), ["a", "bb"]);
        assert_eq!(d.pending_bytes(), 2);
        assert_eq!(frames(&mut d, b"c").unwrap(), Vec::<String>::new());
        assert_eq!(frames(&mut d, b"\nd\n").unwrap(), ["ccc", "d"]);
        assert_eq!(d.pending_bytes(), 0);
    }

    #[test]
    fn a_line_split_at_every_byte_reassembles() {
        let text = b"{\"x\":1}\r\n{\"y\":2}\n";
        let mut d = FrameDecoder::default();
        let mut got = Vec::new();
        for byte in text.chunks(1) {
            got.extend(frames(&mut d, byte).unwrap());
        }
        assert_eq!(got, ["{\"x\":1}", "{\"y\":2}"]);
    }

    #[test]
    fn the_unfinished_line_at_eof_is_the_last_frame() {
        let mut d = FrameDecoder::default();
        assert_eq!(frames(&mut d, b"a\n{\"x\":1}\r").unwrap(), ["a"]);
        assert_eq!(d.finish().unwrap(), Some(&b"{\"x\":1}"[..]));
        assert_eq!(d.pending_bytes(), 0);
        assert_eq!(d.finish().unwrap(), None);

        let mut d = FrameDecoder::default();
        assert!(frames(&mut d, b"a\n  \r").unwrap().len() == 1);
        assert_eq!(d.finish().unwrap(), None);

        let mut d = FrameDecoder::default();
        let exact = vec![b'x'; FRAME_BYTES_MAX];
        assert!(frames(&mut d, &exact).unwrap().is_empty());
        assert_eq!(d.finish().unwrap().map(<[u8]>::len), Some(FRAME_BYTES_MAX));
        let mut d = FrameDecoder::default();
        let mut over = vec![b'x'; FRAME_BYTES_MAX];
        over.push(b'y');
        assert!(frames(&mut d, &over).unwrap().is_empty());
        assert_eq!(d.finish(), Err(FrameError::TooLarge));
    }

    #[test]
    fn the_limit_is_exact() {
        let mut d = FrameDecoder::default();
        let mut exact = vec![b'x'; FRAME_BYTES_MAX];
        exact.extend_from_slice(b"\r\n");
        assert_eq!(frames(&mut d, &exact).unwrap()[0].len(), FRAME_BYTES_MAX);

        let mut d = FrameDecoder::default();
        let mut over = vec![b'x'; FRAME_BYTES_MAX + 1];
        over.push(b'\n');
        assert_eq!(frames(&mut d, &over), Err(FrameError::TooLarge));
    }

    #[test]
    fn an_oversized_line_fails_before_its_newline() {
        let mut d = FrameDecoder::default();
        let chunk = vec![b'x'; FRAME_BYTES_MAX / 2];
        assert!(frames(&mut d, &chunk).unwrap().is_empty());
        assert!(frames(&mut d, &chunk).unwrap().is_empty());
        assert!(frames(&mut d, b"\r").unwrap().is_empty());
        assert_eq!(frames(&mut d, b"y"), Err(FrameError::TooLarge));
    }
}
