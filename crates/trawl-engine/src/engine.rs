//! The engine: keyword prefilter, regex confirmation, entropy, allowlists and
//! chunk ownership.

use std::ops::Range;

use aho_corasick::{AhoCorasick, MatchKind};
use memchr::memmem;
use regex::bytes::CaptureLocations;

use crate::engine_trait::{Chunk, RawMatch, RuleIndex, ScanEngine};
use crate::entropy::shannon_entropy;
use crate::error::{Error, Result};
use crate::rule::{MatchTexts, Rule, RuleSet};

/// How far, in bytes, the engine looks before a match for the start of its
/// line and after the secret for the end of its line (for `trawl:allow` and
/// `regexTarget = "line"` allowlists). Capping the line keeps the cost of a
/// match independent of the length of the line it sits on.
pub(crate) const LINE_WINDOW: usize = 256;

/// The inline markers that exempt a match on the same line. `gitleaks:allow`
/// is honoured too, so code already annotated for gitleaks stays quiet.
const ALLOW_MARKERS: [&str; 2] = ["trawl:allow", "gitleaks:allow"];

/// Which rules are tried on a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Candidates {
    /// Only rules whose keywords occur in the chunk, plus keyword-less rules.
    Prefilter,
    /// Every rule, on every chunk (for testing that the prefilter changes
    /// nothing).
    #[cfg_attr(not(test), allow(dead_code, reason = "only the matrix tests use it"))]
    EveryRule,
}

/// trawl's detection engine over a [`RuleSet`].
///
/// Scanning a chunk is one ASCII-case-insensitive Aho-Corasick pass over all
/// keywords, then, for each rule whose keyword occurred (and each rule with
/// no keyword), a regex pass over the chunk. At each regex match the secret
/// group is resolved, and the match is kept only if the chunk owns it, the
/// secret reaches the rule's entropy floor, no allowlist exempts it and its
/// line carries no `trawl:allow` (or `gitleaks:allow`) marker.
///
/// # Chunk ownership
///
/// A match's *line window* runs from the start of its line (at most
/// 256 bytes before the match) to the end of the line after the secret (at
/// most 256 bytes after it). The chunk in which that window ends owns the
/// match, so the inline marker and line allowlists see the same bytes
/// whatever the chunking, and two rules reporting the same secret are owned
/// by the same chunk. [`max_match_len`](ScanEngine::max_match_len) therefore
/// counts the longest rule match plus both windows.
///
/// # Rules without a length bound
///
/// A rule whose regex is unbounded is capped at
/// [`DEFAULT_MAX_MATCH_LEN`](crate::DEFAULT_MAX_MATCH_LEN) bytes: longer
/// matches are dropped, and near chunk boundaries such a rule may match a
/// shorter piece of a long run; [`RuleSet::warnings`] lists such rules.
#[derive(Debug, Clone)]
pub struct Engine {
    rules: RuleSet,
    /// All distinct keywords, in pattern-id order.
    keywords: Vec<String>,
    /// `None` if no rule has a keyword.
    prefilter: Option<AhoCorasick>,
    /// For each keyword (pattern id), the rules it makes candidates.
    keyword_rules: Vec<Vec<u32>>,
    /// Per rule: whether it has no keyword and so runs on every chunk.
    always: Vec<bool>,
    /// Per rule: whether it needs capture positions to find its secret.
    needs_captures: Vec<bool>,
    /// Per rule: the global allowlists that apply to it.
    global_allowlists: Vec<Vec<usize>>,
    markers: [memmem::Finder<'static>; 2],
    max_match_len: usize,
    candidates: Candidates,
}

/// Per-worker scratch space for [`Engine`]: candidate flags and capture
/// slots, reused for every chunk.
#[derive(Debug)]
pub struct Scratch {
    /// Per rule: whether a keyword of it occurred in the current chunk.
    candidate: Vec<bool>,
    /// Per keyword: whether it already occurred in the current chunk.
    keyword_seen: Vec<bool>,
    /// Per rule: capture slots (only for rules with capture groups).
    locs: Vec<Option<CaptureLocations>>,
}

impl Engine {
    /// Builds an engine over `rules`.
    ///
    /// # Errors
    ///
    /// [`Error::Prefilter`] if the keyword automaton cannot be built (it is
    /// built from at most a few thousand short keywords, so in practice this
    /// does not happen), [`Error::InvalidRule`] if there are more than
    /// `u32::MAX` rules.
    pub fn new(rules: RuleSet) -> Result<Engine> {
        if u32::try_from(rules.len()).is_err() {
            return Err(Error::InvalidRule {
                origin: "<engine>".to_owned(),
                rule_id: String::new(),
                reason: "too many rules".to_owned(),
            });
        }
        let mut keywords: Vec<String> = Vec::new();
        let mut keyword_rules: Vec<Vec<u32>> = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            for k in rule.keywords() {
                let pid = match keywords.iter().position(|x| x == k) {
                    Some(pid) => pid,
                    None => {
                        keywords.push(k.clone());
                        keyword_rules.push(Vec::new());
                        keywords.len() - 1
                    }
                };
                keyword_rules[pid].push(i as u32);
            }
        }
        let prefilter = if keywords.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::Standard)
                    .build(&keywords)
                    .map_err(|e| Error::Prefilter(Box::new(e)))?,
            )
        };
        let always = rules.iter().map(|r| r.keywords().is_empty()).collect();
        let needs_captures = rules.iter().map(|r| r.regex().captures_len() > 1).collect();
        let global_allowlists = rules
            .iter()
            .map(|r| {
                (0..rules.allowlists().len())
                    .filter(|&a| rules.allowlists()[a].applies_to(r.id()))
                    .collect()
            })
            .collect();
        let longest_rule = rules.iter().map(Rule::max_len).max().unwrap_or(0);
        Ok(Engine {
            keywords,
            prefilter,
            keyword_rules,
            always,
            needs_captures,
            global_allowlists,
            markers: ALLOW_MARKERS.map(memmem::Finder::new),
            max_match_len: longest_rule + 2 * LINE_WINDOW,
            candidates: Candidates::Prefilter,
            rules,
        })
    }

    /// An engine over [`RuleSet::builtin`].
    ///
    /// # Panics
    ///
    /// Only if the built-in rule data is broken; the crate's tests build
    /// this engine, so a released build does not panic.
    pub fn builtin() -> Engine {
        match Engine::new(RuleSet::builtin()) {
            Ok(engine) => engine,
            Err(e) => panic!("trawl-engine's built-in rules are broken: {e}"),
        }
    }

    /// Every distinct keyword (lowercased), e.g. to give another tool the
    /// same prefilter.
    pub fn keywords(&self) -> impl Iterator<Item = &str> {
        self.keywords.iter().map(String::as_str)
    }

    /// The rules this engine runs; a [`RuleIndex`] indexes into them.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Caveats from loading the rules (see [`RuleSet::warnings`]), such as
    /// unbounded rules capped at
    /// [`DEFAULT_MAX_MATCH_LEN`](crate::DEFAULT_MAX_MATCH_LEN).
    pub fn warnings(&self) -> &[crate::RuleWarning] {
        self.rules.warnings()
    }

    /// The rule a [`RuleIndex`] reported by this engine stands for.
    ///
    /// # Panics
    ///
    /// If `index` did not come from this engine.
    pub fn rule(&self, index: RuleIndex) -> &Rule {
        self.rules
            .iter()
            .as_slice()
            .get(index.0 as usize)
            .expect("RuleIndex from another engine")
    }

    /// Scans one whole object held in memory and returns its matches, deduplicated
    /// and sorted by position. `display` is the object's path (for path rules
    /// and path allowlists).
    ///
    /// ```
    /// use trawl_engine::{Engine, ScanEngine};
    /// let engine = Engine::builtin();
    /// let text = b"token = ghp_Zx8Kq2Lm9Np4Rt7Vw1Yb3Cd6Fg0Hj5Ks8QeT\n";
    /// let found = engine.scan_whole(text, b"config.env");
    /// assert_eq!(engine.rule_id(found[0].rule), "github-pat");
    /// ```
    pub fn scan_whole(&self, buf: &[u8], display: &[u8]) -> Vec<RawMatch> {
        let mut scratch = self.new_scratch();
        let mut out = Vec::new();
        self.scan_chunk_into(&Chunk::whole(buf, display), &mut scratch, &mut out);
        self.dedupe_within_chunk(&mut out);
        out
    }

    #[cfg(test)]
    pub(crate) fn with_candidates(mut self, candidates: Candidates) -> Engine {
        self.candidates = candidates;
        self
    }

    /// Marks the rules whose keywords occur in `buf`.
    fn mark_candidates(&self, buf: &[u8], scratch: &mut Scratch) {
        let Some(ac) = &self.prefilter else { return };
        scratch.keyword_seen.fill(false);
        let mut remaining = self.keywords.len();
        for m in ac.find_overlapping_iter(buf) {
            let pid = m.pattern().as_usize();
            if scratch.keyword_seen[pid] {
                continue;
            }
            scratch.keyword_seen[pid] = true;
            for &r in &self.keyword_rules[pid] {
                scratch.candidate[r as usize] = true;
            }
            remaining -= 1;
            if remaining == 0 {
                break;
            }
        }
    }

    fn scan_rule(
        &self,
        index: usize,
        chunk: &Chunk<'_>,
        locs: Option<&mut CaptureLocations>,
        out: &mut Vec<RawMatch>,
    ) {
        let rule = self.rule_at(index);
        let buf = chunk.buf;
        if let Some(path) = rule.path()
            && !path.is_match(chunk.object.display)
        {
            return;
        }
        let mut locs = locs;
        for m in rule.regex().find_iter(buf) {
            let span = m.range();
            if span.len() > rule.max_len() {
                continue;
            }
            let Some(secret) = self.secret_of(rule, buf, &span, locs.as_deref_mut()) else {
                continue;
            };
            let (line_start, owner_end) = line_window(buf, &span, &secret);
            if !chunk.owns(&(span.start..owner_end)) {
                continue;
            }
            if let Some(floor) = rule.entropy()
                && shannon_entropy(&buf[secret.clone()]) < floor
            {
                continue;
            }
            let window = line_start..owner_end;
            if self
                .markers
                .iter()
                .any(|f| f.find(&buf[window.clone()]).is_some())
            {
                continue;
            }
            let line_end = if owner_end > span.end && buf[owner_end - 1] == b'\n' {
                owner_end - 1
            } else {
                owner_end
            };
            let texts = MatchTexts {
                secret: &buf[secret.clone()],
                matched: &buf[span.clone()],
                line: &buf[line_start..line_end],
                path: chunk.object.display,
            };
            let allowed = rule.allowlists().iter().any(|a| a.allows(&texts))
                || self.global_allowlists[index]
                    .iter()
                    .any(|&a| self.rules.allowlists()[a].allows(&texts));
            if allowed {
                continue;
            }
            out.push(RawMatch {
                rule: RuleIndex(index as u32),
                span,
                secret,
            });
        }
    }

    /// The secret of a match: the rule's secret group, or gitleaks' default
    /// (the first non-empty group, else the whole match). `None` if the
    /// secret group did not participate or is empty.
    fn secret_of(
        &self,
        rule: &Rule,
        buf: &[u8],
        span: &Range<usize>,
        locs: Option<&mut CaptureLocations>,
    ) -> Option<Range<usize>> {
        let Some(locs) = locs else {
            return (!span.is_empty()).then(|| span.clone());
        };
        let found = rule.regex().captures_read_at(locs, buf, span.start)?;
        debug_assert_eq!(found.range(), *span, "re-search found a different match");
        let secret = match rule.secret_group() {
            Some(g) => locs.get(g).map(|(s, e)| s..e)?,
            None => (1..locs.len())
                .filter_map(|g| locs.get(g))
                .find(|(s, e)| e > s)
                .map_or_else(|| span.clone(), |(s, e)| s..e),
        };
        (!secret.is_empty()).then_some(secret)
    }

    fn rule_at(&self, index: usize) -> &Rule {
        self.rules
            .iter()
            .as_slice()
            .get(index)
            .expect("rule index in range")
    }
}

/// The line window of a match: from the start of its line (at most
/// [`LINE_WINDOW`] bytes before the match) to just past the newline ending
/// the secret's line (at most [`LINE_WINDOW`] bytes after the secret), and
/// never before the match's end. Stays inside `buf`.
fn line_window(buf: &[u8], span: &Range<usize>, secret: &Range<usize>) -> (usize, usize) {
    let lo = span.start.saturating_sub(LINE_WINDOW);
    let start = memchr::memrchr(b'\n', &buf[lo..span.start]).map_or(lo, |i| lo + i + 1);
    let hi = (secret.end + LINE_WINDOW).min(buf.len());
    let end = memchr::memchr(b'\n', &buf[secret.end..hi]).map_or(hi, |i| secret.end + i + 1);
    (start, end.max(span.end))
}

impl ScanEngine for Engine {
    type Scratch = Scratch;

    fn max_match_len(&self) -> usize {
        self.max_match_len
    }

    fn new_scratch(&self) -> Scratch {
        Scratch {
            candidate: vec![false; self.rules.len()],
            keyword_seen: vec![false; self.keywords.len()],
            locs: self
                .rules
                .iter()
                .zip(&self.needs_captures)
                .map(|(r, &needs)| needs.then(|| r.regex().capture_locations()))
                .collect(),
        }
    }

    fn scan_chunk_into(&self, chunk: &Chunk<'_>, scratch: &mut Scratch, out: &mut Vec<RawMatch>) {
        debug_assert!(chunk.payload_start <= chunk.buf.len());
        debug_assert_eq!(
            scratch.candidate.len(),
            self.rules.len(),
            "scratch from another engine"
        );
        match self.candidates {
            Candidates::Prefilter => self.mark_candidates(chunk.buf, scratch),
            Candidates::EveryRule => scratch.candidate.fill(true),
        }
        for index in 0..self.rules.len() {
            if !(scratch.candidate[index] || self.always[index]) {
                continue;
            }
            scratch.candidate[index] = false;
            self.scan_rule(index, chunk, scratch.locs[index].as_mut(), out);
        }
    }

    fn rule_id(&self, rule: RuleIndex) -> &str {
        self.rule(rule).id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_window_stops_at_newlines() {
        let buf = b"a=1\nkey = SECRET # note\nnext";
        let span = 4..16;
        let secret = 10..16;
        let (start, end) = line_window(buf, &span, &secret);
        assert_eq!(start, 4);
        assert_eq!(&buf[start..end], b"key = SECRET # note\n");
    }

    #[test]
    fn line_window_is_capped_and_stays_inside_buf() {
        let mut buf = vec![b'x'; 1000];
        buf[500..506].copy_from_slice(b"SECRET");
        let (start, end) = line_window(&buf, &(500..506), &(500..506));
        assert_eq!((start, end), (500 - LINE_WINDOW, 506 + LINE_WINDOW));
        let (start, end) = line_window(&buf[..600], &(10..16), &(10..16));
        assert_eq!((start, end), (0, 16 + LINE_WINDOW));
        let (_, end) = line_window(&buf[..520], &(500..506), &(500..506));
        assert_eq!(end, 520);
    }

    #[test]
    fn the_ownership_end_is_never_before_the_match_end() {
        let buf = b"k=SECRET\nstill the match\n";
        let (_, end) = line_window(buf, &(0..20), &(2..8));
        assert_eq!(end, 20);
    }
}
