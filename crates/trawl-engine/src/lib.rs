//! trawl's secret-detection engine: rules, keyword prefilter, regex
//! confirmation, entropy, allowlists and fingerprints. It does no I/O: it is
//! handed bytes and says where the secrets are.
//!
//! # Design
//!
//! Secret scanning is dominated by the cost of running dozens of regexes
//! over every byte. Nearly every rule, however, has *keywords* — literal
//! strings its matches contain (`ghp_`, `AKIA`, `-----BEGIN`, `password`).
//! So a chunk is scanned in two steps:
//!
//! 1. one ASCII-case-insensitive [Aho-Corasick](aho_corasick) pass finds
//!    every keyword occurrence;
//! 2. each rule is confirmed only where it can match. A built-in rule's
//!    matches always contain one of its keywords and are at most
//!    `max_len` bytes long, so its regex is searched only in the spans
//!    within `max_len` bytes of its keywords' occurrences (merged where they
//!    overlap), with the bytes around a span still visible to `` and
//!    `^`. A user rule follows gitleaks, where a keyword anywhere in the text
//!    is enough: once one of its keywords occurs, its regex searches the
//!    whole chunk. Rules with no keyword search every chunk (the built-in
//!    set has none).
//!
//! Regexes are `regex-automata` meta regexes over bytes (arbitrary bytes,
//! NUL bytes and invalid UTF-8 included; linear time by construction), with
//! their caches in the worker's [`Scratch`]. At each match the secret group
//! is resolved (captures are computed only there), then the entropy floor,
//! the allowlists and inline `trawl:allow` markers decide whether to report
//! it. Text without keywords costs one Aho-Corasick pass, and secret-dense
//! text costs regex searches of a few hundred bytes per keyword occurrence,
//! not of the whole chunk per rule.
//!
//! Rules are data: [`RuleSet::from_file`] (and [`RuleSet::from_toml`] for
//! text in memory) reads gitleaks' TOML format unchanged, `[extend]`
//! included, and the built-in set ([`RuleSet::builtin`], one file per
//! family, listed in `docs/rules.md`) is TOML compiled into the crate and
//! loaded by the same code. Each built-in rule carries true-positive
//! `examples` and `near_misses` that the tests run.
//!
//! # Chunking
//!
//! The scheduler cuts objects into chunks that overlap by at least
//! [`ScanEngine::max_match_len`]. Every built-in rule's regex has a finite
//! maximum match length (computed from the regex's syntax tree), which keeps
//! that overlap small; [`Chunk::owns`] decides which chunk reports a match so
//! the findings equal those of a whole-object scan.
//!
//! # Example
//!
//! ```
//! use trawl_engine::{Engine, ScanEngine, fingerprint_hex};
//!
//! let engine = Engine::builtin();
//! let text = b"export AWS_ACCESS_KEY_ID=AKIAZ7Q3W5E6R2T4Y6U7\n";
//! let found = engine.scan_whole(text, b".env");
//! assert_eq!(found.len(), 1);
//! let rule = engine.rule_id(found[0].rule);
//! assert_eq!(rule, "aws-access-token");
//! let secret = &text[found[0].secret.clone()];
//! assert_eq!(secret, b"AKIAZ7Q3W5E6R2T4Y6U7");
//! println!("{rule} {}", fingerprint_hex(rule, secret));
//! ```

#![deny(missing_docs)]

mod engine;
mod engine_trait;
mod entropy;
mod error;
mod fingerprint;
mod keywords;
mod rule;

#[cfg(test)]
mod matrix_tests;

pub use engine::{Engine, Scratch};
pub use engine_trait::{Chunk, ObjectContext, RawMatch, RuleIndex, ScanEngine, chunks};
pub use entropy::shannon_entropy;
pub use error::{Error, Result};
pub use fingerprint::{fingerprint, fingerprint_hex};
pub use rule::{
    Allowlist, Condition, DEFAULT_MAX_MATCH_LEN, RegexTarget, Rule, RuleSet, RuleWarning,
};
