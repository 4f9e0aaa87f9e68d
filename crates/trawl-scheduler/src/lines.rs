//! Exact line and column numbers without a second pass (DESIGN invariant 7).
//!
//! The I/O thread knows where each buffer starts in lines, because it sees
//! the object's chunks in order: it counts the newlines of the bytes it hands
//! over. A CPU worker then locates a finding by counting newlines only
//! within its own buffer.

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
}
