//! The job state machine as a property: random sequences of operations
//! (enqueue, claim, complete with every outcome (released and suspended
//! too), cancel, retry, heartbeats,
//! the pinned clock moving on, the reconciler ticks) run against the real
//! PostgreSQL and against a small in-memory model, and after every step
//! every job's state, attempt, lease and attempt history must agree.
//!
//! One database for the whole property (emptied between cases), 24 cases
//! of up to 40 operations unless `PROPTEST_CASES` says otherwise, each
//! case bounded in time.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use sqlx::{PgConnection, PgPool, Row};
use trawl_jobs::reconcile::{
    self, JOB_PARTITIONS, attempt_timeout, edge_cancel_dispatcher, lease_expiry,
    worker_registry_ttl_sweep,
};
use trawl_jobs::{
    CancelOutcome, Completion, JobQueue, NewJob, OnTimeout, Outcome, Priority, claim, complete,
};

const LEASE_SECS: i64 = 30;
const DEFAULT_TIMEOUT_SECS: i64 = 60;
const TTL_SECS: i64 = 30;
const WORKERS: u8 = 3;
const CASE_TIME: Duration = Duration::from_secs(60);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

fn worker(w: u8) -> String {
    format!("w{w}")
}

/// How a completion is sent.
#[derive(Debug, Clone, Copy)]
enum Sender {
    /// By the lease owner, for the current attempt: applied.
    Owner,
    /// By another worker: ignored.
    OtherWorker,
    /// For another attempt: ignored.
    OtherAttempt,
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        priority: i16,
        max_attempts: u32,
        delay: Option<i64>,
        timeout: Option<i64>,
    },
    /// A job that depends on one or two jobs enqueued before.
    EnqueueChild {
        parents: Vec<Index>,
    },
    Claim {
        worker: u8,
        max: u32,
    },
    /// The edge_cancel_dispatcher tick, run until it has nothing left.
    Dispatch,
    Complete {
        job: Index,
        outcome: u8,
        retry_delay: i64,
        sender: Sender,
    },
    Cancel {
        job: Index,
    },
    /// A manual retry of a dead or cancelled job (of any job when
    /// `any_job` or there is none).
    Retry {
        job: Index,
        any_job: bool,
    },
    Advance {
        secs: i64,
    },
    LeaseExpiry,
    AttemptTimeout,
    Heartbeat {
        worker: u8,
    },
    Sweep,
}

fn op() -> impl Strategy<Value = Op> {
    let sender = prop_oneof![
        6 => Just(Sender::Owner),
        1 => Just(Sender::OtherWorker),
        1 => Just(Sender::OtherAttempt),
    ];
    prop_oneof![
        4 => (0i16..4, 1u32..=3, prop::option::weighted(0.2, 1i64..40),
            prop::option::weighted(0.3, 5i64..40))
            .prop_map(|(priority, max_attempts, delay, timeout)| Op::Enqueue {
                priority, max_attempts, delay, timeout,
            }),
        2 => prop::collection::vec(any::<Index>(), 1..=2)
            .prop_map(|parents| Op::EnqueueChild { parents }),
        4 => (0..WORKERS, 1u32..4).prop_map(|(worker, max)| Op::Claim { worker, max }),
        1 => Just(Op::Dispatch),
        4 => (any::<Index>(), 0u8..7, prop_oneof![Just(0i64), Just(10)], sender)
            .prop_map(|(job, outcome, retry_delay, sender)| Op::Complete {
                job, outcome, retry_delay, sender,
            }),
        1 => any::<Index>().prop_map(|job| Op::Cancel { job }),
        2 => (any::<Index>(), prop::bool::weighted(0.2))
            .prop_map(|(job, any_job)| Op::Retry { job, any_job }),
        3 => (1i64..45).prop_map(|secs| Op::Advance { secs }),
        2 => Just(Op::LeaseExpiry),
        1 => Just(Op::AttemptTimeout),
        2 => (0..WORKERS).prop_map(|worker| Op::Heartbeat { worker }),
        1 => Just(Op::Sweep),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Blocked,
    Pending,
    Running,
    Suspended,
    Succeeded,
    Dead,
    Cancelled,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Blocked => "blocked",
            State::Pending => "pending",
            State::Running => "running",
            State::Suspended => "suspended",
            State::Succeeded => "succeeded",
            State::Dead => "dead",
            State::Cancelled => "cancelled",
        }
    }
}

/// A job's `run_at`: the database's real clock (the enqueue or manual
/// retry of step `n`; the real clock is years before the pinned one), or a
/// pinned instant, seconds after `t0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum RunAt {
    Real(usize),
    Pinned(i64),
}

#[derive(Debug, Clone)]
struct ModelJob {
    id: i64,
    state: State,
    priority: i16,
    run_at: RunAt,
    attempt: u32,
    max_attempts: u32,
    timeout: i64,
    lease_owner: Option<String>,
    lease_expires: i64,
    deadline: i64,
    cancel_requested: bool,
    /// The jobs it depends on.
    parents: Vec<i64>,
}

#[derive(Debug, Default)]
struct Model {
    now: i64,
    jobs: Vec<ModelJob>,
    /// `(job, attempt, worker, outcome)`.
    attempts: Vec<(i64, u32, String, String)>,
    /// Registered workers and their last heartbeat.
    workers: BTreeMap<String, i64>,
    /// Dead or cancelled jobs whose children are still to be cancelled.
    propagating: BTreeSet<i64>,
}

impl Model {
    fn job(&mut self, id: i64) -> &mut ModelJob {
        self.jobs
            .iter_mut()
            .find(|j| j.id == id)
            .expect("known job")
    }

    /// A running job taken from its worker by a tick: an attempt row, then
    /// back to pending at once, dead after its last attempt, or cancelled
    /// if a cancel was requested.
    fn lose(&mut self, id: i64, outcome: &str) {
        let now = self.now;
        let job = self.job(id);
        let row = (
            id,
            job.attempt,
            job.lease_owner.take().expect("a running job has an owner"),
            outcome.to_owned(),
        );
        job.state = if job.cancel_requested {
            State::Cancelled
        } else if job.attempt >= job.max_attempts {
            State::Dead
        } else {
            job.run_at = RunAt::Pinned(now);
            State::Pending
        };
        self.attempts.push(row);
        self.ended(id);
    }

    /// What a job's end does to its children: the last parent to succeed
    /// makes a blocked child pending; a dead or cancelled parent queues the
    /// cancellation of its children.
    fn ended(&mut self, id: i64) {
        let state = self.job(id).state;
        match state {
            State::Succeeded => {
                let states: BTreeMap<i64, State> =
                    self.jobs.iter().map(|j| (j.id, j.state)).collect();
                for child in &mut self.jobs {
                    if child.state == State::Blocked
                        && child.parents.contains(&id)
                        && child.parents.iter().all(|p| states[p] == State::Succeeded)
                    {
                        child.state = State::Pending;
                    }
                }
            }
            State::Dead | State::Cancelled if self.jobs.iter().any(|j| j.parents.contains(&id)) => {
                self.propagating.insert(id);
            }
            _ => {}
        }
    }

    /// The dispatcher until nothing is left: waiting children of a
    /// propagating parent are cancelled (and propagate in turn), running
    /// ones are asked to stop.
    fn dispatch(&mut self) -> u64 {
        let mut changed = 0;
        while let Some(parent) = self.propagating.pop_first() {
            let children: Vec<i64> = self
                .jobs
                .iter()
                .filter(|j| j.parents.contains(&parent))
                .map(|j| j.id)
                .collect();
            for child in children {
                let job = self.job(child);
                match job.state {
                    State::Blocked | State::Pending | State::Suspended => {
                        job.state = State::Cancelled;
                        changed += 1;
                        self.ended(child);
                    }
                    State::Running if !job.cancel_requested => {
                        job.cancel_requested = true;
                        changed += 1;
                    }
                    _ => {}
                }
            }
        }
        changed
    }

    fn running(&self) -> Vec<i64> {
        self.jobs
            .iter()
            .filter(|j| j.state == State::Running)
            .map(|j| j.id)
            .collect()
    }
}

/// One row of the jobs as the database has them, for comparison.
#[derive(Debug, PartialEq)]
struct Observed {
    id: i64,
    state: String,
    attempt: i32,
    max_attempts: i32,
    lease_owner: Option<String>,
    cancel_requested: bool,
    /// Seconds after t0 for a pinned `run_at`, `None` for one before t0.
    run_at: Option<i64>,
}

async fn observe(pool: &PgPool) -> Vec<Observed> {
    let rows = sqlx::query(
        "SELECT id, state::text AS state, attempt, max_attempts, lease_owner,
            cancel_requested, run_at
         FROM trawl_jobs.jobs
         UNION ALL
         SELECT id, state::text, attempt, max_attempts, lease_owner, cancel_requested, run_at
         FROM trawl_jobs.jobs_finished
         ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.iter()
        .map(|row| {
            let run_at: DateTime<Utc> = row.get("run_at");
            Observed {
                id: row.get("id"),
                state: row.get("state"),
                attempt: row.get("attempt"),
                max_attempts: row.get("max_attempts"),
                lease_owner: row.get("lease_owner"),
                cancel_requested: row.get("cancel_requested"),
                run_at: (run_at >= t0()).then(|| (run_at - t0()).num_seconds()),
            }
        })
        .collect()
}

fn expected(model: &Model) -> Vec<Observed> {
    model
        .jobs
        .iter()
        .map(|job| Observed {
            id: job.id,
            state: job.state.name().to_owned(),
            attempt: job.attempt as i32,
            max_attempts: job.max_attempts as i32,
            lease_owner: job.lease_owner.clone(),
            cancel_requested: job.cancel_requested,
            run_at: match job.run_at {
                RunAt::Real(_) => None,
                RunAt::Pinned(secs) => Some(secs),
            },
        })
        .collect()
}

async fn check(pool: &PgPool, model: &Model, step: usize, op: &Op) -> Result<(), TestCaseError> {
    let jobs = observe(pool).await;
    prop_assert_eq!(
        &jobs,
        &expected(model),
        "jobs after step {} ({:?})",
        step,
        op
    );
    let mut attempts: Vec<(i64, i32, String, String)> =
        sqlx::query_as("SELECT job_id, attempt, worker_id, outcome FROM trawl_jobs.job_attempts")
            .fetch_all(pool)
            .await
            .unwrap();
    attempts.sort();
    let mut want: Vec<(i64, i32, String, String)> = model
        .attempts
        .iter()
        .map(|(id, attempt, w, outcome)| (*id, *attempt as i32, w.clone(), outcome.clone()))
        .collect();
    want.sort();
    prop_assert_eq!(attempts, want, "attempts after step {} ({:?})", step, op);
    let workers: Vec<String> = sqlx::query_scalar("SELECT id FROM trawl_jobs.workers ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    let want: Vec<String> = model.workers.keys().cloned().collect();
    prop_assert_eq!(workers, want, "workers after step {} ({:?})", step, op);
    Ok(())
}

async fn apply(
    queue: &JobQueue,
    conn: &mut PgConnection,
    model: &mut Model,
    step: usize,
    op: &Op,
) -> Result<(), TestCaseError> {
    let now = Some(at(model.now));
    match *op {
        Op::Enqueue {
            priority,
            max_attempts,
            delay,
            timeout,
        } => {
            let mut job = NewJob::new("k", serde_json::json!(step))
                .priority(Priority(priority))
                .max_attempts(max_attempts);
            if let Some(delay) = delay {
                job = job.run_at(at(model.now + delay));
            }
            if let Some(timeout) = timeout {
                job = job.timeout(Duration::from_secs(timeout as u64));
            }
            let id = queue.enqueue(job).await.unwrap();
            model.jobs.push(ModelJob {
                id,
                state: State::Pending,
                priority,
                run_at: delay.map_or(RunAt::Real(step), |d| RunAt::Pinned(model.now + d)),
                attempt: 0,
                max_attempts,
                timeout: timeout.unwrap_or(DEFAULT_TIMEOUT_SECS),
                lease_owner: None,
                lease_expires: 0,
                deadline: 0,
                cancel_requested: false,
                parents: Vec::new(),
            });
        }
        Op::EnqueueChild { ref parents } => {
            if model.jobs.is_empty() {
                return Ok(());
            }
            let mut ids: Vec<i64> = parents
                .iter()
                .map(|p| model.jobs[p.index(model.jobs.len())].id)
                .collect();
            ids.dedup();
            let id = queue
                .enqueue(NewJob::new("k", serde_json::json!(step)).depends_on(ids.clone()))
                .await
                .unwrap();
            let states: Vec<State> = ids.iter().map(|p| model.job(*p).state).collect();
            let state = if states
                .iter()
                .any(|s| matches!(s, State::Dead | State::Cancelled))
            {
                State::Cancelled
            } else if states.iter().all(|s| *s == State::Succeeded) {
                State::Pending
            } else {
                State::Blocked
            };
            model.jobs.push(ModelJob {
                id,
                state,
                priority: Priority::NORMAL.0,
                run_at: RunAt::Real(step),
                attempt: 0,
                max_attempts: trawl_jobs::DEFAULT_MAX_ATTEMPTS,
                timeout: DEFAULT_TIMEOUT_SECS,
                lease_owner: None,
                lease_expires: 0,
                deadline: 0,
                cancel_requested: false,
                parents: ids,
            });
        }
        Op::Dispatch => {
            let mut changed = 0;
            for _ in 0..10 {
                let mut pass = 0;
                for partition in 0..JOB_PARTITIONS {
                    pass += edge_cancel_dispatcher::run_once(conn, partition, now)
                        .await
                        .unwrap();
                }
                if pass == 0 {
                    break;
                }
                changed += pass;
            }
            prop_assert_eq!(changed, model.dispatch(), "dispatch at step {}", step);
        }
        Op::Claim { worker: w, max } => {
            let claimed = claim(
                conn,
                &worker(w),
                "default",
                max,
                Duration::from_secs(LEASE_SECS as u64),
                Duration::from_secs(DEFAULT_TIMEOUT_SECS as u64),
                now,
            )
            .await
            .unwrap();
            let got: Vec<(i64, u32)> = claimed.iter().map(|j| (j.id, j.attempt)).collect();
            let mut ready: Vec<&ModelJob> = model
                .jobs
                .iter()
                .filter(|j| j.state == State::Pending && j.run_at <= RunAt::Pinned(model.now))
                .collect();
            ready.sort_by_key(|j| (-j.priority, j.run_at, j.id));
            let chosen: Vec<i64> = ready.iter().take(max as usize).map(|j| j.id).collect();
            let mut want = Vec::new();
            for id in chosen {
                let now = model.now;
                let job = model.job(id);
                job.state = State::Running;
                job.attempt += 1;
                job.lease_owner = Some(worker(w));
                job.lease_expires = now + LEASE_SECS;
                job.deadline = now + job.timeout;
                want.push((id, job.attempt));
            }
            prop_assert_eq!(got, want, "claimed at step {}", step);
        }
        Op::Complete {
            job,
            outcome,
            retry_delay,
            sender,
        } => {
            let running = model.running();
            if running.is_empty() {
                return Ok(());
            }
            let id = running[job.index(running.len())];
            let target = model.job(id).clone();
            let owner = target.lease_owner.clone().expect("running");
            let outcome = match outcome {
                0 => Outcome::Succeeded,
                1 => Outcome::Skipped("nothing to do".into()),
                2 => Outcome::Retry {
                    delay: Duration::from_secs(retry_delay as u64),
                    error: "flaky".into(),
                },
                3 => Outcome::Dead("bad input".into()),
                4 => Outcome::Cancelled,
                5 => Outcome::Released("shutting down".into()),
                _ => Outcome::Suspend {
                    until: at(model.now + 10),
                    signal: format!("signal-{id}"),
                    on_timeout: OnTimeout::Resume,
                },
            };
            let (sender_id, attempt) = match sender {
                Sender::Owner => (owner.clone(), target.attempt),
                Sender::OtherWorker => (format!("{owner}-impostor"), target.attempt),
                Sender::OtherAttempt => (owner.clone(), target.attempt + 1),
            };
            let completion = Completion {
                id,
                attempt,
                outcome: outcome.clone(),
            };
            let applied = complete(conn, &sender_id, &[completion], now)
                .await
                .unwrap();
            if !matches!(sender, Sender::Owner) {
                prop_assert!(
                    applied.is_empty(),
                    "a stale completion applied at step {}",
                    step
                );
                return Ok(());
            }
            prop_assert_eq!(applied, vec![id], "completion at step {}", step);
            let now = model.now;
            let job = model.job(id);
            job.lease_owner = None;
            let (state, name) = match outcome {
                Outcome::Succeeded => (State::Succeeded, "succeeded"),
                Outcome::Skipped(_) => (State::Succeeded, "skipped"),
                Outcome::Retry { .. } => {
                    job.run_at = RunAt::Pinned(now + retry_delay);
                    (State::Pending, "retry")
                }
                Outcome::Dead(_) => (State::Dead, "dead"),
                Outcome::Cancelled => (State::Cancelled, "cancelled"),
                Outcome::Released(_) => {
                    // Given back unfinished: the attempt does not count.
                    job.run_at = RunAt::Pinned(now);
                    job.max_attempts += 1;
                    (State::Pending, "released")
                }
                Outcome::Suspend { .. } => (State::Suspended, "suspended"),
            };
            job.state = state;
            model
                .attempts
                .push((id, target.attempt, owner, name.to_owned()));
            model.ended(id);
        }
        Op::Cancel { job } => {
            if model.jobs.is_empty() {
                return Ok(());
            }
            let id = model.jobs[job.index(model.jobs.len())].id;
            let got = queue.cancel(id).await.unwrap();
            let job = model.job(id);
            let want = match job.state {
                State::Pending | State::Suspended | State::Blocked => {
                    job.state = State::Cancelled;
                    model.ended(id);
                    CancelOutcome::Cancelled
                }
                State::Running => {
                    job.cancel_requested = true;
                    CancelOutcome::Requested
                }
                _ => CancelOutcome::AlreadyFinished,
            };
            prop_assert_eq!(got, want, "cancel at step {}", step);
        }
        Op::Retry { job, any_job } => {
            let buried: Vec<i64> = model
                .jobs
                .iter()
                .filter(|j| any_job || matches!(j.state, State::Dead | State::Cancelled))
                .map(|j| j.id)
                .collect();
            let candidates: Vec<i64> = if buried.is_empty() {
                model.jobs.iter().map(|j| j.id).collect()
            } else {
                buried
            };
            if candidates.is_empty() {
                return Ok(());
            }
            let id = candidates[job.index(candidates.len())];
            let got = queue.retry(id).await.unwrap();
            let job = model.job(id);
            let want = matches!(job.state, State::Dead | State::Cancelled);
            if want {
                job.state = State::Pending;
                job.max_attempts += job.attempt;
                job.run_at = RunAt::Real(step);
                job.cancel_requested = false;
                model.propagating.remove(&id);
            }
            prop_assert_eq!(got, want, "retry at step {}", step);
        }
        Op::Advance { secs } => model.now += secs,
        Op::LeaseExpiry => {
            let mut changed = 0;
            for partition in 0..JOB_PARTITIONS {
                changed += lease_expiry::run_once(conn, partition, now).await.unwrap();
            }
            let lost: Vec<i64> = model
                .jobs
                .iter()
                .filter(|j| j.state == State::Running && j.lease_expires < model.now)
                .map(|j| j.id)
                .collect();
            for &id in &lost {
                model.lose(id, "lease_expired");
            }
            prop_assert_eq!(changed, lost.len() as u64, "lease_expiry at step {}", step);
        }
        Op::AttemptTimeout => {
            let mut changed = 0;
            for partition in 0..JOB_PARTITIONS {
                changed += attempt_timeout::run_once(conn, partition, now)
                    .await
                    .unwrap();
            }
            let lost: Vec<i64> = model
                .jobs
                .iter()
                .filter(|j| j.state == State::Running && j.deadline < model.now)
                .map(|j| j.id)
                .collect();
            for &id in &lost {
                model.lose(id, "timed_out");
            }
            prop_assert_eq!(
                changed,
                lost.len() as u64,
                "attempt_timeout at step {}",
                step
            );
        }
        Op::Heartbeat { worker: w } => {
            let id = worker(w);
            sqlx::query(
                "INSERT INTO trawl_jobs.workers (id, partition, queues, max_concurrent,
                    heartbeat_at)
                 VALUES ($1, $2, '{default}', 4, $3)
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
            )
            .bind(&id)
            .bind(reconcile::worker_partition(&id))
            .bind(now)
            .execute(&mut *conn)
            .await
            .unwrap();
            model.workers.insert(id, model.now);
        }
        Op::Sweep => {
            let mut partitions: Vec<i16> = (0..WORKERS)
                .map(|w| reconcile::worker_partition(&worker(w)))
                .collect();
            partitions.sort_unstable();
            partitions.dedup();
            let mut changed = 0;
            for partition in partitions {
                changed += worker_registry_ttl_sweep::run_once(conn, partition, now)
                    .await
                    .unwrap();
            }
            let stale: Vec<String> = model
                .workers
                .iter()
                .filter(|&(_, &beat)| beat < model.now - TTL_SECS)
                .map(|(w, _)| w.clone())
                .collect();
            let lost: Vec<i64> = model
                .jobs
                .iter()
                .filter(|j| {
                    j.state == State::Running
                        && stale.iter().any(|w| j.lease_owner.as_ref() == Some(w))
                })
                .map(|j| j.id)
                .collect();
            for &id in &lost {
                model.lose(id, "worker_lost");
            }
            for w in &stale {
                model.workers.remove(w);
            }
            prop_assert_eq!(
                changed,
                (lost.len() + stale.len()) as u64,
                "sweep at step {}",
                step
            );
        }
    }
    Ok(())
}

async fn run_case(pool: &PgPool, ops: &[Op]) -> Result<(), TestCaseError> {
    sqlx::query(
        "TRUNCATE trawl_jobs.jobs, trawl_jobs.jobs_finished, trawl_jobs.job_attempts,
            trawl_jobs.workers, trawl_jobs.job_edges, trawl_jobs.cancel_propagation,
            trawl_jobs.unique_keys RESTART IDENTITY",
    )
    .execute(pool)
    .await
    .unwrap();
    let queue = JobQueue::new(pool.clone());
    let mut conn = pool.acquire().await.unwrap();
    let mut model = Model::default();
    for (step, op) in ops.iter().enumerate() {
        apply(&queue, &mut conn, &mut model, step, op).await?;
        check(pool, &model, step, op).await?;
    }
    Ok(())
}

#[test]
fn the_queue_follows_its_model() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let Some(db) = runtime.block_on(support::db::fresh()) else {
        return;
    };
    runtime.block_on(db.queue());
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(24);
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_time: 120_000,
        ..ProptestConfig::default()
    });
    let result = runner.run(&prop::collection::vec(op(), 1..=40), |ops| {
        runtime.block_on(async {
            match tokio::time::timeout(CASE_TIME, run_case(&db.pool, &ops)).await {
                Ok(result) => result,
                Err(_) => Err(TestCaseError::fail(format!(
                    "a case took longer than {CASE_TIME:?}"
                ))),
            }
        })
    });
    runtime.block_on(async move { drop(db) });
    if let Err(err) = result {
        panic!("{err}");
    }
}
