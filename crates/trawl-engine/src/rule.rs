//! Rules and rule sets: the data model, the gitleaks-format TOML loader and
//! the built-in set.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use aho_corasick::AhoCorasick;
use regex::bytes::{Regex, RegexBuilder};
use regex_automata::meta;
use serde::Deserialize;

use crate::error::{Error, Result};

/// The length cap given to a user rule whose regex can match unboundedly
/// long text (for example `secret=.+`): matches longer than this many bytes
/// are dropped, and the rule set carries a [`RuleWarning`] saying so.
pub const DEFAULT_MAX_MATCH_LEN: usize = 4096;

/// The origin name of the built-in rule set in errors and warnings.
const BUILTIN_ORIGIN: &str = "<builtin>";

/// The built-in rules, in the same gitleaks-compatible format users write,
/// one file per family, in the order they are loaded. Order matters: when
/// two rules report the identical secret, the one loaded first is kept, so
/// specific rules come before generic ones (`generic.toml` is last).
const BUILTIN_FILES: &[(&str, &str)] = &[
    ("rules/cloud.toml", include_str!("../rules/cloud.toml")),
    ("rules/vcs.toml", include_str!("../rules/vcs.toml")),
    ("rules/ci.toml", include_str!("../rules/ci.toml")),
    ("rules/chat.toml", include_str!("../rules/chat.toml")),
    (
        "rules/payments.toml",
        include_str!("../rules/payments.toml"),
    ),
    (
        "rules/messaging.toml",
        include_str!("../rules/messaging.toml"),
    ),
    (
        "rules/registries.toml",
        include_str!("../rules/registries.toml"),
    ),
    (
        "rules/databases.toml",
        include_str!("../rules/databases.toml"),
    ),
    (
        "rules/observability.toml",
        include_str!("../rules/observability.toml"),
    ),
    ("rules/ai.toml", include_str!("../rules/ai.toml")),
    ("rules/keys.toml", include_str!("../rules/keys.toml")),
    ("rules/saas.toml", include_str!("../rules/saas.toml")),
    ("rules/generic.toml", include_str!("../rules/generic.toml")),
];

/// Which text an allowlist's regexes are matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegexTarget {
    /// The secret (the rule's secret group); the default.
    Secret,
    /// The whole regex match.
    Match,
    /// The line holding the match, capped to a window around it.
    Line,
}

/// How an allowlist's criteria combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Condition {
    /// The match is allowed if any criterion holds (the default).
    Or,
    /// The match is allowed only if every criterion that is set holds.
    And,
}

/// A set of exceptions: matches it allows are not reported.
///
/// Criteria: `regexes` (against the secret, the match or the line, per
/// [`RegexTarget`]), `stopwords` (the secret contains one, ASCII
/// case-insensitively) and `paths` (regexes against the object's display
/// path). A global allowlist may name the rules it applies to
/// (`targetRules`); otherwise it applies to every rule.
#[derive(Debug, Clone)]
pub struct Allowlist {
    description: String,
    condition: Condition,
    target: RegexTarget,
    regexes: Vec<Regex>,
    stopwords: Vec<String>,
    stopword_matcher: Option<AhoCorasick>,
    paths: Vec<Regex>,
    target_rules: Vec<String>,
}

/// The texts an allowlist judges one match by.
pub(crate) struct MatchTexts<'a> {
    pub(crate) secret: &'a [u8],
    pub(crate) matched: &'a [u8],
    pub(crate) line: &'a [u8],
    pub(crate) path: &'a [u8],
}

impl Allowlist {
    /// The allowlist's description (may be empty).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// How the criteria combine.
    pub fn condition(&self) -> Condition {
        self.condition
    }

    /// What the regexes are matched against.
    pub fn regex_target(&self) -> RegexTarget {
        self.target
    }

    /// The regexes' source patterns.
    pub fn regexes(&self) -> impl Iterator<Item = &str> {
        self.regexes.iter().map(Regex::as_str)
    }

    /// The stopwords, lowercased.
    pub fn stopwords(&self) -> &[String] {
        &self.stopwords
    }

    /// The path regexes' source patterns.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.paths.iter().map(Regex::as_str)
    }

    /// The ids of the rules a global allowlist applies to; empty means all.
    pub fn target_rules(&self) -> &[String] {
        &self.target_rules
    }

    /// Whether this allowlist exempts the match described by `texts`.
    pub(crate) fn allows(&self, texts: &MatchTexts<'_>) -> bool {
        let target = match self.target {
            RegexTarget::Secret => texts.secret,
            RegexTarget::Match => texts.matched,
            RegexTarget::Line => texts.line,
        };
        let checks = [
            (!self.regexes.is_empty()).then(|| self.regexes.iter().any(|re| re.is_match(target))),
            self.stopword_matcher
                .as_ref()
                .map(|ac| ac.is_match(texts.secret)),
            (!self.paths.is_empty()).then(|| self.paths.iter().any(|re| re.is_match(texts.path))),
        ];
        let mut set = checks.iter().flatten().peekable();
        if set.peek().is_none() {
            return false;
        }
        match self.condition {
            Condition::Or => set.any(|&hit| hit),
            Condition::And => set.all(|&hit| hit),
        }
    }

    pub(crate) fn applies_to(&self, rule_id: &str) -> bool {
        self.target_rules.is_empty() || self.target_rules.iter().any(|t| t == rule_id)
    }
}

/// One detection rule.
///
/// A rule is a regex, the keywords that must occur for the regex to be worth
/// running (ASCII case-insensitively; a rule without keywords runs on every
/// chunk), an optional entropy floor on the secret, allowlists, and an
/// optional path regex restricting the objects it applies to.
#[derive(Debug, Clone)]
pub struct Rule {
    id: String,
    origin: String,
    description: String,
    pattern: String,
    automaton: meta::Regex,
    keyword_in_match: bool,
    secret_group: Option<usize>,
    keywords: Vec<String>,
    entropy: Option<f64>,
    allowlists: Vec<Allowlist>,
    path: Option<Regex>,
    max_len: usize,
    bounded: bool,
    examples: Vec<String>,
    near_misses: Vec<String>,
}

impl Rule {
    /// The stable rule id (kebab-case in the built-in set, e.g. `github-pat`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where the rule was last defined or extended: a file path, or
    /// `<builtin>/…` for a built-in rule.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// A human description of what the rule finds.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The regex, as written in the rule file. It is compiled in ASCII mode
    /// (`\w`, `\b`, `\s` and case folding are ASCII, `.` matches any byte)
    /// unless it needs Unicode (`\p{L}`), and searches arbitrary bytes.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The regex the engine searches with.
    pub(crate) fn automaton(&self) -> &meta::Regex {
        &self.automaton
    }

    /// Whether every match contains one of the keywords, so that the rule
    /// need only be confirmed around keyword occurrences.
    pub(crate) fn keyword_in_match(&self) -> bool {
        self.keyword_in_match
    }

    /// The capture group holding the secret. `None` means gitleaks' default:
    /// the first capture group that matched non-empty text, or the whole
    /// match if the regex has no group.
    pub fn secret_group(&self) -> Option<usize> {
        self.secret_group
    }

    /// The keywords, lowercased.
    pub fn keywords(&self) -> &[String] {
        &self.keywords
    }

    /// The minimum Shannon entropy of the secret, in bits per byte.
    pub fn entropy(&self) -> Option<f64> {
        self.entropy
    }

    /// The rule's own allowlists.
    pub fn allowlists(&self) -> &[Allowlist] {
        &self.allowlists
    }

    /// The regex an object's display path must match for the rule to apply.
    pub fn path(&self) -> Option<&Regex> {
        self.path.as_ref()
    }

    /// The longest match the rule reports, in bytes: the regex's maximum
    /// match length, or [`DEFAULT_MAX_MATCH_LEN`] if that is unbounded (and
    /// longer matches are then dropped).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Whether the regex itself bounds the match length (see
    /// [`max_len`](Self::max_len)).
    pub fn is_bounded(&self) -> bool {
        self.bounded
    }

    /// Texts the rule must find exactly once (trawl's `examples` field).
    pub fn examples(&self) -> &[String] {
        &self.examples
    }

    /// Texts the rule must not find (trawl's `near_misses` field).
    pub fn near_misses(&self) -> &[String] {
        &self.near_misses
    }
}

/// Something accepted with a caveat while loading rules: a field trawl
/// ignores, a rule it skips or caps. Callers should show them to the user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct RuleWarning {
    /// Where the rules came from (a path, or `<builtin>/…`).
    pub origin: String,
    /// The rule concerned; `None` for the file as a whole. For an ignored
    /// field that occurs in several rules, the first of them.
    pub rule_id: Option<String>,
    /// What the caveat is.
    pub message: String,
}

impl RuleWarning {
    fn rule(origin: &str, rule_id: &str, message: String) -> Self {
        RuleWarning {
            origin: origin.to_owned(),
            rule_id: Some(rule_id.to_owned()),
            message,
        }
    }

    fn file(origin: &str, message: String) -> Self {
        RuleWarning {
            origin: origin.to_owned(),
            rule_id: None,
            message,
        }
    }
}

impl fmt::Display for RuleWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rule_id {
            Some(id) => write!(f, "{}: rule {id}: {}", self.origin, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

/// An ordered list of rules plus global allowlists.
///
/// Order matters: when two rules report the very same secret, the earlier
/// (more specific) one is kept, so specific rules come before generic ones.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    allowlists: Vec<Allowlist>,
    warnings: Vec<RuleWarning>,
    includes_builtin: bool,
}

impl RuleSet {
    /// trawl's built-in rules (gitleaks ids where gitleaks has the rule).
    ///
    /// # Panics
    ///
    /// Only if the rule data compiled into the crate is broken; the crate's
    /// tests load it, so a released build does not panic.
    pub fn builtin() -> RuleSet {
        // Compiled once per process (a clone shares the compiled regexes),
        // one family file per thread.
        static BUILTIN: std::sync::OnceLock<RuleSet> = std::sync::OnceLock::new();
        BUILTIN
            .get_or_init(|| {
                let sets: Vec<RuleSet> = std::thread::scope(|scope| {
                    let loads: Vec<_> = BUILTIN_FILES
                        .iter()
                        .map(|(file, text)| {
                            scope.spawn(move || {
                                let origin = format!("{BUILTIN_ORIGIN}/{file}");
                                parse(text, &origin).and_then(|p| assemble(p, &origin, None, true))
                            })
                        })
                        .collect();
                    loads
                        .into_iter()
                        .map(|load| match load.join() {
                            Ok(Ok(set)) => set,
                            Ok(Err(e)) => panic!("trawl-engine's built-in rules are broken: {e}"),
                            Err(_) => panic!("loading trawl-engine's built-in rules panicked"),
                        })
                        .collect()
                });
                let mut all = RuleSet::default();
                for set in sets {
                    if let Some(twice) = set.rules.iter().find(|r| all.get(r.id()).is_some()) {
                        panic!(
                            "trawl-engine's built-in rule `{}` is defined twice",
                            twice.id()
                        );
                    }
                    all.extend(set);
                }
                all.includes_builtin = true;
                all
            })
            .clone()
    }

    /// Loads rules from gitleaks-format TOML text; `origin` names it in
    /// errors and warnings.
    ///
    /// The format is gitleaks v8's, read as gitleaks reads it:
    ///
    /// - `[[rules]]` with `id`, `description`, `regex`, `secretGroup`,
    ///   `entropy`, `keywords`, `path`, and allowlists as
    ///   `[[rules.allowlists]]` or the older `[rules.allowlist]` (not both);
    /// - an allowlist has `regexes`, `regexTarget` (`"secret"`, `"match"`,
    ///   `"line"`), `stopwords`, `paths`, `condition` (`"OR"`, `"AND"`),
    ///   `description`, and must have at least one criterion;
    /// - global allowlists as `[[allowlists]]` or the older `[allowlist]`
    ///   (not both), with optional `targetRules`, each of which must name a
    ///   rule of the assembled set;
    /// - `[extend]` with `useDefault = true` (the built-in rules) or `path`
    ///   (see [`from_file`](Self::from_file); an error here, since text has
    ///   no location), and `disabledRules`, the extended rules to leave
    ///   out. A rule whose id is an extended rule's is merged into it as
    ///   gitleaks merges: its non-empty `description`, non-zero `entropy`
    ///   and `secretGroup`, its `regex` and `path` replace the extended
    ///   rule's; its `keywords` and allowlists are added. Such a rule may
    ///   leave out `regex` (to add an allowlist to a built-in rule, say).
    ///   The file's other rules come first, ahead of the extended rules;
    /// - trawl's own per-rule `examples` and `near_misses`.
    ///
    /// Nothing is dropped silently: each field trawl does not act on
    /// (`title`, `tags`, an allowlist's `commits`, `[extend] url`, a typo)
    /// gives one [`RuleWarning`] per field per file; a path-only rule (a
    /// `path` and no `regex`) cannot be evaluated on content and is skipped
    /// with a warning; a rule whose regex is unbounded is capped at
    /// [`DEFAULT_MAX_MATCH_LEN`] with a warning (see
    /// [`warnings`](Self::warnings)).
    ///
    /// # Errors
    ///
    /// [`Error::Toml`] (with line, column and rule) if the text is not TOML
    /// of this shape; [`Error::InvalidRule`] naming `origin` and the rule if
    /// a rule is wrong: a regex the `regex` crate rejects, no `id`, neither
    /// `regex` nor `path`, a `secretGroup` beyond the regex's groups or
    /// negative, an `entropy` outside 0–8, an id used twice, an empty or
    /// malformed allowlist; [`Error::InvalidFile`] for a wrong global
    /// allowlist or `[extend]` table.
    pub fn from_toml(text: &str, origin: &str) -> Result<RuleSet> {
        let parsed = parse(text, origin)?;
        let base = match &parsed.extend {
            ExtendSource::None => None,
            ExtendSource::Builtin => Some(RuleSet::builtin()),
            ExtendSource::Path(path) => {
                return Err(Error::InvalidFile {
                    origin: origin.to_owned(),
                    reason: format!(
                        "`[extend] path = {path:?}` needs the file's location: load the file \
                         with `RuleSet::from_file`"
                    ),
                });
            }
        };
        assemble(parsed, origin, base, false)
    }

    /// Reads and loads a gitleaks-format rule file (see
    /// [`from_toml`](Self::from_toml)), following its `[extend] path`.
    ///
    /// The path is resolved as gitleaks resolves it, relative to the working
    /// folder, and failing that relative to the extending file's folder. A
    /// file extended is loaded the same way, recursively; a cycle is an
    /// error, and as in gitleaks, an `[extend]` more than two levels down is
    /// ignored (with a warning). Errors and warnings name each file by the
    /// path it was reached by.
    ///
    /// This and the `[extend]` it follows are the only file reads of this
    /// crate: loading configuration, never scanning.
    ///
    /// # Errors
    ///
    /// As [`from_toml`](Self::from_toml), plus [`Error::Io`] if a file
    /// cannot be read and [`Error::InvalidFile`] if an extended file cannot
    /// be found or the extension makes a cycle.
    pub fn from_file(path: &Path) -> Result<RuleSet> {
        load_file(path, &mut Vec::new())
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Rule> {
        self.rules.iter()
    }

    /// The rule with this id.
    pub fn get(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }

    /// The global allowlists.
    pub fn allowlists(&self) -> &[Allowlist] {
        &self.allowlists
    }

    /// Caveats from loading (ignored fields, skipped path-only rules, capped
    /// unbounded rules). Callers should show them to the user.
    pub fn warnings(&self) -> &[RuleWarning] {
        &self.warnings
    }

    /// Whether the built-in rules went into this set: it is
    /// [`builtin`](Self::builtin), or a file of it extends them
    /// (`[extend] useDefault = true`, possibly through `[extend] path`).
    pub fn includes_builtin(&self) -> bool {
        self.includes_builtin
    }

    /// Appends `other`'s rules, global allowlists and warnings. A rule of
    /// `other` whose id is already present replaces the existing rule, in
    /// place.
    pub fn extend(&mut self, other: RuleSet) {
        for rule in other.rules {
            match self.rules.iter_mut().find(|r| r.id == rule.id) {
                Some(slot) => *slot = rule,
                None => self.rules.push(rule),
            }
        }
        self.allowlists.extend(other.allowlists);
        self.warnings.extend(other.warnings);
        self.includes_builtin |= other.includes_builtin;
    }

    /// Lays `top` over this set: a rule of `top` whose id is already present
    /// replaces the existing rule in place; `top`'s other rules go first,
    /// ahead of this set's, since rules laid over others are the more
    /// specific ones (the earlier rule is kept when two report the same
    /// secret). Global allowlists and warnings are added.
    pub fn overlay(&mut self, top: RuleSet) {
        let mut first = Vec::new();
        for rule in top.rules {
            match self.rules.iter_mut().find(|r| r.id == rule.id) {
                Some(slot) => *slot = rule,
                None => first.push(rule),
            }
        }
        first.append(&mut self.rules);
        self.rules = first;
        self.allowlists.extend(top.allowlists);
        self.warnings.extend(top.warnings);
        self.includes_builtin |= top.includes_builtin;
    }

    /// Removes the rules with these ids.
    pub fn remove<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>) {
        let ids: Vec<&str> = ids.into_iter().collect();
        self.rules.retain(|r| !ids.contains(&r.id.as_str()));
    }
}

impl<'a> IntoIterator for &'a RuleSet {
    type Item = &'a Rule;
    type IntoIter = std::slice::Iter<'a, Rule>;

    fn into_iter(self) -> Self::IntoIter {
        self.rules.iter()
    }
}

// ---- the TOML shape ----

/// The keys of one table that the shape below does not know, caught so
/// that each can be warned about instead of silently dropped.
type Extra = BTreeMap<String, toml::Value>;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileToml {
    #[serde(default)]
    extend: Option<ExtendToml>,
    #[serde(default)]
    rules: Vec<RuleToml>,
    #[serde(default)]
    allowlist: Option<AllowlistToml>,
    #[serde(default)]
    allowlists: Vec<AllowlistToml>,
    #[serde(flatten)]
    extra: Extra,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExtendToml {
    #[serde(default)]
    use_default: bool,
    path: Option<String>,
    #[serde(default)]
    disabled_rules: Vec<String>,
    #[serde(flatten)]
    extra: Extra,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleToml {
    id: Option<String>,
    #[serde(default)]
    description: String,
    regex: Option<String>,
    secret_group: Option<i64>,
    entropy: Option<f64>,
    #[serde(default)]
    keywords: Vec<String>,
    path: Option<String>,
    #[serde(default)]
    allowlist: Option<AllowlistToml>,
    #[serde(default)]
    allowlists: Vec<AllowlistToml>,
    #[serde(default)]
    examples: Vec<String>,
    #[serde(default, rename = "near_misses")]
    near_misses: Vec<String>,
    #[serde(flatten)]
    extra: Extra,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AllowlistToml {
    #[serde(default)]
    description: String,
    condition: Option<String>,
    #[serde(default)]
    regexes: Vec<String>,
    regex_target: Option<String>,
    #[serde(default)]
    stopwords: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    target_rules: Vec<String>,
    #[serde(flatten)]
    extra: Extra,
}

/// A rule's regex, compiled once, as the `regex-automata` meta regex the
/// engine searches with: unlike the `regex` crate's `Regex`, it searches a
/// span of a buffer while seeing the bytes around it (for `\b` and
/// friends).
pub(crate) struct Compiled {
    pub(crate) pattern: String,
    pub(crate) automaton: meta::Regex,
    /// The longest text it can match (`None`: unbounded).
    pub(crate) max_len: Option<usize>,
}

/// Compiles `pattern`, in ASCII mode when it can; says whether it needed
/// Unicode mode.
pub(crate) fn compile(pattern: &str) -> Result<(Regex, bool), String> {
    // ASCII mode first: it is what gitleaks' Go regexes mean by `\w`, `\b`
    // and `\s`, it lets `.` match any byte, and it keeps the DFA fast on
    // non-ASCII input. Patterns that need Unicode (`\p{L}`) get it.
    let mut last_err = String::new();
    for unicode in [false, true] {
        let built = RegexBuilder::new(pattern)
            .unicode(unicode)
            .size_limit(64 << 20)
            .dfa_size_limit(16 << 20)
            .build();
        match built {
            Ok(regex) => return Ok((regex, unicode)),
            Err(e) => last_err = e.to_string(),
        }
    }
    Err(last_err)
}

/// Compiles a rule's regex (see [`Compiled`]), in ASCII mode when it can,
/// as [`compile`] does.
pub(crate) fn compile_rule(pattern: &str) -> Result<Compiled, String> {
    let mut last_err = String::new();
    for unicode in [false, true] {
        let hir = match regex_syntax::ParserBuilder::new()
            .unicode(unicode)
            .utf8(false)
            .build()
            .parse(pattern)
        {
            Ok(hir) => hir,
            Err(e) => {
                last_err = e.to_string();
                continue;
            }
        };
        let built = meta::Regex::builder()
            .configure(
                meta::Config::new()
                    .utf8_empty(false)
                    .nfa_size_limit(Some(64 << 20))
                    .hybrid_cache_capacity(16 << 20),
            )
            .build_from_hir(&hir);
        match built {
            Ok(automaton) => {
                return Ok(Compiled {
                    pattern: pattern.to_owned(),
                    automaton,
                    max_len: hir.properties().maximum_len(),
                });
            }
            Err(e) => last_err = e.to_string(),
        }
    }
    Err(last_err)
}

// ---- loading: parse one file, then assemble it on top of what it extends ----

/// What a file's `[extend]` table asks for.
enum ExtendSource {
    /// Nothing: the file stands alone.
    None,
    /// The built-in rules (`useDefault = true`).
    Builtin,
    /// Another rule file, as written in the file.
    Path(String),
}

/// One rule as written in a file, before it is merged into the rule of the
/// same id it may extend, or finished into a standalone [`Rule`]. Unset
/// fields are empty, `0` or `None`, as gitleaks reads them.
struct Draft {
    id: String,
    description: String,
    regex: Option<Compiled>,
    secret_group: usize,
    entropy: Option<f64>,
    keywords: Vec<String>,
    path: Option<Regex>,
    allowlists: Vec<Allowlist>,
    examples: Vec<String>,
    near_misses: Vec<String>,
}

/// One file, parsed and checked on its own.
struct Parsed {
    drafts: Vec<Draft>,
    globals: Vec<Allowlist>,
    extend: ExtendSource,
    disabled_rules: Vec<String>,
    warnings: Vec<RuleWarning>,
}

/// gitleaks follows `[extend]` at most this many levels deep (a file, what
/// it extends, and what that extends); deeper `[extend]` tables are ignored
/// there, and ignored here with a warning.
const MAX_EXTEND_DEPTH: usize = 2;

/// Loads `path` and what it extends. `chain` holds the canonical paths of
/// the files extending it, outermost first, for the cycle check.
fn load_file(path: &Path, chain: &mut Vec<PathBuf>) -> Result<RuleSet> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut parsed = parse(&text, &origin)?;
    let base = match std::mem::replace(&mut parsed.extend, ExtendSource::None) {
        ExtendSource::None => None,
        _ if chain.len() >= MAX_EXTEND_DEPTH => {
            parsed.warnings.push(RuleWarning::file(
                &origin,
                format!(
                    "`[extend]` ignored: gitleaks follows at most {MAX_EXTEND_DEPTH} levels \
                     of extension and ignores deeper ones"
                ),
            ));
            None
        }
        ExtendSource::Builtin => Some(RuleSet::builtin()),
        ExtendSource::Path(target) => {
            let resolved = resolve_extend_path(&target, path, &origin)?;
            let me = canonical(path);
            let them = canonical(&resolved);
            if them == me || chain.contains(&them) {
                let cycle: Vec<String> = chain
                    .iter()
                    .chain([&me, &them])
                    .map(|p| p.display().to_string())
                    .collect();
                return Err(Error::InvalidFile {
                    origin,
                    reason: format!("`[extend] path` makes a cycle: {}", cycle.join(" -> ")),
                });
            }
            chain.push(me);
            let base = load_file(&resolved, chain);
            chain.pop();
            Some(base?)
        }
    };
    assemble(parsed, &origin, base, false)
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_owned())
}

/// Finds the file an `[extend] path` names: relative to the working folder
/// first, as gitleaks reads it, then relative to the extending file's
/// folder.
fn resolve_extend_path(target: &str, extending: &Path, origin: &str) -> Result<PathBuf> {
    let as_given = Path::new(target);
    if as_given.is_file() {
        return Ok(as_given.to_owned());
    }
    let beside = extending
        .parent()
        .map_or_else(|| as_given.to_owned(), |dir| dir.join(as_given));
    if !as_given.is_absolute() && beside.is_file() {
        return Ok(beside);
    }
    Err(Error::InvalidFile {
        origin: origin.to_owned(),
        reason: format!(
            "`[extend] path` {target:?} not found (looked relative to the working folder, \
             then at {})",
            beside.display()
        ),
    })
}

/// Parses one file's text and checks each rule and allowlist on its own.
fn parse(text: &str, origin: &str) -> Result<Parsed> {
    let file: FileToml = toml::from_str(text).map_err(|e| toml_error(text, origin, &e))?;
    let mut fields = FieldWarnings::default();
    fields.note("", &file.extra, None);
    let mut drafts: Vec<Draft> = Vec::with_capacity(file.rules.len());
    for (n, raw) in file.rules.into_iter().enumerate() {
        let name = match &raw.id {
            Some(id) if !id.trim().is_empty() => id.clone(),
            _ => format!("#{}", n + 1),
        };
        let invalid = |reason: String| Error::InvalidRule {
            origin: origin.to_owned(),
            rule_id: name.clone(),
            reason,
        };
        fields.note("rules.", &raw.extra, Some(&name));
        let rule_allowlists = raw.allowlist.iter().map(|a| ("rules.allowlist.", a));
        for (prefix, a) in
            rule_allowlists.chain(raw.allowlists.iter().map(|a| ("rules.allowlists.", a)))
        {
            fields.note(prefix, &a.extra, Some(&name));
            if !a.target_rules.is_empty() {
                fields.note_one(&format!("{prefix}targetRules"), Some(&name));
            }
        }
        let draft = parse_rule(raw, &invalid)?;
        if drafts.iter().any(|d| d.id == draft.id) {
            return Err(invalid(
                "duplicate rule id: another `[[rules]]` entry of this file has it".to_owned(),
            ));
        }
        drafts.push(draft);
    }
    if file.allowlist.is_some() && !file.allowlists.is_empty() {
        return Err(Error::InvalidFile {
            origin: origin.to_owned(),
            reason: "`[allowlist]` and `[[allowlists]]` cannot be used together (as in gitleaks)"
                .to_owned(),
        });
    }
    let global_key = if file.allowlist.is_some() {
        "allowlist"
    } else {
        "allowlists"
    };
    let mut globals = Vec::new();
    for (n, raw) in file
        .allowlist
        .into_iter()
        .chain(file.allowlists)
        .enumerate()
    {
        fields.note(&format!("{global_key}."), &raw.extra, None);
        let invalid = |reason: String| Error::InvalidFile {
            origin: origin.to_owned(),
            reason: format!("global allowlist #{}: {reason}", n + 1),
        };
        globals.push(build_allowlist(raw, true, &invalid)?);
    }
    let (extend, disabled_rules) = match file.extend {
        None => (ExtendSource::None, Vec::new()),
        Some(ext) => {
            fields.note("extend.", &ext.extra, None);
            let source = match (ext.use_default, ext.path) {
                (true, Some(_)) => {
                    return Err(Error::InvalidFile {
                        origin: origin.to_owned(),
                        reason: "`[extend]` cannot set both `useDefault` and `path` \
                                 (as in gitleaks)"
                            .to_owned(),
                    });
                }
                (true, None) => ExtendSource::Builtin,
                (false, Some(path)) if !path.is_empty() => ExtendSource::Path(path),
                (false, _) => ExtendSource::None,
            };
            (source, ext.disabled_rules)
        }
    };
    let mut warnings = fields.into_warnings(origin);
    if matches!(extend, ExtendSource::None) && !disabled_rules.is_empty() {
        warnings.push(RuleWarning::file(
            origin,
            "`[extend] disabledRules` has no effect without `useDefault` or `path` \
             (as in gitleaks)"
                .to_owned(),
        ));
    }
    Ok(Parsed {
        drafts,
        globals,
        extend,
        disabled_rules,
        warnings,
    })
}

/// Checks one `[[rules]]` entry on its own (what needs the rule it may
/// extend is checked when the file is assembled).
fn parse_rule(raw: RuleToml, invalid: &dyn Fn(String) -> Error) -> Result<Draft> {
    let id = match raw.id {
        Some(id) if !id.trim().is_empty() => id,
        _ => return Err(invalid("missing `id`".to_owned())),
    };
    let regex = raw
        .regex
        .filter(|p| !p.is_empty())
        .map(|p| compile_rule(&p))
        .transpose()
        .map_err(|e| invalid(format!("invalid `regex`: {e}")))?;
    let secret_group = match raw.secret_group {
        None => 0,
        Some(g) => {
            usize::try_from(g).map_err(|_| invalid(format!("`secretGroup` {g} is negative")))?
        }
    };
    if let Some(e) = raw.entropy
        && !(0.0..=8.0).contains(&e)
    {
        return Err(invalid(format!(
            "`entropy` {e} is outside 0.0..=8.0 (a byte string's Shannon entropy is at most \
             8 bits per byte, so the rule could never report)"
        )));
    }
    let mut keywords = Vec::with_capacity(raw.keywords.len());
    for k in raw.keywords {
        if k.is_empty() {
            return Err(invalid("empty keyword".to_owned()));
        }
        let k = k.to_lowercase();
        if !keywords.contains(&k) {
            keywords.push(k);
        }
    }
    let path = raw
        .path
        .filter(|p| !p.is_empty())
        .map(|p| compile(&p).map(|(re, _)| re))
        .transpose()
        .map_err(|e| invalid(format!("invalid `path`: {e}")))?;
    if raw.allowlist.is_some() && !raw.allowlists.is_empty() {
        return Err(invalid(
            "`[rules.allowlist]` and `[[rules.allowlists]]` cannot be used together \
             (as in gitleaks)"
                .to_owned(),
        ));
    }
    let allowlists = raw
        .allowlist
        .into_iter()
        .chain(raw.allowlists)
        .enumerate()
        .map(|(n, a)| {
            let invalid = |reason: String| invalid(format!("allowlist #{}: {reason}", n + 1));
            build_allowlist(a, false, &invalid)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Draft {
        id,
        description: raw.description,
        regex,
        secret_group,
        entropy: raw.entropy,
        keywords,
        path,
        allowlists,
        examples: raw.examples,
        near_misses: raw.near_misses,
    })
}

/// Puts a parsed file on top of what it extends, the way gitleaks does, and
/// checks what needs the whole: secret groups against merged regexes, rules
/// with nothing to match, `targetRules`.
fn assemble(parsed: Parsed, origin: &str, base: Option<RuleSet>, strict: bool) -> Result<RuleSet> {
    let extends = base.is_some();
    let mut set = base.unwrap_or_default();
    set.warnings.extend(parsed.warnings);
    if extends {
        for id in &parsed.disabled_rules {
            if set.get(id).is_none() {
                set.warnings.push(RuleWarning::file(
                    origin,
                    format!(
                        "`[extend] disabledRules` names `{id}`, which is not a rule of the \
                         extended rules (as gitleaks, ignored)"
                    ),
                ));
            }
        }
        set.remove(parsed.disabled_rules.iter().map(String::as_str));
    }
    let mut own = Vec::new();
    for draft in parsed.drafts {
        let id = draft.id.clone();
        let invalid = |reason: String| Error::InvalidRule {
            origin: origin.to_owned(),
            rule_id: id.clone(),
            reason,
        };
        if let Some(slot) = set.rules.iter_mut().find(|r| r.id == draft.id) {
            merge(slot, draft, origin, &mut set.warnings, &invalid)?;
        } else if let Some(rule) = finish(draft, origin, strict, &mut set.warnings, &invalid)? {
            own.push(rule);
        }
    }
    // A file's own rules go before the rules it extends: they are the more
    // specific ones, and the earlier rule is kept when two report the same
    // secret.
    own.append(&mut set.rules);
    set.rules = own;
    for (n, allowlist) in parsed.globals.iter().enumerate() {
        if let Some(missing) = allowlist
            .target_rules
            .iter()
            .find(|id| set.get(id).is_none())
        {
            return Err(Error::InvalidFile {
                origin: origin.to_owned(),
                reason: format!(
                    "global allowlist #{}: `targetRules` names `{missing}`, which is not a rule \
                     (as in gitleaks)",
                    n + 1
                ),
            });
        }
    }
    let mut globals = parsed.globals;
    globals.append(&mut set.allowlists);
    set.allowlists = globals;
    Ok(set)
}

/// The length bound of a rule's regex, or the default cap with a warning
/// (an error for built-in rules).
fn bound(
    max_len: Option<usize>,
    id: &str,
    origin: &str,
    strict: bool,
    warnings: &mut Vec<RuleWarning>,
) -> Result<(usize, bool)> {
    match max_len {
        Some(n) => Ok((n, true)),
        None if strict => Err(Error::UnboundedRule {
            origin: origin.to_owned(),
            rule_id: id.to_owned(),
        }),
        None => {
            warnings.push(RuleWarning::rule(
                origin,
                id,
                format!(
                    "the regex can match unboundedly long text; matches longer than \
                     {DEFAULT_MAX_MATCH_LEN} bytes are dropped"
                ),
            ));
            Ok((DEFAULT_MAX_MATCH_LEN, false))
        }
    }
}

fn check_secret_group(
    regex: &meta::Regex,
    group: usize,
    invalid: &dyn Fn(String) -> Error,
) -> Result<()> {
    let groups = regex.captures_len() - 1;
    if group > groups {
        return Err(invalid(format!(
            "`secretGroup` is {group} but the regex has {groups} capture group(s)"
        )));
    }
    Ok(())
}

/// Makes a standalone rule of a draft; `None` for a path-only rule, which
/// is skipped with a warning.
fn finish(
    draft: Draft,
    origin: &str,
    strict: bool,
    warnings: &mut Vec<RuleWarning>,
    invalid: &dyn Fn(String) -> Error,
) -> Result<Option<Rule>> {
    let Some(compiled) = draft.regex else {
        if draft.path.is_some() {
            warnings.push(RuleWarning::rule(
                origin,
                &draft.id,
                "path-only rule (no `regex`) skipped: trawl matches content, not file names"
                    .to_owned(),
            ));
            return Ok(None);
        }
        return Err(invalid(
            "neither `regex` nor `path`: the rule would have no effect (only a rule that \
             extends a rule of the same id from `[extend]` may leave both out)"
                .to_owned(),
        ));
    };
    check_secret_group(&compiled.automaton, draft.secret_group, invalid)?;
    let (max_len, bounded) = bound(compiled.max_len, &draft.id, origin, strict, warnings)?;
    Ok(Some(Rule {
        // Built-in rules are written so that every match contains one of
        // the keywords (a test checks every example); user rules follow
        // gitleaks, where a keyword anywhere in the text is enough.
        keyword_in_match: strict && !draft.keywords.is_empty(),
        id: draft.id,
        origin: origin.to_owned(),
        description: draft.description,
        pattern: compiled.pattern,
        automaton: compiled.automaton,
        secret_group: (draft.secret_group > 0).then_some(draft.secret_group),
        keywords: draft.keywords,
        entropy: draft.entropy,
        allowlists: draft.allowlists,
        path: draft.path,
        max_len,
        bounded,
        examples: draft.examples,
        near_misses: draft.near_misses,
    }))
}

/// Merges a file's rule into the extended rule of the same id, as gitleaks
/// does: a non-empty description, a non-zero entropy or secret group, a
/// regex or a path replace the extended rule's; keywords and allowlists are
/// added to its own.
fn merge(
    base: &mut Rule,
    draft: Draft,
    origin: &str,
    warnings: &mut Vec<RuleWarning>,
    invalid: &dyn Fn(String) -> Error,
) -> Result<()> {
    if let Some(compiled) = draft.regex {
        let (max_len, bounded) = bound(compiled.max_len, &draft.id, origin, false, warnings)?;
        base.pattern = compiled.pattern;
        base.automaton = compiled.automaton;
        base.max_len = max_len;
        base.bounded = bounded;
        // The new regex's matches need not contain the keywords.
        base.keyword_in_match = false;
        base.examples = draft.examples;
        base.near_misses = draft.near_misses;
    } else {
        base.examples.extend(draft.examples);
        base.near_misses.extend(draft.near_misses);
    }
    if !draft.description.is_empty() {
        base.description = draft.description;
    }
    if let Some(e) = draft.entropy
        && e != 0.0
    {
        base.entropy = Some(e);
    }
    if draft.secret_group > 0 {
        base.secret_group = Some(draft.secret_group);
    }
    check_secret_group(&base.automaton, base.secret_group.unwrap_or(0), invalid)?;
    if draft.path.is_some() {
        base.path = draft.path;
    }
    for k in draft.keywords {
        if !base.keywords.contains(&k) {
            base.keywords.push(k);
        }
    }
    base.allowlists.extend(draft.allowlists);
    base.origin = origin.to_owned();
    Ok(())
}

fn build_allowlist(
    raw: AllowlistToml,
    global: bool,
    invalid: &dyn Fn(String) -> Error,
) -> Result<Allowlist> {
    let condition = match raw
        .condition
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("OR") | Some("||") | Some("") => Condition::Or,
        Some("AND") | Some("&&") => Condition::And,
        Some(other) => {
            return Err(invalid(format!(
                "allowlist `condition` must be \"OR\" or \"AND\", not {other:?}"
            )));
        }
    };
    let target = match raw.regex_target.as_deref() {
        None | Some("") | Some("secret") => RegexTarget::Secret,
        Some("match") => RegexTarget::Match,
        Some("line") => RegexTarget::Line,
        Some(other) => {
            return Err(invalid(format!(
                "allowlist `regexTarget` must be \"secret\", \"match\" or \"line\", not {other:?}"
            )));
        }
    };
    // gitleaks also counts `commits` here; trawl warns that it ignores
    // them, and an allowlist of commits alone then allows nothing.
    let has_commits = raw
        .extra
        .get("commits")
        .and_then(toml::Value::as_array)
        .is_some_and(|c| !c.is_empty());
    if raw.regexes.is_empty() && raw.paths.is_empty() && raw.stopwords.is_empty() && !has_commits {
        return Err(invalid(
            "empty allowlist: it needs at least one of `regexes`, `paths` or `stopwords` \
             (as in gitleaks)"
                .to_owned(),
        ));
    }
    let compile_all = |what: &str, list: Vec<String>| -> Result<Vec<Regex>> {
        list.iter()
            .map(|p| {
                compile(p)
                    .map(|(re, _)| re)
                    .map_err(|e| invalid(format!("invalid allowlist {what} {p:?}: {e}")))
            })
            .collect()
    };
    let regexes = compile_all("regex", raw.regexes)?;
    let paths = compile_all("path", raw.paths)?;
    let mut stopwords: Vec<String> = Vec::with_capacity(raw.stopwords.len());
    for s in raw.stopwords {
        let s = s.to_lowercase();
        if s.is_empty() {
            return Err(invalid("empty allowlist stopword".to_owned()));
        }
        if !stopwords.contains(&s) {
            stopwords.push(s);
        }
    }
    let stopword_matcher = if stopwords.is_empty() {
        None
    } else {
        Some(
            AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(&stopwords)
                .map_err(|e| invalid(format!("cannot build the stopword matcher: {e}")))?,
        )
    };
    Ok(Allowlist {
        description: raw.description,
        condition,
        target,
        regexes,
        stopwords,
        stopword_matcher,
        paths,
        // A rule's allowlist has no `targetRules` (warned about when parsed).
        target_rules: if global { raw.target_rules } else { Vec::new() },
    })
}

// ---- warnings about fields trawl does not use ----

/// Fields trawl reads but does not act on, one warning per field per file,
/// in the order they first occur.
#[derive(Default)]
struct FieldWarnings {
    /// (dotted field name, the first rule it occurs in, how many times).
    seen: Vec<(String, Option<String>, usize)>,
}

impl FieldWarnings {
    fn note(&mut self, prefix: &str, extra: &Extra, rule: Option<&str>) {
        for key in extra.keys() {
            self.note_one(&format!("{prefix}{key}"), rule);
        }
    }

    fn note_one(&mut self, field: &str, rule: Option<&str>) {
        match self.seen.iter_mut().find(|(f, _, _)| f == field) {
            Some((_, _, n)) => *n += 1,
            None => self
                .seen
                .push((field.to_owned(), rule.map(str::to_owned), 1)),
        }
    }

    fn into_warnings(self, origin: &str) -> Vec<RuleWarning> {
        self.seen
            .into_iter()
            .map(|(field, rule, n)| {
                let times = if n > 1 {
                    format!(" ({n} times in this file)")
                } else {
                    String::new()
                };
                RuleWarning {
                    origin: origin.to_owned(),
                    rule_id: rule,
                    message: format!("field `{field}` ignored: {}{times}", why_ignored(&field)),
                }
            })
            .collect()
    }
}

/// Why trawl ignores a field, for the gitleaks fields it knows.
fn why_ignored(field: &str) -> &'static str {
    let last = field.rsplit('.').next().unwrap_or(field);
    match (field, last) {
        ("title" | "description", _) => "informational; it changes nothing in trawl",
        ("rules.tags", _) => "trawl's findings carry no tags",
        ("rules.skipReport", _) => {
            "not supported: trawl reports this rule's findings like any other rule's"
        }
        ("rules.required", _) => {
            "composite rules are not supported: the rule reports its own matches, whatever \
             the required rules find"
        }
        ("extend.url", _) => {
            "extending from a URL is not supported (gitleaks does not do it either)"
        }
        (_, "targetRules") => "only a global `[[allowlists]]` entry can have `targetRules`",
        (_, "commits") => "trawl does not scan git history, so commit allowlists never apply",
        _ => "not a field of gitleaks' format (a typo?)",
    }
}

// ---- where a TOML error is ----

/// An [`Error::Toml`] with the line, column and enclosing rule of `e`.
fn toml_error(text: &str, origin: &str, e: &toml::de::Error) -> Error {
    let (line, column, rule_id) = match e.span() {
        Some(span) => {
            let (line, column) = line_col(text, span.start);
            (Some(line), Some(column), rule_around(text, line))
        }
        None => (None, None, None),
    };
    Error::Toml {
        origin: origin.to_owned(),
        line,
        column,
        rule_id,
        message: e.message().trim().to_owned(),
    }
}

/// 1-based line and character column of byte `offset` of `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = 1 + before.matches('\n').count();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, 1 + before[line_start..].chars().count())
}

/// The id of the `[[rules]]` entry that line `line` (1-based) belongs to
/// (`#N` when it has no `id = "…"` line), or `None` if the line is not in
/// one. A textual scan, since the text did not parse: up to the nearest
/// table header that is not a rule's sub-table, then down from that
/// `[[rules]]` header to its `id` line.
fn rule_around(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let upto = line.min(lines.len());
    let header = (0..upto).rev().find_map(|i| {
        let name = header_name(lines[i])?;
        if name.starts_with("rules.") {
            None
        } else {
            Some((
                i,
                name == "rules" && lines[i].trim_start().starts_with("[["),
            ))
        }
    });
    let (start, is_rule) = header?;
    if !is_rule {
        return None;
    }
    let ordinal = lines[..=start]
        .iter()
        .filter(|l| header_name(l).as_deref() == Some("rules") && l.trim_start().starts_with("[["))
        .count();
    lines[start + 1..]
        .iter()
        .take_while(|l| header_name(l).is_none())
        .find_map(|l| id_value(l))
        .or_else(|| Some(format!("#{ordinal}")))
}

/// The table name of a `[name]` or `[[name]]` header line.
fn header_name(line: &str) -> Option<String> {
    let t = line.trim();
    if !t.starts_with('[') {
        return None;
    }
    let inner = t.trim_start_matches('[');
    let name = inner.split(']').next()?;
    Some(
        name.split('.')
            .map(|p| p.trim().trim_matches(['"', '\'']))
            .collect::<Vec<_>>()
            .join("."),
    )
}

/// The value of an `id = "…"` line.
fn id_value(line: &str) -> Option<String> {
    let rest = line
        .trim()
        .strip_prefix("id")?
        .trim_start()
        .strip_prefix('=')?
        .trim();
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let body = &rest[1..];
    let end = body.find(quote)?;
    Some(body[..end].to_owned())
}
