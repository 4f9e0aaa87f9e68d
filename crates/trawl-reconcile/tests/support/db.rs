//! A fresh database per test, created on the server `DATABASE_URL` names and
//! dropped when the test ends.
//!
//! Under plain `cargo test` without `DATABASE_URL` the tests skip with a
//! notice; under CI (`CI` set) a missing server fails them: `cargo xtask
//! test` provides it.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
// The database names are made here, never from input.
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};

/// A database of its own for one test, dropped with it.
pub(crate) struct TestDb {
    pub(crate) pool: PgPool,
    name: String,
    admin: PgConnectOptions,
}

impl TestDb {
    /// A second pool on this database, as another node would have.
    pub(crate) async fn another_pool(&self) -> PgPool {
        self.pool_of(8).await
    }

    /// A pool of at most `connections` on this database.
    pub(crate) async fn pool_of(&self, connections: u32) -> PgPool {
        PgPoolOptions::new()
            .max_connections(connections)
            .connect_with(self.admin.clone().database(&self.name))
            .await
            .expect("connect to the test database")
    }
}

/// A fresh, empty database, or `None` (with a notice) when no server is
/// configured outside CI.
pub(crate) async fn fresh() -> Option<TestDb> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ if std::env::var_os("CI").is_some() => panic!(
            "DATABASE_URL is not set: under CI the supervisor's tests must run against PostgreSQL; use `cargo xtask test`"
        ),
        _ => {
            eprintln!(
                "notice: DATABASE_URL is not set, skipping this PostgreSQL test (`cargo xtask test` provides it)"
            );
            return None;
        }
    };
    let admin: PgConnectOptions = url.parse().expect("DATABASE_URL is a postgres:// URL");
    let name = format!(
        "trawl_reconcile_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    execute(
        &admin,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    )
    .await;
    execute(&admin, &format!("CREATE DATABASE {name}")).await;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(admin.clone().database(&name))
        .await
        .expect("connect to the test database");
    Some(TestDb { pool, name, admin })
}

async fn execute(admin: &PgConnectOptions, sql: &str) {
    let mut conn = PgConnection::connect_with(admin)
        .await
        .expect("connect to DATABASE_URL");
    sqlx::query(AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"));
    conn.close().await.ok();
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, sql) = (
            self.admin.clone(),
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
        // Dropped at the end of an async test, whose runtime must not be
        // blocked on: a thread and a runtime of its own.
        let done = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(execute(&admin, &sql));
        });
        let _ = done.join();
    }
}
