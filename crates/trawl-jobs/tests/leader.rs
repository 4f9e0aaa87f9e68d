//! Leadership against the real PostgreSQL, with short real leases: one
//! leader among contenders at a time, failover when the leader loses the
//! database (its connections killed, or the network frozen), and a
//! shutdown that hands over at once. Each contender reaches the database
//! through a proxy of its own, so a test can cut one off.

mod support;

use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use trawl_jobs::leader::{LeaderConfig, Leadership};

use support::db::TestDb;
use support::proxy::{Mode, Proxy};

const DUTY: &str = "periodic";

/// One contender: its proxy, its pool (application_name = its id) and its
/// leadership.
struct Node {
    id: String,
    proxy: Proxy,
    leadership: Option<Leadership>,
}

impl Node {
    fn leads(&self) -> bool {
        self.leadership.as_ref().is_some_and(|l| l.is_leader())
    }

    fn leadership(&self) -> &Leadership {
        self.leadership.as_ref().expect("running")
    }
}

async fn node(db: &TestDb, id: &str, ttl: Duration, renew_every: Duration) -> Node {
    let options = db.options();
    let upstream = format!("{}:{}", options.get_host(), options.get_port());
    let proxy = Proxy::start(upstream).await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(
            options
                .host("127.0.0.1")
                .port(proxy.addr.port())
                .application_name(id),
        )
        .await
        .expect("connect through the proxy");
    let config = LeaderConfig {
        ttl,
        renew_every: Some(renew_every),
        ..LeaderConfig::new(DUTY, id)
    };
    let leadership = Leadership::start(pool, config).await.expect("start");
    Node {
        id: id.to_owned(),
        proxy,
        leadership: Some(leadership),
    }
}

async fn nodes(db: &TestDb, n: usize, ttl: Duration, renew_every: Duration) -> Vec<Node> {
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(node(db, &format!("node-{i}"), ttl, renew_every).await);
    }
    nodes
}

/// The lease row's holder.
async fn holder(pool: &PgPool) -> Option<String> {
    sqlx::query_scalar("SELECT holder FROM trawl_jobs.leaders WHERE name = $1")
        .bind(DUTY)
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// Samples every 5 ms for `span`, panicking if two nodes lead at once;
/// returns the index of the leader at each sample (None: nobody).
async fn sample(nodes: &[Node], span: Duration) -> Vec<Option<usize>> {
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < span {
        let leaders: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].leads()).collect();
        assert!(
            leaders.len() <= 1,
            "two leaders at once: {:?}",
            leaders.iter().map(|&i| &nodes[i].id).collect::<Vec<_>>()
        );
        seen.push(leaders.first().copied());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    seen
}

/// Samples (as [`sample`]) until `done` holds, at most `limit`; returns
/// how long it took.
async fn sample_until(
    nodes: &[Node],
    limit: Duration,
    what: &str,
    done: impl Fn(&[Node]) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        sample(nodes, Duration::from_millis(1)).await;
        if done(nodes) {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
    }
}

fn the_leader(nodes: &[Node]) -> usize {
    let leaders: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].leads()).collect();
    assert_eq!(leaders.len(), 1, "exactly one leader");
    leaders[0]
}

#[tokio::test]
async fn one_of_three_contenders_leads_and_keeps_the_lead() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    db.queue().await;
    let ttl = Duration::from_secs(1);
    let nodes = nodes(&db, 3, ttl, Duration::from_millis(200)).await;
    // The first to try won, before the others started.
    assert!(nodes[0].leads());
    // Three ttls of renewals: the lead never moves and is never shared.
    let seen = sample(&nodes, 3 * ttl).await;
    assert!(seen.len() > 100, "sampled {} times", seen.len());
    assert!(
        seen.iter().all(|&s| s == Some(0)),
        "the lead moved: {seen:?}"
    );
    assert_eq!(holder(&db.pool).await.as_deref(), Some("node-0"));
    let mut changes = nodes[1].leadership().changes();
    assert!(!*changes.borrow_and_update());
    for node in nodes {
        node.leadership.unwrap().shutdown().await.unwrap();
    }
    // Shut down: the value is false and the sender is gone.
    assert!(!*changes.borrow());
    assert!(changes.changed().await.is_err());
    assert_eq!(holder(&db.pool).await, None);
}

#[tokio::test]
async fn a_leader_whose_connections_are_killed_steps_down_within_its_ttl_and_another_takes_over() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    db.queue().await;
    let ttl = Duration::from_secs(2);
    let renew_every = Duration::from_millis(300);
    let mut nodes = nodes(&db, 3, ttl, renew_every).await;
    sample(&nodes, Duration::from_millis(500)).await;
    let old = the_leader(&nodes);

    // The leader can no longer connect, and its connections are killed.
    nodes[old].proxy.set(Mode::Refuse);
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = $1) t",
    )
    .bind(&nodes[old].id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(killed >= 1, "the leader had a connection");
    let mut changes = nodes[old].leadership().changes();

    let stepped_down = sample_until(&nodes, 2 * ttl, "the old leader to step down", |n| {
        !n[old].leads()
    })
    .await;
    // Its last renewal was at most one renew_every before the kill.
    assert!(stepped_down <= ttl, "stepped down after {stepped_down:?}");
    assert!(!*changes.borrow_and_update());

    let took_over = sample_until(&nodes, 3 * ttl, "another leader", |n| {
        n.iter().any(|node| node.leads())
    })
    .await;
    let new = the_leader(&nodes);
    assert_ne!(new, old);
    assert!(
        stepped_down + took_over <= ttl + renew_every + Duration::from_secs(1),
        "took over {:?} after the kill",
        stepped_down + took_over
    );
    assert_eq!(
        holder(&db.pool).await.as_deref(),
        Some(nodes[new].id.as_str())
    );

    // The old leader comes back as a follower: the lead stays where it is.
    nodes[old].proxy.set(Mode::Open);
    let seen = sample(&nodes, ttl).await;
    assert!(
        seen.iter().all(|&s| s == Some(new)),
        "the lead moved: {seen:?}"
    );
    for node in &mut nodes {
        node.leadership.take().unwrap().shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_leader_cut_off_without_an_error_steps_down_by_its_own_clock() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    db.queue().await;
    let ttl = Duration::from_secs(2);
    let renew_every = Duration::from_millis(300);
    let mut nodes = nodes(&db, 2, ttl, renew_every).await;
    let old = the_leader(&nodes);

    // Statements hang: no error ever reaches the leader.
    nodes[old].proxy.set(Mode::Freeze);
    let stepped_down = sample_until(&nodes, 2 * ttl, "the old leader to step down", |n| {
        !n[old].leads()
    })
    .await;
    assert!(stepped_down <= ttl, "stepped down after {stepped_down:?}");
    sample_until(&nodes, 3 * ttl, "the other to take over", |n| {
        n[1 - old].leads()
    })
    .await;

    // Its shutdown cannot reach the database: it fails within the ttl, and
    // the lease stays with the new leader.
    let started = Instant::now();
    let shutdown = nodes[old].leadership.take().unwrap().shutdown().await;
    assert!(shutdown.is_err(), "{shutdown:?}");
    assert!(started.elapsed() < ttl + Duration::from_millis(500));
    assert_eq!(
        holder(&db.pool).await.as_deref(),
        Some(nodes[1 - old].id.as_str())
    );
    nodes[1 - old]
        .leadership
        .take()
        .unwrap()
        .shutdown()
        .await
        .unwrap();
}

#[tokio::test]
async fn shutdown_hands_the_lead_over_at_once() {
    let Some(db) = support::db::fresh().await else {
        return;
    };
    db.queue().await;
    // A long ttl: a takeover well within it is the release's doing.
    let ttl = Duration::from_secs(20);
    let renew_every = Duration::from_millis(200);
    let mut nodes = nodes(&db, 3, ttl, renew_every).await;
    let old = the_leader(&nodes);
    let mut waiting = nodes[(old + 1) % 3].leadership().changes();

    let leadership = nodes[old].leadership.take().unwrap();
    let changes = leadership.changes();
    let started = Instant::now();
    assert!(
        leadership.shutdown().await.unwrap(),
        "the lease was released"
    );
    assert!(!*changes.borrow());
    sample_until(&nodes, Duration::from_secs(3), "another leader", |n| {
        n.iter().any(|node| node.leads())
    })
    .await;
    assert!(
        started.elapsed() < renew_every + Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    let new = the_leader(&nodes);
    assert_ne!(new, old);
    assert_eq!(
        holder(&db.pool).await.as_deref(),
        Some(nodes[new].id.as_str())
    );
    if new == (old + 1) % 3 {
        assert!(*waiting.borrow_and_update());
    }

    // A follower's shutdown releases nothing and leaves the leader alone.
    let follower = (0..3).find(|&i| i != old && i != new).unwrap();
    let released = nodes[follower]
        .leadership
        .take()
        .unwrap()
        .shutdown()
        .await
        .unwrap();
    assert!(!released);
    assert!(nodes[new].leads());
    assert!(
        nodes[new]
            .leadership
            .take()
            .unwrap()
            .shutdown()
            .await
            .unwrap()
    );
    assert_eq!(holder(&db.pool).await, None);
}
