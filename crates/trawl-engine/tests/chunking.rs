//! Chunking is invisible: scanning an object cut into overlapping chunks
//! (overlap ≥ `max_match_len`) and applying `dedupe_within_chunk` per chunk
//! reports exactly what a whole-object scan reports.

use std::ops::Range;

use proptest::prelude::*;
use trawl_engine::{Engine, RawMatch, RuleSet, ScanEngine, chunks};

type Finding = (String, Range<u64>, Range<u64>);

fn absolute(engine: &Engine, offset: u64, matches: &[RawMatch]) -> Vec<Finding> {
    matches
        .iter()
        .map(|m| {
            (
                engine.rule_id(m.rule).to_owned(),
                m.span.start as u64 + offset..m.span.end as u64 + offset,
                m.secret.start as u64 + offset..m.secret.end as u64 + offset,
            )
        })
        .collect()
}

fn sorted(mut v: Vec<Finding>) -> Vec<Finding> {
    v.sort_by(|a, b| {
        (a.2.start, a.2.end, &a.0, a.1.start).cmp(&(b.2.start, b.2.end, &b.0, b.1.start))
    });
    v
}

fn scan_whole(engine: &Engine, data: &[u8]) -> Vec<Finding> {
    sorted(absolute(engine, 0, &engine.scan_whole(data, b"obj.txt")))
}

fn scan_chunked(engine: &Engine, data: &[u8], chunk_size: usize, overlap: usize) -> Vec<Finding> {
    let mut scratch = engine.new_scratch();
    let mut out = Vec::new();
    let mut all = Vec::new();
    for chunk in chunks(data, b"obj.txt", chunk_size, overlap) {
        out.clear();
        engine.scan_chunk_into(&chunk, &mut scratch, &mut out);
        engine.dedupe_within_chunk(&mut out);
        all.extend(absolute(engine, chunk.offset, &out));
    }
    sorted(all)
}

/// Every example of every rule in `engine`.
fn examples(engine: &Engine) -> Vec<String> {
    engine
        .rules()
        .iter()
        .flat_map(|r| r.examples().iter().cloned())
        .collect()
}

/// One piece of filler: words, whitespace, punctuation or raw bytes.
fn filler_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "lorem", "ipsum", "dolor", "value", "config", "foo", "bar", "x", "12", "name",
            "path", "url", "host", "port", "user", "id", "mode", "data", "ey", "AK",
        ])
        .prop_map(|w| w.as_bytes().to_vec()),
        3 => prop::sample::select(vec![" ", "  ", "\n", "\t", "\r\n"]).prop_map(|w| w.as_bytes().to_vec()),
        2 => prop::sample::select(vec!["=", ":", ";", "\"", "'", "(", ")", "{", "}", ",", ".", "-", "/", "#"])
            .prop_map(|w| w.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 1..8),
        1 => Just(vec![0u8]),
    ]
}

/// A document: filler with planted examples, each on a line of its own.
fn document(examples: Vec<String>, max_pieces: usize) -> impl Strategy<Value = Vec<u8>> {
    let n = examples.len();
    prop::collection::vec(
        (
            prop::collection::vec(filler_piece(), 0..max_pieces),
            prop::option::weighted(0.7, 0..n),
        ),
        1..10,
    )
    .prop_map(move |parts| {
        let mut doc = Vec::new();
        for (filler, planted) in parts {
            for piece in filler {
                doc.extend_from_slice(&piece);
            }
            if let Some(i) = planted {
                doc.push(b'\n');
                doc.extend_from_slice(examples[i].as_bytes());
                doc.push(b'\n');
            }
        }
        doc
    })
}

/// The built-in rules without the long ones, so that the overlap is small
/// and most chunks start in the middle of the document.
fn short_rules_engine() -> Engine {
    let mut rules = RuleSet::builtin();
    let long: Vec<String> = rules
        .iter()
        .filter(|r| r.max_len() > 400)
        .map(|r| r.id().to_owned())
        .collect();
    rules.remove(long.iter().map(String::as_str));
    Engine::new(rules).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn chunking_is_invisible_with_small_chunks(
        doc in document(examples(&short_rules_engine()), 60),
        chunk_size in 1usize..400,
        extra_overlap in prop::sample::select(vec![0usize, 1, 17, 500]),
    ) {
        let engine = short_rules_engine();
        let whole = scan_whole(&engine, &doc);
        let overlap = engine.max_match_len() + extra_overlap;
        prop_assert_eq!(scan_chunked(&engine, &doc, chunk_size, overlap), whole);
    }

    #[test]
    fn chunking_is_invisible_with_the_builtin_rules(
        doc in document(examples(&Engine::builtin()), 400),
        chunk_size in 64usize..4000,
        extra_overlap in prop::sample::select(vec![0usize, 3, 1000]),
    ) {
        let engine = Engine::builtin();
        let whole = scan_whole(&engine, &doc);
        let overlap = engine.max_match_len() + extra_overlap;
        prop_assert_eq!(scan_chunked(&engine, &doc, chunk_size, overlap), whole);
    }
}

#[test]
fn planted_secrets_are_all_found_across_tiny_chunks() {
    let engine = Engine::builtin();
    let mut doc = Vec::new();
    for (i, ex) in examples(&engine).iter().enumerate() {
        doc.extend_from_slice(format!("filler {i} ;\n{ex}\n").as_bytes());
    }
    let whole = scan_whole(&engine, &doc);
    assert!(whole.len() >= examples(&engine).len());
    for chunk_size in [97, 1000] {
        assert_eq!(
            scan_chunked(&engine, &doc, chunk_size, engine.max_match_len()),
            whole
        );
    }
}
