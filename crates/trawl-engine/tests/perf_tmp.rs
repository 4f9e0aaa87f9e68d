//! temp
use trawl_engine::{Chunk, Engine, ScanEngine};
#[test]
fn perf() {
    let mut rs = trawl_engine::RuleSet::builtin();
    if let Ok(x) = std::env::var("DROP") { rs.remove(x.split(',')); }
    let engine = Engine::new(rs).unwrap();
    println!(
        "rules {} max_match_len {} keywords {}",
        engine.rules().len(),
        engine.max_match_len(),
        engine.keywords().count()
    );
    let mut src = Vec::new();
    let mut files = Vec::new();
    for entry in std::fs::read_dir("/work/main/crates/trawl-engine/src")
        .unwrap()
        .chain(std::fs::read_dir("/work/main/crates/trawl-scheduler/src").unwrap())
    {
        let p = entry.unwrap().path();
        if p.is_file() {
            files.push(std::fs::read(p).unwrap());
        }
    }
    while src.len() < 32 << 20 {
        for f in &files {
            src.extend_from_slice(f);
        }
    }
    let mut scratch = engine.new_scratch();
    let mut out = Vec::new();
    let t = std::time::Instant::now();
    let cs = 1 << 20;
    let ov = engine.max_match_len();
    let mut start = 0;
    let mut n = 0;
    while start < src.len() {
        let end = (start + cs).min(src.len());
        let bs = start.saturating_sub(ov);
        let chunk = Chunk {
            buf: &src[bs..end],
            payload_start: start - bs,
            offset: bs as u64,
            is_last: end == src.len(),
            object: trawl_engine::ObjectContext {
                display: b"x.rs",
                size: src.len() as u64,
            },
        };
        out.clear();
        engine.scan_chunk_into(&chunk, &mut scratch, &mut out);
        n += out.len();
        start = end;
    }
    let dt = t.elapsed();
    println!(
        "{} MB in {:?} = {:.0} MB/s, {} matches",
        src.len() >> 20,
        dt,
        (src.len() as f64 / 1e6) / dt.as_secs_f64(),
        n
    );
    let rnd: Vec<u8> = (0..32u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let t = std::time::Instant::now();
    out.clear();
    engine.scan_chunk_into(&Chunk::whole(&rnd, b"r"), &mut scratch, &mut out);
    println!("random 32MB in {:?}, {} matches", t.elapsed(), out.len());
}
