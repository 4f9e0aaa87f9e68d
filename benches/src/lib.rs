//! Shared helpers of the benchmarks: a deterministic corpus generator.
//!
//! [`generate_corpus`] writes a tree of source-like text files (Rust,
//! Python, JavaScript, YAML, JSON and `.env` files, a few KiB to a few MiB
//! each, in nested folders) with fake secrets planted in it: AWS access key
//! ids, GitHub personal access tokens, Slack bot tokens, Stripe live keys
//! and PEM private-key blocks. [`corpus_bytes`] produces the same kind of
//! text in memory, and [`corpus_object`] one object of it with the count of
//! its secrets. Both depend only on their arguments: the same seed gives
//! byte-identical output on every machine.
//!
//! The text also holds the words secret rules key on (`token`, `password`,
//! `api_key`, …) without secrets next to them, so that a keyword prefilter
//! meets the false starts it meets in real code.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// What [`generate_corpus`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorpusSummary {
    /// Number of files written.
    pub files: u64,
    /// Total size of the files, in bytes.
    pub bytes: u64,
    /// Number of fake secrets planted (a PEM block counts as one).
    pub planted: usize,
}

/// Writes a corpus of about `total_bytes` (at least that, at most one line
/// more) under `dir`, creating it as needed, and returns what it wrote.
///
/// Files already in `dir` with the same names are overwritten; others are
/// left alone. The same `total_bytes` and `seed` always give the same tree.
pub fn generate_corpus(dir: &Path, total_bytes: u64, seed: u64) -> io::Result<CorpusSummary> {
    let mut generator = Generator::new(seed);
    let mut summary = CorpusSummary {
        files: 0,
        bytes: 0,
        planted: 0,
    };
    let mut buf = Vec::with_capacity(MAX_FILE + 4096);
    while summary.bytes < total_bytes {
        let remaining = total_bytes - summary.bytes;
        let mut size = generator.file_size();
        // Never leave a sliver for a last, tiny file.
        if remaining < (size + MIN_FILE) as u64 {
            size = usize::try_from(remaining).unwrap_or(usize::MAX);
        }
        let kind = generator.kind();
        let path = dir.join(generator.path(kind, summary.files));
        buf.clear();
        summary.planted += generator.file(kind, size, &mut buf);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, &buf)?;
        summary.files += 1;
        summary.bytes += buf.len() as u64;
    }
    Ok(summary)
}

/// Exactly `len` bytes of corpus text (files of every kind, one after the
/// other, with secrets planted as in [`generate_corpus`]); the same for the
/// same `seed`. The cut at `len` may fall inside the last line.
pub fn corpus_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut generator = Generator::new(seed);
    let mut out = Vec::with_capacity(len + MAX_FILE);
    while out.len() < len {
        let size = generator.file_size().min(len - out.len());
        let kind = generator.kind();
        generator.file(kind, size, &mut out);
    }
    out.truncate(len);
    out
}

/// One object of corpus text: exactly `len` bytes, and the number of
/// secrets planted in it, each whole (the object ends in ordinary lines, the
/// one cut at `len` blanked). The same for the same `seed`.
///
/// Unlike [`corpus_bytes`], even a few-KiB object gets a whole file's start
/// (and so, now and then, a secret): objects of an S3 benchmark are small.
pub fn corpus_object(len: usize, seed: u64) -> (Vec<u8>, usize) {
    // The longest line or PEM block `Generator::file` may add past its size.
    const OVERSHOOT: usize = KIB;
    let mut generator = Generator::new(seed);
    let mut out = Vec::with_capacity(len + OVERSHOOT);
    let mut planted = 0;
    while out.len() + OVERSHOOT < len {
        let size = generator.file_size().min(len - OVERSHOOT - out.len());
        let kind = generator.kind();
        planted += generator.file(kind, size, &mut out);
    }
    // Fill up with ordinary lines, then cut: no secret is cut in half.
    let kind = generator.kind();
    while out.len() < len {
        generator.line(kind, &mut out);
    }
    out.truncate(len);
    // A line cut short may read as an assignment of a credential
    // (`api_key = settings.table_`): blank it.
    let cut = out.iter().rposition(|&b| b == b'\n').map_or(0, |at| at + 1);
    out[cut..].fill(b' ');
    (out, planted)
}

/// Exactly `len` bytes of code-and-prose-like text in which none of
/// `keywords` occurs (ASCII case-insensitively): the engine's best case,
/// where only the keyword pass runs. The same for the same `seed`.
pub fn keyword_free_bytes(len: usize, seed: u64, keywords: &[&str]) -> Vec<u8> {
    let folded: Vec<String> = keywords.iter().map(|k| k.to_ascii_lowercase()).collect();
    let clean = |w: &&&str| {
        !folded
            .iter()
            .any(|k| w.to_ascii_lowercase().contains(k.as_str()))
    };
    let words: Vec<&str> = WORDS.iter().chain(PROSE).filter(clean).copied().collect();
    assert!(words.len() > 20, "too few keyword-free words");
    const GLUE: &[&str] = &[
        " ", " ", " ", ", ", "(", ") ", " = ", ";\n", ".\n", " { ", " }\n", "    ",
    ];
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        out.extend_from_slice(rng.pick(&words).as_bytes());
        out.extend_from_slice(rng.pick(GLUE).as_bytes());
    }
    out.truncate(len);
    out
}

/// Exactly `len` bytes of `.env`-style configuration dumps with about
/// `per_mib` of `secrets` planted per MiB, each on a line of its own
/// between ordinary settings: the engine's worst case, where most keyword
/// occurrences lead to a confirmed secret. The same for the same `seed`.
pub fn secret_dense_bytes(len: usize, seed: u64, secrets: &[&str], per_mib: usize) -> Vec<u8> {
    assert!(!secrets.is_empty() && per_mib > 0);
    const SETTINGS: &[&str] = &[
        "DEBUG=false",
        "PORT=8080",
        "LOG_LEVEL=info",
        "REGION=eu-west-1",
        "WORKERS=4",
        "TIMEOUT_SECONDS=30",
        "FEATURE_FLAGS=alpha,beta",
        "HOSTNAME=app-01.internal",
        "DATABASE_POOL=16",
        "CACHE_TTL=300",
        "RETRIES=3",
        "TZ=UTC",
    ];
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(len + 256);
    // Lines of ordinary settings average ~16 bytes.
    let gap = ((1 << 20) / per_mib / 17).max(1) as u64;
    while out.len() < len {
        for _ in 0..rng.below(2 * gap) {
            out.extend_from_slice(rng.pick(SETTINGS).as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(rng.pick(secrets).as_bytes());
        out.push(b'\n');
    }
    out.truncate(len);
    out
}

/// Words for prose, beside the identifiers of [`WORDS`].
const PROSE: &[&str] = &[
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "while", "return", "match",
    "impl", "struct", "enum", "loop", "break", "continue", "where", "trait", "async", "await",
    "number", "value", "result", "option", "string", "vector", "length", "count", "total",
];

const KIB: usize = 1024;
const MIN_FILE: usize = 2 * KIB;
const MAX_FILE: usize = 4 * KIB * KIB;
/// One line in this many (on average) carries a planted secret; `.env`
/// files use [`ENV_SECRET_EVERY`].
const SECRET_EVERY: u64 = 2500;
const ENV_SECRET_EVERY: u64 = 60;
/// One ordinary line in this many names a credential without holding one.
const KEYWORD_LINE_EVERY: u64 = 100;

/// SplitMix64: tiny, fast, and good enough for test data.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.index(items.len())]
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chars(&mut self, alphabet: &[u8], n: usize, out: &mut Vec<u8>) {
        for _ in 0..n {
            out.push(alphabet[self.index(alphabet.len())]);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rust,
    Python,
    Js,
    Yaml,
    Json,
    Env,
}

const WORDS: &[&str] = &[
    "account", "batch", "buffer", "cache", "client", "config", "context", "cursor", "data",
    "entry", "event", "field", "file", "filter", "handle", "header", "index", "item", "job",
    "layer", "limit", "list", "loader", "manager", "message", "node", "offset", "order", "output",
    "page", "parser", "path", "payload", "pool", "queue", "reader", "record", "region", "request",
    "response", "result", "route", "schema", "session", "shard", "source", "state", "store",
    "stream", "table", "step", "timer", "user", "value", "view", "worker", "writer", "bucket",
    "object", "chunk", "report", "metric", "status", "retry",
];
const TOP_DIRS: &[&str] = &[
    "src", "lib", "services", "config", "scripts", "web", "deploy", "vendor", "tools", "pkg",
];
const AWS_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const DIGITS: &[u8] = b"0123456789";
const HEX: &[u8] = b"0123456789abcdef";
const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

struct Generator {
    rng: Rng,
}

impl Generator {
    fn new(seed: u64) -> Self {
        Self {
            rng: Rng(seed ^ 0x7472_6177_6c5f_6265), // "trawl_be"
        }
    }

    /// Mostly small files, some large: 80% in 2..64 KiB, 20% in 64 KiB..4 MiB,
    /// log-uniform within each band.
    fn file_size(&mut self) -> usize {
        let (lo, hi) = if self.rng.below(5) < 4 {
            (MIN_FILE, 64 * KIB)
        } else {
            (64 * KIB, MAX_FILE)
        };
        let ratio = hi as f64 / lo as f64;
        (lo as f64 * ratio.powf(self.rng.unit())) as usize
    }

    fn kind(&mut self) -> Kind {
        match self.rng.below(20) {
            0..=5 => Kind::Rust,
            6..=9 => Kind::Python,
            10..=13 => Kind::Js,
            14..=16 => Kind::Yaml,
            17..=18 => Kind::Json,
            _ => Kind::Env,
        }
    }

    /// A nested relative path, unique thanks to the file number `n`.
    fn path(&mut self, kind: Kind, n: u64) -> PathBuf {
        let mut path = PathBuf::from(self.rng.pick(TOP_DIRS));
        for _ in 0..self.rng.below(4) {
            path.push(self.rng.pick(WORDS));
        }
        let stem = self.rng.pick(WORDS);
        let ext = match kind {
            Kind::Rust => "rs",
            Kind::Python => "py",
            Kind::Js => "js",
            Kind::Yaml => "yaml",
            Kind::Json => "json",
            Kind::Env => "env",
        };
        path.push(format!("{stem}_{n}.{ext}"));
        path
    }

    /// Appends a file of about `size` bytes to `out` (whole lines, so it may
    /// end up to one line longer); returns the number of secrets planted.
    fn file(&mut self, kind: Kind, size: usize, out: &mut Vec<u8>) -> usize {
        let end = out.len() + size;
        let every = if kind == Kind::Env {
            ENV_SECRET_EVERY
        } else {
            SECRET_EVERY
        };
        let mut planted = 0;
        if kind == Kind::Json {
            out.extend_from_slice(b"[\n");
        }
        while out.len() < end {
            if self.rng.below(every) == 0 {
                self.secret_line(kind, out);
                planted += 1;
            } else {
                self.line(kind, out);
            }
        }
        planted
    }

    fn ident(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.rng.pick(WORDS).as_bytes());
        if self.rng.below(2) == 0 {
            out.push(b'_');
            out.extend_from_slice(self.rng.pick(WORDS).as_bytes());
        }
    }

    fn upper_ident(&mut self, out: &mut Vec<u8>) {
        let start = out.len();
        self.ident(out);
        out[start..].make_ascii_uppercase();
    }

    fn type_name(&mut self, out: &mut Vec<u8>) {
        for _ in 0..=self.rng.below(2) {
            let word = self.rng.pick(WORDS).as_bytes();
            out.push(word[0].to_ascii_uppercase());
            out.extend_from_slice(&word[1..]);
        }
    }

    fn number(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.rng.below(100_000).to_string().as_bytes());
    }

    fn sentence(&mut self, out: &mut Vec<u8>) {
        let words = 3 + self.rng.below(9);
        for i in 0..words {
            if i > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(self.rng.pick(WORDS).as_bytes());
        }
    }

    /// Text and generated parts, in order: each `{i}`, `{I}`, `{T}`, `{n}`,
    /// `{s}`, `{h}` of `template` becomes an identifier, an upper-case one, a
    /// type name, a number, a few words, or 64 hex digits.
    fn fill(&mut self, template: &str, out: &mut Vec<u8>) {
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.extend_from_slice(&rest.as_bytes()[..open]);
            let hole = &rest[open..];
            let (len, part) = match hole.get(..3) {
                Some("{i}") => (3, 'i'),
                Some("{I}") => (3, 'I'),
                Some("{T}") => (3, 'T'),
                Some("{n}") => (3, 'n'),
                Some("{s}") => (3, 's'),
                Some("{h}") => (3, 'h'),
                _ => (1, '{'),
            };
            match part {
                'i' => self.ident(out),
                'I' => self.upper_ident(out),
                'T' => self.type_name(out),
                'n' => self.number(out),
                's' => self.sentence(out),
                'h' => self.rng.chars(HEX, 64, out),
                _ => out.push(b'{'),
            }
            rest = &hole[len..];
        }
        out.extend_from_slice(rest.as_bytes());
        out.push(b'\n');
    }

    /// One ordinary line; one in [`KEYWORD_LINE_EVERY`] names a credential
    /// (a rule keyword) without holding one.
    fn line(&mut self, kind: Kind, out: &mut Vec<u8>) {
        let plain: &[&str] = match kind {
            Kind::Rust => &[
                "fn {i}({i}: &{T}) -> Result<{T}, Error> {",
                "    let {i} = {i}.{i}({n})?;",
                "    let {i} = {T}::new({i}, {n});",
                "    if {i}.len() > {n} { return Err(Error::{T}); }",
                "    // {s}",
                "}",
                "",
                "use crate::{i}::{T};",
                "#[derive(Debug, Clone)]",
                "pub struct {T} { {i}: u64, {i}: String }",
                "/// {s}.",
                "    {i}.insert(\"{i}\", {n});",
            ],
            Kind::Python => &[
                "def {i}({i}, {i}=None):",
                "    {i} = {i}.{i}({n})",
                "    # {s}",
                "    return {i}",
                "",
                "import {i}",
                "from {i}.{i} import {T}",
                "class {T}({T}):",
                "    \"\"\"{s}.\"\"\"",
                "    digest = \"{h}\"",
                "        self.{i} = {i}",
            ],
            Kind::Js => &[
                "export function {i}({i}) {",
                "  const {i} = await {i}.{i}({n});",
                "  // {s}",
                "}",
                "",
                "import { {T} } from './{i}';",
                "  if (!{i}) throw new Error('{s}');",
                "  return { {i}, {i}: {n} };",
            ],
            Kind::Yaml => &[
                "{i}:",
                "  {i}: {n}",
                "  {i}: \"{s}\"",
                "  - name: {i}",
                "    image: registry.example.com/{i}:{n}",
                "# {s}",
                "    checksum: sha256:{h}",
            ],
            Kind::Json => &[
                "  {\"id\": {n}, \"name\": \"{i}\", \"enabled\": true, \"tags\": [\"{i}\", \"{i}\"]},",
                "  {\"id\": {n}, \"description\": \"{s}\", \"sha256\": \"{h}\"},",
            ],
            Kind::Env => &["{I}={n}", "{I}_URL=https://{i}.example.com", "# {s}"],
        };
        let keyworded: &[&str] = match kind {
            Kind::Rust => &[
                "    let token = config.{i}_token.clone();",
                "    let password = std::env::var(\"{I}_PASSWORD\").unwrap_or_default();",
            ],
            Kind::Python => &[
                "    password = os.environ.get(\"{I}_PASSWORD\")",
                "    api_key = settings.{i}_api_key",
            ],
            Kind::Js => &[
                "  const apiKey = process.env.{I}_API_KEY;",
                "  headers['Authorization'] = `Bearer ${token}`;",
            ],
            Kind::Yaml => &["    secret_ref: {i}-secret"],
            Kind::Json => {
                &["  {\"id\": {n}, \"token_url\": \"https://{i}.example.com/oauth/token\"},"]
            }
            Kind::Env => &["{I}_PASSWORD=changeme", "{I}_TOKEN="],
        };
        let templates = if self.rng.below(KEYWORD_LINE_EVERY) == 0 {
            keyworded
        } else {
            plain
        };
        let template = templates[self.rng.index(templates.len())];
        self.fill(template, out);
    }

    /// One planted secret, with its surrounding line(s).
    fn secret_line(&mut self, kind: Kind, out: &mut Vec<u8>) {
        let secret_kind = self.rng.below(5);
        if secret_kind == 4 {
            self.pem_block(kind, out);
            return;
        }
        let mut secret = Vec::with_capacity(64);
        let name = match secret_kind {
            0 => {
                // The rule (like gitleaks') wants entropy >= 3 over the key:
                // about one random key in 5,000 falls short and is not a
                // secret it must find, so draw again (bounded).
                for _ in 0..64 {
                    secret.clear();
                    secret.extend_from_slice(b"AKIA");
                    self.rng.chars(AWS_ALPHABET, 16, &mut secret);
                    if trawl_engine::shannon_entropy(&secret) >= 3.0 {
                        break;
                    }
                }
                "aws_access_key_id"
            }
            1 => {
                secret.extend_from_slice(b"ghp_");
                self.rng.chars(ALNUM, 36, &mut secret);
                "github_token"
            }
            2 => {
                secret.extend_from_slice(b"xoxb-");
                self.rng.chars(DIGITS, 11, &mut secret);
                secret.push(b'-');
                self.rng.chars(DIGITS, 12, &mut secret);
                secret.push(b'-');
                self.rng.chars(ALNUM, 24, &mut secret);
                "slack_bot_token"
            }
            _ => {
                secret.extend_from_slice(b"sk_live_");
                self.rng.chars(ALNUM, 24, &mut secret);
                "stripe_secret_key"
            }
        };
        let (before, after): (String, &str) = match kind {
            Kind::Rust => (format!("    let {name} = \""), "\";"),
            Kind::Python => (format!("    {name} = \""), "\""),
            Kind::Js => (format!("  const {name} = '"), "';"),
            Kind::Yaml => (format!("  {name}: "), ""),
            Kind::Json => (format!("  {{\"id\": 0, \"{name}\": \""), "\"},"),
            Kind::Env => (format!("{}=", name.to_ascii_uppercase()), ""),
        };
        out.extend_from_slice(before.as_bytes());
        out.extend_from_slice(&secret);
        out.extend_from_slice(after.as_bytes());
        out.push(b'\n');
    }

    fn pem_block(&mut self, kind: Kind, out: &mut Vec<u8>) {
        let comment: &[u8] = match kind {
            Kind::Python | Kind::Yaml | Kind::Env => b"# test fixture key\n",
            Kind::Rust | Kind::Js => b"// test fixture key\n",
            Kind::Json => b"",
        };
        out.extend_from_slice(comment);
        out.extend_from_slice(b"-----BEGIN RSA PRIVATE KEY-----\n");
        for _ in 0..12 {
            self.rng.chars(BASE64, 64, out);
            out.push(b'\n');
        }
        self.rng.chars(BASE64, 24, out);
        out.extend_from_slice(b"==\n-----END RSA PRIVATE KEY-----\n");
    }
}

#[cfg(test)]
mod tests {
    use super::{corpus_bytes, corpus_object, generate_corpus};

    #[test]
    fn same_seed_same_bytes() {
        let a = corpus_bytes(300_000, 7);
        assert_eq!(a.len(), 300_000);
        assert!(a == corpus_bytes(300_000, 7));
        assert!(a != corpus_bytes(300_000, 8));
    }

    #[test]
    fn corpus_objects_have_their_size_and_whole_secrets() {
        for len in [4096, 100_000] {
            let (a, planted) = corpus_object(len, 3);
            assert_eq!(a.len(), len);
            assert_eq!((a.clone(), planted), corpus_object(len, 3));
            // The last secret of a PEM block is whole: it ends the block.
            assert_eq!(
                count(&a, b"-----BEGIN RSA"),
                count(&a, b"-----END RSA PRIVATE KEY-----\n")
            );
        }
        let planted: usize = (0..200).map(|seed| corpus_object(4096, seed).1).sum();
        assert!(planted > 0, "small objects hold secrets too");
    }

    fn count(haystack: &[u8], needle: &[u8]) -> usize {
        haystack
            .windows(needle.len())
            .filter(|w| *w == needle)
            .count()
    }

    #[test]
    fn corpus_tree_has_secrets_and_the_asked_size() {
        let dir = std::env::temp_dir().join(format!("trawl-benches-test-{}", std::process::id()));
        let summary = generate_corpus(&dir, 3 << 20, 1).expect("corpus written");
        let again = generate_corpus(&dir, 3 << 20, 1).expect("corpus rewritten");
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert_eq!(summary, again);
        assert!(summary.bytes >= 3 << 20 && summary.bytes < (3 << 20) + 4096);
        assert!(summary.files > 1);
        assert!(summary.planted > 0, "{summary:?}");
    }
}
