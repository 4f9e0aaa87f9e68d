//! `corpus DIR SIZE_MIB [SEED]`: writes the benchmark corpus into `DIR`.
//!
//! A marker file `DIR/.trawl-bench-corpus` records the parameters and, once
//! the tree is complete, what was written (`files=`, `bytes=`, `planted=`;
//! `cargo xtask bench` reads it). When the marker already records a complete
//! corpus with the same parameters, nothing is regenerated. A non-empty
//! `DIR` without a marker is left alone, so a wrong argument cannot wipe an
//! unrelated folder.

use std::fs;
use std::path::Path;
use std::process::ExitCode;

use trawl_benches::generate_corpus;

/// Name of the marker file inside the corpus directory.
const MARKER: &str = ".trawl-bench-corpus";
/// Bump when the generator's output changes, so old corpora are rebuilt.
const GENERATOR_VERSION: u32 = 2;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, size_mib, seed) = match args.as_slice() {
        [dir, size] => (dir, size, "1"),
        [dir, size, seed] => (dir, size, seed.as_str()),
        _ => return usage("expected 2 or 3 arguments"),
    };
    let (Ok(size_mib), Ok(seed)) = (size_mib.parse::<u64>(), seed.parse::<u64>()) else {
        return usage("SIZE_MIB and SEED must be whole numbers");
    };
    match run(Path::new(dir), size_mib, seed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("corpus: {err}");
            ExitCode::FAILURE
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("corpus: {problem}\nusage: corpus DIR SIZE_MIB [SEED]");
    ExitCode::from(2)
}

fn run(dir: &Path, size_mib: u64, seed: u64) -> Result<(), String> {
    let marker = dir.join(MARKER);
    let params =
        format!("trawl-bench-corpus v{GENERATOR_VERSION}\nsize_mib={size_mib}\nseed={seed}\n");
    let io_err = |what: &str, err: std::io::Error| format!("{what} {}: {err}", dir.display());
    match fs::read_to_string(&marker) {
        Ok(text) if text.starts_with(&params) && text.contains("\ncomplete=1\n") => {
            eprintln!(
                "corpus: {} is up to date ({size_mib} MiB, seed {seed})",
                dir.display()
            );
            return Ok(());
        }
        // Ours, but other parameters or unfinished: start afresh.
        Ok(_) => fs::remove_dir_all(dir).map_err(|e| io_err("removing the old corpus", e))?,
        Err(_) => {
            let non_empty = fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
            if non_empty {
                return Err(format!(
                    "{} is not empty and has no {MARKER} marker: refusing to write a corpus over it",
                    dir.display()
                ));
            }
        }
    }
    fs::create_dir_all(dir).map_err(|e| io_err("creating", e))?;
    fs::write(&marker, format!("{params}complete=0\n")).map_err(|e| io_err("marking", e))?;
    eprintln!(
        "corpus: writing {size_mib} MiB (seed {seed}) into {}",
        dir.display()
    );
    let summary =
        generate_corpus(dir, size_mib << 20, seed).map_err(|e| io_err("writing into", e))?;
    fs::write(
        &marker,
        format!(
            "{params}complete=1\nfiles={}\nbytes={}\nplanted={}\n",
            summary.files, summary.bytes, summary.planted
        ),
    )
    .map_err(|e| io_err("marking", e))?;
    eprintln!(
        "corpus: {} files, {} bytes, {} planted secrets",
        summary.files, summary.bytes, summary.planted
    );
    Ok(())
}
