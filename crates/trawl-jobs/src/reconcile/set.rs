//! The queue's ticks as [`trawl_reconcile::Reconciler`]s, with their
//! default intervals, for [`trawl_reconcile::spawn_reconcilers`].

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgConnection;
use trawl_reconcile::{Now, Reconciler, Scope, TickError, TickMode};

use super::{
    BATCH, BUDGET_PARTITIONS, JOB_PARTITIONS, WORKER_PARTITIONS, attempt_timeout, budget_reset,
    dependency, edge_cancel_dispatcher, edge_cancel_reconciler, lease_expiry, suspension_timeout,
    worker_registry_ttl_sweep,
};
use crate::maintenance;

/// The settings of the queue's reconcilers other than their intervals
/// (which [`trawl_reconcile::Config::intervals`] overrides by name).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// How old a worker's heartbeat may be before `worker_registry_ttl_sweep`
    /// drops it and takes its jobs back. Default
    /// [`worker_registry_ttl_sweep::DEFAULT_TTL`] (30 s); keep it well above
    /// the workers' heartbeat interval.
    pub worker_ttl: Duration,
    /// How long a blocked job, or a dead or cancelled parent, must have
    /// waited before `dependency` and `edge_cancel_reconciler` look at it,
    /// so that they never race the finish that normally handles it.
    /// Default 15 s ([`dependency::STALE`]).
    pub stale_after: Duration,
    /// The thresholds of the `maintenance` reconciler (vacuum of the hot
    /// tables), or `None` to leave it out (autovacuum keeps up, or the
    /// managers run it: [`WorkerConfig::maintenance_interval`](crate::WorkerConfig::maintenance_interval)).
    pub maintenance: Option<maintenance::Config>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            worker_ttl: worker_registry_ttl_sweep::DEFAULT_TTL,
            stale_after: dependency::STALE,
            maintenance: Some(maintenance::Config::default()),
        }
    }
}

/// Every reconciler of the queue with the default [`Settings`]; see
/// [`reconcilers_with`].
pub fn reconcilers() -> Vec<Arc<dyn Reconciler>> {
    reconcilers_with(&Settings::default())
}

/// Every reconciler of the queue, to run with
/// [`trawl_reconcile::spawn_reconcilers`] on one or more nodes:
///
/// | name | scope | default interval |
/// |---|---|---|
/// | `lease_expiry` | 16 job partitions | 5 s |
/// | `attempt_timeout` | 16 job partitions | 5 s |
/// | `suspension_timeout` | 16 job partitions | 5 s |
/// | `dependency` | 16 job partitions | 15 s |
/// | `edge_cancel_dispatcher` | 16 job partitions | 1 s |
/// | `edge_cancel_reconciler` | 16 job partitions | 30 s |
/// | `budget_reset` | 16 budget partitions | 5 s |
/// | `worker_registry_ttl_sweep` | 256 registry partitions | 10 s |
/// | `maintenance` | global, outside a transaction | 5 s |
///
/// A job whose worker died is back in the queue within its lease plus the
/// `lease_expiry` interval (or the worker TTL plus the sweep's interval,
/// whichever comes first).
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use trawl_reconcile::{Config, spawn_reconcilers};
///
/// let config = Config::default()
///     .with_interval("lease_expiry", Duration::from_secs(1))
///     .with_env()?; // TRAWL_RECONCILE_<NAME>_INTERVAL=…
/// let mut handle = spawn_reconcilers(pool, config, trawl_jobs::reconcile::reconcilers())?;
/// // …
/// handle.shutdown(Duration::from_secs(10)).await;
/// # Ok(())
/// # }
/// ```
pub fn reconcilers_with(settings: &Settings) -> Vec<Arc<dyn Reconciler>> {
    let mut ticks = vec![
        Tick::LeaseExpiry,
        Tick::AttemptTimeout,
        Tick::SuspensionTimeout,
        Tick::Dependency(settings.stale_after),
        Tick::EdgeCancelDispatcher,
        Tick::EdgeCancelReconciler(settings.stale_after),
        Tick::BudgetReset,
        Tick::WorkerRegistryTtlSweep(settings.worker_ttl),
    ];
    if let Some(config) = settings.maintenance {
        ticks.push(Tick::Maintenance(config));
    }
    ticks
        .into_iter()
        .map(|tick| Arc::new(tick) as Arc<dyn Reconciler>)
        .collect()
}

/// One of the queue's ticks.
#[derive(Debug, Clone, Copy)]
enum Tick {
    LeaseExpiry,
    AttemptTimeout,
    SuspensionTimeout,
    Dependency(Duration),
    EdgeCancelDispatcher,
    EdgeCancelReconciler(Duration),
    BudgetReset,
    WorkerRegistryTtlSweep(Duration),
    Maintenance(maintenance::Config),
}

#[async_trait::async_trait]
impl Reconciler for Tick {
    fn name(&self) -> &str {
        match self {
            Tick::LeaseExpiry => "lease_expiry",
            Tick::AttemptTimeout => "attempt_timeout",
            Tick::SuspensionTimeout => "suspension_timeout",
            Tick::Dependency(_) => "dependency",
            Tick::EdgeCancelDispatcher => "edge_cancel_dispatcher",
            Tick::EdgeCancelReconciler(_) => "edge_cancel_reconciler",
            Tick::BudgetReset => "budget_reset",
            Tick::WorkerRegistryTtlSweep(_) => "worker_registry_ttl_sweep",
            Tick::Maintenance(_) => "maintenance",
        }
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(match self {
            Tick::EdgeCancelDispatcher => 1,
            Tick::WorkerRegistryTtlSweep(_) => 10,
            Tick::Dependency(_) => 15,
            Tick::EdgeCancelReconciler(_) => 30,
            _ => 5,
        })
    }

    fn scope(&self) -> Scope {
        let partitions = match self {
            Tick::BudgetReset => BUDGET_PARTITIONS,
            Tick::WorkerRegistryTtlSweep(_) => WORKER_PARTITIONS,
            Tick::Maintenance(_) => return Scope::Global,
            _ => JOB_PARTITIONS,
        };
        Scope::Partitioned(partitions as u32)
    }

    fn mode(&self) -> TickMode {
        match self {
            Tick::Maintenance(_) => TickMode::OutsideTransaction,
            _ => TickMode::InTransaction,
        }
    }

    /// A minute for a batch; an hour for `VACUUM`, whose work on a large
    /// table a cancel would throw away.
    fn time_limit(&self) -> Duration {
        Duration::from_secs(match self {
            Tick::Maintenance(_) => 3600,
            _ => 60,
        })
    }

    fn batch(&self) -> Option<u64> {
        match self {
            Tick::Maintenance(_) => None,
            _ => Some(BATCH as u64),
        }
    }

    async fn tick(
        &self,
        conn: &mut PgConnection,
        partition: u32,
        now: Now,
    ) -> Result<u64, TickError> {
        // The scope keeps `partition` below 256.
        let partition = partition as i16;
        Ok(match *self {
            Tick::LeaseExpiry => lease_expiry::run_once(conn, partition, now).await?,
            Tick::AttemptTimeout => attempt_timeout::run_once(conn, partition, now).await?,
            Tick::SuspensionTimeout => suspension_timeout::run_once(conn, partition, now).await?,
            Tick::Dependency(stale) => {
                dependency::run_once_with(conn, partition, now, stale).await?
            }
            Tick::EdgeCancelDispatcher => {
                edge_cancel_dispatcher::run_once(conn, partition, now).await?
            }
            Tick::EdgeCancelReconciler(stale) => {
                edge_cancel_reconciler::run_once_with(conn, partition, now, stale).await?
            }
            Tick::BudgetReset => budget_reset::run_once(conn, partition, now).await?,
            Tick::WorkerRegistryTtlSweep(ttl) => {
                worker_registry_ttl_sweep::run_once_with(conn, partition, now, ttl).await?
            }
            Tick::Maintenance(config) => maintenance::run_on(conn, &config).await?.len() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tick_is_listed_once_with_its_scope() {
        let all = reconcilers();
        let names: Vec<&str> = all.iter().map(|r| r.name()).collect();
        assert_eq!(
            names,
            [
                "lease_expiry",
                "attempt_timeout",
                "suspension_timeout",
                "dependency",
                "edge_cancel_dispatcher",
                "edge_cancel_reconciler",
                "budget_reset",
                "worker_registry_ttl_sweep",
                "maintenance"
            ]
        );
        assert_eq!(all[7].scope(), Scope::Partitioned(256));
        assert_eq!(all[8].mode(), TickMode::OutsideTransaction);
        assert_eq!(all[8].time_limit(), Duration::from_secs(3600));
        let without = reconcilers_with(&Settings {
            maintenance: None,
            ..Settings::default()
        });
        assert_eq!(without.len(), 8);
    }
}
