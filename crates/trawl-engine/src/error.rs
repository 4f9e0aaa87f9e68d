//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while loading rules or building an engine.
///
/// Scanning itself cannot fail: once an [`Engine`](crate::Engine) exists,
/// every chunk scans.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A rule file is not valid TOML, or does not have the expected shape
    /// (a field of the wrong type, say).
    #[error(
        "{origin}{}: invalid rule file{}: {message}",
        location(*.line, *.column),
        in_rule(.rule_id.as_deref())
    )]
    Toml {
        /// Where the rules came from (a path, or `<builtin>`).
        origin: String,
        /// The 1-based line of the error, when the parser knows it.
        line: Option<usize>,
        /// The 1-based column (in characters) of the error, when known.
        column: Option<usize>,
        /// The id of the `[[rules]]` entry holding the error (`#N` when it
        /// has none), when the error is inside one.
        rule_id: Option<String>,
        /// What the TOML parser said.
        message: String,
    },
    /// One rule is wrong: a regex that does not compile, a secret group the
    /// regex does not have, a missing field, and so on.
    #[error("{origin}: rule `{rule_id}`: {reason}")]
    InvalidRule {
        /// Where the rules came from (a path, or `<builtin>`).
        origin: String,
        /// The rule's id (or `#N` when the rule has none).
        rule_id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Something about a rule file as a whole is wrong: a global allowlist,
    /// its `[extend]` table, an extension cycle.
    #[error("{origin}: {reason}")]
    InvalidFile {
        /// Where the rules came from (a path, or `<builtin>`).
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// A rule file could not be read.
    #[error("{}: cannot read the rule file: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A rule whose matches have no upper bound on their length where a
    /// bound is required (the built-in set must be bounded).
    #[error("{origin}: rule `{rule_id}` can match unboundedly long text")]
    UnboundedRule {
        /// Where the rules came from.
        origin: String,
        /// The rule's id.
        rule_id: String,
    },
    /// Building the engine's keyword automaton failed.
    #[error("cannot build the keyword prefilter: {0}")]
    Prefilter(#[source] Box<dyn std::error::Error + Send + Sync>),
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(":{line}:{column}"),
        (Some(line), None) => format!(":{line}"),
        _ => String::new(),
    }
}

fn in_rule(rule_id: Option<&str>) -> String {
    rule_id.map_or_else(String::new, |id| format!(" (in rule `{id}`)"))
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
