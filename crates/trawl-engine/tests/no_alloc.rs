//! The hot path allocates nothing per chunk once a worker's scratch space is
//! warm: every chunk of a corpus full of keywords and secrets is scanned a
//! second time under an allocation counter, which must stay at zero.
//!
//! This file holds one test only: the counting allocator is global to the
//! test binary, and a second test running beside it would be counted too.

use std::alloc::System;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use trawl_engine::{Engine, RawMatch, ScanEngine, chunks};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Source-like text with every built-in rule's examples planted in it, and
/// keyword-heavy lines that are not secrets.
fn corpus(engine: &Engine) -> Vec<u8> {
    let mut text = Vec::new();
    for round in 0..20 {
        for rule in engine.rules() {
            for example in rule.examples() {
                text.extend_from_slice(
                    format!("fn f{round}() {{ let api_key = config.get(\"token\"); }}\n")
                        .as_bytes(),
                );
                text.extend_from_slice(example.as_bytes());
                text.extend_from_slice(b"\n\x00\xff password: ${SECRET} // the key is elsewhere\n");
            }
        }
    }
    text
}

fn scan_all(
    engine: &Engine,
    data: &[u8],
    scratch: &mut <Engine as ScanEngine>::Scratch,
    out: &mut Vec<RawMatch>,
) -> usize {
    let mut found = 0;
    for chunk in chunks(data, b"corpus.txt", 16 * 1024, engine.max_match_len()) {
        out.clear();
        engine.scan_chunk_into(&chunk, scratch, out);
        engine.dedupe_within_chunk(out);
        found += out.len();
    }
    found
}

#[test]
fn scanning_allocates_nothing_once_scratch_is_warm() {
    let engine = Engine::builtin();
    let data = corpus(&engine);
    let mut scratch = engine.new_scratch();
    let mut out = Vec::new();
    let warm = scan_all(&engine, &data, &mut scratch, &mut out);
    assert!(
        warm > 1000,
        "the corpus should be dense with findings, got {warm}"
    );

    let region = Region::new(GLOBAL);
    let again = scan_all(&engine, &data, &mut scratch, &mut out);
    let stats = region.change();
    assert_eq!(again, warm);
    assert_eq!(
        (stats.allocations, stats.reallocations),
        (0, 0),
        "the hot path allocated while scanning {} bytes: {stats:?}",
        data.len()
    );
}
