//! `trawl reconcile`: settings errors without a database, and against the
//! real PostgreSQL (a database of its own) one pass with `--once`, and the
//! service stopped by a signal.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::stderr;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};
use trawl::jobs::{JobQueue, JobState, NewJob, claim};

fn reconcile(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_trawl"));
    command
        .arg("reconcile")
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("DATABASE_URL")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    command
}

fn output(command: &mut Command) -> Output {
    command.output().expect("run trawl")
}

#[test]
fn a_misspelt_setting_is_named_before_anything_connects() {
    let out = output(&mut reconcile(
        &[
            "--once",
            "--database-url",
            "postgres://nobody@127.0.0.1:1/none",
        ],
        &[("TRAWL_RECONCILE_LEASE_EXPIRY", "5s")],
    ));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("TRAWL_RECONCILE_LEASE_EXPIRY") && err.contains("unknown setting"),
        "{err}"
    );
}

#[test]
fn an_unreachable_database_is_named_without_its_password() {
    let out = output(&mut reconcile(
        &[
            "--once",
            "--database-url",
            "postgres://trawl:hunter2@127.0.0.1:1/queue",
        ],
        &[],
    ));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("connecting to the queue's database postgres://trawl:***@127.0.0.1:1/queue"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

/// A database of its own on the `DATABASE_URL` server, dropped at the end;
/// `None` (with a notice) without a server outside CI.
struct Db {
    server: String,
    name: String,
    url: String,
}

impl Db {
    async fn create() -> Option<Db> {
        let server = match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => url,
            _ if std::env::var_os("CI").is_some() => {
                panic!("DATABASE_URL is not set: under CI this test must run against PostgreSQL")
            }
            _ => {
                eprintln!("notice: DATABASE_URL is not set, skipping this PostgreSQL test");
                return None;
            }
        };
        let name = format!("trawl_cli_test_{}", std::process::id());
        admin(
            &server,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )
        .await;
        admin(&server, &format!("CREATE DATABASE {name}")).await;
        let mut url = url::Url::parse(&server).expect("DATABASE_URL is a URL");
        url.set_path(&name);
        Some(Db {
            server,
            name,
            url: url.to_string(),
        })
    }
}

async fn admin(server: &str, sql: &str) {
    let mut conn = PgConnection::connect(server).await.expect("connect");
    sqlx::query(AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"));
}

/// Enqueues a job and leaves it claimed by a worker that is gone, its
/// lease already over.
async fn abandoned_job(queue: &JobQueue, pool: &PgPool) -> i64 {
    let id = queue.enqueue(NewJob::new("k", 1.into())).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let lease = Duration::from_millis(100);
    let claimed = claim(&mut conn, "gone", "default", 1, lease, lease * 100, None)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    tokio::time::sleep(lease * 2).await;
    id
}

async fn state(queue: &JobQueue, id: i64) -> JobState {
    queue.get(id).await.unwrap().expect("the job exists").state
}

#[tokio::test]
async fn once_repairs_and_reports_and_a_signal_stops_the_service() {
    let Some(db) = Db::create().await else {
        return;
    };
    let url = db.url.as_str();

    let out = output(&mut reconcile(&["--once", "--database-url", url], &[]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("has no trawl_jobs schema: run with --migrate"),
        "{}",
        stderr(&out)
    );

    let pool = PgPool::connect(url).await.unwrap();
    let queue = JobQueue::new(pool.clone());
    queue.migrate().await.unwrap();
    let id = abandoned_job(&queue, &pool).await;
    let out = output(&mut reconcile(&["--once"], &[("DATABASE_URL", url)]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = String::from_utf8(out.stdout.clone()).unwrap();
    let line = table
        .lines()
        .find(|l| l.starts_with("lease_expiry "))
        .unwrap_or_else(|| panic!("{table}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&fields[..4], ["lease_expiry", "5s", "1", "1"], "{table}");
    assert_eq!(table.lines().count(), 10, "a header and 9 reconcilers");
    assert_eq!(state(&queue, id).await, JobState::Pending);

    let mut service = reconcile(
        &["--database-url", url, "--grace", "5s"],
        &[("TRAWL_RECONCILE_LEASE_EXPIRY_INTERVAL", "100ms")],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start trawl reconcile");
    queue.cancel(id).await.unwrap();
    let id = abandoned_job(&queue, &pool).await;
    let start = Instant::now();
    while state(&queue, id).await != JobState::Pending {
        assert!(start.elapsed() < Duration::from_secs(20), "never reclaimed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = Command::new("kill")
        .args(["-INT", &service.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = service.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(15) {
            let _ = service.kill();
            panic!("trawl reconcile did not stop within 15 s of SIGINT");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let out = service.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(0), "{}", stderr(&out));
    let table = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(
        table.contains("lease_expiry") && table.contains("100ms"),
        "{table}"
    );
    assert!(stderr(&out).contains("trawl: stopping"), "{}", stderr(&out));

    pool.close().await;
    admin(
        &db.server,
        &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", db.name),
    )
    .await;
}
