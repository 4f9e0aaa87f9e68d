//! Test support shared by the integration tests of `trawl-backend-objstore`.

// Each test crate that declares `mod support;` uses only part of it.
#![allow(
    dead_code,
    reason = "each test crate uses only part of the support code"
)]

pub(crate) mod fault_proxy;
pub(crate) mod s3;
