//! The queue's statements read index ranges, never the whole jobs table:
//! with 1,000,000 jobs (mixed states, queues and partitions, analyzed),
//! EXPLAIN each reconciler tick's statement under a custom and a generic
//! plan, and run the ticks and the claim to count their sequential scans.

mod support;

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::{Acquire, PgConnection, Row};
use trawl_jobs::claim;
use trawl_jobs::reconcile::{
    self, BATCH, JOB_PARTITIONS, attempt_timeout, dependency, edge_cancel_dispatcher,
    edge_cancel_reconciler, lease_expiry, suspension_timeout, worker_registry_ttl_sweep,
};

const JOBS: i64 = 1_000_000;
const WORKERS: i64 = 5_000;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

/// 1M jobs (id = the series number, so the running ones, every 20th,
/// fall in partitions 0, 4, 8 and 12): 85 % pending over 4 queues (a tenth of them scheduled after
/// t0), 5 % running (leases and deadlines around t0, owned by 5,000
/// workers), the rest blocked (without parents) or suspended (deadlines
/// around t0); 5,000 workers, a tenth of them silent.
async fn fill(conn: &mut PgConnection) {
    sqlx::raw_sql(
        "INSERT INTO trawl_jobs.jobs (kind, queue, state, priority, payload, run_at,
            attempt, max_attempts, lease_owner, lease_expires_at, attempted_at, deadline_at,
            suspended_until, on_timeout)
         SELECT 'kind' || (g % 8), 'q' || (g % 4),
            s.state::trawl_jobs.job_state, (g % 4)::smallint, jsonb_build_object('n', g),
            '2030-01-01'::timestamptz + ((g % 10) - 8) * interval '1 hour',
            CASE WHEN s.state = 'running' THEN 1 ELSE 0 END, 5,
            CASE WHEN s.state = 'running' THEN 'w' || (g % 5000) END,
            CASE WHEN s.state = 'running'
                THEN '2030-01-01'::timestamptz + ((g % 600) - 300) * interval '1 second' END,
            CASE WHEN s.state = 'running'
                THEN '2030-01-01'::timestamptz - interval '10 minutes' END,
            CASE WHEN s.state = 'running'
                THEN '2030-01-01'::timestamptz + ((g % 7200) - 3600) * interval '1 second' END,
            CASE WHEN s.state = 'suspended'
                THEN '2030-01-01'::timestamptz + ((g % 7200) - 3600) * interval '1 second' END,
            CASE WHEN s.state = 'suspended' THEN 'resume' END
         FROM generate_series(1, 1000000) AS g,
            LATERAL (SELECT CASE WHEN g % 20 = 0 THEN 'running'
                WHEN g % 20 = 1 THEN 'blocked'
                WHEN g % 20 = 2 THEN 'suspended'
                ELSE 'pending' END AS state) AS s;
         INSERT INTO trawl_jobs.workers (id, partition, queues, max_concurrent, heartbeat_at)
         SELECT 'w' || g, 0, '{q0,q1,q2,q3}', 16,
            '2030-01-01'::timestamptz - CASE WHEN g % 10 = 0 THEN interval '5 minutes'
                ELSE interval '5 seconds' END
         FROM generate_series(0, 4999) AS g;
         ANALYZE trawl_jobs.jobs;",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    // The registry partition is computed in Rust.
    let ids: Vec<String> = (0..WORKERS).map(|g| format!("w{g}")).collect();
    let partitions: Vec<i16> = ids
        .iter()
        .map(|id| reconcile::worker_partition(id))
        .collect();
    sqlx::query(
        "UPDATE trawl_jobs.workers w SET partition = u.p
         FROM unnest($1::text[], $2::smallint[]) AS u(id, p) WHERE w.id = u.id",
    )
    .bind(&ids)
    .bind(&partitions)
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::raw_sql("VACUUM ANALYZE trawl_jobs.workers")
        .execute(&mut *conn)
        .await
        .unwrap();
}

/// The plan of `sql`, first with its parameters bound (a custom plan),
/// then as a prepared statement under `force_generic_plan` (the plan a
/// long-lived connection ends up using).
async fn plans(conn: &mut PgConnection, sql: &str, types: &str, args: &str) -> [String; 2] {
    let mut out = [String::new(), String::new()];
    for (i, mode) in ["force_custom_plan", "force_generic_plan"]
        .into_iter()
        .enumerate()
    {
        let mut tx = conn.begin().await.unwrap();
        let script = format!(
            "SET LOCAL plan_cache_mode = {mode};
             PREPARE explained ({types}) AS {sql};"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(script))
            .execute(&mut *tx)
            .await
            .unwrap();
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "EXPLAIN EXECUTE explained({args})"
        )))
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        out[i] = rows
            .iter()
            .map(|row| row.get::<String, _>(0))
            .collect::<Vec<_>>()
            .join("\n");
        tx.rollback().await.unwrap();
        sqlx::raw_sql("DEALLOCATE explained")
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    out
}

/// Whether `plan` reads the whole of `table` (plain or parallel).
fn seq_scans(plan: &str, table: &str) -> bool {
    let node = format!("Seq Scan on {table}");
    plan.lines().any(|line| {
        let line = line.trim_end();
        line.ends_with(&node) || line.contains(&format!("{node} "))
    })
}

fn assert_no_seq_scan(what: &str, plan: &str) {
    assert!(
        !seq_scans(plan, "jobs"),
        "{what} scans the whole jobs table:\n{plan}"
    );
    assert!(
        !seq_scans(plan, "workers"),
        "{what} scans the whole registry:\n{plan}"
    );
}

/// Sequential and index scans of `trawl_jobs.jobs` this backend has not
/// yet reported to the statistics collector. Reports happen only between
/// transactions, so the difference of two readings in one transaction is
/// exactly the scans done in between.
async fn scans(conn: &mut PgConnection) -> (i64, i64) {
    sqlx::query_as(
        "SELECT coalesce(seq_scan, 0), coalesce(idx_scan, 0) FROM pg_stat_xact_user_tables
         WHERE relid = 'trawl_jobs.jobs'::regclass",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn no_statement_of_the_queue_scans_a_million_jobs() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    db.queue().await;
    let mut conn = db.pool.acquire().await.unwrap();
    fill(&mut conn).await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM trawl_jobs.jobs")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(count, JOBS);

    // The check itself catches a statement that does scan the table.
    let [scanning, _] = plans(
        &mut conn,
        "SELECT id FROM trawl_jobs.jobs WHERE payload ->> 'n' = $1",
        "text",
        "'7'",
    )
    .await;
    assert!(
        seq_scans(&scanning, "jobs"),
        "the probe's plan was not flagged:\n{scanning}"
    );

    let job_tick = "smallint, timestamptz, bigint";
    let job_args = format!("4, '{}', {BATCH}", t0().to_rfc3339());
    let sweep_args = format!(
        "{}, '{}', {BATCH}, 30000, {}",
        reconcile::worker_partition("w10"),
        t0().to_rfc3339(),
        worker_registry_ttl_sweep::WORKER_BATCH
    );
    for (what, sql, types, args) in [
        (
            "lease_expiry",
            lease_expiry::SQL,
            job_tick,
            job_args.as_str(),
        ),
        (
            "attempt_timeout",
            attempt_timeout::SQL,
            job_tick,
            job_args.as_str(),
        ),
        (
            "worker_registry_ttl_sweep",
            worker_registry_ttl_sweep::SQL,
            "smallint, timestamptz, bigint, bigint, bigint",
            sweep_args.as_str(),
        ),
    ] {
        for plan in plans(&mut conn, sql, types, args).await {
            assert_no_seq_scan(what, &plan);
        }
    }

    // Run the functions themselves (the claim's SQL is private to it), under
    // both plan modes, in transactions rolled back, and count their scans.
    for mode in ["force_custom_plan", "force_generic_plan"] {
        let mut tx = conn.begin().await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET LOCAL plan_cache_mode = {mode}"
        )))
        .execute(&mut *tx)
        .await
        .unwrap();
        let before = scans(&mut tx).await;
        // q1 has no limits: the plain claim. q2 has a cap and budgets: it
        // claims through claim_limited.
        sqlx::raw_sql(
            "INSERT INTO trawl_jobs.queues (name, max_running) VALUES ('q2', 1000000);
             INSERT INTO trawl_jobs.budgets (scope, target, partition, max_cost, window_ms)
             VALUES ('queue', 'q2', 0, 1000000, 1000), ('kind', 'kind2', 1, 1000000, 1000)",
        )
        .execute(&mut *tx)
        .await
        .unwrap();
        for queue in ["q1", "q2"] {
            let claimed = claim(
                &mut tx,
                "explain",
                queue,
                10,
                Duration::from_secs(30),
                Duration::from_secs(60),
                Some(t0()),
            )
            .await
            .unwrap();
            assert_eq!(claimed.len(), 10, "{queue}");
        }
        let lease = lease_expiry::run_once(&mut tx, 4, Some(t0()))
            .await
            .unwrap();
        let timeout = attempt_timeout::run_once(&mut tx, 8, Some(t0()))
            .await
            .unwrap();
        let mut swept = 0;
        for partition in 0..8 {
            swept += worker_registry_ttl_sweep::run_once(&mut tx, partition, Some(t0()))
                .await
                .unwrap();
        }
        // The ticks of blocked and suspended jobs and of cancel propagation.
        let (mut promoted, mut resumed) = (0, 0);
        for partition in 0..JOB_PARTITIONS {
            promoted += dependency::run_once(&mut tx, partition, Some(t0()))
                .await
                .unwrap();
            resumed += suspension_timeout::run_once(&mut tx, partition, Some(t0()))
                .await
                .unwrap();
            edge_cancel_dispatcher::run_once(&mut tx, partition, Some(t0()))
                .await
                .unwrap();
            edge_cancel_reconciler::run_once(&mut tx, partition, Some(t0()))
                .await
                .unwrap();
        }
        assert!(
            lease > 0 && timeout > 0 && swept > 0 && promoted > 0 && resumed > 0,
            "{lease} {timeout} {swept} {promoted} {resumed}"
        );
        let after = scans(&mut tx).await;
        let (seq, idx) = (after.0 - before.0, after.1 - before.1);
        assert_eq!(seq, 0, "{mode}: a statement scanned the whole jobs table");
        assert!(idx > 0);
        tx.rollback().await.unwrap();
    }
}
