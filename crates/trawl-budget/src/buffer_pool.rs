//! `TsBufferPool`: a fixed number of fixed-size buffers shared by all threads.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::gate::Gate;

/// A thread-safe pool of `count` buffers of `size` bytes each.
///
/// The pool is the memory budget of a scan: however many or large the
/// objects, no more than `count × size` bytes of buffers exist. Buffers are
/// allocated on first use (a small scan does not touch the whole budget),
/// acquired just in time, and return to the pool when the [`PooledBuf`] is
/// dropped, on whichever thread that happens. There is no per-thread
/// caching: a buffer freed by one thread is at once available to all.
#[derive(Clone)]
pub struct TsBufferPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    gate: Gate<FreeList>,
    count: usize,
    size: usize,
}

struct FreeList {
    free: Vec<Box<[u8]>>,
    allocated: usize,
}

impl TsBufferPool {
    /// A pool of `count` buffers of `size` bytes.
    ///
    /// # Panics
    ///
    /// If `count` or `size` is zero: a pool that can never hand out a
    /// buffer would make every acquire wait forever.
    pub fn new(count: usize, size: usize) -> Self {
        assert!(count > 0, "a buffer pool needs at least one buffer");
        assert!(size > 0, "a buffer pool needs buffers of at least one byte");
        TsBufferPool {
            inner: Arc::new(PoolInner {
                gate: Gate::new(FreeList {
                    free: Vec::with_capacity(count),
                    allocated: 0,
                }),
                count,
                size,
            }),
        }
    }

    /// The size of every buffer, in bytes.
    pub fn buffer_size(&self) -> usize {
        self.inner.size
    }

    /// How many buffers the pool holds at most.
    pub fn capacity(&self) -> usize {
        self.inner.count
    }

    /// How many buffers are currently handed out.
    pub fn in_use(&self) -> usize {
        let list = self.inner.gate.lock();
        list.allocated - list.free.len()
    }

    /// Takes a buffer, waiting for one to be returned if all are out; gives
    /// up with `None` once `stop` is set.
    pub fn acquire(&self, stop: &AtomicBool) -> Option<PooledBuf> {
        let inner = &self.inner;
        let buf = inner.gate.wait_for(stop, |list| list.take(inner))?;
        Some(self.wrap(buf))
    }

    /// Takes a buffer if one is free now.
    pub fn try_acquire(&self) -> Option<PooledBuf> {
        let buf = self.inner.gate.lock().take(&self.inner)?;
        Some(self.wrap(buf))
    }

    fn wrap(&self, buf: Box<[u8]>) -> PooledBuf {
        PooledBuf {
            buf: Some(buf),
            pool: Arc::clone(&self.inner),
        }
    }
}

impl FreeList {
    fn take(&mut self, pool: &PoolInner) -> Option<Box<[u8]>> {
        if let Some(buf) = self.free.pop() {
            return Some(buf);
        }
        if self.allocated < pool.count {
            self.allocated += 1;
            return Some(vec![0u8; pool.size].into_boxed_slice());
        }
        None
    }
}

impl fmt::Debug for TsBufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsBufferPool")
            .field("count", &self.inner.count)
            .field("size", &self.inner.size)
            .field("in_use", &self.in_use())
            .finish()
    }
}

/// A buffer of a [`TsBufferPool`], returned to the pool on drop.
pub struct PooledBuf {
    buf: Option<Box<[u8]>>,
    pool: Arc<PoolInner>,
}

impl Deref for PooledBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.buf.as_deref().expect("buffer is present until drop")
    }
}

impl DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.buf
            .as_deref_mut()
            .expect("buffer is present until drop")
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.pool.gate.release(|list| list.free.push(buf));
        }
    }
}

impl fmt::Debug for PooledBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledBuf")
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    #[test]
    fn never_more_than_count_buffers() {
        let pool = TsBufferPool::new(3, 16);
        let stop = AtomicBool::new(false);
        let held: Vec<_> = (0..3).map(|_| pool.acquire(&stop).unwrap()).collect();
        assert_eq!(pool.in_use(), 3);
        assert!(pool.try_acquire().is_none());
        drop(held);
        assert_eq!(pool.in_use(), 0);
        assert!(held_len(&pool) == 16);
    }

    fn held_len(pool: &TsBufferPool) -> usize {
        pool.try_acquire().unwrap().len()
    }

    #[test]
    fn buffer_returned_from_another_thread_wakes_a_waiter() {
        let pool = TsBufferPool::new(1, 8);
        let stop = AtomicBool::new(false);
        let held = pool.acquire(&stop).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(held);
        });
        let again = pool.acquire(&stop);
        assert!(again.is_some());
        releaser.join().unwrap();
    }

    #[test]
    fn acquire_gives_up_when_stopped() {
        let pool = TsBufferPool::new(1, 8);
        let stop = Arc::new(AtomicBool::new(false));
        let _held = pool.acquire(&stop).unwrap();
        let setter = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                stop.store(true, Ordering::Relaxed);
            })
        };
        assert!(pool.acquire(&stop).is_none());
        setter.join().unwrap();
    }

    #[test]
    fn many_threads_share_a_small_pool() {
        let pool = TsBufferPool::new(2, 4);
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let (pool, stop) = (&pool, &stop);
                s.spawn(move || {
                    for _ in 0..200 {
                        let mut b = pool.acquire(stop).unwrap();
                        b[0] = t;
                        assert!(pool.in_use() <= 2);
                    }
                });
            }
        });
        assert_eq!(pool.in_use(), 0);
    }
}
