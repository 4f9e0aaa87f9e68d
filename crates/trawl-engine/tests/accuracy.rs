//! Recall of the built-in rules on realistic documents: a seeded generator
//! plants every rule's examples (each rule at least three times, more than a
//! thousand secrets in all) in source code, JSON, YAML, `.env` files and
//! logs, with LF and CRLF line endings and NUL and invalid UTF-8 bytes
//! around, scans them in small chunks as the scheduler would, and checks
//! that every planted secret is reported by its rule at the right byte
//! offset, line and column.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;

use trawl_engine::{Engine, ScanEngine, chunks};

/// How often each rule is planted.
const PLANTS_PER_RULE: usize = 5;
/// Small chunks, so that many secrets straddle a chunk boundary.
const CHUNK_SIZE: usize = 4096;

/// SplitMix64: tiny, seeded, good enough to shuffle test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Source,
    Json,
    Yaml,
    Env,
    Log,
}

/// Keyword-free filler lines, per kind of document.
fn filler(kind: Kind, rng: &mut Rng) -> String {
    let n = rng.below(1000);
    match kind {
        Kind::Source => rng
            .pick(&[
                format!("    let total_{n} = items.iter().map(|x| x.len()).sum::<usize>();"),
                format!("fn handler_{n}(req: Request) -> Response {{"),
                "    }".to_owned(),
                format!("    // retry up to {n} times before giving up"),
                format!("    if count > {n} {{ return Err(Overflow); }}"),
            ])
            .clone(),
        Kind::Json => rng
            .pick(&[
                format!("  \"name\": \"service-{n}\","),
                format!("  \"replicas\": {n},"),
                "  \"enabled\": true,".to_owned(),
                format!("  \"tags\": [\"blue\", \"green\", \"n{n}\"],"),
            ])
            .clone(),
        Kind::Yaml => rng
            .pick(&[
                format!("  replicas: {n}"),
                format!("  image: registry.example.com/app:{n}"),
                "  restartPolicy: Always".to_owned(),
                format!("- name: step-{n}"),
            ])
            .clone(),
        Kind::Env => rng
            .pick(&[
                format!("PORT={n}"),
                "LOG_LEVEL=info".to_owned(),
                format!("WORKERS={n}"),
                "# local overrides".to_owned(),
            ])
            .clone(),
        Kind::Log => rng
            .pick(&[
                format!(
                    "2024-05-01T12:00:{:02}Z INFO request served in {n}ms",
                    n % 60
                ),
                format!("2024-05-01T12:01:{:02}Z WARN queue depth {n}", n % 60),
                format!(
                    "2024-05-01T12:02:{:02}Z DEBUG cache hit ratio 0.{n}",
                    n % 60
                ),
            ])
            .clone(),
    }
}

/// A run of NUL bytes and bytes that are not valid UTF-8.
fn junk(rng: &mut Rng) -> Vec<u8> {
    let len = 1 + rng.below(12);
    (0..len)
        .map(|_| *rng.pick(&[0x00, 0xff, 0xfe, 0xc3, 0x80, 0xa0, 0xed, 0xf8]))
        .collect()
}

/// A secret planted in a document, with where it must be reported.
#[derive(Debug)]
struct Planted {
    rule: String,
    start: usize,
    end: usize,
    line: usize,
    column: usize,
}

struct Document {
    name: String,
    bytes: Vec<u8>,
    planted: Vec<Planted>,
}

/// 1-based line and byte column of `offset`.
fn line_column(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    (line, offset - line_start + 1)
}

struct Builder {
    bytes: Vec<u8>,
    /// The current (1-based) line number.
    line: usize,
    eol: &'static str,
}

impl Builder {
    fn push_line(&mut self, text: &[u8]) {
        self.bytes.extend_from_slice(text);
        self.bytes.extend_from_slice(self.eol.as_bytes());
        self.line += 1 + text.iter().filter(|&&b| b == b'\n').count();
    }
}

/// Secrets already located, by (rule id, planted text).
type SecretCache = HashMap<(String, Vec<u8>), Range<usize>>;

/// The secret an example holds, as its rule reports it on the example alone.
fn secret_in(engine: &Engine, rule: &str, example: &[u8]) -> Range<usize> {
    thread_local! {
        static SEEN: RefCell<SecretCache> = RefCell::default();
    }
    let key = (rule.to_owned(), example.to_vec());
    if let Some(hit) = SEEN.with(|s| s.borrow().get(&key).cloned()) {
        return hit;
    }
    let found: Vec<_> = engine
        .scan_whole(example, b"example.txt")
        .into_iter()
        .filter(|m| engine.rule_id(m.rule) == rule)
        .collect();
    assert_eq!(found.len(), 1, "{rule}: example {example:?}");
    let secret = found[0].secret.clone();
    SEEN.with(|s| s.borrow_mut().insert(key, secret.clone()));
    secret
}

fn build_documents(engine: &Engine, rng: &mut Rng) -> Vec<Document> {
    // (rule id, example) pairs: every rule PLANTS_PER_RULE times, cycling
    // through its examples.
    let mut plants: Vec<(String, String)> = Vec::new();
    for rule in engine.rules() {
        for i in 0..PLANTS_PER_RULE {
            let example = &rule.examples()[i % rule.examples().len()];
            plants.push((rule.id().to_owned(), example.clone()));
        }
    }
    rng.shuffle(&mut plants);

    let kinds = [Kind::Source, Kind::Json, Kind::Yaml, Kind::Env, Kind::Log];
    let layouts: Vec<(Kind, bool)> = kinds
        .iter()
        .flat_map(|&k| [(k, false), (k, true)])
        .collect();
    let per_doc = plants.len().div_ceil(layouts.len());
    let mut docs = Vec::new();
    for (n, (&(kind, crlf), batch)) in layouts.iter().zip(plants.chunks(per_doc)).enumerate() {
        let eol = if crlf { "\r\n" } else { "\n" };
        let mut b = Builder {
            bytes: Vec::new(),
            line: 1,
            eol,
        };
        let mut planted = Vec::new();
        for (rule, example) in batch {
            for _ in 0..rng.below(4) {
                let line = filler(kind, rng);
                b.push_line(line.as_bytes());
            }
            if rng.below(3) == 0 {
                let junk = junk(rng);
                b.push_line(&junk);
            }
            // The example is planted whole, as a line of its own, with the
            // document's line endings inside it too.
            let mut text = example.replace('\n', eol).into_bytes();
            let secret = secret_in(engine, rule, &text);
            let prefix = &text[..secret.start];
            let line = b.line + prefix.iter().filter(|&&c| c == b'\n').count();
            let column = secret.start
                - prefix
                    .iter()
                    .rposition(|&c| c == b'\n')
                    .map_or(0, |i| i + 1)
                + 1;
            let start = b.bytes.len() + secret.start;
            planted.push(Planted {
                rule: rule.clone(),
                start,
                end: b.bytes.len() + secret.end,
                line,
                column,
            });
            if rng.below(3) == 0 {
                text.push(b' ');
                text.extend(junk(rng));
            }
            b.push_line(&text);
        }
        docs.push(Document {
            name: format!("doc-{n}-{kind:?}{}", if crlf { "-crlf" } else { "" }),
            bytes: b.bytes,
            planted,
        });
    }
    docs
}

/// Every match of `doc`, scanned in chunks, as (rule id, secret range) in
/// absolute offsets.
fn scan_in_chunks(engine: &Engine, doc: &Document) -> Vec<(String, Range<usize>)> {
    let mut scratch = engine.new_scratch();
    let mut out = Vec::new();
    let mut found = Vec::new();
    for chunk in chunks(
        &doc.bytes,
        doc.name.as_bytes(),
        CHUNK_SIZE,
        engine.max_match_len(),
    ) {
        out.clear();
        engine.scan_chunk_into(&chunk, &mut scratch, &mut out);
        engine.dedupe_within_chunk(&mut out);
        let base = usize::try_from(chunk.offset).expect("offset fits");
        for m in &out {
            found.push((
                engine.rule_id(m.rule).to_owned(),
                base + m.secret.start..base + m.secret.end,
            ));
        }
    }
    found
}

#[test]
fn every_planted_secret_is_found_by_its_rule_at_its_place() {
    let engine = Engine::builtin();
    let mut rng = Rng(0x7a11_5eed_2024_0001);
    let docs = build_documents(&engine, &mut rng);
    let planted: usize = docs.iter().map(|d| d.planted.len()).sum();
    println!(
        "planted {planted} secrets of {} rules in {} documents",
        engine.rules().len(),
        docs.len()
    );
    assert!(planted >= 1000, "only {planted} secrets planted");
    for rule in engine.rules() {
        let n = docs
            .iter()
            .flat_map(|d| &d.planted)
            .filter(|p| p.rule == rule.id())
            .count();
        assert!(n >= 3, "{} planted only {n} times", rule.id());
    }

    let mut misses = Vec::new();
    for doc in &docs {
        let found = scan_in_chunks(&engine, doc);
        for p in &doc.planted {
            let hit = found
                .iter()
                .find(|(rule, secret)| *rule == p.rule && secret.start == p.start);
            let Some((_, secret)) = hit else {
                let others: Vec<_> = found
                    .iter()
                    .filter(|(_, s)| s.start < p.end && p.start < s.end)
                    .collect();
                misses.push(format!(
                    "{}: {} at {} ({}:{}) not found; overlapping findings: {others:?}",
                    doc.name, p.rule, p.start, p.line, p.column
                ));
                continue;
            };
            assert_eq!(secret.end, p.end, "{}: {} secret end", doc.name, p.rule);
            assert_eq!(
                line_column(&doc.bytes, secret.start),
                (p.line, p.column),
                "{}: {} line and column",
                doc.name,
                p.rule
            );
        }
    }
    assert!(
        misses.is_empty(),
        "recall below 100 %: {} of {planted} missed:\n{}",
        misses.len(),
        misses.join("\n")
    );
}
