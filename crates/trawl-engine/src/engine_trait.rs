//! The `ScanEngine` trait: what the scheduler needs from a detection engine.

use std::ops::Range;

/// Index of a rule inside the engine that reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleIndex(pub u32);

/// What the engine may know about the object a chunk belongs to, so that
/// path rules and path allowlists can apply.
#[derive(Debug, Clone, Copy)]
pub struct ObjectContext<'a> {
    /// The object's path or URL as shown in findings (may be non-UTF-8).
    pub display: &'a [u8],
    /// The object's size in bytes.
    pub size: u64,
}

/// One buffer to scan: an overlap prefix (the tail of the previous chunk)
/// followed by this chunk's payload.
#[derive(Debug, Clone, Copy)]
pub struct Chunk<'a> {
    /// The bytes: `buf[..payload_start]` is the overlap, the rest the payload.
    pub buf: &'a [u8],
    /// Where the payload starts in `buf`.
    pub payload_start: usize,
    /// Absolute offset in the object of `buf[0]`.
    pub offset: u64,
    /// Whether this chunk ends at the end of the object.
    pub is_last: bool,
    /// The object this chunk belongs to.
    pub object: ObjectContext<'a>,
}

impl<'a> Chunk<'a> {
    /// A whole object held in one buffer: no overlap, last chunk.
    pub fn whole(buf: &'a [u8], display: &'a [u8]) -> Self {
        Chunk {
            buf,
            payload_start: 0,
            offset: 0,
            is_last: true,
            object: ObjectContext {
                display,
                size: buf.len() as u64,
            },
        }
    }

    /// Whether this chunk owns a match spanning `span` of `buf`.
    ///
    /// A match is owned by the chunk whose payload holds its end offset
    /// (`span.end`, exclusive): `payload_start <= span.end < buf.len()`, or
    /// `span.end <= buf.len()` for the last chunk. A match that ends before
    /// the payload belongs to the previous chunk, and one that touches the
    /// end of a non-final buffer (`span.end == buf.len()`, where it may be
    /// cut short) is left to the next chunk, in which that same offset is
    /// `payload_start` and whose overlap holds the match whole (the overlap
    /// is at least the engine's `max_match_len`). The end offsets of
    /// consecutive chunks thus partition the object, and applying this to
    /// every match makes chunking invisible.
    pub fn owns(&self, span: &Range<usize>) -> bool {
        span.end >= self.payload_start && (self.is_last || span.end < self.buf.len())
    }
}

/// Cuts `data`, one whole object in memory, into the chunks a scheduler
/// would give an engine: `chunk_size` payload bytes each, preceded by up to
/// `overlap` bytes of what came before. With `overlap` at least the
/// engine's [`max_match_len`](ScanEngine::max_match_len), scanning every
/// chunk finds what scanning `data` whole finds (for secrets delimited by
/// non-token bytes). Yields at least one chunk, the last with `is_last`.
///
/// ```
/// use trawl_engine::{Engine, ScanEngine, chunks};
///
/// let engine = Engine::builtin();
/// let data = b"x = 1\ntoken: ghp_R7fKq2LmX9vBn4WcT8yHs1JdP6aZe3UoQi5G\n".repeat(100);
/// let (mut scratch, mut out) = (engine.new_scratch(), Vec::new());
/// let mut found = 0;
/// for chunk in chunks(&data, b"big.txt", 1000, engine.max_match_len()) {
///     out.clear();
///     engine.scan_chunk_into(&chunk, &mut scratch, &mut out);
///     // `github-pat` and `generic-api-key` both match each token: keep one.
///     engine.dedupe_within_chunk(&mut out);
///     found += out.len();
/// }
/// assert_eq!(found, 100);
/// ```
///
/// # Panics
///
/// If `chunk_size` is 0.
pub fn chunks<'a>(
    data: &'a [u8],
    display: &'a [u8],
    chunk_size: usize,
    overlap: usize,
) -> impl Iterator<Item = Chunk<'a>> {
    assert!(chunk_size > 0, "chunks need a chunk size of at least 1");
    let mut start = Some(0usize);
    std::iter::from_fn(move || {
        let payload = start?;
        let end = payload.saturating_add(chunk_size).min(data.len());
        let buf_start = payload.saturating_sub(overlap);
        start = (end < data.len()).then_some(end);
        Some(Chunk {
            buf: &data[buf_start..end],
            payload_start: payload - buf_start,
            offset: buf_start as u64,
            is_last: end == data.len(),
            object: ObjectContext {
                display,
                size: data.len() as u64,
            },
        })
    })
}

/// A match reported by an engine, in coordinates of the chunk's `buf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMatch {
    /// The rule that matched.
    pub rule: RuleIndex,
    /// The whole match in `buf`.
    pub span: Range<usize>,
    /// The secret (the rule's secret group) in `buf`; inside `span`.
    pub secret: Range<usize>,
}

/// A secret-detection engine, as the scheduler drives it.
///
/// The engine is shared by all CPU workers (`&self`); each worker owns one
/// [`Scratch`](Self::Scratch) and reuses it for every chunk, so the hot path
/// allocates nothing per chunk.
///
/// # Contract
///
/// - Every match an engine reports is at most
///   [`max_match_len`](Self::max_match_len) bytes long. The scheduler gives
///   consecutive chunks an overlap of at least that, which is what makes
///   chunking invisible.
/// - [`scan_chunk_into`](Self::scan_chunk_into) **must** report only matches
///   the chunk owns ([`Chunk::owns`]), each inside `buf`, and **must** report
///   every match it owns that a scan of the whole object would report, for
///   secrets delimited by non-token bytes. An engine may apply `owns` to an
///   *ownership end* at or after the match's end instead of the match's end
///   (for example the end of the line after the secret, so that a marker on
///   that line is seen whole), provided that position depends only on the
///   object's bytes, not on the chunking, and lies within `max_match_len`
///   bytes of everything the engine looks at to decide the match.
/// - The output depends only on the bytes and the object context, never on
///   earlier calls: scratch is a cache, not state.
pub trait ScanEngine: Send + Sync + 'static {
    /// Per-worker reusable scratch space.
    type Scratch: Send + 'static;

    /// The longest match any rule can produce, in bytes.
    fn max_match_len(&self) -> usize;

    /// Fresh scratch for one worker.
    fn new_scratch(&self) -> Self::Scratch;

    /// Scans one chunk, appending the matches it owns to `out` (which the
    /// caller clears), in any order.
    fn scan_chunk_into(
        &self,
        chunk: &Chunk<'_>,
        scratch: &mut Self::Scratch,
        out: &mut Vec<RawMatch>,
    );

    /// The stable id of a rule (e.g. `aws-access-token`).
    fn rule_id(&self, rule: RuleIndex) -> &str;

    /// Removes matches whose secret span is identical to another's, keeping
    /// the more specific rule's, and sorts `matches` by position.
    ///
    /// Only identical spans are merged, never overlapping ones, so the
    /// result does not depend on where chunk boundaries fall. The default
    /// treats a lower [`RuleIndex`] as more specific (engines list specific
    /// rules before generic ones).
    fn dedupe_within_chunk(&self, matches: &mut Vec<RawMatch>) {
        // Unstable (it allocates nothing) over a total order: deterministic.
        matches.sort_unstable_by_key(|m| {
            (
                m.secret.start,
                m.secret.end,
                m.rule,
                m.span.start,
                m.span.end,
            )
        });
        matches.dedup_by(|later, kept| later.secret == kept.secret);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(buf: &[u8], payload_start: usize, is_last: bool) -> Chunk<'_> {
        Chunk {
            buf,
            payload_start,
            offset: 0,
            is_last,
            object: ObjectContext {
                display: b"",
                size: 0,
            },
        }
    }

    #[test]
    fn owned_ends_partition_the_object() {
        // Object of 20 bytes, payloads [0, 10) and [10, 20), overlap 4.
        let data = [0u8; 20];
        let first = chunk(&data[..10], 0, false);
        let second = chunk(&data[6..], 4, true);
        for end in 1..=20usize {
            let in_first = first.owns(&(0..end)) && end <= 10;
            let in_second = end >= 6 && second.owns(&(0..end - 6));
            assert!(in_first != in_second, "end {end}: {in_first} {in_second}");
        }
    }
}
