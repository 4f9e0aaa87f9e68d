//! `keywords FILE`: writes the built-in rules' prefilter keywords to `FILE`,
//! one a line, for `rg -F -i -f FILE` (the end-to-end baseline of
//! `cargo xtask bench`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [file] = args.as_slice() else {
        eprintln!("usage: keywords FILE");
        return ExitCode::from(2);
    };
    let engine = trawl_engine::Engine::builtin();
    let mut keywords: Vec<String> = engine.keywords().map(str::to_ascii_lowercase).collect();
    keywords.sort();
    keywords.dedup();
    let mut text = keywords.join("\n");
    text.push('\n');
    if let Err(err) = std::fs::write(file, text) {
        eprintln!("keywords: writing {file}: {err}");
        return ExitCode::FAILURE;
    }
    eprintln!("keywords: {} keywords written to {file}", keywords.len());
    ExitCode::SUCCESS
}
