//! Rules and rule sets: the data model, the gitleaks-format TOML loader and
//! the built-in set.

use std::fmt;

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
const BUILTIN_FILES: &[(&str, &str)] =
    &[("rules/builtin.toml", include_str!("../rules/builtin.toml"))];

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
    description: String,
    regex: Regex,
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

    /// A human description of what the rule finds.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The compiled regex (byte-oriented: it scans arbitrary bytes).
    pub fn regex(&self) -> &Regex {
        &self.regex
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

/// Something accepted with a caveat while loading rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleWarning {
    /// Where the rules came from.
    pub origin: String,
    /// The rule concerned.
    pub rule_id: String,
    /// What the caveat is.
    pub message: String,
}

impl fmt::Display for RuleWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: rule `{}`: {}",
            self.origin, self.rule_id, self.message
        )
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
}

impl RuleSet {
    /// trawl's built-in rules (gitleaks ids where gitleaks has the rule).
    ///
    /// # Panics
    ///
    /// Only if the rule data compiled into the crate is broken; the crate's
    /// tests load it, so a released build does not panic.
    pub fn builtin() -> RuleSet {
        let mut all = RuleSet::default();
        for (file, text) in BUILTIN_FILES {
            let set = match load(text, &format!("{BUILTIN_ORIGIN}/{file}"), true) {
                Ok(set) => set,
                Err(e) => panic!("trawl-engine's built-in rules are broken: {e}"),
            };
            if let Some(twice) = set.rules.iter().find(|r| all.get(r.id()).is_some()) {
                panic!(
                    "trawl-engine's built-in rule `{}` is defined twice",
                    twice.id()
                );
            }
            all.extend(set);
        }
        all
    }

    /// Loads rules from gitleaks-format TOML.
    ///
    /// Accepted: `[[rules]]` with `id`, `description`, `regex`,
    /// `secretGroup`, `entropy`, `keywords`, `path`, and allowlists as
    /// `[[rules.allowlists]]` or `[rules.allowlist]` (`regexes`,
    /// `regexTarget` = `"secret"`/`"match"`/`"line"`, `stopwords`, `paths`,
    /// `condition` = `"OR"`/`"AND"`); global allowlists as `[allowlist]` or
    /// `[[allowlists]]` (with optional `targetRules`); `[extend]` with
    /// `useDefault = true` (the built-in rules first, then these; a rule
    /// with an existing id replaces it) and `disabledRules`; trawl's own
    /// per-rule `examples` and `near_misses`. Unknown fields are ignored, so
    /// gitleaks files load unchanged.
    ///
    /// Path-only rules (a `path` and no `regex`) cannot be evaluated on
    /// content and are skipped with a warning; rules whose regex is
    /// unbounded are capped at [`DEFAULT_MAX_MATCH_LEN`] with a warning (see
    /// [`warnings`](Self::warnings)).
    ///
    /// # Errors
    ///
    /// [`Error::Toml`] if the text is not TOML of this shape,
    /// [`Error::InvalidRule`] naming `origin` and the rule if a rule is wrong
    /// (bad regex, secret group out of range, missing id, duplicate id, bad
    /// entropy, bad allowlist).
    pub fn from_toml(text: &str, origin: &str) -> Result<RuleSet> {
        load(text, origin, false)
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

    /// Caveats from loading (skipped path-only rules, capped unbounded
    /// rules). Callers should show them to the user.
    pub fn warnings(&self) -> &[RuleWarning] {
        &self.warnings
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
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExtendToml {
    #[serde(default)]
    use_default: bool,
    #[serde(default)]
    disabled_rules: Vec<String>,
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
}

/// A rule's regex compiled twice over the same syntax: the `regex` crate's
/// (the public face of a [`Rule`]) and the `regex-automata` meta regex the
/// engine searches with, because only the latter searches a span of a
/// buffer while seeing the bytes around it (for `\b` and friends).
pub(crate) struct Compiled {
    pub(crate) regex: Regex,
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

/// Compiles a rule's regex for both faces (see [`Compiled`]).
pub(crate) fn compile_rule(pattern: &str) -> Result<Compiled, String> {
    let (regex, unicode) = compile(pattern)?;
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(unicode)
        .utf8(false)
        .build()
        .parse(pattern)
        .map_err(|e| e.to_string())?;
    let automaton = meta::Regex::builder()
        .configure(
            meta::Config::new()
                .utf8_empty(false)
                .nfa_size_limit(Some(64 << 20))
                .hybrid_cache_capacity(16 << 20),
        )
        .build_from_hir(&hir)
        .map_err(|e| e.to_string())?;
    Ok(Compiled {
        regex,
        automaton,
        max_len: hir.properties().maximum_len(),
    })
}

fn load(text: &str, origin: &str, strict: bool) -> Result<RuleSet> {
    let file: FileToml = toml::from_str(text).map_err(|e| Error::Toml {
        origin: origin.to_owned(),
        message: e.to_string(),
    })?;
    let mut own = RuleSet::default();
    for (n, raw) in file.rules.into_iter().enumerate() {
        let name = raw.id.clone().unwrap_or_else(|| format!("#{}", n + 1));
        let invalid = |reason: String| Error::InvalidRule {
            origin: origin.to_owned(),
            rule_id: name.clone(),
            reason,
        };
        if let Some(rule) = build_rule(raw, origin, strict, &mut own.warnings, &invalid)? {
            if own.rules.iter().any(|r| r.id == rule.id) {
                return Err(invalid("duplicate rule id".to_owned()));
            }
            own.rules.push(rule);
        }
    }
    let globals = file.allowlist.into_iter().chain(file.allowlists);
    for (n, raw) in globals.enumerate() {
        let invalid = |reason: String| Error::InvalidRule {
            origin: origin.to_owned(),
            rule_id: format!("<global allowlist #{}>", n + 1),
            reason,
        };
        own.allowlists.push(build_allowlist(raw, &invalid)?);
    }
    match file.extend {
        Some(ext) if ext.use_default => {
            let mut set = RuleSet::builtin();
            set.remove(ext.disabled_rules.iter().map(String::as_str));
            set.extend(own);
            Ok(set)
        }
        Some(ext) => {
            own.remove(ext.disabled_rules.iter().map(String::as_str));
            Ok(own)
        }
        None => Ok(own),
    }
}

fn build_rule(
    raw: RuleToml,
    origin: &str,
    strict: bool,
    warnings: &mut Vec<RuleWarning>,
    invalid: &dyn Fn(String) -> Error,
) -> Result<Option<Rule>> {
    let id = match raw.id {
        Some(id) if !id.trim().is_empty() => id,
        _ => return Err(invalid("missing `id`".to_owned())),
    };
    let Some(pattern) = raw.regex else {
        if raw.path.is_some() {
            warnings.push(RuleWarning {
                origin: origin.to_owned(),
                rule_id: id,
                message: "path-only rule (no `regex`) skipped: trawl matches content".to_owned(),
            });
            return Ok(None);
        }
        return Err(invalid("missing `regex`".to_owned()));
    };
    let Compiled {
        regex,
        automaton,
        max_len,
    } = compile_rule(&pattern).map_err(|e| invalid(format!("invalid `regex`: {e}")))?;
    let groups = regex.captures_len() - 1;
    let secret_group = match raw.secret_group {
        None | Some(0) => None,
        Some(g) if g < 0 => return Err(invalid(format!("`secretGroup` {g} is negative"))),
        Some(g) => {
            let g = usize::try_from(g).unwrap_or(usize::MAX);
            if g > groups {
                return Err(invalid(format!(
                    "`secretGroup` is {g} but the regex has {groups} capture group(s)"
                )));
            }
            Some(g)
        }
    };
    if let Some(e) = raw.entropy
        && !(0.0..=8.0).contains(&e)
    {
        return Err(invalid(format!("`entropy` {e} is outside 0.0..=8.0")));
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
        .map(|p| compile(&p).map(|(re, _)| re))
        .transpose()
        .map_err(|e| invalid(format!("invalid `path`: {e}")))?;
    let allowlists = raw
        .allowlist
        .into_iter()
        .chain(raw.allowlists)
        .map(|a| build_allowlist(a, invalid))
        .collect::<Result<Vec<_>>>()?;
    let (max_len, bounded) = match max_len {
        Some(n) => (n, true),
        None if strict => {
            return Err(Error::UnboundedRule {
                origin: origin.to_owned(),
                rule_id: id,
            });
        }
        None => {
            warnings.push(RuleWarning {
                origin: origin.to_owned(),
                rule_id: id.clone(),
                message: format!(
                    "the regex can match unboundedly long text; matches longer than \
                     {DEFAULT_MAX_MATCH_LEN} bytes are dropped"
                ),
            });
            (DEFAULT_MAX_MATCH_LEN, false)
        }
    };
    Ok(Some(Rule {
        id,
        description: raw.description,
        // Built-in rules are written so that every match contains one of
        // the keywords (a test checks every example); user rules follow
        // gitleaks, where a keyword anywhere in the text is enough.
        keyword_in_match: strict && !keywords.is_empty(),
        regex,
        automaton,
        secret_group,
        keywords,
        entropy: raw.entropy,
        allowlists,
        path,
        max_len,
        bounded,
        examples: raw.examples,
        near_misses: raw.near_misses,
    }))
}

fn build_allowlist(raw: AllowlistToml, invalid: &dyn Fn(String) -> Error) -> Result<Allowlist> {
    let condition = match raw
        .condition
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("OR") | Some("") => Condition::Or,
        Some("AND") => Condition::And,
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
    let stopwords: Vec<String> = raw.stopwords.iter().map(|s| s.to_lowercase()).collect();
    if stopwords.iter().any(String::is_empty) {
        return Err(invalid("empty allowlist stopword".to_owned()));
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
        target_rules: raw.target_rules,
    })
}
