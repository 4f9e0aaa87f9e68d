//! Bloat control of the hot tables, for a Postgres whose autovacuum is off
//! or too slow for a queue.
//!
//! Every claim updates a row of `trawl_jobs.jobs` and every completion
//! deletes one (finished jobs move to `jobs_finished` in the same
//! statement), so the hot table stays small in *live* rows whatever the
//! history, but each job leaves dead row versions behind, and dead entries
//! at the head of the claim index, which every claim walks past. Postgres
//! removes them only by vacuuming; with autovacuum off nobody does, and a
//! claim loop measured on such a server fell from ~3,200 to ~570 jobs/s
//! within 90 s. The worker registry, updated at every heartbeat, decays
//! the same way, more slowly.
//!
//! [`run_once`] is the maintenance tick: it reads the dead-tuple counts of
//! the hot tables from `pg_stat_user_tables` (cheap, slightly stale) and
//! vacuums the tables past the [`Config`] thresholds. Run it every few
//! seconds from one or more nodes: a `VACUUM` that finds another node's
//! vacuum running on the same table skips it (`SKIP_LOCKED`) instead of
//! queueing behind it. [`vacuum_hot_tables`] vacuums unconditionally.
//!
//! A vacuum removes only the row versions no open transaction can still
//! see: a transaction left open for minutes anywhere on the server keeps
//! the dead rows, and the claim rate decays whatever this module does.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};

use crate::error::{Error, Result};

/// The hot tables, schema-qualified: rows there are updated and deleted
/// all the time.
pub const HOT_TABLES: [&str; 2] = ["trawl_jobs.jobs", "trawl_jobs.workers"];

/// When [`run_once`] vacuums a hot table: once its dead tuples reach both
/// `min_dead_tuples` and `dead_ratio` × its live tuples.
///
/// The absolute floor keeps an idle or tiny table from being vacuumed at
/// every tick; the ratio keeps a table with a large backlog (where a
/// vacuum scans every index in full) from being vacuumed more often than
/// its size warrants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    min_dead_tuples: u64,
    dead_ratio: f64,
}

impl Config {
    /// Dead tuples a table needs before a vacuum, by default.
    pub const DEFAULT_MIN_DEAD_TUPLES: u64 = 10_000;
    /// Dead tuples per live tuple a table needs before a vacuum, by
    /// default.
    pub const DEFAULT_DEAD_RATIO: f64 = 0.1;

    /// Thresholds of `min_dead_tuples` and `dead_ratio`; refuses a ratio
    /// that is negative or not finite.
    pub fn new(min_dead_tuples: u64, dead_ratio: f64) -> Result<Config> {
        if !dead_ratio.is_finite() || dead_ratio < 0.0 {
            return Err(Error::invalid(
                "dead_ratio",
                format!("{dead_ratio} (must be a finite number, 0 or more)"),
            ));
        }
        Ok(Config {
            min_dead_tuples,
            dead_ratio,
        })
    }

    /// The absolute threshold.
    pub fn min_dead_tuples(&self) -> u64 {
        self.min_dead_tuples
    }

    /// The threshold relative to the live tuples.
    pub fn dead_ratio(&self) -> f64 {
        self.dead_ratio
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            min_dead_tuples: Config::DEFAULT_MIN_DEAD_TUPLES,
            dead_ratio: Config::DEFAULT_DEAD_RATIO,
        }
    }
}

/// What the statistics collector says of a hot table.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TableStats {
    /// The table, schema-qualified (one of [`HOT_TABLES`]).
    pub table: &'static str,
    /// Live tuples, estimated.
    pub live_tuples: u64,
    /// Dead tuples, estimated: what a vacuum would remove.
    pub dead_tuples: u64,
    /// The last vacuum, manual or automatic.
    pub last_vacuum: Option<DateTime<Utc>>,
}

impl TableStats {
    /// Whether `config` asks for a vacuum of this table.
    pub fn needs_vacuum(&self, config: &Config) -> bool {
        self.dead_tuples >= config.min_dead_tuples
            && self.dead_tuples as f64 >= config.dead_ratio * self.live_tuples as f64
    }
}

/// The statistics of the [`HOT_TABLES`], in that order. Counts reach the
/// collector from each backend within a second or so of its transactions.
pub async fn hot_table_stats(pool: &PgPool) -> Result<Vec<TableStats>> {
    table_stats(&mut *pool.acquire().await?).await
}

async fn table_stats(conn: &mut PgConnection) -> Result<Vec<TableStats>> {
    let rows = sqlx::query(
        "SELECT t.name, coalesce(s.n_live_tup, 0) AS live, coalesce(s.n_dead_tup, 0) AS dead,
            greatest(s.last_vacuum, s.last_autovacuum) AS last_vacuum
         FROM unnest($1::text[]) WITH ORDINALITY AS t(name, ord)
         LEFT JOIN pg_stat_user_tables s ON s.relid = to_regclass(t.name)
         ORDER BY t.ord",
    )
    .bind(HOT_TABLES)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .zip(HOT_TABLES)
        .map(|(row, table)| {
            Ok(TableStats {
                table,
                live_tuples: row.try_get::<i64, _>("live")?.max(0) as u64,
                dead_tuples: row.try_get::<i64, _>("dead")?.max(0) as u64,
                last_vacuum: row.try_get("last_vacuum")?,
            })
        })
        .collect()
}

/// `VACUUM (ANALYZE)` of every hot table, whatever its dead tuples.
pub async fn vacuum_hot_tables(pool: &PgPool) -> Result<()> {
    vacuum(&mut *pool.acquire().await?, &HOT_TABLES).await
}

/// The maintenance tick: vacuums (and analyzes) the hot tables that
/// `config` says need it. Returns the tables it vacuumed.
pub async fn run_once(pool: &PgPool, config: &Config) -> Result<Vec<&'static str>> {
    run_on(&mut *pool.acquire().await?, config).await
}

/// [`run_once`] on `conn`, which must not be in a transaction.
pub(crate) async fn run_on(conn: &mut PgConnection, config: &Config) -> Result<Vec<&'static str>> {
    let due: Vec<&'static str> = table_stats(conn)
        .await?
        .into_iter()
        .filter(|stats| stats.needs_vacuum(config))
        .map(|stats| stats.table)
        .collect();
    if !due.is_empty() {
        vacuum(conn, &due).await?;
    }
    Ok(due)
}

/// One `VACUUM` of `tables` (names from [`HOT_TABLES`] only). It cannot
/// run inside a transaction, hence the simple-query protocol, on a
/// connection outside any transaction. `SKIP_LOCKED`: a table another node is
/// vacuuming right now is skipped, not waited for. `INDEX_CLEANUP ON`:
/// the dead entries of the claim index are what slows claims down, so
/// the index pass is never bypassed.
async fn vacuum(conn: &mut PgConnection, tables: &[&'static str]) -> Result<()> {
    debug_assert!(tables.iter().all(|t| HOT_TABLES.contains(t)));
    let sql = format!(
        "VACUUM (ANALYZE, SKIP_LOCKED, INDEX_CLEANUP ON, TRUNCATE OFF) {}",
        tables.join(", ")
    );
    // The table names are the constants above, never input.
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(live: u64, dead: u64) -> TableStats {
        TableStats {
            table: HOT_TABLES[0],
            live_tuples: live,
            dead_tuples: dead,
            last_vacuum: None,
        }
    }

    #[test]
    fn a_table_needs_a_vacuum_past_both_thresholds() {
        let config = Config::new(1_000, 0.1).unwrap();
        assert!(!stats(0, 999).needs_vacuum(&config));
        assert!(stats(0, 1_000).needs_vacuum(&config));
        // A large backlog raises the bar.
        assert!(!stats(100_000, 9_999).needs_vacuum(&config));
        assert!(stats(100_000, 10_000).needs_vacuum(&config));
        // A zero threshold vacuums at every tick, dead tuples or not.
        assert!(stats(0, 0).needs_vacuum(&Config::new(0, 0.0).unwrap()));
    }
}
