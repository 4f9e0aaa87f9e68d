//! The engine: keyword prefilter, regex confirmation, entropy, allowlists and
//! chunk ownership.

use std::ops::Range;

use memchr::memmem;
use regex_automata::util::captures::Captures;
use regex_automata::{Anchored, Input, meta};

use crate::engine_trait::{Chunk, RawMatch, RuleIndex, ScanEngine};
use crate::entropy::shannon_entropy;
use crate::error::{Error, Result};
use crate::keywords::{Hit, KeywordScanner, STREAMS};
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
/// Scanning a chunk is one ASCII-case-insensitive Aho-Corasick pass that
/// finds every keyword occurrence, then regex searches where a match can
/// be: anchored at each occurrence for built-in rules whose matches start
/// with a keyword, within `max_len` bytes of each occurrence for the other
/// built-in rules (every match contains a keyword), over the whole chunk for
/// user rules once one of their keywords occurs (gitleaks' semantics) and
/// for rules without keywords. At each regex match the secret group is
/// resolved, and the match is kept only if the chunk owns it, the secret
/// reaches the rule's entropy floor, no allowlist exempts it and its line
/// carries no `trawl:allow` (or `gitleaks:allow`) marker.
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
    prefilter: Option<KeywordScanner>,
    /// For each keyword (pattern id), the rules it makes candidates.
    keyword_rules: Vec<Vec<u32>>,
    /// Per rule: whether it has no keyword and so runs on every chunk.
    always: Vec<bool>,
    /// Per rule whose every match contains a keyword: how far from a
    /// keyword hit a match can reach (its maximum length), so the regex is
    /// searched only there. `None`: search the whole chunk.
    reach: Vec<Option<usize>>,
    /// Per rule: whether every match starts with one of its keywords, so
    /// that an anchored search at each keyword occurrence finds exactly the
    /// matches an unanchored search would, without searching backwards.
    anchored: Vec<bool>,
    /// Per rule: whether it needs capture positions to find its secret.
    needs_captures: Vec<bool>,
    /// Per rule: the global allowlists that apply to it.
    global_allowlists: Vec<Vec<usize>>,
    markers: [memmem::Finder<'static>; 2],
    max_match_len: usize,
    candidates: Candidates,
}

/// Per-worker scratch space for [`Engine`]: the spans to search and the
/// regex caches, reused for every chunk.
#[derive(Debug)]
pub struct Scratch {
    /// The spans of the chunk to search, each for one rule.
    spans: Vec<Span>,
    /// Keyword occurrences `(rule, offset)` at which anchored rules are
    /// searched.
    anchors: Vec<(u32, usize)>,
    /// The keyword occurrences of the current chunk, and the keyword
    /// scanner's per-stream lists.
    hits: Vec<Hit>,
    spill: [Vec<Hit>; STREAMS],
    /// Per rule: the index in `spans` of its last span, to merge
    /// overlapping ones as keyword hits arrive (`NONE` if it has none yet).
    last_span: Vec<usize>,
    /// Per rule: its regex's cache and capture slots, made on the rule's
    /// first search (most rules never run on most inputs, and a cache costs
    /// ~15 KiB).
    per_rule: Vec<Option<RuleScratch>>,
}

/// One rule's reusable search state.
#[derive(Debug)]
struct RuleScratch {
    cache: meta::Cache,
    captures: Captures,
}

/// The search state of rule `index`, made on first use.
fn rule_scratch<'s>(
    per_rule: &'s mut [Option<RuleScratch>],
    rule: &Rule,
    index: usize,
) -> &'s mut RuleScratch {
    per_rule[index].get_or_insert_with(|| RuleScratch {
        cache: rule.automaton().create_cache(),
        captures: rule.automaton().create_captures(),
    })
}

/// A span of the chunk in which one rule's regex is searched.
#[derive(Debug, Clone, Copy)]
struct Span {
    rule: u32,
    start: usize,
    end: usize,
}

/// "No span yet" in [`Scratch::last_span`].
const NONE: usize = usize::MAX;

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
            Some(KeywordScanner::new(&keywords).map_err(|e| Error::Prefilter(Box::new(e)))?)
        };
        let always = rules.iter().map(|r| r.keywords().is_empty()).collect();
        let reach = rules
            .iter()
            .map(|r| r.keyword_in_match().then_some(r.max_len()))
            .collect();
        let anchored = rules
            .iter()
            .map(|r| r.keyword_in_match() && starts_with_keyword(r))
            .collect();
        let needs_captures = rules
            .iter()
            .map(|r| r.automaton().captures_len() > 1)
            .collect();
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
            reach,
            anchored,
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

    /// Collects the spans to search in `buf`: around each keyword hit for
    /// rules whose matches contain a keyword, the whole chunk for rules
    /// with no keyword or whose matches need not contain one (once a
    /// keyword of theirs occurs).
    fn collect_spans(&self, buf: &[u8], scratch: &mut Scratch) {
        scratch.spans.clear();
        scratch.anchors.clear();
        scratch.last_span.fill(NONE);
        let whole = |rule: usize, scratch: &mut Scratch| {
            if scratch.last_span[rule] == NONE {
                scratch.last_span[rule] = scratch.spans.len();
                scratch.spans.push(Span {
                    rule: rule as u32,
                    start: 0,
                    end: buf.len(),
                });
            }
        };
        if self.candidates == Candidates::EveryRule {
            (0..self.rules.len()).for_each(|r| whole(r, scratch));
            return;
        }
        for (rule, _) in self.always.iter().enumerate().filter(|(_, a)| **a) {
            whole(rule, scratch);
        }
        let Some(scanner) = &self.prefilter else {
            return;
        };
        let mut hits = std::mem::take(&mut scratch.hits);
        hits.clear();
        scanner.scan(buf, &mut hits, &mut scratch.spill);
        for hit in &hits {
            let hit_start = hit.end - scanner.len_of(hit.keyword);
            for &rule in &self.keyword_rules[hit.keyword as usize] {
                if self.anchored[rule as usize] {
                    scratch.anchors.push((rule, hit_start));
                    continue;
                }
                let rule = rule as usize;
                let Some(reach) = self.reach[rule] else {
                    whole(rule, scratch);
                    continue;
                };
                // A match holding this hit lies within `reach` bytes of it.
                let start = hit.end.saturating_sub(reach);
                let end = hit_start.saturating_add(reach).min(buf.len());
                match scratch.spans.get_mut(scratch.last_span[rule]) {
                    // Hits arrive in order of their end, so spans of one
                    // rule only ever grow to the right.
                    Some(last) if start <= last.end => last.end = last.end.max(end),
                    _ => {
                        scratch.last_span[rule] = scratch.spans.len();
                        scratch.spans.push(Span {
                            rule: rule as u32,
                            start,
                            end,
                        });
                    }
                }
            }
        }
        scratch.hits = hits;
    }

    /// Reports the matches of one rule's regex inside `span` of the chunk
    /// that the chunk owns and no floor or allowlist rejects.
    fn scan_span(
        &self,
        span: Span,
        chunk: &Chunk<'_>,
        scratch: &mut Scratch,
        out: &mut Vec<RawMatch>,
    ) {
        let index = span.rule as usize;
        let rule = self.rule_at(index);
        let buf = chunk.buf;
        if let Some(path) = rule.path()
            && !path.is_match(chunk.object.display)
        {
            return;
        }
        let regex = rule.automaton();
        let mut at = span.start;
        while at <= span.end {
            // The span bounds where matches may lie; the bytes around it
            // still count for `\b`, `^` and the like.
            let input = Input::new(buf).range(at..span.end);
            let state = rule_scratch(&mut scratch.per_rule, rule, index);
            let Some(found) = regex.search_with(&mut state.cache, &input) else {
                break;
            };
            let whole = found.range();
            at = if whole.is_empty() {
                whole.end + 1
            } else {
                whole.end
            };
            self.confirm(index, chunk, whole, scratch, out);
        }
    }

    /// Searches each anchored rule at its keyword occurrences, in order,
    /// skipping occurrences inside the rule's previous match: the matches
    /// an unanchored left-to-right search would find, since every match of
    /// such a rule starts at an occurrence of one of its keywords.
    fn scan_anchors(&self, chunk: &Chunk<'_>, scratch: &mut Scratch, out: &mut Vec<RawMatch>) {
        let buf = chunk.buf;
        scratch.anchors.sort_unstable();
        let mut current = None;
        let mut next_free = 0;
        let mut path_ok = true;
        for i in 0..scratch.anchors.len() {
            let (rule_id, at) = scratch.anchors[i];
            let index = rule_id as usize;
            let rule = self.rule_at(index);
            if current != Some(rule_id) {
                current = Some(rule_id);
                next_free = 0;
                path_ok = rule.path().is_none_or(|p| p.is_match(chunk.object.display));
            }
            if !path_ok || at < next_free {
                continue;
            }
            let end = at.saturating_add(rule.max_len()).min(buf.len());
            let input = Input::new(buf).range(at..end).anchored(Anchored::Yes);
            let regex = rule.automaton();
            let state = rule_scratch(&mut scratch.per_rule, rule, index);
            let cache = &mut state.cache;
            // Anchored, the capture search is about as cheap as the plain
            // one, and finds the secret in the same pass.
            let (whole, secret) = if self.needs_captures[index] {
                let captures = &mut state.captures;
                regex.search_captures_with(cache, &input, captures);
                let Some(whole) = captures.get_match().map(|m| m.range()) else {
                    continue;
                };
                let secret = secret_group(rule, captures, &whole);
                (whole, secret)
            } else {
                let Some(found) = regex.search_with(cache, &input) else {
                    continue;
                };
                (found.range(), Some(found.range()))
            };
            next_free = whole.end.max(at + 1);
            self.report(index, chunk, whole, secret, out);
        }
    }

    /// Resolves the secret of a match of rule `index` found without
    /// captures, and reports the match if it is accepted.
    fn confirm(
        &self,
        index: usize,
        chunk: &Chunk<'_>,
        whole: Range<usize>,
        scratch: &mut Scratch,
        out: &mut Vec<RawMatch>,
    ) {
        let rule = self.rule_at(index);
        let secret = if self.needs_captures[index] {
            let state = rule_scratch(&mut scratch.per_rule, rule, index);
            let captures = &mut state.captures;
            let exact = Input::new(chunk.buf)
                .range(whole.clone())
                .anchored(Anchored::Yes);
            rule.automaton()
                .search_captures_with(&mut state.cache, &exact, captures);
            secret_group(rule, captures, &whole)
        } else {
            Some(whole.clone())
        };
        self.report(index, chunk, whole, secret, out);
    }

    /// Reports a match of rule `index` with its secret if
    /// [`accepts`](Self::accepts) says so.
    fn report(
        &self,
        index: usize,
        chunk: &Chunk<'_>,
        whole: Range<usize>,
        secret: Option<Range<usize>>,
        out: &mut Vec<RawMatch>,
    ) {
        if whole.len() > self.rule_at(index).max_len() {
            return;
        }
        let Some(secret) = secret.filter(|s| !s.is_empty()) else {
            return;
        };
        if self.accepts(index, chunk, &whole, &secret) {
            out.push(RawMatch {
                rule: RuleIndex(index as u32),
                span: whole,
                secret,
            });
        }
    }

    /// Whether a match of rule `index` is reported: the chunk owns it, the
    /// secret reaches the entropy floor, no inline marker is on its line and
    /// no allowlist exempts it.
    fn accepts(
        &self,
        index: usize,
        chunk: &Chunk<'_>,
        span: &Range<usize>,
        secret: &Range<usize>,
    ) -> bool {
        let rule = self.rule_at(index);
        let buf = chunk.buf;
        let (line_start, owner_end) = line_window(buf, span, secret);
        if !chunk.owns(&(span.start..owner_end)) {
            return false;
        }
        if let Some(floor) = rule.entropy()
            && shannon_entropy(&buf[secret.clone()]) < floor
        {
            return false;
        }
        if self
            .markers
            .iter()
            .any(|f| f.find(&buf[line_start..owner_end]).is_some())
        {
            return false;
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
        !allowed
    }

    fn rule_at(&self, index: usize) -> &Rule {
        self.rules
            .iter()
            .as_slice()
            .get(index)
            .expect("rule index in range")
    }
}

/// Whether every match of `rule`'s regex provably starts with one of its
/// keywords (ASCII case-insensitively): the regex's prefix literals are a
/// finite set, each beginning with a keyword. A regex that starts with a
/// class or repetition (`[\w.-]{0,50}?key…`) does not qualify.
fn starts_with_keyword(rule: &Rule) -> bool {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let pattern = rule.pattern();
    let parsed = [false, true].into_iter().find_map(|unicode| {
        regex_syntax::ParserBuilder::new()
            .unicode(unicode)
            .utf8(false)
            .build()
            .parse(pattern)
            .ok()
    });
    let Some(hir) = parsed else { return false };
    let mut extractor = Extractor::new();
    extractor
        .kind(ExtractKind::Prefix)
        // Classes of two bytes are the case variants of one letter.
        .limit_class(2)
        .limit_repeat(1)
        .limit_literal_len(64)
        .limit_total(8192);
    let prefixes = extractor.extract(&hir);
    let Some(literals) = prefixes.literals() else {
        return false;
    };
    !literals.is_empty()
        && literals.iter().all(|lit| {
            let lit = lit.as_bytes();
            rule.keywords()
                .iter()
                .any(|k| lit.len() >= k.len() && lit[..k.len()].eq_ignore_ascii_case(k.as_bytes()))
        })
}

/// The secret of a match from its captures: the rule's secret group, or
/// gitleaks' default (the first non-empty group, else the whole match).
/// `None` if the secret group did not participate.
fn secret_group(rule: &Rule, captures: &Captures, whole: &Range<usize>) -> Option<Range<usize>> {
    match rule.secret_group() {
        Some(g) => captures.get_group(g).map(|s| s.range()),
        None => Some(
            (1..captures.group_len())
                .filter_map(|g| captures.get_group(g))
                .find(|s| !s.is_empty())
                .map_or_else(|| whole.clone(), |s| s.range()),
        ),
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
            spans: Vec::new(),
            anchors: Vec::new(),
            hits: Vec::new(),
            spill: Default::default(),
            last_span: vec![NONE; self.rules.len()],
            per_rule: std::iter::repeat_with(|| None)
                .take(self.rules.len())
                .collect(),
        }
    }

    fn scan_chunk_into(&self, chunk: &Chunk<'_>, scratch: &mut Scratch, out: &mut Vec<RawMatch>) {
        debug_assert!(chunk.payload_start <= chunk.buf.len());
        debug_assert_eq!(
            scratch.last_span.len(),
            self.rules.len(),
            "scratch from another engine"
        );
        self.collect_spans(chunk.buf, scratch);
        for i in 0..scratch.spans.len() {
            let span = scratch.spans[i];
            self.scan_span(span, chunk, scratch, out);
        }
        self.scan_anchors(chunk, scratch, out);
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

#[cfg(test)]
mod anchoring_tests {
    use super::*;

    fn rule(toml_rule: &str) -> Rule {
        let text = format!("[[rules]]\n{toml_rule}\n");
        RuleSet::from_toml(&text, "test")
            .unwrap()
            .iter()
            .next()
            .unwrap()
            .clone()
    }

    #[test]
    fn rules_starting_with_a_keyword_are_anchored() {
        let pat =
            rule("id = \"t\"\nregex = '''\\b(ghp_[0-9a-zA-Z]{36})\\b'''\nkeywords = [\"ghp_\"]");
        assert!(starts_with_keyword(&pat));
        let alternation = rule(
            "id = \"t\"\nregex = '''(?i)(?:api|token)[ =]{1,3}([a-z0-9]{16})'''\nkeywords = [\"api\", \"token\"]",
        );
        assert!(
            starts_with_keyword(&alternation),
            "case variants of both keywords"
        );
    }

    #[test]
    fn rules_that_may_start_elsewhere_are_not() {
        let prefixed = rule(
            "id = \"t\"\nregex = '''[\\w.-]{0,50}?(?:key)=([a-z0-9]{16})'''\nkeywords = [\"key\"]",
        );
        assert!(!starts_with_keyword(&prefixed));
        let other_start =
            rule("id = \"t\"\nregex = '''x(ghp_[0-9a-z]{4})'''\nkeywords = [\"ghp_\"]");
        assert!(!starts_with_keyword(&other_start));
        let shorter =
            rule("id = \"t\"\nregex = '''(?:gh|ghp_)[0-9a-z]{4}'''\nkeywords = [\"ghp_\"]");
        assert!(!starts_with_keyword(&shorter));
    }

    #[test]
    fn most_builtin_rules_are_anchored() {
        let engine = Engine::builtin();
        let anchored = engine.anchored.iter().filter(|a| **a).count();
        let names: Vec<&str> = engine
            .rules
            .iter()
            .zip(&engine.anchored)
            .filter(|(_, a)| !**a)
            .map(|(r, _)| r.id())
            .collect();
        eprintln!(
            "{anchored} of {} built-in rules anchored; not: {names:?}",
            engine.rules.len()
        );
        assert!(anchored > 0);
    }
}
