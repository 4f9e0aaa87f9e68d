//! Engine throughput with the built-in rules on three corpora: mixed source
//! code (`builtin_rules`), text without any keyword (`keyword_free`) and
//! `.env`-style dumps with 1000 secrets per MiB (`secret_dense`); against
//! `memchr`'s literal search over the source corpus as the ceiling.
//!
//! Both run in the same process on the same 4 MiB buffer, so their ratio is
//! the figure to compare between machines (DESIGN.md, "Performance").

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use memchr::memmem;
use trawl_engine::{Engine, RawMatch, ScanEngine, chunks};

const CORPUS_LEN: usize = 4 << 20;
const CHUNK_LEN: usize = 256 << 10;
const SEED: u64 = 1;
/// Planted secrets per MiB of the secret-dense corpus.
const SECRETS_PER_MIB: usize = 1000;

/// Scans `data` in `CHUNK_LEN` chunks, each led by an overlap of the
/// engine's `max_match_len`, as the scheduler does; returns the match count.
fn scan_chunked(
    engine: &Engine,
    data: &[u8],
    scratch: &mut <Engine as ScanEngine>::Scratch,
    out: &mut Vec<RawMatch>,
) -> usize {
    let mut found = 0;
    for chunk in chunks(data, b"bench/corpus.txt", CHUNK_LEN, engine.max_match_len()) {
        out.clear();
        engine.scan_chunk_into(&chunk, scratch, out);
        found += out.len();
    }
    found
}

fn engine(c: &mut Criterion) {
    let data = trawl_benches::corpus_bytes(CORPUS_LEN, SEED);
    let engine = Engine::builtin();
    let mut scratch = engine.new_scratch();
    let mut out = Vec::new();
    assert!(
        scan_chunked(&engine, &data, &mut scratch, &mut out) > 0,
        "the built-in rules find none of the planted secrets"
    );
    let finder = memmem::Finder::new("AKIA");

    let keywords: Vec<&str> = engine.keywords().collect();
    let keyword_free = trawl_benches::keyword_free_bytes(CORPUS_LEN, SEED, &keywords);
    assert_eq!(
        scan_chunked(&engine, &keyword_free, &mut scratch, &mut out),
        0,
        "the keyword-free corpus has findings"
    );
    let examples: Vec<&str> = engine
        .rules()
        .iter()
        .flat_map(|r| r.examples().iter().map(String::as_str))
        .collect();
    let dense = trawl_benches::secret_dense_bytes(CORPUS_LEN, SEED, &examples, SECRETS_PER_MIB);
    let dense_found = scan_chunked(&engine, &dense, &mut scratch, &mut out);
    assert!(
        dense_found >= SECRETS_PER_MIB * (CORPUS_LEN >> 20) / 2,
        "the secret-dense corpus is not dense: {dense_found} findings"
    );

    let mut group = c.benchmark_group("engine");
    group
        .throughput(Throughput::Bytes(data.len() as u64))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("builtin_rules", |b| {
        b.iter(|| scan_chunked(&engine, black_box(&data), &mut scratch, &mut out));
    });
    group.bench_function("keyword_free", |b| {
        b.iter(|| scan_chunked(&engine, black_box(&keyword_free), &mut scratch, &mut out));
    });
    group.bench_function("secret_dense", |b| {
        b.iter(|| scan_chunked(&engine, black_box(&dense), &mut scratch, &mut out));
    });
    group.bench_function("memmem_ceiling", |b| {
        b.iter(|| finder.find_iter(black_box(&data)).count());
    });
    group.finish();
}

// What `criterion_group!`/`criterion_main!` expand to, written out: the
// macros generate an undocumented `pub fn`, which `missing_docs` rejects.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    engine(&mut criterion);
    criterion.final_summary();
}
