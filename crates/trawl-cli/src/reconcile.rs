//! `trawl reconcile`: runs the job queue's reconcilers (crash recovery,
//! timeouts, cancels, budgets, vacuum) against its database until stopped,
//! or once with `--once`. Any number of nodes may run it at once.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};
use trawl::jobs::JobQueue;
use trawl::jobs::reconcile::{Settings, reconcilers_with};
use trawl::reconcile::{
    Config, ReconcilerHandle, ReconcilerStats, parse_duration, spawn_reconcilers,
};

use crate::scan::{EXIT_CLEAN, EXIT_INCOMPLETE};

/// Arguments of `trawl reconcile`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  DATABASE_URL=postgres://trawl@db/trawl trawl reconcile\n  trawl reconcile --once --database-url postgres://trawl@db/trawl\n  TRAWL_RECONCILE_LEASE_EXPIRY_INTERVAL=1s trawl reconcile\n\nIntervals: TRAWL_RECONCILE_<NAME>_INTERVAL (250ms, 5s, 2m), for each reconciler of the table\nprinted at the end; time limits of one call: TRAWL_RECONCILE_<NAME>_TIME_LIMIT (default 1m,\n1h for maintenance); TRAWL_RECONCILE_MAX_PHASE, TRAWL_RECONCILE_MAX_BATCHES.\nExit codes: 0 every tick succeeded, 2 a tick failed or the database could not be used."
)]
pub(crate) struct ReconcileArgs {
    /// The queue's PostgreSQL database, a postgres:// URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Apply the queue's schema migrations first.
    #[arg(long)]
    migrate: bool,
    /// Run every reconciler once, print what each did, and exit.
    #[arg(long)]
    once: bool,
    /// How long running ticks may take to finish once stopped (Ctrl-C,
    /// SIGTERM).
    #[arg(long, default_value = "10s", value_parser = duration)]
    grace: Duration,
    /// How old a worker's heartbeat may be before the worker is swept and
    /// its running jobs go back to the queue.
    #[arg(long, default_value = "30s", value_parser = duration)]
    worker_ttl: Duration,
    /// How long a blocked job or a cancelled parent waits before the
    /// dependency and cancel repairs look at it.
    #[arg(long, default_value = "15s", value_parser = duration)]
    stale_after: Duration,
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|err| err.to_string())
}

/// Runs the reconcilers; the exit code.
pub(crate) fn run(args: ReconcileArgs) -> Result<u8> {
    let mut config = Config::default()
        .with_env()
        .context("reading the TRAWL_RECONCILE_* environment variables")?;
    if args.once {
        config.max_phase = Duration::ZERO;
    }
    let database = without_password(&args.database_url);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        // One plain connection first: a pool retries a refused connection
        // until its timeout, a wrong URL should fail at once.
        let connect = || format!("connecting to the queue's database {database}");
        PgConnection::connect(&args.database_url)
            .await
            .with_context(connect)?
            .close()
            .await
            .with_context(connect)?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&args.database_url)
            .await
            .with_context(connect)?;
        if args.migrate {
            JobQueue::new(pool.clone())
                .migrate()
                .await
                .with_context(|| format!("migrating the queue's schema in {database}"))?;
        } else {
            let schema: bool =
                sqlx::query_scalar("SELECT to_regclass('trawl_jobs.jobs') IS NOT NULL")
                    .fetch_one(&pool)
                    .await
                    .with_context(|| format!("reading {database}"))?;
            if !schema {
                bail!("{database} has no trawl_jobs schema: run with --migrate to create it");
            }
        }
        let settings = Settings {
            worker_ttl: args.worker_ttl,
            stale_after: args.stale_after,
            ..Settings::default()
        };
        let reconcilers = reconcilers_with(&settings);
        let count = reconcilers.len();
        let mut handle = spawn_reconcilers(pool, config, reconcilers)?;
        if args.once {
            every_ticked_once(&handle).await;
        } else {
            eprintln!(
                "trawl: running {count} reconcilers on {database}; Ctrl-C or SIGTERM stops them"
            );
            stop_signal().await;
            eprintln!("trawl: stopping (up to {:?} for running ticks)", args.grace);
        }
        let aborted = handle.shutdown(args.grace).await;
        let stats = handle.stats();
        print!("{}", table(&stats));
        let failed: u64 = stats.iter().map(|s| s.errors + s.panics).sum();
        if failed > 0 || aborted > 0 {
            eprintln!(
                "trawl: {failed} ticks failed and {aborted} were cut short; the warnings above say why"
            );
            return Ok(EXIT_INCOMPLETE);
        }
        Ok(EXIT_CLEAN)
    })
}

/// Returns once every reconciler finished a tick.
async fn every_ticked_once(handle: &ReconcilerHandle) {
    while handle.stats().iter().any(|s| s.ticks == 0) {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = stop_signal() => return,
        }
    }
}

/// Ctrl-C, or SIGTERM where there is one.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The URL with its password (if any) replaced, for messages.
fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "(the --database-url, which is not a URL)".to_owned(),
    }
}

/// What each reconciler did, a line each.
fn table(stats: &[ReconcilerStats]) -> String {
    let mut out = format!(
        "{:<27} {:>8} {:>6} {:>12} {:>8} {:>7} {:>7} {:>10}\n",
        "reconciler",
        "interval",
        "ticks",
        "rows changed",
        "skipped",
        "errors",
        "panics",
        "last tick"
    );
    for s in stats {
        let last = s.last_tick_duration.map_or("-".to_owned(), |d| {
            format!("{:.1} ms", d.as_secs_f64() * 1e3)
        });
        out.push_str(&format!(
            "{:<27} {:>8} {:>6} {:>12} {:>8} {:>7} {:>7} {:>10}\n",
            s.name,
            format!("{:?}", s.interval),
            s.ticks,
            s.rows_changed,
            s.skipped,
            s.errors,
            s.panics,
            last
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            without_password("postgres://trawl:hunter2@db:5432/q"),
            "postgres://trawl:***@db:5432/q"
        );
        assert_eq!(without_password("postgres://db/q"), "postgres://db/q");
        assert!(!without_password("hunter2 not a url").contains("hunter2"));
    }
}
