//! The CLI's [`Reporter`]: messages on stderr, a progress bar per upload on a terminal and plain
//! log lines otherwise.

use cloudattach_core::report::{Progress, Reporter};
use cloudattach_sdk::{SyncStats, thousands};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

/// Messages and progress on stderr: a progress bar on a terminal, plain lines otherwise.
pub struct CliReporter {
    bars: bool,
}

impl CliReporter {
    pub fn new() -> Self {
        CliReporter {
            bars: std::io::stderr().is_terminal(),
        }
    }
}

impl Reporter for CliReporter {
    fn say(&self, message: &str) {
        eprintln!("{message}");
    }
    fn warn(&self, message: &str) {
        eprintln!("warning: {message}");
    }
    fn progress(&self, channel: &str, expected: Option<u64>) -> Box<dyn Progress> {
        if self.bars {
            let bar = match expected {
                Some(n) => ProgressBar::new(n),
                None => ProgressBar::no_length(),
            };
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>14} [{bar:30}] {human_pos} records  {per_sec}  eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(channel.to_string());
            Box::new(BarProgress(bar))
        } else {
            Box::new(LineProgress {
                channel: channel.to_string(),
                started: Instant::now(),
                sent: Mutex::new((0, 0)),
            })
        }
    }
}

struct BarProgress(ProgressBar);

impl Progress for BarProgress {
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
    fn finish(&self, _stats: &SyncStats) {
        self.0.finish_and_clear();
    }
}

/// Plain log lines: one per 50,000 records, and one at the end when anything was sent.
struct LineProgress {
    channel: String,
    started: Instant,
    sent: Mutex<(u64, u64)>,
}

impl Progress for LineProgress {
    fn advance(&self, n: u64) {
        let mut s = self.sent.lock().expect("progress lock");
        s.0 += n;
        if s.0 / 50_000 > s.1 / 50_000 {
            let rate = s.0 as f64 / self.started.elapsed().as_secs_f64().max(0.001);
            eprintln!(
                "{}: {} records sent ({:.0}/s)",
                self.channel,
                thousands(s.0),
                rate
            );
        }
        s.1 = s.0;
    }
    fn finish(&self, stats: &SyncStats) {
        if stats.sent > 0 {
            let secs = self.started.elapsed().as_secs_f64();
            eprintln!(
                "{}: sent {} of {} records in {:.1}s ({:.0}/s)",
                self.channel,
                thousands(stats.sent),
                thousands(stats.total),
                secs,
                stats.sent as f64 / secs.max(0.001)
            );
        }
    }
}
