//! `scan_remote`: discovery → I/O threads → CPU workers → sink.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, Scope};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, bounded};
use trawl_backend::{ErrorClass, RemoteBackend, RemoteObject, SkipReason};
use trawl_budget::{CountBudget, Permit, PooledBuf, TsBufferPool};
use trawl_engine::{Chunk, ObjectContext, RawMatch, ScanEngine};
use trawl_retry::{Rng, TimeBudget};

use crate::control::ScanControl;
use crate::lines::{LinePosition, Locator, context_around};
use crate::report::{Counters, FailureKind, bump};
use crate::{EventSink, Finding, RemoteConfig, Result, RunReport};

/// How long discovery waits on a full object queue before it looks at the
/// stop flag again.
const SEND_POLL: Duration = Duration::from_millis(100);
/// The longest uninterrupted sleep of a backoff: a stop is noticed within it.
const SLEEP_SLICE: Duration = Duration::from_millis(20);

/// Scans every object `backend` lists with `engine`, sending findings to
/// `sink`, in bounded memory.
///
/// One discovery thread (the caller's) lists objects and hands them to
/// `io_threads` I/O threads, which fetch each object chunk by chunk into
/// pooled buffers (retrying per `config.retry`) and hand the buffers to
/// `cpu_workers` CPU workers, which scan them and send findings to the sink
/// thread. Every stage waits only on room in the stage after it.
///
/// [`ScanControl::stop`] ends the scan early: no new object or chunk is
/// started, chunks already fetched are scanned, and every object not
/// finished is counted as skipped with [`SkipReason::Stopped`]. The scan
/// also stops itself when the sink fails, since findings could not be
/// delivered. [`ScanControl::progress`] reads the counts while it runs.
///
/// Returns an error only for an invalid configuration; everything that goes
/// wrong later is in the [`RunReport`], which always adds up.
pub fn scan_remote<E, B, S>(
    engine: &E,
    backend: &B,
    config: &RemoteConfig,
    sink: &mut S,
    control: &ScanControl,
) -> Result<RunReport>
where
    E: ScanEngine,
    B: RemoteBackend,
    S: EventSink + ?Sized,
{
    let started = Instant::now();
    let overlap = engine.max_match_len();
    config.validate(overlap)?;
    let counters = &control.counters;
    let stop = &control.stop;
    let shared = Shared {
        engine,
        backend,
        config,
        counters,
        stop,
        overlap,
        pool: TsBufferPool::new(config.pool_buffers, config.chunk_size + overlap),
    };

    let (listing_error, sink_outcome) = thread::scope(|scope| -> Result<_> {
        let (object_tx, object_rx) = bounded::<WorkItem<B::Object>>(config.object_queue_cap);
        let (task_tx, task_rx) = bounded::<ScanTask<'_>>(config.pool_buffers);
        let (finding_tx, finding_rx) = bounded::<Finding>(config.findings_queue_cap);

        let sink_thread = spawn(scope, "trawl-sink", {
            let shared = &shared;
            move || drain_findings(sink, finding_rx, shared)
        })?;
        let cores = if config.pin_threads {
            pinning::cores()
        } else {
            Vec::new()
        };
        for worker in 0..config.cpu_workers {
            let (rx, tx) = (task_rx.clone(), finding_tx.clone());
            let core = cores.get(worker % cores.len().max(1)).copied();
            let shared = &shared;
            spawn(scope, &format!("trawl-cpu-{worker}"), move || {
                pinning::pin(core);
                cpu_worker(shared, rx, tx);
            })?;
        }
        drop((task_rx, finding_tx));
        for io in 0..config.io_threads {
            let (rx, tx) = (object_rx.clone(), task_tx.clone());
            let shared = &shared;
            spawn(scope, &format!("trawl-io-{io}"), move || {
                io_thread(shared, io, rx, tx)
            })?;
        }
        drop((object_rx, task_tx));

        let listing_error = discover(&shared, object_tx);
        let sink_outcome = sink_thread.join().unwrap_or_else(|_| SinkOutcome {
            error: Some("the sink panicked".into()),
            by_rule: Default::default(),
        });
        Ok((listing_error, sink_outcome))
    })?;

    let mut report = counters.snapshot();
    report.listing_error = listing_error;
    report.sink_error = sink_outcome.error;
    report.findings_by_rule = sink_outcome.by_rule;
    report.stopped = stop.load(Ordering::Relaxed);
    report.elapsed = started.elapsed();
    report.buffers_in_use_at_end = shared.pool.in_use();
    debug_assert!(report.adds_up(), "{report:?}");
    Ok(report)
}

/// What every thread of one scan shares.
struct Shared<'a, E, B> {
    engine: &'a E,
    backend: &'a B,
    config: &'a RemoteConfig,
    counters: &'a Counters,
    stop: &'a AtomicBool,
    overlap: usize,
    pool: TsBufferPool,
}

impl<E, B> Shared<'_, E, B> {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

fn spawn<'scope, T: Send + 'scope>(
    scope: &'scope Scope<'scope, '_>,
    name: &str,
    f: impl FnOnce() -> T + Send + 'scope,
) -> Result<thread::ScopedJoinHandle<'scope, T>> {
    thread::Builder::new()
        .name(name.to_owned())
        .spawn_scoped(scope, f)
        .map_err(crate::Error::Spawn)
}

/// One object on its way from discovery to an I/O thread.
struct WorkItem<H> {
    object: RemoteObject<H>,
    permit: Permit,
}

/// What all chunks of one object share. When the last chunk is scanned and
/// this is dropped, the object counts as completed (unless it already ended
/// as failed or skipped) and its in-flight permit is released.
struct ObjectState<'a> {
    display: Arc<[u8]>,
    size: u64,
    ended: AtomicBool,
    counters: &'a Counters,
    _permit: Permit,
}

impl ObjectState<'_> {
    fn fail(&self, kind: FailureKind, message: String) {
        if !self.ended.swap(true, Ordering::Relaxed) {
            self.counters.fail(&self.display, kind, message);
        }
    }

    fn skip(&self, reason: SkipReason) {
        if !self.ended.swap(true, Ordering::Relaxed) {
            self.counters.skip(reason);
        }
    }
}

impl Drop for ObjectState<'_> {
    fn drop(&mut self) {
        if !self.ended.load(Ordering::Relaxed) {
            bump(&self.counters.objects_completed);
        }
    }
}

/// One fetched chunk, handed from an I/O thread to a CPU worker. Dropping it
/// returns the buffer to the pool.
struct ScanTask<'a> {
    buf: PooledBuf,
    len: usize,
    payload_start: usize,
    /// Absolute offset of `buf[0]`.
    offset: u64,
    is_last: bool,
    /// Line and line start of `buf[0]`.
    position: LinePosition,
    object: Arc<ObjectState<'a>>,
}

// ---------------------------------------------------------------- discovery

/// Lists every object and hands it on; returns why the listing ended early.
fn discover<E, B: RemoteBackend>(
    shared: &Shared<'_, E, B>,
    object_tx: Sender<WorkItem<B::Object>>,
) -> Option<String> {
    let budget = CountBudget::new(shared.config.max_in_flight_objects);
    let mut cursor = B::Cursor::default();
    let mut rng = Rng::new(shared.config.seed ^ 0x6c69_7374);
    let counters = shared.counters;
    loop {
        if shared.stopped() {
            return None;
        }
        let page = match list_with_retry(shared, &mut cursor, &mut rng) {
            Ok(page) => page,
            Err(message) => return Some(message),
        };
        for skipped in shared.backend.take_skipped(&mut cursor) {
            bump(&counters.objects_discovered);
            match skipped.reason {
                SkipReason::Unreadable(reason) => {
                    counters.fail(&skipped.display, FailureKind::Permanent, reason)
                }
                reason => {
                    tracing::debug!(object = %String::from_utf8_lossy(&skipped.display), %reason, "skipped");
                    counters.skip(reason);
                }
            }
        }
        if page.is_empty() {
            return None;
        }
        for object in page {
            bump(&counters.objects_discovered);
            let Some(permit) = budget.acquire(shared.stop) else {
                counters.skip(SkipReason::Stopped);
                continue;
            };
            let mut item = WorkItem { object, permit };
            loop {
                match object_tx.send_timeout(item, SEND_POLL) {
                    Ok(()) => {
                        bump(&counters.objects_enqueued);
                        break;
                    }
                    Err(SendTimeoutError::Timeout(back)) if !shared.stopped() => item = back,
                    Err(_) => {
                        counters.skip(SkipReason::Stopped);
                        break;
                    }
                }
            }
        }
    }
}

fn list_with_retry<E, B: RemoteBackend>(
    shared: &Shared<'_, E, B>,
    cursor: &mut B::Cursor,
    rng: &mut Rng,
) -> Result<Vec<RemoteObject<B::Object>>, String> {
    let policy = &shared.config.retry;
    let mut attempt = 1;
    loop {
        let err = match shared
            .backend
            .list_page(cursor, shared.config.discover_batch)
        {
            Ok(page) => return Ok(page),
            Err(err) => err,
        };
        let class = shared.backend.classify_error(&err);
        let retryable = class == ErrorClass::Retryable;
        let delay = match class {
            ErrorClass::Retryable => {
                bump(&shared.counters.retryable_errors);
                policy.backoff(attempt, rng)
            }
            ErrorClass::Throttled { retry_after } => {
                bump(&shared.counters.throttled);
                retry_after.unwrap_or_else(|| policy.backoff(attempt, rng))
            }
            _ => {
                bump(&shared.counters.permanent_errors);
                return Err(format!("listing failed: {err}"));
            }
        };
        if !policy.may_retry(attempt) {
            return Err(format!("listing failed after {attempt} attempts: {err}"));
        }
        tracing::debug!(attempt, error = %err, "listing failed, retrying");
        if retryable {
            bump(&shared.counters.retries);
        }
        attempt += 1;
        if !sleep_unless_stopped(delay, shared.stop) {
            return Err("listing interrupted by a stop".into());
        }
    }
}

// ---------------------------------------------------------------- I/O

fn io_thread<'a, E: ScanEngine, B: RemoteBackend>(
    shared: &Shared<'a, E, B>,
    index: usize,
    objects: Receiver<WorkItem<B::Object>>,
    tasks: Sender<ScanTask<'a>>,
) {
    // One generator per I/O thread, each seeded from the configured seed.
    let mut rng = Rng::new(shared.config.seed.wrapping_add(index as u64));
    let mut tail = Vec::with_capacity(shared.overlap);
    for item in objects {
        let state = Arc::new(ObjectState {
            display: item.object.display.as_slice().into(),
            size: item.object.size,
            ended: AtomicBool::new(false),
            counters: shared.counters,
            _permit: item.permit,
        });
        if shared.stopped() {
            state.skip(SkipReason::Stopped);
            continue;
        }
        bump(&shared.counters.objects_started);
        fetch_object(shared, &item.object, &state, &tasks, &mut tail, &mut rng);
    }
}

/// Fetches one object chunk by chunk, handing each chunk to the CPU workers.
/// Ends the object as failed or skipped on the way if it must.
fn fetch_object<'a, E: ScanEngine, B: RemoteBackend>(
    shared: &Shared<'a, E, B>,
    object: &RemoteObject<B::Object>,
    state: &Arc<ObjectState<'a>>,
    tasks: &Sender<ScanTask<'a>>,
    tail: &mut Vec<u8>,
    rng: &mut Rng,
) {
    let time = TimeBudget::new(Instant::now(), shared.config.max_object_time);
    let mut offset = 0u64;
    let mut position = LinePosition::START;
    tail.clear();
    while offset < object.size {
        if state.ended.load(Ordering::Relaxed) {
            // A CPU worker failed an earlier chunk: the rest is not needed.
            return;
        }
        if shared.stopped() {
            return state.skip(SkipReason::Stopped);
        }
        if time.is_exhausted(Instant::now()) {
            return state.fail(
                FailureKind::TimeBudgetExceeded,
                time_budget_message(shared, offset),
            );
        }
        let payload_len = usize::try_from(object.size - offset)
            .unwrap_or(usize::MAX)
            .min(shared.config.chunk_size);
        let buf = match fetch_chunk(shared, object, offset, payload_len, tail, &time, rng) {
            Ok(buf) => buf,
            Err(Ended::Stopped) => return state.skip(SkipReason::Stopped),
            Err(Ended::Skipped(reason)) => return state.skip(reason),
            Err(Ended::Failed(kind, message)) => return state.fail(kind, message),
        };
        let len = tail.len() + payload_len;
        let chunk_offset = offset - tail.len() as u64;
        let next_tail = len.min(shared.overlap);
        let next_position = position.advance(&buf[..len - next_tail], chunk_offset);
        tail.clear();
        tail.extend_from_slice(&buf[len - next_tail..len]);
        bump(&shared.counters.chunks_fetched);
        shared
            .counters
            .payload_bytes_fetched
            .fetch_add(payload_len as u64, Ordering::Relaxed);
        offset += payload_len as u64;
        let task = ScanTask {
            buf,
            len,
            payload_start: len - payload_len,
            offset: chunk_offset,
            is_last: offset == object.size,
            position,
            object: Arc::clone(state),
        };
        if tasks.send(task).is_err() {
            // Every CPU worker is gone, which only a panic can cause.
            return state.fail(FailureKind::Internal, "no CPU worker left to scan".into());
        }
        position = next_position;
    }
}

fn time_budget_message<E, B>(shared: &Shared<'_, E, B>, offset: u64) -> String {
    let limit = shared.config.max_object_time.unwrap_or_default();
    format!("not finished within the per-object time budget of {limit:?} (at offset {offset})")
}

/// Why an object ended before its last chunk.
enum Ended {
    Stopped,
    Skipped(SkipReason),
    Failed(FailureKind, String),
}

/// Fetches one chunk's payload into a pooled buffer that starts with `tail`,
/// retrying per the policy. No buffer is held while sleeping.
fn fetch_chunk<E, B: RemoteBackend>(
    shared: &Shared<'_, E, B>,
    object: &RemoteObject<B::Object>,
    offset: u64,
    payload_len: usize,
    tail: &[u8],
    time: &TimeBudget,
    rng: &mut Rng,
) -> Result<PooledBuf, Ended> {
    let policy = &shared.config.retry;
    let counters = shared.counters;
    let mut attempt = 1u32;
    let mut throttles = 0u32;
    loop {
        if shared.stopped() {
            return Err(Ended::Stopped);
        }
        let mut buf = shared.pool.acquire(shared.stop).ok_or(Ended::Stopped)?;
        buf[..tail.len()].copy_from_slice(tail);
        let dst = &mut buf[tail.len()..tail.len() + payload_len];
        let fetched = catch_unwind(AssertUnwindSafe(|| {
            shared.backend.fetch_range(object, offset, dst)
        }));
        let err = match fetched {
            Ok(Ok(n)) if n == payload_len => return Ok(buf),
            Ok(Ok(n)) => {
                return Err(Ended::Failed(
                    FailureKind::ContractViolation,
                    format!(
                        "short read: asked for {payload_len} bytes at offset {offset} of a {}-byte object, got {n}",
                        object.size
                    ),
                ));
            }
            Ok(Err(err)) => err,
            Err(_) => {
                return Err(Ended::Failed(
                    FailureKind::Internal,
                    format!("the backend panicked reading offset {offset}"),
                ));
            }
        };
        drop(buf);
        let delay = match shared.backend.classify_error(&err) {
            ErrorClass::Retryable => {
                bump(&counters.retryable_errors);
                if !policy.may_retry(attempt) {
                    return Err(Ended::Failed(
                        FailureKind::RetriesExhausted,
                        format!("gave up after {attempt} attempts at offset {offset}: {err}"),
                    ));
                }
                bump(&counters.retries);
                let delay = policy.backoff(attempt, rng);
                attempt += 1;
                delay
            }
            ErrorClass::Throttled { retry_after } => {
                bump(&counters.throttled);
                throttles += 1;
                // Without a time budget, throttles count as attempts, so a
                // store that throttles forever cannot hang the scan.
                if !time.is_limited() {
                    if !policy.may_retry(attempt) {
                        return Err(Ended::Failed(
                            FailureKind::RetriesExhausted,
                            format!(
                                "still throttled after {attempt} attempts at offset {offset}: {err}"
                            ),
                        ));
                    }
                    attempt += 1;
                }
                retry_after.unwrap_or_else(|| policy.backoff(throttles, rng))
            }
            ErrorClass::Archived => {
                tracing::debug!(object = %String::from_utf8_lossy(&object.display), error = %err, "skipped");
                return Err(Ended::Skipped(SkipReason::Archived));
            }
            _ => {
                return Err(Ended::Failed(
                    FailureKind::Permanent,
                    format!("at offset {offset}: {err}"),
                ));
            }
        };
        if !time.allows_wait(Instant::now(), delay) {
            return Err(Ended::Failed(
                FailureKind::TimeBudgetExceeded,
                format!(
                    "a retry after {delay:?} would pass the per-object time budget (last error: {err})"
                ),
            ));
        }
        tracing::debug!(object = %String::from_utf8_lossy(&object.display), offset, error = %err, ?delay, "fetch failed, retrying");
        if !sleep_unless_stopped(delay, shared.stop) {
            return Err(Ended::Stopped);
        }
    }
}

/// Sleeps for `delay` in short slices; returns `false` if `stop` was set.
fn sleep_unless_stopped(delay: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + delay;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        thread::sleep((end - now).min(SLEEP_SLICE));
    }
}

// ---------------------------------------------------------------- CPU

fn cpu_worker<E: ScanEngine, B>(
    shared: &Shared<'_, E, B>,
    tasks: Receiver<ScanTask<'_>>,
    findings: Sender<Finding>,
) {
    let engine = shared.engine;
    let mut scratch = engine.new_scratch();
    let mut matches: Vec<RawMatch> = Vec::new();
    for task in tasks {
        let object = &task.object;
        let chunk = Chunk {
            buf: &task.buf[..task.len],
            payload_start: task.payload_start,
            offset: task.offset,
            is_last: task.is_last,
            object: ObjectContext {
                display: &object.display,
                size: object.size,
            },
        };
        matches.clear();
        let scanned = catch_unwind(AssertUnwindSafe(|| {
            engine.scan_chunk_into(&chunk, &mut scratch, &mut matches);
            if shared.config.dedupe_within_chunk {
                engine.dedupe_within_chunk(&mut matches);
            } else {
                matches.sort_unstable_by_key(|m| (m.secret.start, m.secret.end, m.rule));
            }
        }));
        if scanned.is_err() {
            scratch = engine.new_scratch();
            object.fail(
                FailureKind::Internal,
                format!("the engine panicked scanning offset {}", task.offset),
            );
            continue;
        }
        bump(&shared.counters.chunks_scanned);
        let mut locator = Locator::new(chunk.buf, task.offset, task.position);
        for m in &matches {
            debug_assert!(m.secret.end <= chunk.buf.len() && m.secret.start <= m.secret.end);
            let (line, column) = locator.locate(m.secret.start);
            let rule_id = engine.rule_id(m.rule);
            let secret = &chunk.buf[m.secret.clone()];
            let finding = Finding {
                rule_id: rule_id.to_owned(),
                path: Arc::clone(&object.display),
                line,
                column,
                start: task.offset + m.secret.start as u64,
                end: task.offset + m.secret.end as u64,
                secret: secret.to_vec(),
                fingerprint: trawl_engine::fingerprint(rule_id, secret),
                context: context_around(chunk.buf, m.secret.clone(), task.is_last),
            };
            if findings.send(finding).is_err() {
                break;
            }
        }
    }
}

// ---------------------------------------------------------------- sink

struct SinkOutcome {
    error: Option<String>,
    by_rule: std::collections::BTreeMap<String, u64>,
}

/// Delivers findings to the sink until every CPU worker is done. After a
/// sink error it stops the scan and keeps draining, so that no worker
/// blocks forever on a full channel.
fn drain_findings<E, B, S: EventSink + ?Sized>(
    sink: &mut S,
    findings: Receiver<Finding>,
    shared: &Shared<'_, E, B>,
) -> SinkOutcome {
    let mut outcome = SinkOutcome {
        error: None,
        by_rule: Default::default(),
    };
    for finding in findings {
        if outcome.error.is_some() {
            continue;
        }
        match sink.finding(&finding) {
            Ok(()) => {
                bump(&shared.counters.findings);
                *outcome.by_rule.entry(finding.rule_id).or_default() += 1;
            }
            Err(err) => {
                outcome.error = Some(format!("cannot write findings: {err}"));
                shared.stop.store(true, Ordering::Relaxed);
            }
        }
    }
    if outcome.error.is_none()
        && let Err(err) = sink.finish()
    {
        outcome.error = Some(format!("cannot write findings: {err}"));
    }
    outcome
}

mod pinning {
    //! Pinning CPU workers to cores, where the platform allows it.

    pub(super) fn cores() -> Vec<core_affinity::CoreId> {
        core_affinity::get_core_ids().unwrap_or_default()
    }

    pub(super) fn pin(core: Option<core_affinity::CoreId>) {
        if let Some(core) = core
            && !core_affinity::set_for_current(core)
        {
            tracing::debug!(?core, "could not pin a CPU worker");
        }
    }
}
