//! trawl's scanning pipeline: discovery → I/O threads → CPU workers → sink.
//!
//! Internal crate of trawl; use it through the `trawl` facade.
//!
//! [`scan_remote`] is generic over any [`trawl_engine::ScanEngine`] and any
//! [`trawl_backend::RemoteBackend`]: it owns the threads, retries, buffers and
//! backpressure, so that backends stay simple blocking code and engines stay
//! pure functions over bytes.
//!
//! Memory is bounded by three layers of backpressure, each on a producer:
//! a [`trawl_budget::CountBudget`] of objects in flight (discovery waits), a
//! bounded queue of objects (discovery waits), and a
//! [`trawl_budget::TsBufferPool`] of chunk buffers (I/O threads wait). CPU
//! workers never wait on memory; they only wait on the findings channel when
//! the sink is slow, which slows everything upstream, boundedly.
//!
//! Objects are read in chunks of `chunk_size` bytes; each buffer starts with
//! the last `overlap` bytes of the previous one (the overlap is the engine's
//! `max_match_len`), so that a secret across a chunk boundary is seen whole
//! in one buffer, and the ownership rule of [`trawl_engine::Chunk::owns`]
//! reports it exactly once.

mod config;
mod control;
mod error;
mod human;
mod lines;
mod pipeline;
mod report;
mod sarif;
mod sink;

pub use config::RemoteConfig;
pub use control::ScanControl;
pub use error::{Error, Result};
pub use human::HumanSink;
pub use pipeline::scan_remote;
pub use report::{FailedObject, FailureKind, IoStats, Progress, RemoteStats, RunReport};
pub use sarif::{SARIF_FINGERPRINT_KEY, SARIF_SCHEMA, SarifRule, SarifSink};
pub use sink::{
    CSV_HEADER, CsvSink, EventSink, FINDING_SCHEMA, Finding, JsonArraySink, JsonlSink, LineContext,
    SortingSink, TeeSink, VecSink, hex, redact,
};
