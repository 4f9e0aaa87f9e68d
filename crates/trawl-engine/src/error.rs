//! The crate's one error type.

/// Everything that can go wrong while loading rules or building an engine.
///
/// Scanning itself cannot fail: once an [`Engine`](crate::Engine) exists,
/// every chunk scans.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A rule file is not valid TOML, or does not have the expected shape.
    #[error("{origin}: invalid rule file: {message}")]
    Toml {
        /// Where the rules came from (a path, or `<builtin>`).
        origin: String,
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

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
