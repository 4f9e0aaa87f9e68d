//! The pipeline end to end, over the testkit backends and the real engine:
//! the seed's tests, the accounting identity, faults, stops and slow sinks.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use trawl_backend::testkit::{
    FaultBackend, MockBackend, PartialReadBackend, PermanentErrorBackend, RetryBackend,
    SlowBackend, TestError, TestErrorKind,
};
use trawl_backend::{RemoteBackend, SkipReason};
use trawl_engine::Engine;
use trawl_retry::RetryPolicy;
use trawl_scheduler::{
    EventSink, FailureKind, Finding, RemoteConfig, RunReport, ScanControl, VecSink, scan_remote,
};

const GITHUB_PAT: &str = "ghp_R7fKq2LmX9vBn4WcT8yHs1JdP6aZe3UoQi5G";
const AWS_KEY: &str = "AKIAZ7Q3WV4ABCDXYZ2Q";

fn engine() -> &'static Engine {
    static ENGINE: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
    ENGINE.get_or_init(Engine::builtin)
}

fn small_config() -> RemoteConfig {
    RemoteConfig {
        cpu_workers: 2,
        io_threads: 2,
        chunk_size: 4096,
        pool_buffers: 4,
        max_in_flight_objects: 8,
        object_queue_cap: 4,
        discover_batch: 3,
        retry: RetryPolicy {
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            ..RetryPolicy::default()
        },
        ..RemoteConfig::default()
    }
}

/// Runs a scan on another thread and fails the test if it takes longer
/// than `limit`: a deadlock shows up as a failure, not a hung test. Gives
/// back the backend and the sink for their counters.
fn run_within<B: RemoteBackend, S: EventSink + 'static>(
    backend: B,
    config: RemoteConfig,
    mut sink: S,
    control: Arc<ScanControl>,
    limit: Duration,
) -> (RunReport, S, B) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let report = scan_remote(engine(), &backend, &config, &mut sink, &control);
        let _ = tx.send((report, sink, backend));
    });
    let (report, sink, backend) = rx
        .recv_timeout(limit)
        .expect("the scan did not finish in time");
    let report = report.expect("a valid configuration");
    assert!(
        report.adds_up(),
        "discovered ≠ completed + failed + skipped: {report:#?}"
    );
    (report, sink, backend)
}

/// Scans with a fresh control and a 60 s limit; findings and backend back.
fn scan_keeping<B: RemoteBackend>(
    backend: B,
    config: RemoteConfig,
) -> (RunReport, Vec<Finding>, B) {
    let (report, sink, backend) = run_within(
        backend,
        config,
        VecSink::default(),
        Arc::new(ScanControl::new()),
        Duration::from_secs(60),
    );
    (report, sink.findings, backend)
}

fn scan<B: RemoteBackend>(backend: B, config: RemoteConfig) -> (RunReport, Vec<Finding>) {
    let (report, findings, _) = scan_keeping(backend, config);
    (report, findings)
}

fn secrets(findings: &[Finding]) -> Vec<(String, String, u64, u64)> {
    let mut v: Vec<_> = findings
        .iter()
        .map(|f| {
            (
                f.rule_id.clone(),
                String::from_utf8_lossy(&f.secret).into_owned(),
                f.line,
                f.column,
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn remote_pipeline_finds_secret() {
    let text = format!("fn main() {{\n    let token = \"{GITHUB_PAT}\";\n}}\n");
    let (report, findings) = scan(
        MockBackend::new(vec![("repo/src/main.rs", text.clone())]),
        small_config(),
    );
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let f = &findings[0];
    assert_eq!(f.rule_id, "github-pat");
    assert_eq!(f.secret, GITHUB_PAT.as_bytes());
    assert_eq!(&*f.path, b"repo/src/main.rs");
    assert_eq!((f.line, f.column), (2, 18));
    assert_eq!(
        &text.as_bytes()[f.start as usize..f.end as usize],
        GITHUB_PAT.as_bytes()
    );
    assert_eq!(
        f.fingerprint,
        trawl_engine::fingerprint("github-pat", GITHUB_PAT.as_bytes())
    );
    assert_eq!(report.io.objects_completed, 1);
    assert_eq!(report.findings, 1);
    assert_eq!(report.findings_by_rule.get("github-pat"), Some(&1));
    assert!(report.is_complete());
}

#[test]
fn remote_pipeline_handles_boundary_spanning_secret() {
    let config = RemoteConfig {
        chunk_size: 64,
        ..small_config()
    };
    for start in 40..80 {
        let mut text = "x ".repeat(start / 2);
        if start % 2 == 1 {
            text.push('\n');
        }
        text.push_str(GITHUB_PAT);
        text.push_str(" tail\n");
        let (report, findings) = scan(MockBackend::new(vec![("a", text.clone())]), config.clone());
        assert_eq!(findings.len(), 1, "secret at {start}: {findings:#?}");
        let f = &findings[0];
        assert_eq!(f.secret, GITHUB_PAT.as_bytes(), "secret at {start}");
        assert_eq!(
            &text.as_bytes()[f.start as usize..f.end as usize],
            GITHUB_PAT.as_bytes()
        );
        assert!(report.io.chunks_fetched > 1);
    }
}

#[test]
fn remote_pipeline_handles_empty_backend() {
    let (report, findings) = scan(MockBackend::new(Vec::<(&str, &str)>::new()), small_config());
    assert!(findings.is_empty());
    assert_eq!(report.remote.objects_discovered, 0);
    assert!(report.is_complete());
}

#[test]
fn remote_pipeline_processes_multiple_objects() {
    let objects: Vec<(String, String)> = (0..100)
        .map(|i| {
            let body = match i % 3 {
                0 => format!("key = {AWS_KEY}\n"),
                1 => format!("nothing here {i}\n"),
                _ => String::new(),
            };
            (format!("obj-{i:03}"), body)
        })
        .collect();
    let (report, findings) = scan(MockBackend::new(objects), small_config());
    assert_eq!(report.remote.objects_discovered, 100);
    assert_eq!(report.remote.objects_enqueued, 100);
    assert_eq!(report.io.objects_completed, 100);
    assert_eq!(findings.len(), 34);
    assert!(
        findings
            .iter()
            .all(|f| f.rule_id == "aws-access-token" && f.line == 1 && f.column == 7)
    );
}

#[test]
fn remote_pipeline_retries_transient_failures() {
    let body = format!("a\nb {GITHUB_PAT}\n");
    let backend = RetryBackend::new(vec![("x", body.clone()), ("y", body)], 2);
    let (report, findings) = scan(backend, small_config());
    assert_eq!(findings.len(), 2);
    assert_eq!(report.io.objects_completed, 2);
    assert_eq!(report.io.retries, 4);
    assert_eq!(report.io.retryable_errors, 4);
    assert!(report.is_complete());
}

#[test]
fn partial_reads_cause_object_failure() {
    let body = "some text\n".repeat(2000);
    let (report, findings) = scan(
        PartialReadBackend::new(vec![("short", body)]),
        small_config(),
    );
    assert!(findings.is_empty());
    assert_eq!(report.io.objects_failed, 1);
    assert_eq!(report.failed[0].kind, FailureKind::ContractViolation);
    assert_eq!(report.failed[0].display, b"short");
    assert!(
        report.failed[0].message.contains("short read"),
        "{:?}",
        report.failed[0]
    );
    assert_eq!(report.io.permanent_errors, 1);
    assert!(!report.is_complete());
}

#[test]
fn permanent_errors_cause_immediate_failure() {
    let backend = PermanentErrorBackend::new(vec![("a", "xx"), ("b", "yy")]);
    let (report, _, backend) = scan_keeping(backend, small_config());
    assert_eq!(
        backend.mock().fetch_calls(),
        2,
        "one fetch per object, no retry"
    );
    assert_eq!(report.io.objects_failed, 2);
    assert_eq!(report.io.retries, 0);
    assert!(
        report
            .failed
            .iter()
            .all(|f| f.kind == FailureKind::Permanent)
    );
}

#[test]
fn retryable_errors_exhaust_attempts() {
    let backend = RetryBackend::new(vec![("a", "hello")], 100);
    let (report, _, backend) = scan_keeping(backend, small_config());
    assert_eq!(backend.attempts(0), 4, "max_attempts of the default policy");
    assert_eq!(report.io.objects_failed, 1);
    assert_eq!(report.failed[0].kind, FailureKind::RetriesExhausted);
    assert_eq!(report.io.retries, 3);
}

#[test]
fn invalid_config_is_an_error_not_a_panic() {
    let config = RemoteConfig {
        io_threads: 0,
        ..small_config()
    };
    let err = scan_remote(
        engine(),
        &MockBackend::new(vec![("a", "b")]),
        &config,
        &mut VecSink::default(),
        &ScanControl::new(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("io_threads"), "{err}");
}

#[test]
fn throttling_uses_no_attempt_within_the_time_budget() {
    let backend = RetryBackend::new(vec![("a", format!("{GITHUB_PAT}\n"))], 6)
        .throttled(Some(Duration::from_millis(2)));
    let config = RemoteConfig {
        max_object_time: Some(Duration::from_secs(20)),
        ..small_config()
    };
    let (report, findings) = scan(backend, config);
    assert_eq!(findings.len(), 1);
    assert_eq!(report.io.throttled, 6);
    assert_eq!(report.io.retries, 0);
    assert!(report.is_complete());
}

#[test]
fn throttling_without_time_budget_is_bounded_by_attempts() {
    let backend =
        RetryBackend::new(vec![("a", "x")], 100).throttled(Some(Duration::from_millis(1)));
    let config = RemoteConfig {
        max_object_time: None,
        ..small_config()
    };
    let (report, _) = scan(backend, config);
    assert_eq!(report.io.objects_failed, 1);
    assert_eq!(report.io.throttled, 4);
}

#[test]
fn a_backoff_past_the_time_budget_fails_at_once() {
    let backend = RetryBackend::new(vec![("a", "x")], 100);
    let config = RemoteConfig {
        max_object_time: Some(Duration::from_millis(300)),
        retry: RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(5),
            jitter_pct: 0,
        },
        ..small_config()
    };
    let started = Instant::now();
    let (report, _) = scan(backend, config);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "must not sleep the 5 s backoff"
    );
    assert_eq!(report.failed[0].kind, FailureKind::TimeBudgetExceeded);
}

#[test]
fn skipped_entries_and_flaky_listings_are_accounted_for() {
    let backend = MockBackend::new(vec![("a", format!("{AWS_KEY}\n")), ("b", String::new())])
        .with_skipped(".hidden", SkipReason::Hidden)
        .with_skipped("fifo", SkipReason::NotRegularFile)
        .with_flaky_listing(2);
    let (report, findings) = scan(backend, small_config());
    assert_eq!(findings.len(), 1);
    assert_eq!(report.remote.objects_discovered, 4);
    assert_eq!(report.objects_skipped, 2);
    assert_eq!(report.skipped_by_reason.get(&SkipReason::Hidden), Some(&1));
    assert!(report.io.retries >= 2);
    assert!(
        report.is_complete(),
        "skips on request keep a scan complete"
    );
}

#[test]
fn nul_bytes_invalid_utf8_and_odd_names_are_scanned() {
    let mut body = b"\x00\x01\xff\xfe binary\x00 ".to_vec();
    body.extend_from_slice(GITHUB_PAT.as_bytes());
    body.extend_from_slice(b"\x00\xff\n");
    let (report, findings) = scan(
        MockBackend::new(vec![(b"dump-\xff.bin".to_vec(), body)]),
        small_config(),
    );
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(&*findings[0].path, b"dump-\xff.bin");
    assert_eq!(findings[0].column, 14);
    assert!(report.is_complete());
}

#[test]
fn line_numbers_are_exact_across_many_chunks() {
    let mut text = String::new();
    let mut expected = Vec::new();
    for line in 1..=400u64 {
        if line % 37 == 0 {
            let indent = (line % 7) as usize;
            text.push_str(&" ".repeat(indent));
            text.push_str(GITHUB_PAT);
            expected.push((
                "github-pat".to_string(),
                GITHUB_PAT.to_string(),
                line,
                indent as u64 + 1,
            ));
        } else {
            text.push_str(&"word ".repeat((line % 11) as usize));
        }
        text.push('\n');
    }
    for chunk_size in [7, 64, 100, 1000, 1 << 20] {
        let config = RemoteConfig {
            chunk_size,
            ..small_config()
        };
        let (_, findings) = scan(MockBackend::new(vec![("t", text.clone())]), config);
        assert_eq!(secrets(&findings), expected, "chunk size {chunk_size}");
    }
}

/// A sink that takes its time over every finding.
struct SlowSink {
    delay: Duration,
    seen: Vec<Finding>,
}

impl EventSink for SlowSink {
    fn finding(&mut self, finding: &Finding) -> io::Result<()> {
        std::thread::sleep(self.delay);
        self.seen.push(finding.clone());
        Ok(())
    }
}

#[test]
fn a_slow_sink_slows_the_scan_but_loses_nothing() {
    let objects: Vec<(String, String)> = (0..40)
        .map(|i| {
            (
                format!("o{i}"),
                format!("{GITHUB_PAT}\n{AWS_KEY}\n").repeat(5),
            )
        })
        .collect();
    let config = RemoteConfig {
        findings_queue_cap: 1,
        pool_buffers: 1,
        chunk_size: 64,
        ..small_config()
    };
    let sink = SlowSink {
        delay: Duration::from_millis(1),
        seen: Vec::new(),
    };
    let (report, sink, _) = run_within(
        MockBackend::new(objects),
        config,
        sink,
        Arc::new(ScanControl::new()),
        Duration::from_secs(60),
    );
    assert_eq!(sink.seen.len(), 400);
    assert_eq!(report.findings, 400);
    assert!(report.is_complete());
}

#[test]
fn a_stopped_scan_ends_quickly_and_adds_up() {
    let objects: Vec<(String, String)> = (0..500)
        .map(|i| (format!("o{i}"), "data\n".repeat(3000)))
        .collect();
    let backend = SlowBackend::new(MockBackend::new(objects), Duration::from_millis(20));
    let control = Arc::new(ScanControl::new());
    let stopper = {
        let control = Arc::clone(&control);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            control.stop();
        })
    };
    let started = Instant::now();
    let (report, _, _) = run_within(
        backend,
        small_config(),
        VecSink::default(),
        control,
        Duration::from_secs(30),
    );
    stopper.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(report.stopped);
    assert!(!report.is_complete());
    assert!(report.io.objects_completed < 500);
    assert!(
        report
            .skipped_by_reason
            .get(&SkipReason::Stopped)
            .copied()
            .unwrap_or(0)
            > 0,
        "{report:#?}"
    );
}

/// A failing sink stops the scan, and the report says why.
struct BrokenSink;

impl EventSink for BrokenSink {
    fn finding(&mut self, _: &Finding) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::BrokenPipe, "pipe closed"))
    }
}

#[test]
fn a_failing_sink_stops_the_scan_with_a_reason() {
    let objects: Vec<(String, String)> = (0..50)
        .map(|i| (format!("o{i}"), format!("{GITHUB_PAT}\n")))
        .collect();
    let (report, _, _) = run_within(
        MockBackend::new(objects),
        small_config(),
        BrokenSink,
        Arc::new(ScanControl::new()),
        Duration::from_secs(30),
    );
    assert!(
        report
            .sink_error
            .as_deref()
            .unwrap_or("")
            .contains("pipe closed"),
        "{report:#?}"
    );
    assert!(!report.is_complete());
}

/// Object "slow" fails once and then waits a long backoff; object "fast"
/// must be fetched during that wait, through the one pooled buffer. If the
/// buffer were held while sleeping, "fast" would wait for the whole backoff.
/// Until "slow" has failed, "fast" answers with short throttles (which use
/// no attempt), so the order of the two does not depend on thread timing.
#[test]
fn no_buffer_is_held_while_sleeping_in_a_backoff() {
    let slow_failed = Arc::new(AtomicUsize::new(0));
    let fast_during_backoff = Arc::new(AtomicUsize::new(0));
    let probe = {
        let (slow_failed, fast_during_backoff) =
            (Arc::clone(&slow_failed), Arc::clone(&fast_during_backoff));
        FaultBackend::new(
            MockBackend::new(vec![("slow", "a"), ("fast", "b")]),
            move |obj, _| {
                if obj.display == b"slow" {
                    let first = slow_failed.fetch_add(1, Ordering::SeqCst) == 0;
                    return first
                        .then(|| TestError::new(TestErrorKind::Retryable, "first try fails"));
                }
                match slow_failed.load(Ordering::SeqCst) {
                    0 => Some(TestError::new(
                        TestErrorKind::Throttled {
                            retry_after: Some(Duration::from_millis(5)),
                        },
                        "wait for slow to fail first",
                    )),
                    1 => {
                        fast_during_backoff.fetch_add(1, Ordering::SeqCst);
                        None
                    }
                    _ => None,
                }
            },
        )
    };
    let config = RemoteConfig {
        pool_buffers: 1,
        io_threads: 2,
        discover_batch: 1,
        retry: RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(2),
            jitter_pct: 0,
        },
        ..small_config()
    };
    let (report, _) = scan(probe, config);
    assert!(report.is_complete(), "{report:#?}");
    assert_eq!(
        fast_during_backoff.load(Ordering::SeqCst),
        1,
        "the fast object was fetched while the slow one slept"
    );
}

#[test]
fn unreadable_entries_count_as_failed_not_skipped() {
    let backend = MockBackend::new(vec![("a", "x")]).with_skipped(
        "locked-dir",
        SkipReason::Unreadable("cannot read directory: Permission denied".into()),
    );
    let (report, _) = scan(backend, small_config());
    assert_eq!(report.remote.objects_discovered, 2);
    assert_eq!(report.io.objects_failed, 1);
    assert_eq!(report.objects_skipped, 0);
    assert_eq!(report.failed[0].display, b"locked-dir");
    assert!(report.failed[0].message.contains("Permission denied"));
    assert!(!report.is_complete());
}

/// An engine with a bug: it panics on chunks that contain `boom`.
struct PanickyEngine;

impl trawl_engine::ScanEngine for PanickyEngine {
    type Scratch = ();

    fn max_match_len(&self) -> usize {
        16
    }

    fn new_scratch(&self) {}

    fn scan_chunk_into(
        &self,
        chunk: &trawl_engine::Chunk<'_>,
        _: &mut (),
        _: &mut Vec<trawl_engine::RawMatch>,
    ) {
        assert!(!chunk.buf.windows(4).any(|w| w == b"boom"), "engine bug");
    }

    fn rule_id(&self, _: trawl_engine::RuleIndex) -> &str {
        "none"
    }
}

#[test]
fn an_engine_panic_fails_that_object_only() {
    let backend = MockBackend::new(vec![
        ("ok", "fine\n".repeat(100)),
        ("bad", "x boom y".into()),
    ]);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let report = scan_remote(
            &PanickyEngine,
            &backend,
            &small_config(),
            &mut VecSink::default(),
            &ScanControl::new(),
        );
        let _ = tx.send(report);
    });
    let report = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("finished")
        .expect("valid config");
    assert!(report.adds_up(), "{report:#?}");
    assert_eq!(report.io.objects_completed, 1);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].display, b"bad");
    assert_eq!(report.failed[0].kind, FailureKind::Internal);
}

/// An archived object (S3 `GLACIER`) is skipped with its reason, not failed:
/// the scan stays complete and the other objects are scanned.
#[test]
fn an_archived_object_is_skipped_not_failed() {
    let backend = FaultBackend::new(
        MockBackend::new(vec![
            ("cold", format!("token = {GITHUB_PAT}\n")),
            ("warm", format!("key = {AWS_KEY}\n")),
        ]),
        |obj, _| {
            (obj.display == b"cold")
                .then(|| TestError::new(TestErrorKind::Archived, "InvalidObjectState"))
        },
    );
    let (report, findings) = scan(backend, small_config());
    assert!(report.is_complete(), "{report:?}");
    assert!(report.adds_up(), "{report:?}");
    assert_eq!(report.io.objects_completed, 1);
    assert_eq!(
        report.skipped_by_reason.get(&SkipReason::Archived),
        Some(&1)
    );
    assert_eq!(findings.len(), 1);
    assert_eq!(&findings[0].path[..], b"warm");
}
