//! Test support: a fresh database per test on the real PostgreSQL, and a
//! proxy to cut a node off it.

#![allow(
    dead_code,
    reason = "each test crate uses only part of the support code"
)]

pub(crate) mod db;
pub(crate) mod jobs;
pub(crate) mod proxy;

/// What a reconciler tick changed over partitions `0..$count`: the sum of
/// `$call` (a `run_once` naming the partition `$p`) for each.
#[allow(unused_macros, reason = "not every test crate runs ticks")]
macro_rules! each_partition {
    ($count:expr, |$p:ident| $call:expr) => {{
        let mut changed = 0u64;
        for $p in 0..$count {
            changed += $call.await.unwrap();
        }
        changed
    }};
}
#[allow(unused_imports, reason = "not every test crate runs ticks")]
pub(crate) use each_partition;
