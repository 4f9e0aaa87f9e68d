//! A fresh database per test, created on the server `DATABASE_URL` names and
//! dropped when the test ends.
//!
//! Under plain `cargo test` without `DATABASE_URL` the tests skip with a
//! notice; under CI (`CI` set) a missing server fails them: `cargo xtask
//! test` provides it.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
// The database names are made here, never from input.
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgConnection, PgPool};
use trawl_jobs::JobQueue;

const URL_VAR: &str = "DATABASE_URL";

/// A database of its own for one test, dropped with it.
pub(crate) struct TestDb {
    pub(crate) pool: PgPool,
    pub(crate) name: String,
    admin: PgConnectOptions,
}

impl TestDb {
    /// A migrated queue on this database.
    pub(crate) async fn queue(&self) -> JobQueue {
        let queue = JobQueue::new(self.pool.clone());
        queue.migrate().await.expect("migrate");
        queue
    }

    /// Options to connect to this database (for pools of other "nodes").
    pub(crate) fn options(&self) -> PgConnectOptions {
        self.admin.clone().database(&self.name)
    }
}

/// A fresh, empty database, or `None` (with a notice) when no server is
/// configured outside CI.
pub(crate) async fn fresh() -> Option<TestDb> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let url = match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => url,
        _ if std::env::var_os("CI").is_some() => panic!(
            "{URL_VAR} is not set: under CI the queue's tests must run against PostgreSQL; use `cargo xtask test`"
        ),
        _ => {
            eprintln!(
                "notice: {URL_VAR} is not set, skipping this PostgreSQL test (`cargo xtask test` provides it)"
            );
            return None;
        }
    };
    let admin: PgConnectOptions = url.parse().expect("DATABASE_URL is a postgres:// URL");
    let admin = admin.log_statements(tracing::log::LevelFilter::Trace);
    let name = format!(
        "trawl_jobs_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut conn = PgConnection::connect_with(&admin)
        .await
        .expect("connect to DATABASE_URL");
    sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await
    .expect("drop a leftover test database");
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create the test database");
    conn.close().await.ok();
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .connect_with(admin.clone().database(&name))
        .await
        .expect("connect to the test database");
    Some(TestDb { pool, name, admin })
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Dropped at the end of an async test, whose runtime must not be
        // blocked on: drop the database (closing the pool's connections by
        // force) from a thread and a runtime of its own.
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect_with(&admin).await {
                    let _ = sqlx::query(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        });
        let _ = done.join();
    }
}
