//! Test support: a fresh database per test on the real PostgreSQL.

#![allow(
    dead_code,
    reason = "each test crate uses only part of the support code"
)]

pub(crate) mod db;
