//! Test support: a fresh database per test on the real PostgreSQL, and a
//! proxy to cut a node off it.

#![allow(
    dead_code,
    reason = "each test crate uses only part of the support code"
)]

pub(crate) mod db;
pub(crate) mod proxy;
