//! Driving jobs by hand, as a worker named `w` would.

use sqlx::PgConnection;
use trawl_jobs::{Completion, Outcome, complete};

/// Records `outcome` for attempt `attempt` of job `id`, leased to worker
/// `w`, and checks that it was applied.
pub(crate) async fn finish(conn: &mut PgConnection, id: i64, attempt: u32, outcome: Outcome) {
    let completion = Completion {
        id,
        attempt,
        outcome,
    };
    let applied = complete(conn, "w", &[completion], None).await.unwrap();
    assert_eq!(applied, [id], "the completion of job {id} was applied");
}
