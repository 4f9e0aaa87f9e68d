//! `RemoteConfig`: the knobs of one scan, and their validation.

use std::time::Duration;

use trawl_retry::RetryPolicy;

use crate::Error;

/// How a scan runs: thread counts, chunking, memory and patience.
///
/// The defaults are the seed's, sized for a server; `trawl-cli` scales the
/// thread counts to the machine. Memory for buffers is bounded by
/// `pool_buffers × (chunk_size + overlap)`, where the overlap is the
/// engine's `max_match_len`.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteConfig {
    /// Threads that scan chunks (CPU-bound).
    pub cpu_workers: usize,
    /// Threads that fetch chunks (I/O-bound: blocking calls to the backend).
    pub io_threads: usize,
    /// Payload bytes per chunk, the overlap excluded.
    pub chunk_size: usize,
    /// Objects discovered but not yet fully scanned, at most.
    pub max_in_flight_objects: usize,
    /// Capacity of the queue from discovery to the I/O threads.
    pub object_queue_cap: usize,
    /// Objects asked for per `list_page` call.
    pub discover_batch: usize,
    /// Buffers in the pool, shared by all threads.
    pub pool_buffers: usize,
    /// Capacity of the queue from CPU workers to the sink, in findings.
    pub findings_queue_cap: usize,
    /// Retries of failed fetches and listings.
    pub retry: RetryPolicy,
    /// Time one object may take, retries and waits included; `None` means
    /// no limit. A backoff that would pass it fails the object at once.
    pub max_object_time: Option<Duration>,
    /// Seed of the jitter's random source, for reproducible runs.
    pub seed: u64,
    /// Merge findings of different rules on the identical secret span.
    pub dedupe_within_chunk: bool,
    /// Pin CPU workers to cores (Linux only; ignored elsewhere).
    pub pin_threads: bool,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            cpu_workers: 8,
            io_threads: 8,
            chunk_size: 256 * 1024,
            max_in_flight_objects: 512,
            object_queue_cap: 256,
            discover_batch: 256,
            pool_buffers: 64,
            findings_queue_cap: 1024,
            retry: RetryPolicy::default(),
            max_object_time: Some(Duration::from_secs(30)),
            seed: 0x7261_776c,
            dedupe_within_chunk: true,
            pin_threads: false,
        }
    }
}

/// The largest chunk accepted: larger ones only cost memory.
const MAX_CHUNK_SIZE: usize = 1 << 30;

impl RemoteConfig {
    /// Checks the configuration against an engine's overlap, returning the
    /// first problem found. Never panics.
    pub fn validate(&self, overlap: usize) -> Result<(), Error> {
        let positive = [
            ("cpu_workers", self.cpu_workers),
            ("io_threads", self.io_threads),
            ("chunk_size", self.chunk_size),
            ("max_in_flight_objects", self.max_in_flight_objects),
            ("object_queue_cap", self.object_queue_cap),
            ("discover_batch", self.discover_batch),
            ("pool_buffers", self.pool_buffers),
            ("findings_queue_cap", self.findings_queue_cap),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(Error::Config {
                    field,
                    reason: "must be greater than 0".into(),
                });
            }
        }
        if self.chunk_size > MAX_CHUNK_SIZE {
            return Err(Error::Config {
                field: "chunk_size",
                reason: format!("must be at most {MAX_CHUNK_SIZE} bytes (1 GiB)"),
            });
        }
        self.retry.validate().map_err(|e| Error::Config {
            field: "retry",
            reason: e.to_string(),
        })?;
        let buffer = self.chunk_size.checked_add(overlap);
        if buffer
            .and_then(|b| b.checked_mul(self.pool_buffers))
            .is_none()
        {
            return Err(Error::Config {
                field: "pool_buffers",
                reason: "pool_buffers × (chunk_size + overlap) overflows the address space".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_rejects_invalid() {
        assert!(RemoteConfig::default().validate(4096).is_ok());
        let cases: Vec<(RemoteConfig, &str)> = vec![
            (
                RemoteConfig {
                    cpu_workers: 0,
                    ..RemoteConfig::default()
                },
                "cpu_workers",
            ),
            (
                RemoteConfig {
                    io_threads: 0,
                    ..RemoteConfig::default()
                },
                "io_threads",
            ),
            (
                RemoteConfig {
                    chunk_size: 0,
                    ..RemoteConfig::default()
                },
                "chunk_size",
            ),
            (
                RemoteConfig {
                    pool_buffers: 0,
                    ..RemoteConfig::default()
                },
                "pool_buffers",
            ),
            (
                RemoteConfig {
                    retry: RetryPolicy {
                        max_attempts: 0,
                        ..RetryPolicy::default()
                    },
                    ..RemoteConfig::default()
                },
                "max_attempts",
            ),
            (
                RemoteConfig {
                    retry: RetryPolicy {
                        jitter_pct: 150,
                        ..RetryPolicy::default()
                    },
                    ..RemoteConfig::default()
                },
                "jitter_pct",
            ),
            (
                RemoteConfig {
                    chunk_size: usize::MAX - 10,
                    ..RemoteConfig::default()
                },
                "chunk_size",
            ),
            (
                RemoteConfig {
                    pool_buffers: usize::MAX / 2,
                    ..RemoteConfig::default()
                },
                "pool_buffers",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate(4096).expect_err(field).to_string();
            assert!(err.contains(field), "{err:?} should name {field}");
        }
    }
}
