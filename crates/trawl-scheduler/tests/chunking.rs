//! DESIGN invariant 2 through the whole pipeline: for random contents with
//! planted secrets and random chunk sizes, the pipeline's findings equal a
//! scan of each object as one buffer.

use std::time::Duration;

use proptest::prelude::{
    Just, ProptestConfig, Strategy, TestCaseError, prop, prop_assert, prop_assert_eq, prop_oneof,
    proptest,
};
use trawl_backend::testkit::MockBackend;
use trawl_engine::{Engine, ScanEngine};
use trawl_retry::RetryPolicy;
use trawl_scheduler::{Finding, LineContext, RemoteConfig, ScanControl, VecSink, scan_remote};

const SECRETS: &[&str] = &[
    "ghp_R7fKq2LmX9vBn4WcT8yHs1JdP6aZe3UoQi5G",
    "AKIAZ7Q3WV4ABCDXYZ2Q",
    "glpat-Xk3Lq9Zr7Tn2Vb5Wm8Jc",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi8fPzNjqf1Rn0Zb6sYq3Vw9mXcL4\nKfE2bT7qN1xR8sD5vH3jW6yU0pA9zG4cL2nM7kB1vQ8wT5rY3eS6hJ0dF9gK2aPm\n-----END RSA PRIVATE KEY-----",
];

fn engine() -> &'static Engine {
    static ENGINE: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
    ENGINE.get_or_init(Engine::builtin)
}

/// Filler that cannot form a secret: words, whitespace, punctuation and
/// arbitrary bytes (NUL and invalid UTF-8 included).
fn filler() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        prop::sample::select(vec![
            "the", "fn", "let", "value", "x", "config", "42", "{", "}", "(", ");"
        ])
        .prop_map(|w| w.as_bytes().to_vec()),
        prop::sample::select(vec![" ", "\n", "\t", "  ", "\r\n", ", ", "\"", "'"])
            .prop_map(|w| w.as_bytes().to_vec()),
        prop::collection::vec(
            prop_oneof![Just(0u8), Just(0xff), Just(0x80), Just(b'\n')],
            1..4
        ),
    ];
    prop::collection::vec(piece, 0..60).prop_map(|pieces| pieces.concat())
}

/// An object: filler, then secrets each between delimiters and more filler.
fn object() -> impl Strategy<Value = (Vec<u8>, usize)> {
    (
        filler(),
        prop::collection::vec((prop::sample::select(SECRETS.to_vec()), filler()), 0..5),
    )
        .prop_map(|(head, planted)| {
            let mut body = head;
            for (secret, after) in &planted {
                body.extend_from_slice(b" \"");
                body.extend_from_slice(secret.as_bytes());
                body.extend_from_slice(b"\" ");
                body.extend_from_slice(after);
            }
            (body, planted.len())
        })
}

type Found = Vec<(Vec<u8>, String, u64, u64)>;

fn whole_scan(objects: &[(String, Vec<u8>)]) -> Found {
    let engine = engine();
    let mut found = Vec::new();
    for (name, body) in objects {
        let mut matches = engine.scan_whole(body, name.as_bytes());
        engine.dedupe_within_chunk(&mut matches);
        for m in matches {
            found.push((
                name.as_bytes().to_vec(),
                engine.rule_id(m.rule).to_owned(),
                m.secret.start as u64,
                m.secret.end as u64,
            ));
        }
    }
    found.sort();
    found
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn chunking_is_invisible(
        objects in prop::collection::vec(object(), 1..4),
        chunk_size in prop_oneof![1usize..32, 32usize..600, Just(4096)],
        pool_buffers in 1usize..4,
    ) {
        let planted: usize = objects.iter().map(|(_, n)| n).sum();
        let objects: Vec<(String, Vec<u8>)> =
            objects.into_iter().enumerate().map(|(i, (b, _))| (format!("obj{i}"), b)).collect();
        let expected = whole_scan(&objects);
        prop_assert_eq!(expected.len(), planted, "every planted secret is found once");
        let config = RemoteConfig {
            cpu_workers: 2,
            io_threads: 2,
            chunk_size,
            pool_buffers,
            retry: RetryPolicy { base_delay: Duration::from_millis(1), ..RetryPolicy::default() },
            ..RemoteConfig::default()
        };
        let mut sink = VecSink::default();
        let report = scan_remote(engine(), &MockBackend::new(objects.clone()), &config, &mut sink, &ScanControl::new())
            .unwrap();
        prop_assert_eq!(report.adds_up(), true);
        let mut found: Found = sink
            .findings
            .iter()
            .map(|f| (f.path.to_vec(), f.rule_id.clone(), f.start, f.end))
            .collect();
        found.sort();
        prop_assert_eq!(found, expected);
        for f in &sink.findings {
            let body = &objects.iter().find(|(name, _)| name.as_bytes() == &*f.path).unwrap().1;
            check_context(body, f)?;
        }
    }
}

/// A finding's context is a true part of its line, within the bound: all
/// the line's start when its length says so, all its end unless cut.
fn check_context(body: &[u8], f: &Finding) -> Result<(), TestCaseError> {
    let (start, end) = (f.start as usize, f.end as usize);
    let c = &f.context;
    let line_start = body[..start]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let line_before = &body[line_start..start];
    prop_assert!(line_before.ends_with(&c.before) && c.before.len() <= LineContext::MAX_SIDE);
    prop_assert_eq!(
        c.before.len() as u64 == f.column - 1,
        c.before == line_before
    );
    let rest = &body[end..];
    let line_after = match rest.iter().position(|&b| b == b'\n') {
        Some(newline) => rest[..newline]
            .strip_suffix(b"\r")
            .unwrap_or(&rest[..newline]),
        None => rest,
    };
    prop_assert!(line_after.starts_with(&c.after) && c.after.len() <= LineContext::MAX_SIDE);
    if !c.after_cut {
        prop_assert_eq!(&c.after, line_after);
    }
    Ok(())
}
