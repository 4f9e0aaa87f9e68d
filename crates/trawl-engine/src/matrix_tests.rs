//! Matrix tests in the style of ripgrep's `testutil`: every built-in example
//! under every configuration (whole buffer vs tiny chunks, prefilter on vs
//! every rule on every chunk) gives the same findings.

use crate::engine::Candidates;
use crate::{Engine, RawMatch, ScanEngine, Scratch, chunks};

/// Scans `data` cut into chunks of `chunk_size` payload bytes, each preceded
/// by up to `overlap` bytes of the previous chunk, and returns the findings
/// as absolute `(rule id, span, secret)` triples, sorted.
fn scan_chunked(
    engine: &Engine,
    scratch: &mut Scratch,
    data: &[u8],
    chunk_size: usize,
    overlap: usize,
) -> Vec<(String, std::ops::Range<u64>, std::ops::Range<u64>)> {
    let mut all = Vec::new();
    let mut out: Vec<RawMatch> = Vec::new();
    for chunk in chunks(data, b"matrix.txt", chunk_size, overlap) {
        out.clear();
        engine.scan_chunk_into(&chunk, scratch, &mut out);
        engine.dedupe_within_chunk(&mut out);
        let off = chunk.offset;
        for m in &out {
            assert!(m.span.end <= chunk.buf.len() && m.span.end > m.span.start);
            assert!(m.span.start <= m.secret.start && m.secret.end <= m.span.end);
            all.push((
                engine.rule_id(m.rule).to_owned(),
                m.span.start as u64 + off..m.span.end as u64 + off,
                m.secret.start as u64 + off..m.secret.end as u64 + off,
            ));
        }
    }
    all.sort_by(|a, b| (a.2.start, a.2.end, &a.0).cmp(&(b.2.start, b.2.end, &b.0)));
    all
}

#[test]
fn every_example_under_every_configuration() {
    let engines = [
        Engine::builtin(),
        Engine::builtin().with_candidates(Candidates::EveryRule),
    ];
    let mut scratches = engines.each_ref().map(Engine::new_scratch);
    let overlap = engines[0].max_match_len();
    for rule in engines[0].rules() {
        for example in rule.examples().iter().chain(rule.near_misses()) {
            let text = format!("# config\n{example}\n");
            let data = text.as_bytes();
            let expected = scan_chunked(&engines[0], &mut scratches[0], data, data.len().max(1), 0);
            for (engine, scratch) in engines.iter().zip(&mut scratches) {
                for chunk_size in [1, 2, 3, 7, 64, data.len().max(1)] {
                    let got = scan_chunked(engine, scratch, data, chunk_size, overlap);
                    assert_eq!(
                        got,
                        expected,
                        "rule {} example {example:?} chunk size {chunk_size}",
                        rule.id()
                    );
                }
            }
        }
    }
}
