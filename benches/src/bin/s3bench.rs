//! `s3bench`: the S3 side of `cargo xtask bench`, one step per process so
//! that xtask measures each one's wall time and peak RSS on its own.
//!
//! - `s3bench setup ENDPOINT BUCKET large|small|empty [--quick]` creates the bucket
//!   and uploads a data set of corpus text with planted secrets ([`Shape`]),
//!   in parallel.
//! - `s3bench download ENDPOINT BUCKET --io-threads N --chunk-size BYTES` is
//!   the baseline `trawl scan s3://BUCKET` is held to: the same backend
//!   (`ObjectStoreBackend`, so the same `object_store` client and signing),
//!   the same listing page size, and the same requests as trawl's scheduler
//!   makes (each object read in order, `chunk_size` bytes at offsets 0,
//!   `chunk_size`, 2 × `chunk_size`…, by `N` threads taking objects from one
//!   queue fed by a listing thread), without scanning. A server that reads
//!   the whole object for every ranged `GET` (moto does) makes only a
//!   downloader with the same ranges a fair baseline.
//! - `s3bench budget --pool-buffers P --chunk-size BYTES`: trawl's buffer
//!   budget for those settings with the built-in rules,
//!   `P × (chunk_size + overlap)`.
//!
//! Each prints one line of `key=value` fields on stdout for xtask to read.
//! Credentials and the region come from the environment (`AWS_*`), as for
//! `trawl scan`.

use std::process::ExitCode;
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use trawl_backend::{RemoteBackend, RemoteObject};
use trawl_backend_objstore::{ObjectHandle, ObjectStoreBackend, Options};
use trawl_benches::corpus_object;
use trawl_engine::ScanEngine as _;

/// Objects asked for per listing page: `RemoteConfig::discover_batch`'s
/// default, what `trawl scan` asks for.
const LIST_PAGE: usize = 256;

/// Listed objects waiting for a download thread, at most.
const QUEUE: usize = 256;

/// Attempts per request of the downloader (moto drops a connection now and
/// then under load; trawl retries too).
const ATTEMPTS: u32 = 3;

/// Pause between two attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Threads uploading a data set.
const UPLOAD_THREADS: usize = 8;

/// Seed of the first object; object `i` uses `SEED + i`.
const SEED: u64 = 1;

const MIB: usize = 1 << 20;

const USAGE: &str = "\
usage: s3bench setup ENDPOINT BUCKET large|small|empty [--quick]
       s3bench download ENDPOINT BUCKET --io-threads N --chunk-size BYTES
       s3bench budget --pool-buffers N --chunk-size BYTES";

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let outcome = match args.as_slice() {
        ["setup", endpoint, bucket, shape, rest @ ..] => {
            let quick = match rest {
                [] => Some(false),
                ["--quick"] => Some(true),
                _ => None,
            };
            match (Shape::named(shape, quick.unwrap_or(false)), quick) {
                (Some(shape), Some(_)) => setup(endpoint, bucket, shape),
                _ => return usage(),
            }
        }
        ["download", endpoint, bucket, rest @ ..] => {
            match (flag(rest, "--io-threads"), flag(rest, "--chunk-size")) {
                (Some(threads), Some(chunk)) if rest.len() == 4 && threads > 0 && chunk > 0 => {
                    download(endpoint, bucket, threads, chunk)
                }
                _ => return usage(),
            }
        }
        ["budget", rest @ ..] => match (flag(rest, "--pool-buffers"), flag(rest, "--chunk-size")) {
            (Some(pool), Some(chunk)) if rest.len() == 4 => budget(pool, chunk),
            _ => return usage(),
        },
        _ => return usage(),
    };
    match outcome {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("s3bench: {err}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

/// The whole number after `name` in `args`.
fn flag(args: &[&str], name: &str) -> Option<usize> {
    let at = args.iter().position(|arg| *arg == name)?;
    args.get(at + 1)?.parse().ok()
}

/// A backend for `s3://BUCKET` on `endpoint`, configured as `trawl scan
/// --endpoint ENDPOINT` configures its own.
fn backend(endpoint: &str, bucket: &str) -> Result<ObjectStoreBackend, Error> {
    let options = Options {
        endpoint: Some(endpoint.to_owned()),
        ..Options::default()
    };
    Ok(ObjectStoreBackend::from_url(
        &format!("s3://{bucket}"),
        options,
    )?)
}

/// A data set: `count` objects of `size` bytes.
#[derive(Debug, Clone, Copy)]
struct Shape {
    count: usize,
    size: usize,
}

impl Shape {
    /// `large`: 8 × 128 MiB (quick: 4 × 128 MiB); `small`: 20,000 × 4 KiB
    /// (quick: 2,000); `empty`: none.
    fn named(name: &str, quick: bool) -> Option<Shape> {
        let (count, size) = match (name, quick) {
            ("large", false) => (8, 128 * MIB),
            ("large", true) => (4, 128 * MIB),
            ("small", false) => (20_000, 4096),
            ("small", true) => (2_000, 4096),
            ("empty", _) => (0, 0),
            _ => return None,
        };
        Some(Shape { count, size })
    }
}

/// Creates `bucket` and uploads `shape`'s objects, `obj-00000.txt`…, each
/// generated by its uploading thread.
fn setup(endpoint: &str, bucket: &str, shape: Shape) -> Result<String, Error> {
    let admin = backend(endpoint, bucket)?;
    admin
        .create_bucket()
        .map_err(|e| format!("creating bucket {bucket}: {e}"))?;
    let start = Instant::now();
    let next = Mutex::new(0..shape.count);
    let planted = thread::scope(|scope| {
        let workers: Vec<_> = (0..UPLOAD_THREADS.min(shape.count))
            .map(|_| {
                scope.spawn(|| -> Result<usize, Error> {
                    let mut planted = 0;
                    loop {
                        let Some(i) = next.lock().unwrap_or_else(PoisonError::into_inner).next()
                        else {
                            return Ok(planted);
                        };
                        let (body, secrets) = corpus_object(shape.size, SEED + i as u64);
                        planted += secrets;
                        let key = format!("obj-{i:05}.txt");
                        admin
                            .put_object(key.as_bytes(), body, None)
                            .map_err(|e| format!("uploading {key}: {e}"))?;
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| Err("a thread panicked".into()))
            })
            .sum::<Result<usize, Error>>()
    })?;
    Ok(format!(
        "objects={} bytes={} planted={planted} seconds={:.3}",
        shape.count,
        shape.count * shape.size,
        start.elapsed().as_secs_f64()
    ))
}

/// What the download threads did.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    objects: u64,
    bytes: u64,
    requests: u64,
    retries: u64,
}

impl std::ops::Add for Tally {
    type Output = Tally;

    fn add(self, other: Tally) -> Tally {
        Tally {
            objects: self.objects + other.objects,
            bytes: self.bytes + other.bytes,
            requests: self.requests + other.requests,
            retries: self.retries + other.retries,
        }
    }
}

type Object = RemoteObject<ObjectHandle>;

/// Lists `bucket` on one thread while `threads` threads read each listed
/// object in `chunk`-byte ranges into a buffer of their own.
fn download(endpoint: &str, bucket: &str, threads: usize, chunk: usize) -> Result<String, Error> {
    let backend = backend(endpoint, bucket)?;
    let start = Instant::now();
    let (queue, listed) = sync_channel::<Object>(QUEUE);
    let listed = Mutex::new(Some(listed));
    let tally = thread::scope(|scope| -> Result<Tally, Error> {
        let backend = &backend;
        let lister = scope.spawn(move || -> Result<(), Error> {
            let mut cursor = Default::default();
            loop {
                let page = backend
                    .list_page(&mut cursor, LIST_PAGE)
                    .map_err(|e| format!("listing: {e}"))?;
                if page.is_empty() {
                    return Ok(());
                }
                for object in page {
                    // The receivers are gone only when a reader failed.
                    if queue.send(object).is_err() {
                        return Ok(());
                    }
                }
            }
        });
        let readers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let read = read_objects(backend, &listed, chunk);
                    if read.is_err() {
                        // Ends the lister's `send` and the other readers.
                        listed.lock().unwrap_or_else(PoisonError::into_inner).take();
                    }
                    read
                })
            })
            .collect();
        let mut total = Tally::default();
        let mut failure = None;
        for reader in readers {
            match reader.join() {
                Ok(Ok(tally)) => total = total + tally,
                Ok(Err(err)) => failure = failure.or(Some(err)),
                Err(_) => failure = failure.or(Some("a reader panicked".into())),
            }
        }
        lister
            .join()
            .unwrap_or_else(|_| Err("the lister panicked".into()))?;
        failure.map_or(Ok(total), Err)
    })?;
    if tally.objects == 0 {
        return Err(format!("s3://{bucket} is empty").into());
    }
    Ok(format!(
        "objects={} bytes={} requests={} retries={} seconds={:.3}",
        tally.objects,
        tally.bytes,
        tally.requests,
        tally.retries,
        start.elapsed().as_secs_f64()
    ))
}

/// One download thread: objects from `listed` until it is empty and closed
/// (or taken away by a failed thread).
fn read_objects(
    backend: &ObjectStoreBackend,
    listed: &Mutex<Option<Receiver<Object>>>,
    chunk: usize,
) -> Result<Tally, Error> {
    let mut buf = vec![0u8; chunk];
    let mut tally = Tally::default();
    loop {
        let next = listed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(|queue| queue.recv().ok());
        let Some(object) = next else {
            return Ok(tally);
        };
        // As the scheduler's `fetch_object`: `min(chunk, size - offset)`
        // bytes at each offset, in order.
        let mut offset = 0u64;
        while offset < object.size {
            let len = usize::try_from(object.size - offset).map_or(chunk, |rest| rest.min(chunk));
            let mut attempt = 1;
            loop {
                tally.requests += 1;
                match backend.fetch_range(&object, offset, &mut buf[..len]) {
                    Ok(n) if n == len => break,
                    Ok(n) => {
                        return Err(format!(
                            "{}: {n} bytes at offset {offset}, asked for {len}",
                            String::from_utf8_lossy(&object.display)
                        )
                        .into());
                    }
                    Err(err) if attempt >= ATTEMPTS => {
                        return Err(format!(
                            "{} at offset {offset}, after {attempt} attempts: {err}",
                            String::from_utf8_lossy(&object.display)
                        )
                        .into());
                    }
                    Err(_) => {
                        attempt += 1;
                        tally.retries += 1;
                        thread::sleep(RETRY_PAUSE);
                    }
                }
            }
            offset += len as u64;
        }
        tally.objects += 1;
        tally.bytes += object.size;
    }
}

/// `pool × (chunk + overlap)` for the built-in rules.
fn budget(pool: usize, chunk: usize) -> Result<String, Error> {
    let overlap = trawl_engine::Engine::builtin().max_match_len();
    Ok(format!(
        "overlap={overlap} budget_bytes={}",
        pool * (chunk + overlap)
    ))
}
