//! trawl finds leaked credentials (cloud keys, tokens, private keys) in
//! object stores and folders, fast and in bounded memory.
//!
//! This crate only re-exports the layered crates it is built from, so that
//! most users add one dependency:
//!
//! | module | crate | what |
//! |---|---|---|
//! | [`backend`] | `trawl-backend` | the `RemoteBackend` trait every store implements |
//! | [`engine`] | `trawl-engine` | rules and the detection engine |
//! | [`scheduler`] | `trawl-scheduler` | the scanning pipeline, reports and sinks |
//! | [`retry`] | `trawl-retry` | retry policy and backoff |
//! | [`budget`] | `trawl-budget` | buffer pool and counted permits |
//! | [`fs`] | `trawl-backend-fs` | local folders (feature `fs`, on by default) |
//! | [`objstore`] | `trawl-backend-objstore` | `s3://`, `gs://`, `az://`, `memory://` and `http(s)://` URLs (feature `objstore`, on by default) |
//! | [`jobs`] | `trawl-jobs` | the Postgres job queue (feature `jobs`) |
//! | [`reconcile`] | `trawl-reconcile` | the supervisor of the queue's reconcilers (feature `jobs`) |
//!
//! # Example
//!
//! Scan a folder with the built-in rules and print each finding's rule and
//! place:
//!
//! ```no_run
//! use trawl::{Engine, FsBackend, FsOptions, RemoteConfig, ScanControl, VecSink, scan_remote};
//!
//! let backend = FsBackend::new(vec![".".into()], FsOptions::default())?;
//! let mut sink = VecSink::default();
//! let report = scan_remote(&Engine::builtin(), &backend, &RemoteConfig::default(), &mut sink, &ScanControl::new())?;
//! for f in &sink.findings {
//!     println!("{} {}:{}", f.rule_id, String::from_utf8_lossy(&f.path), f.line);
//! }
//! assert!(report.adds_up());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A bucket is scanned the same way, with credentials from the environment
//! (`AWS_*`, `GOOGLE_*`, `AZURE_*`):
//!
//! ```no_run
//! use trawl::objstore::Options;
//! use trawl::{Engine, ObjectStoreBackend, RemoteConfig, ScanControl, VecSink, scan_remote};
//!
//! let backend = ObjectStoreBackend::from_url("s3://my-bucket/logs/", Options::default())?;
//! let mut sink = VecSink::default();
//! let report = scan_remote(&Engine::builtin(), &backend, &RemoteConfig::default(), &mut sink, &ScanControl::new())?;
//! println!("{} findings in {} objects", report.findings, report.io.objects_completed);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use trawl_backend as backend;
pub use trawl_budget as budget;
pub use trawl_engine as engine;
pub use trawl_retry as retry;
pub use trawl_scheduler as scheduler;

#[cfg(feature = "fs")]
pub use trawl_backend_fs as fs;
#[cfg(feature = "objstore")]
pub use trawl_backend_objstore as objstore;
#[cfg(feature = "jobs")]
pub use trawl_jobs as jobs;
#[cfg(feature = "jobs")]
pub use trawl_reconcile as reconcile;

pub use trawl_backend::{ErrorClass, RemoteBackend, RemoteObject, SkipReason};
#[cfg(feature = "fs")]
pub use trawl_backend_fs::{FsBackend, FsOptions};
#[cfg(feature = "objstore")]
pub use trawl_backend_objstore::ObjectStoreBackend;
pub use trawl_engine::{Engine, RuleSet, ScanEngine};
pub use trawl_retry::RetryPolicy;
pub use trawl_scheduler::{
    CsvSink, EventSink, Finding, HumanSink, JsonArraySink, JsonlSink, LineContext, RemoteConfig,
    RunReport, SarifRule, SarifSink, ScanControl, SortingSink, TeeSink, VecSink, scan_remote,
};
