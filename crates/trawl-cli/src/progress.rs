//! The progress display of a scan on stderr: objects done of discovered,
//! bytes and their rate, findings, retries and failures, an ETA. Drawn
//! only when stderr is a terminal (never into a pipe or a file, never on
//! stdout) and findings are not streaming to that terminal, and cleared
//! before the summary.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use trawl::ScanControl;

/// How often the display is refreshed.
const TICK: Duration = Duration::from_millis(100);

/// A running display; [`Display::finish`] (or dropping it) clears it.
pub(crate) struct Display {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Display {
    /// Starts the display of `control`'s scan if stderr is a terminal and
    /// `wanted`; otherwise a display that shows nothing.
    pub(crate) fn start(control: &Arc<ScanControl>, wanted: bool) -> Display {
        if !wanted || !std::io::stderr().is_terminal() {
            return Display {
                stop: None,
                thread: None,
            };
        }
        let (stop, stopped) = mpsc::channel();
        let control = Arc::clone(control);
        let thread = std::thread::spawn(move || draw(&control, &stopped));
        Display {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Clears the display and waits for its thread.
    pub(crate) fn finish(mut self) {
        self.end();
    }

    fn end(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.end();
    }
}

/// Redraws until `stopped` says so (or its sender is gone).
fn draw(control: &ScanControl, stopped: &mpsc::Receiver<()>) {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "scanning {bar:24} {pos}/{len} objects · {msg} · {elapsed_precise} (ETA {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    loop {
        let p = control.progress();
        bar.set_length(p.objects_discovered.max(p.objects_done));
        bar.set_position(p.objects_done);
        let seconds = bar.elapsed().as_secs_f64().max(1e-3);
        bar.set_message(format!(
            "{} ({}/s) · {} findings · {} retries · {} failed",
            HumanBytes(p.bytes_fetched),
            HumanBytes((p.bytes_fetched as f64 / seconds) as u64),
            p.findings,
            p.retries,
            p.objects_failed
        ));
        match stopped.recv_timeout(TICK) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    bar.finish_and_clear();
}
