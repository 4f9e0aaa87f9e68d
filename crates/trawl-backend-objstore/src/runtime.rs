//! The bridge between the scheduler's blocking threads and async I/O.
//!
//! `object_store` and its HTTP client are async; the scheduler's discovery
//! and I/O threads are plain threads that block. The bridge is made once:
//! one tokio runtime per backend (or the caller's, through a
//! [`Handle`]), and every backend call is a `Handle::block_on` from the
//! calling thread. There is no runtime per call, and the futures run on the
//! calling thread while the connection tasks run on the runtime's workers.

use std::future::Future;

use tokio::runtime::{Handle, Runtime};

use crate::error::{Error, Result};

/// Threads of the runtime a backend owns: they only drive connections, the
/// work is done by the scheduler's threads.
const OWNED_WORKER_THREADS: usize = 2;

/// A runtime the backend owns, or a handle to the caller's.
#[derive(Debug)]
pub(crate) struct Bridge {
    handle: Handle,
    /// `None` when the runtime is the caller's. Taken in `Drop`.
    owned: Option<Runtime>,
}

impl Bridge {
    /// Uses `handle`'s runtime, or starts one of the backend's own.
    pub(crate) fn new(handle: Option<Handle>) -> Result<Bridge> {
        if let Some(handle) = handle {
            return Ok(Bridge {
                handle,
                owned: None,
            });
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(OWNED_WORKER_THREADS)
            .thread_name("trawl-objstore-io")
            .enable_all()
            .build()
            .map_err(|e| Error::Config {
                scheme: "any",
                reason: format!("cannot start the I/O runtime: {e}"),
            })?;
        Ok(Bridge {
            handle: runtime.handle().clone(),
            owned: Some(runtime),
        })
    }

    /// Runs `future` to completion on the calling thread.
    ///
    /// Refuses, instead of panicking as `block_on` would, when called from
    /// a thread that is running async tasks.
    pub(crate) fn block_on<F: Future>(&self, future: F) -> Result<F::Output> {
        if Handle::try_current().is_ok() {
            return Err(Error::InsideRuntime);
        }
        Ok(self.handle.block_on(future))
    }

    /// The runtime's handle, for code that must enter it (building a
    /// client that spawns).
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // Dropping a runtime inside async code panics; shutting it down in
        // the background never does.
        if let Some(runtime) = self.owned.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_futures_from_a_plain_thread() {
        let bridge = Bridge::new(None).unwrap();
        assert_eq!(bridge.block_on(async { 41 + 1 }).unwrap(), 42);
    }

    #[test]
    fn refuses_to_block_inside_async_code_and_drops_there_quietly() {
        let outer = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        outer.block_on(async {
            let bridge = Bridge::new(None).unwrap();
            assert!(matches!(
                bridge.block_on(async {}),
                Err(Error::InsideRuntime)
            ));
            drop(bridge); // must not panic
        });
    }

    #[test]
    fn uses_the_callers_runtime() {
        let outer = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let bridge = Bridge::new(Some(outer.handle().clone())).unwrap();
        let slept = bridge.block_on(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            "slept"
        });
        assert_eq!(slept.unwrap(), "slept");
    }
}
