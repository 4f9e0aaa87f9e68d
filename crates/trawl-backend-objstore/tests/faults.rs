//! The scheduler scanning a real S3-compatible server through a proxy that
//! injects one kind of fault at a time: every object ends completed or
//! failed with the right class, retries are counted, no buffer leaks, and
//! the completed objects' findings equal those of a fault-free run.

mod support;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use support::fault_proxy::{Fault, FaultProxy, FaultRule, Target};
use support::s3::{endpoint, new_bucket, options, put_all};
use trawl_backend_objstore::{BreakerConfig, ObjectStoreBackend, Options};
use trawl_engine::Engine;
use trawl_retry::RetryPolicy;
use trawl_scheduler::{
    FailureKind, Finding, RemoteConfig, RunReport, ScanControl, VecSink, scan_remote,
};

const GITHUB_PAT: &str = "ghp_R7fKq2LmX9vBn4WcT8yHs1JdP6aZe3UoQi5G";
const AWS_KEY: &str = "AKIAZ7Q3WV4ABCDXYZ2Q";
const OBJECTS: usize = 6;
const CHUNK: usize = 64 * 1024;

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(Engine::builtin)
}

/// Objects of one to four chunks, each with secrets at known places, one
/// of them straddling a chunk edge.
fn objects() -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..OBJECTS)
        .map(|i| {
            let mut body = Vec::new();
            let filler = format!("line {i} of plain text, nothing to see here\n");
            while body.len() < CHUNK * (i % 4) + CHUNK - 20 {
                body.extend_from_slice(filler.as_bytes());
            }
            body.extend_from_slice(format!("token = {GITHUB_PAT}\n").as_bytes());
            body.extend_from_slice(filler.repeat(50).as_bytes());
            body.extend_from_slice(format!("aws_key = {AWS_KEY}\n").as_bytes());
            (format!("data/object-{i}.txt").into_bytes(), body)
        })
        .collect()
}

/// A bucket with [`objects`] and a proxy in front of the server.
struct Setup {
    bucket: String,
    proxy: FaultProxy,
}

fn setup(hint: &str) -> Option<Setup> {
    let endpoint = endpoint()?;
    let bucket = new_bucket(&endpoint, hint);
    let objects = objects();
    let refs: Vec<(&[u8], &[u8])> = objects
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    put_all(&endpoint, &bucket, &refs);
    let upstream: SocketAddr = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("the test endpoint is http://127.0.0.1:PORT");
    let proxy = FaultProxy::start(upstream).expect("start the proxy");
    Some(Setup { bucket, proxy })
}

fn config() -> RemoteConfig {
    RemoteConfig {
        cpu_workers: 2,
        io_threads: 3,
        chunk_size: CHUNK,
        pool_buffers: 4,
        max_in_flight_objects: 8,
        discover_batch: 4,
        retry: RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
            jitter_pct: 20,
        },
        max_object_time: Some(Duration::from_secs(60)),
        ..RemoteConfig::default()
    }
}

fn scan_with(setup: &Setup, options: Options, config: &RemoteConfig) -> (RunReport, Vec<Finding>) {
    let backend = ObjectStoreBackend::from_url(&format!("s3://{}/data/", setup.bucket), options)
        .expect("configure the backend");
    let mut sink = VecSink::default();
    let report = scan_remote(engine(), &backend, config, &mut sink, &ScanControl::new())
        .expect("the scan runs");
    assert!(report.adds_up(), "{report:?}");
    assert_eq!(
        report.buffers_in_use_at_end, 0,
        "a buffer leaked: {report:?}"
    );
    (report, sink.findings)
}

fn scan(setup: &Setup) -> (RunReport, Vec<Finding>) {
    scan_with(setup, options(&setup.proxy.url()), &config())
}

/// (path, rule, line, column, secret) of each finding, sorted.
fn places(findings: &[Finding]) -> Vec<(String, String, u64, u64, String)> {
    let mut places: Vec<_> = findings
        .iter()
        .map(|f| {
            (
                String::from_utf8_lossy(&f.path).into_owned(),
                f.rule_id.clone(),
                f.line,
                f.column,
                String::from_utf8_lossy(&f.secret).into_owned(),
            )
        })
        .collect();
    places.sort();
    places
}

/// Runs the scan fault-free, then with `rule`, and checks what every fault
/// must leave true: the objects named in `not_scanned` (failed or skipped)
/// aside, the findings are those of the fault-free run. Returns the faulty
/// run's report.
fn with_fault(hint: &str, rule: FaultRule, not_scanned: &[&str]) -> Option<RunReport> {
    let setup = setup(hint)?;
    let (clean, clean_findings) = scan(&setup);
    assert!(clean.is_complete(), "{clean:?}");
    assert_eq!(clean.io.objects_completed, OBJECTS as u64);
    assert_eq!(clean_findings.len(), 2 * OBJECTS, "{clean_findings:?}");

    setup.proxy.push(rule);
    let (report, findings) = scan(&setup);
    assert_eq!(setup.proxy.pending_rules(), 0, "the fault was not used up");
    assert!(setup.proxy.faults_injected() > 0);
    for failed in &report.failed {
        let name = String::from_utf8_lossy(&failed.display);
        assert!(
            not_scanned.iter().any(|n| name.contains(n)),
            "unexpected failure: {failed:?}"
        );
    }
    let scanned = |place: &(String, String, u64, u64, String)| {
        !not_scanned.iter().any(|n| place.0.contains(n))
    };
    let expected: Vec<_> = places(&clean_findings)
        .into_iter()
        .filter(scanned)
        .collect();
    assert_eq!(
        places(&findings),
        expected,
        "findings differ from the fault-free run"
    );
    assert_eq!(
        report.io.objects_completed + report.io.objects_failed + report.objects_skipped,
        OBJECTS as u64,
        "{report:?}"
    );
    Some(report)
}

#[test]
fn a_burst_of_503_is_retried() {
    let Some(report) = with_fault("burst", FaultRule::status(Target::GetObject, 503, 3), &[])
    else {
        return;
    };
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.io.retryable_errors, 3);
    assert_eq!(report.io.retries, 3);
}

#[test]
fn a_429_with_retry_after_is_waited_out_as_a_throttle() {
    let rule = FaultRule::new(
        Target::GetObject,
        Fault::Status {
            code: 429,
            retry_after: Some(1),
            s3_code: "SlowDown",
        },
        2,
    );
    let Some(report) = with_fault("throttle", rule, &[]) else {
        return;
    };
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.io.throttled, 2);
    assert_eq!(report.io.retryable_errors, 0);
    assert!(
        report.elapsed >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured: {:?}",
        report.elapsed
    );
}

/// A connection cut mid-body and a body that ends before its
/// `Content-Length` are both transient: retried, and counted.
#[test]
fn a_body_cut_short_is_retried() {
    for (hint, rule) in [
        (
            "reset",
            FaultRule::reset_mid_body(Target::GetObject, 1000, 2),
        ),
        (
            "truncated",
            FaultRule::truncated_body(Target::GetObject, 10, 2),
        ),
    ] {
        let Some(report) = with_fault(hint, rule, &[]) else {
            return;
        };
        assert!(report.is_complete(), "{hint}: {report:?}");
        assert_eq!(report.io.retryable_errors, 2, "{hint}");
    }
}

#[test]
fn a_slow_first_byte_times_out_and_is_retried() {
    let Some(setup) = setup("slow") else { return };
    setup.proxy.push(FaultRule::slow_first_byte(
        Target::GetObject,
        Duration::from_secs(3),
        1,
    ));
    let options = Options {
        request_timeout: Duration::from_millis(700),
        ..options(&setup.proxy.url())
    };
    let (report, findings) = scan_with(&setup, options, &config());
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.io.retryable_errors, 1, "{report:?}");
    assert_eq!(findings.len(), 2 * OBJECTS);
}

#[test]
fn a_failing_listing_page_is_retried() {
    let Some(report) = with_fault(
        "listing",
        FaultRule::status(Target::ListObjects, 500, 2),
        &[],
    ) else {
        return;
    };
    assert!(report.is_complete(), "{report:?}");
    assert!(report.listing_error.is_none());
    assert_eq!(report.io.retryable_errors, 2);
}

#[test]
fn a_permanent_error_fails_only_its_object() {
    let rule = FaultRule::status(Target::PathContains("object-3".into()), 403, 1);
    let Some(report) = with_fault("denied", rule, &["object-3"]) else {
        return;
    };
    assert_eq!(report.io.objects_failed, 1, "{report:?}");
    assert_eq!(report.failed[0].kind, FailureKind::Permanent);
    assert!(
        report.failed[0].message.contains("403"),
        "{:?}",
        report.failed
    );
    assert_eq!(report.io.retries, 0);
}

#[test]
fn an_archived_answer_skips_the_object() {
    let rule = FaultRule::new(
        Target::PathContains("object-2".into()),
        Fault::Status {
            code: 403,
            retry_after: None,
            s3_code: "InvalidObjectState",
        },
        1,
    );
    let Some(report) = with_fault("archived", rule, &["object-2"]) else {
        return;
    };
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.objects_skipped, 1);
    assert_eq!(report.io.objects_completed, OBJECTS as u64 - 1);
}

#[test]
fn the_circuit_breaker_opens_and_recovers() {
    let Some(setup) = setup("breaker") else {
        return;
    };
    setup
        .proxy
        .push(FaultRule::status(Target::GetObject, 503, 5));
    let options = Options {
        breaker: BreakerConfig {
            failures: 2,
            cool_down: Duration::from_millis(300),
        },
        ..options(&setup.proxy.url())
    };
    let config = RemoteConfig {
        retry: RetryPolicy {
            max_attempts: 8,
            ..config().retry
        },
        ..config()
    };
    let backend = ObjectStoreBackend::from_url(&format!("s3://{}/data/", setup.bucket), options)
        .expect("configure the backend");
    let mut sink = VecSink::default();
    let report = scan_remote(engine(), &backend, &config, &mut sink, &ScanControl::new())
        .expect("the scan runs");
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.buffers_in_use_at_end, 0);
    assert_eq!(sink.findings.len(), 2 * OBJECTS);
    let stats = backend.breaker_stats();
    assert!(stats.opened >= 1, "{stats:?}");
    assert!(stats.closed >= 1, "{stats:?}");
    assert!(stats.rejected >= 1, "{stats:?}");
    // Refused calls are throttles: they cost no attempt and no request.
    assert!(
        report.io.throttled >= stats.rejected,
        "{report:?} {stats:?}"
    );
    assert_eq!(setup.proxy.faults_injected(), 5);
}
