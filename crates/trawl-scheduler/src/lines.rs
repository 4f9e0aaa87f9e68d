//! Exact line and column numbers without a second pass (DESIGN invariant 7).
//!
//! The I/O thread knows where each buffer starts in lines, because it sees
//! the object's chunks in order: it counts the newlines of the bytes it hands
//! over. A CPU worker then locates a finding by counting newlines only
//! within its own buffer.

use std::ops::Range;

use crate::sink::LineContext;

/// Where a byte lies in lines: the 1-based line of the byte and the
/// absolute offset at which that line starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinePosition {
    pub(crate) line: u64,
    pub(crate) line_start: u64,
}

impl LinePosition {
    /// The position of an object's first byte.
    pub(crate) const START: LinePosition = LinePosition {
        line: 1,
        line_start: 0,
    };

    /// The position of the byte just after `bytes`, which start at absolute
    /// offset `offset` at position `self`.
    pub(crate) fn advance(self, bytes: &[u8], offset: u64) -> LinePosition {
        match memchr::memrchr(b'\n', bytes) {
            None => self,
            Some(last) => LinePosition {
                line: self.line + count_newlines(bytes),
                line_start: offset + last as u64 + 1,
            },
        }
    }
}

/// Counts `\n` bytes; a plain loop that the compiler vectorises.
pub(crate) fn count_newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// Turns buffer offsets into (line, column), for offsets given in
/// increasing order, scanning each byte of the buffer at most once.
pub(crate) struct Locator<'a> {
    buf: &'a [u8],
    offset: u64,
    scanned: usize,
    position: LinePosition,
}

impl<'a> Locator<'a> {
    /// A locator over `buf`, which starts at absolute `offset` at `position`.
    pub(crate) fn new(buf: &'a [u8], offset: u64, position: LinePosition) -> Self {
        Locator {
            buf,
            offset,
            scanned: 0,
            position,
        }
    }

    /// The 1-based line and byte column of `buf[at]`. Offsets may repeat but
    /// must not decrease.
    pub(crate) fn locate(&mut self, at: usize) -> (u64, u64) {
        debug_assert!(at >= self.scanned, "locate offsets must not decrease");
        let at = at.max(self.scanned);
        let between = &self.buf[self.scanned..at];
        self.position = self
            .position
            .advance(between, self.offset + self.scanned as u64);
        self.scanned = at;
        let absolute = self.offset + at as u64;
        (self.position.line, absolute - self.position.line_start + 1)
    }
}

/// The context of the secret `buf[secret]`: up to
/// [`LineContext::MAX_SIDE`] bytes of its line on each side, cut at line
/// ends and at the ends of `buf`. `buf_ends_object` says that the object
/// ends where `buf` does, so that a line running to the end of `buf` is
/// whole. Costs a bounded search on each side; called only for findings.
pub(crate) fn context_around(
    buf: &[u8],
    secret: Range<usize>,
    buf_ends_object: bool,
) -> LineContext {
    debug_assert!(secret.start <= secret.end && secret.end <= buf.len());
    let max = LineContext::MAX_SIDE;

    // Each side looks one byte past the bound, for the line end that
    // would make a side of exactly `max` bytes whole.
    let from = secret.start.saturating_sub(max + 1);
    let before = match memchr::memrchr(b'\n', &buf[from..secret.start]) {
        Some(newline) => &buf[from + newline + 1..secret.start],
        None if secret.start <= max => &buf[..secret.start],
        // Cut at the bound: drop the tail of a character cut in two.
        None => skip_continuation_bytes(&buf[secret.start - max..secret.start]),
    };

    let window = &buf[secret.end..buf.len().min(secret.end + max + 1)];
    let (after, after_cut) = match memchr::memchr(b'\n', window) {
        Some(newline) => {
            let line = &window[..newline];
            (line.strip_suffix(b"\r").unwrap_or(line), false)
        }
        None if window.len() <= max && buf_ends_object => (window, false),
        None => (drop_split_character(&window[..window.len().min(max)]), true),
    };
    LineContext {
        before: before.to_vec(),
        after: after.to_vec(),
        after_cut,
    }
}

/// `bytes` without the UTF-8 continuation bytes (at most 3) at its start.
fn skip_continuation_bytes(bytes: &[u8]) -> &[u8] {
    let skip = bytes
        .iter()
        .take(3)
        .take_while(|&&b| b & 0xC0 == 0x80)
        .count();
    &bytes[skip..]
}

/// `bytes` without a UTF-8 character left incomplete at its end.
fn drop_split_character(bytes: &[u8]) -> &[u8] {
    for back in 1..=bytes.len().min(4) {
        let at = bytes.len() - back;
        let b = bytes[at];
        if b & 0xC0 == 0x80 {
            continue;
        }
        let needs = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if back < needs { &bytes[..at] } else { bytes };
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Line and column by the obvious method.
    fn naive(text: &[u8], at: usize) -> (u64, u64) {
        let before = &text[..at];
        let line = 1 + count_newlines(before);
        let start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        (line, (at - start + 1) as u64)
    }

    #[test]
    fn locator_agrees_with_naive_counting_across_buffers() {
        let text = b"ab\ncd\n\nefgh\nij klm\nn".repeat(7);
        for split in [1usize, 2, 3, 5, 8, 13, 40] {
            let mut position = LinePosition::START;
            let mut start = 0;
            while start < text.len() {
                let end = (start + split).min(text.len());
                let buf = &text[start..end];
                let mut locator = Locator::new(buf, start as u64, position);
                for at in 0..buf.len() {
                    assert_eq!(
                        locator.locate(at),
                        naive(&text, start + at),
                        "split {split} at {}",
                        start + at
                    );
                }
                position = position.advance(buf, start as u64);
                start = end;
            }
        }
    }

    fn context(buf: &[u8], secret: &str, ends: bool) -> (String, String, bool) {
        let start = buf
            .windows(secret.len())
            .position(|w| w == secret.as_bytes())
            .unwrap();
        let c = context_around(buf, start..start + secret.len(), ends);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (text(&c.before), text(&c.after), c.after_cut)
    }

    #[test]
    fn context_is_the_rest_of_the_line_on_each_side() {
        let text = b"first\nkey = \"SECRET\" # prod\r\nlast\n";
        let whole = |b: &str, a: &str| (b.to_owned(), a.to_owned(), false);
        assert_eq!(
            context(text, "SECRET", true),
            whole("key = \"", "\" # prod")
        );
        assert_eq!(context(text, "first", true), whole("", ""));
        assert_eq!(context(b"a SECRET", "SECRET", true), whole("a ", ""));
        // A secret over lines: `after` is on its last line.
        assert_eq!(context(b"x = A\nB;\n", "A\nB", true), whole("x = ", ";"));
        // The buffer ends, the object may not: the line may go on.
        assert_eq!(
            context(b"a SECRET b", "SECRET", false),
            ("a ".into(), " b".into(), true)
        );
    }

    #[test]
    fn context_is_bounded_and_cut_between_characters() {
        let max = LineContext::MAX_SIDE;
        // Exactly `max` bytes on each side, the line ending there: whole.
        let line = format!("{}S{}", "b".repeat(max), "a".repeat(max));
        let exact = format!("x\n{line}\ny");
        let (before, after, cut) = context(exact.as_bytes(), "S", true);
        assert_eq!((before.len(), after.len(), cut), (max, max, false));
        // One more byte: cut, at the bound.
        let long = format!("{}S{}", "b".repeat(max + 1), "a".repeat(max + 1));
        let (before, after, cut) = context(long.as_bytes(), "S", true);
        assert_eq!((before.len(), after.len(), cut), (max, max, true));
        // A two-byte character across the bound is left out whole.
        let wide = format!("é{}S{}é", "b".repeat(max - 1), "a".repeat(max - 1));
        let (before, after, cut) = context(wide.as_bytes(), "S", true);
        assert_eq!(before, "b".repeat(max - 1));
        assert_eq!((after, cut), ("a".repeat(max - 1), true));
        // Bytes that are not UTF-8 are kept as they are.
        let binary = b"\x00\xff\x80 S \xfe\n";
        let c = context_around(binary, 4..5, true);
        assert_eq!(
            (&c.before[..], &c.after[..]),
            (&b"\x00\xff\x80 "[..], &b" \xfe"[..])
        );
    }
}
