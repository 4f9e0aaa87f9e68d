//! Memory and concurrency budgets: a fixed pool of buffers and counted permits.
//!
//! Internal crate of trawl: its API follows what `trawl-scheduler` needs.
//!
//! Both budgets are *producer-side* gates. A producer (the discovery thread,
//! an I/O thread) waits for room before it creates work; a consumer (a CPU
//! worker) only ever *returns* room, by dropping what it holds, and never
//! waits on a budget. Putting the wait on consumers would slow the only part
//! that frees memory, and a drain with producers stopped would deadlock.
//!
//! Every blocking acquire takes a stop flag and gives up (`None`) once it is
//! set, so a stopping pipeline never hangs on a budget.
//!
//! ```
//! use std::sync::atomic::AtomicBool;
//! use trawl_budget::TsBufferPool;
//!
//! let pool = TsBufferPool::new(2, 1024);
//! let stop = AtomicBool::new(false);
//! let a = pool.acquire(&stop).unwrap();
//! let _b = pool.acquire(&stop).unwrap();
//! assert!(pool.try_acquire().is_none()); // both buffers are out
//! drop(a); // returned on drop, from any thread
//! assert!(pool.try_acquire().is_some());
//! ```

mod buffer_pool;
mod count_budget;
mod gate;

pub use buffer_pool::{PooledBuf, TsBufferPool};
pub use count_budget::{CountBudget, Permit};
