//! Where findings go: the formats, `--output [FORMAT:]PATH`, and the
//! writers behind them.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use trawl::{
    CsvSink, EventSink, HumanSink, JsonArraySink, JsonlSink, SarifRule, SarifSink, TeeSink,
};

/// A format of findings (`docs/output.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// JSON Lines, one finding per line (the default, lossless).
    Jsonl,
    /// One JSON array of the JSON Lines objects.
    Json,
    /// CSV with a header line.
    Csv,
    /// SARIF 2.1.0, for code scanning (secrets always redacted).
    Sarif,
    /// For people: each secret in its line, a table by rule (secrets
    /// redacted unless --show-secrets).
    Human,
}

impl Format {
    /// A sink of this format; `color`: whether a human output writes
    /// colours.
    fn sink(
        self,
        out: PipeWatch,
        shown: Shown,
        color: bool,
        rules: &[SarifRule],
    ) -> Box<dyn EventSink> {
        let redact = shown.redact;
        match self {
            Format::Jsonl => Box::new(JsonlSink::new(out, redact)),
            Format::Json => Box::new(JsonArraySink::new(out, redact)),
            Format::Csv => Box::new(CsvSink::new(out, redact)),
            Format::Sarif => Box::new(SarifSink::new(
                out,
                env!("CARGO_PKG_VERSION"),
                rules.to_vec(),
            )),
            Format::Human => Box::new(
                HumanSink::new(out)
                    .show_secrets(shown.show_secrets && !redact)
                    .color(color),
            ),
        }
    }
}

/// How findings are shown, in every output.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shown {
    /// `--redact`: only the first 4 characters of secrets, in every
    /// format.
    pub(crate) redact: bool,
    /// `--show-secrets`: whole secrets in the human format too (the others
    /// show them unless `--redact`; SARIF never does).
    pub(crate) show_secrets: bool,
    /// `--color`, of the human format.
    pub(crate) color: clap::ColorChoice,
}

impl Shown {
    /// Whether a human output writes colours: `--color always`, or
    /// `auto` on standard output when it is a terminal that wants colours
    /// (not with `NO_COLOR`, `CLICOLOR=0` or `TERM=dumb`; always with
    /// `CLICOLOR_FORCE`). Files get plain text unless `always`.
    fn colors(self, stdout: bool) -> bool {
        match self.color {
            clap::ColorChoice::Always => true,
            clap::ColorChoice::Never => false,
            clap::ColorChoice::Auto => {
                stdout
                    && anstream::AutoStream::choice(&io::stdout()) != anstream::ColorChoice::Never
            }
        }
    }
}

/// One `--output`: a format (or the `--format` one) and a path, `-` for
/// standard output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutputSpec {
    format: Option<Format>,
    path: PathBuf,
}

impl OutputSpec {
    /// The file it writes, if not standard output.
    pub(crate) fn file(&self) -> Option<&PathBuf> {
        (self.path.as_os_str() != "-").then_some(&self.path)
    }
}

/// Whether findings go to standard output (no `--output`, or one is `-`).
pub(crate) fn uses_stdout(outputs: &[OutputSpec]) -> bool {
    outputs.is_empty() || outputs.iter().any(|o| o.file().is_none())
}

/// Reads `[FORMAT:]PATH`: `csv:out.csv`, `json:-`, or a plain path. A
/// prefix that names no format is part of the path.
pub(crate) fn parse_output(text: &str) -> Result<OutputSpec, String> {
    let (format, path) = match text.split_once(':') {
        Some((prefix, path)) => match <Format as clap::ValueEnum>::from_str(prefix, true) {
            Ok(format) => (Some(format), path),
            Err(_) => (None, text),
        },
        None => (None, text),
    };
    if path.is_empty() {
        return Err(format!(
            "'{text}' names no file (use '-' for standard output)"
        ));
    }
    Ok(OutputSpec {
        format,
        path: path.into(),
    })
}

/// The sink of a scan: every output, in its format (`default` where the
/// output names none), standard output when none is given, showing
/// findings as `shown` says. Files are created now, before the scan
/// starts. `reader_left` is set when a reader of standard output goes
/// away. `rules` are the scan's rules, for SARIF.
pub(crate) fn open_sinks(
    outputs: &[OutputSpec],
    default: Format,
    shown: Shown,
    reader_left: &Arc<AtomicBool>,
    rules: &[SarifRule],
) -> Result<Box<dyn EventSink>> {
    let stdout = [OutputSpec {
        format: None,
        path: "-".into(),
    }];
    let outputs = if outputs.is_empty() { &stdout } else { outputs };
    if outputs.iter().filter(|o| o.file().is_none()).count() > 1 {
        bail!("only one --output can be standard output ('-')");
    }
    let mut sinks = outputs
        .iter()
        .map(|output| {
            let out = PipeWatch {
                inner: open(output.file())?,
                reader_left: Arc::clone(reader_left),
            };
            let color = shown.colors(output.file().is_none());
            Ok(output
                .format
                .unwrap_or(default)
                .sink(out, shown, color, rules))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(if sinks.len() == 1 {
        sinks.remove(0)
    } else {
        Box::new(TeeSink::new(sinks))
    })
}

fn open(path: Option<&PathBuf>) -> Result<Box<dyn Write + Send>> {
    match path {
        Some(path) => {
            let file = File::create(path)
                .with_context(|| format!("cannot create output file '{}'", path.display()))?;
            Ok(Box::new(BufWriter::new(file)))
        }
        None => Ok(Box::new(BufWriter::new(io::stdout()))),
    }
}

/// An output, noting when its reader has gone away (a closed pipe).
struct PipeWatch {
    inner: Box<dyn Write + Send>,
    reader_left: Arc<AtomicBool>,
}

impl PipeWatch {
    fn watch<T>(&self, result: io::Result<T>) -> io::Result<T> {
        if let Err(err) = &result
            && err.kind() == io::ErrorKind::BrokenPipe
        {
            self.reader_left.store(true, Ordering::Relaxed);
        }
        result
    }
}

impl Write for PipeWatch {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let result = self.inner.write(buf);
        self.watch(result)
    }

    fn flush(&mut self) -> io::Result<()> {
        let result = self.inner.flush();
        self.watch(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_names_its_format_or_takes_the_default() {
        let spec = |format, path: &str| OutputSpec {
            format,
            path: path.into(),
        };
        assert_eq!(parse_output("a.jsonl"), Ok(spec(None, "a.jsonl")));
        assert_eq!(
            parse_output("csv:a.csv"),
            Ok(spec(Some(Format::Csv), "a.csv"))
        );
        assert_eq!(parse_output("JSON:-"), Ok(spec(Some(Format::Json), "-")));
        assert_eq!(
            parse_output("human:report.txt"),
            Ok(spec(Some(Format::Human), "report.txt"))
        );
        assert_eq!(parse_output("dir:x/a"), Ok(spec(None, "dir:x/a")));
        assert!(
            parse_output("csv:")
                .unwrap_err()
                .contains("'csv:' names no file")
        );
        assert_eq!(spec(None, "-").file(), None);
    }
}
