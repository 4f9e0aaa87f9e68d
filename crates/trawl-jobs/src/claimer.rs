//! The claim loop of one queue: claims jobs a round trip ahead of the
//! worker's slots, and starts them as slots free up.
//!
//! Claiming and starting overlap: the next claim is in flight while the
//! jobs of the previous one wait here for their slots. So with short jobs
//! the database works on the next claim while this process runs the last
//! one's jobs, and neither waits for the other.
//!
//! How many jobs a claim asks for ([`claim_size`]) follows from two running
//! averages: how long a claim takes and how long a job takes. From them,
//! `ahead` is what the slots get through during one claim (at most
//! `claim_batch`). The loop keeps up to two claims' worth of jobs (`2 ×
//! ahead`) waiting for slots, and makes no claim while more than `ahead`
//! wait. Long jobs give `ahead = 0`: a claim then asks for exactly the free
//! slots (which it reserves first), so no long job waits here while
//! another worker idles.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::claim::{ClaimRequest, ClaimedJob, Completion, Outcome, claim_with};
use crate::completer::Finished;
use crate::manager::{Average, Shared, held_ids, hold, spawn_job};
use crate::registry::job_release_orphans;

/// What one claim round brought back.
struct Round {
    /// The connection to keep for the next round (`None` after an error).
    conn: Option<PoolConnection<Postgres>>,
    /// Database errors in a row so far.
    failures: u32,
    /// The jobs claimed, or `None` if the manager stopped first.
    jobs: Option<Vec<ClaimedJob>>,
    /// The claim found fewer jobs than it asked for.
    dry: bool,
    /// How long the claim statement took.
    took: Duration,
}

type InFlight = Pin<Box<dyn Future<Output = Round> + Send>>;

/// How many jobs the next claim asks for: enough to fill the `free` slots
/// and keep up to `2 × ahead` jobs waiting for slots, at most `batch`; none
/// while more than `ahead` wait.
pub(crate) fn claim_size(free: usize, unstarted: usize, ahead: usize, batch: usize) -> usize {
    if unstarted > ahead {
        return 0;
    }
    (free + 2 * ahead - unstarted).min(batch)
}

/// Claims jobs of `queue` while there is room, and starts them as slots
/// free up, until the manager stops claiming; then gives back the jobs that
/// never started.
pub(crate) async fn claim_loop(
    shared: Arc<Shared>,
    queue: String,
    completions: mpsc::UnboundedSender<Finished>,
) {
    let stop = shared.stop_claiming.clone();
    let wake = shared.wake[&queue].clone();
    let queue: Arc<str> = queue.into();
    let batch = shared.config.claim_batch as usize;
    let slots = shared.config.max_concurrent_jobs as u64;
    let mut conn = None;
    let mut failures = 0u32;
    let mut claim_micros = Average::default();
    let mut unstarted: VecDeque<ClaimedJob> = VecDeque::new();
    // The claim in flight, with the slots reserved for its first jobs.
    let mut in_flight: Option<(InFlight, OwnedSemaphorePermit)> = None;
    // The last claim found fewer jobs than it asked for.
    let mut dry = false;
    loop {
        if stop.is_cancelled() && in_flight.is_none() {
            release_unstarted(&completions, unstarted);
            return;
        }
        if !stop.is_cancelled() {
            while !unstarted.is_empty() {
                let Ok(permit) = shared.capacity.clone().try_acquire_owned() else {
                    break;
                };
                let job = unstarted.pop_front().expect("not empty");
                spawn_job(&shared, job, permit, completions.clone());
            }
        }
        if in_flight.is_none() && !dry && !stop.is_cancelled() {
            let ahead = match (claim_micros.get(), shared.job_micros.get()) {
                (Some(claim), Some(job)) => {
                    usize::try_from(slots.saturating_mul(claim) / job.max(1)).unwrap_or(usize::MAX)
                }
                _ => 0,
            }
            .min(batch);
            let free = shared.capacity.available_permits();
            let want = claim_size(free, unstarted.len(), ahead, batch);
            if want > 0 {
                let reserve = u32::try_from(free.min(want)).unwrap_or(u32::MAX);
                if let Ok(reserved) = shared.capacity.clone().try_acquire_many_owned(reserve) {
                    let round =
                        claim_round(shared.clone(), queue.clone(), conn.take(), failures, want);
                    in_flight = Some((Box::pin(round), reserved));
                }
            }
        }
        let waiting_for_slot =
            !stop.is_cancelled() && (!unstarted.is_empty() || (in_flight.is_none() && !dry));
        tokio::select! {
            biased;
            _ = stop.cancelled(), if in_flight.is_none() => {}
            round = async { in_flight.as_mut().expect("in flight").0.as_mut().await },
                if in_flight.is_some() =>
            {
                let (_, mut reserved) = in_flight.take().expect("in flight");
                conn = round.conn;
                failures = round.failures;
                let Some(jobs) = round.jobs else { continue };
                claim_micros.add(round.took);
                shared.stats.claimed.fetch_add(jobs.len() as u64, Ordering::Relaxed);
                dry = round.dry;
                for job in jobs {
                    match reserved.split(1) {
                        Some(permit) if !stop.is_cancelled() => {
                            spawn_job(&shared, job, permit, completions.clone());
                        }
                        _ => {
                            hold(&shared, &job, None);
                            unstarted.push_back(job);
                        }
                    }
                }
            }
            permit = shared.capacity.clone().acquire_owned(), if waiting_for_slot => {
                // A slot freed: start a job with it, or count it as free
                // for the next claim.
                if let (Ok(permit), Some(job)) = (permit, unstarted.pop_front()) {
                    spawn_job(&shared, job, permit, completions.clone());
                }
            }
            _ = wake.notified(), if dry && in_flight.is_none() => dry = false,
            _ = tokio::time::sleep(shared.config.poll_interval), if dry && in_flight.is_none() => {
                dry = false;
            }
        }
    }
}

/// One claim of up to `want` jobs, retried on a new connection (with
/// backoff) until it succeeds or the manager stops claiming.
async fn claim_round(
    shared: Arc<Shared>,
    queue: Arc<str>,
    mut conn: Option<PoolConnection<Postgres>>,
    mut failures: u32,
    want: usize,
) -> Round {
    let stop = shared.stop_claiming.clone();
    let config = &shared.config;
    // Never more jobs on their way than the completer can take: claiming
    // must not outrun recording.
    let wanted = tokio::select! {
        biased;
        _ = stop.cancelled() => 0,
        wanted = take_permits(&shared.unrecorded, want) => wanted,
    };
    let stopped = |conn, failures| Round {
        conn,
        failures,
        jobs: None,
        dry: false,
        took: Duration::ZERO,
    };
    if wanted == 0 {
        return stopped(conn, failures);
    }
    loop {
        let fresh = conn.is_none();
        if fresh {
            conn = shared.connect(&stop, &mut failures).await;
        }
        let Some(c) = conn.as_mut() else {
            shared.unrecorded.add_permits(wanted);
            return stopped(None, failures);
        };
        let claimed = async {
            if fresh {
                // A claim whose answer was lost with the old connection
                // leased jobs that nobody runs: give them back at once.
                // Every job this loop claimed before is in `held` by now,
                // and no other claim of this queue is in flight.
                let held = held_ids(&shared);
                let released = tokio::time::timeout(
                    config.lease,
                    job_release_orphans(c, &config.worker_id, &queue, &held),
                )
                .await
                .map_err(|_| "statement timed out".to_owned())?
                .map_err(|err| err.to_string())?;
                if released > 0 {
                    shared.stats.released.fetch_add(released, Ordering::Relaxed);
                    tracing::info!(released, "released jobs claimed on a lost connection");
                }
            }
            let (skip, probes) = shared.breakers.plan();
            let sent = Instant::now();
            let request = ClaimRequest {
                worker_id: &config.worker_id,
                queue: &queue,
                max: u32::try_from(wanted).unwrap_or(u32::MAX),
                lease: config.lease,
                default_timeout: config.job_timeout,
                now: None,
                exclude_kinds: &skip,
                only_kind: None,
            };
            let jobs = tokio::time::timeout(
                config.lease,
                claim_with(c, &request, shared.limits_of(&queue)),
            )
            .await
            .map_err(|_| "claim timed out".to_owned())?
            .map_err(|err| err.to_string())?;
            let took = sent.elapsed();
            let mut probed = Vec::new();
            // A breaker that cooled down lets one job of its kind through.
            for kind in &probes {
                let Ok(permit) = shared.unrecorded.try_acquire() else {
                    shared.breakers.probe_missed(kind);
                    continue;
                };
                let request = ClaimRequest {
                    max: 1,
                    exclude_kinds: &[],
                    only_kind: Some(kind),
                    ..request
                };
                match claim_with(c, &request, shared.limits_of(&queue)).await {
                    Ok(jobs) if !jobs.is_empty() => {
                        permit.forget();
                        probed.extend(jobs);
                    }
                    Ok(_) => shared.breakers.probe_missed(kind),
                    Err(err) => {
                        shared.breakers.probe_missed(kind);
                        return Err(err.to_string());
                    }
                }
            }
            Ok::<_, String>((jobs, probed, took))
        }
        .await;
        match claimed {
            Ok((mut jobs, probed, took)) => {
                shared.unrecorded.add_permits(wanted - jobs.len());
                let dry = jobs.len() < wanted;
                jobs.extend(probed);
                if failures > 0 {
                    tracing::info!("claiming again after {failures} failed tries");
                }
                shared.set_connected(true);
                return Round {
                    conn,
                    failures: 0,
                    jobs: Some(jobs),
                    dry,
                    took,
                };
            }
            Err(error) => {
                failed(&shared, &mut conn, &mut failures, &error);
                if !shared.pause(&stop, failures).await {
                    shared.unrecorded.add_permits(wanted);
                    return stopped(None, failures);
                }
            }
        }
    }
}

/// Takes (and forgets) up to `want` permits of `semaphore`, waiting for the
/// first; returns how many.
async fn take_permits(semaphore: &Semaphore, want: usize) -> usize {
    let Ok(first) = semaphore.acquire().await else {
        return 0;
    };
    first.forget();
    let more = semaphore.available_permits().min(want - 1);
    match semaphore.try_acquire_many(u32::try_from(more).unwrap_or(u32::MAX)) {
        Ok(more) => {
            let n = more.num_permits();
            more.forget();
            1 + n
        }
        Err(_) => 1,
    }
}

/// Gives back jobs claimed ahead that never got a slot (the manager is
/// shutting down).
fn release_unstarted(
    completions: &mpsc::UnboundedSender<Finished>,
    unstarted: VecDeque<ClaimedJob>,
) {
    for job in unstarted {
        let completion = Completion {
            id: job.id,
            attempt: job.attempt,
            outcome: Outcome::Released("released at worker shutdown".to_owned()),
        };
        let _ = completions.send(Finished { completion });
    }
}

/// Drops a connection after an error: it may be broken or mid-statement.
fn failed(
    shared: &Shared,
    conn: &mut Option<PoolConnection<Postgres>>,
    failures: &mut u32,
    error: &str,
) {
    if let Some(mut conn) = conn.take() {
        conn.close_on_drop();
    }
    shared.set_connected(false);
    *failures += 1;
    if *failures == 1 {
        tracing::warn!(error, "claiming failed; retrying with backoff");
    } else {
        tracing::debug!(error, failures = *failures, "claiming failed again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_jobs_are_claimed_for_the_free_slots_only() {
        assert_eq!(claim_size(3, 0, 0, 20), 3);
        assert_eq!(claim_size(0, 0, 0, 20), 0);
        assert_eq!(claim_size(0, 1, 0, 20), 0, "no claim while a job waits");
    }

    #[test]
    fn short_jobs_keep_up_to_two_claims_worth_waiting() {
        assert_eq!(claim_size(10, 0, 100, 500), 210);
        assert_eq!(claim_size(0, 100, 100, 500), 100);
        assert_eq!(claim_size(0, 101, 100, 500), 0);
        assert_eq!(claim_size(10, 0, 500, 500), 500, "at most a batch");
    }
}
