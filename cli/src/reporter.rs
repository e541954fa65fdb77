//! The CLI's [`Reporter`]: messages on stderr; during uploads one progress bar per channel on a
//! terminal (all in one `MultiProgress`, so concurrent channels never draw over each other),
//! plain log lines otherwise; and one summary line per channel when its upload ends.

use cloudattach_core::report::{Progress, Reporter};
use cloudattach_sdk::{SyncStats, thousands};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// Messages and progress on stderr: progress bars on a terminal, plain lines otherwise.
pub struct CliReporter {
    /// The bars of every channel, drawn together; `None` off a terminal.
    bars: Option<MultiProgress>,
}

impl CliReporter {
    pub fn new() -> Self {
        CliReporter {
            bars: std::io::stderr().is_terminal().then(MultiProgress::new),
        }
    }

    /// A reporter whose bars are kept but never drawn (tests of the bookkeeping).
    #[cfg(test)]
    fn hidden() -> Self {
        CliReporter {
            bars: Some(MultiProgress::with_draw_target(ProgressDrawTarget::hidden())),
        }
    }

    /// A line on stderr that does not tear a bar being drawn.
    fn line(&self, text: &str) {
        match &self.bars {
            Some(multi) if !multi.is_hidden() => multi.suspend(|| eprintln!("{text}")),
            _ => eprintln!("{text}"),
        }
    }
}

impl Reporter for CliReporter {
    fn say(&self, message: &str) {
        self.line(message);
    }
    fn warn(&self, message: &str) {
        self.line(&format!("warning: {message}"));
    }
    fn progress(&self, channel: &str, expected: Option<u64>) -> Box<dyn Progress> {
        let Some(multi) = &self.bars else {
            return Box::new(LineProgress {
                channel: channel.to_string(),
                started: Instant::now(),
                sent: AtomicU64::new(0),
            });
        };
        Box::new(BarProgress::new(multi, channel, expected))
    }
}

/// The line a channel ends with: what was sent, changed, deleted, unchanged, and how long.
fn summary(channel: &str, stats: &SyncStats, secs: f64) -> String {
    format!(
        "{channel}: {} sent ({} added or changed, {} deleted), {} unchanged, {} in scope, in {secs:.1}s",
        thousands(stats.sent),
        thousands(stats.upserted),
        thousands(stats.deleted),
        thousands(stats.total.saturating_sub(stats.upserted)),
        thousands(stats.total),
    )
}

/// One channel's bar: its position is the devices read out of the site's, its message the
/// records the cloud acknowledged.
struct BarProgress {
    multi: MultiProgress,
    bar: ProgressBar,
    channel: String,
    started: Instant,
    sent: AtomicU64,
    done: AtomicBool,
}

impl BarProgress {
    fn new(multi: &MultiProgress, channel: &str, expected: Option<u64>) -> Self {
        // Hidden until the multi-progress takes it: a bar drawn on its own before that leaves
        // a stale copy of itself on the terminal.
        let bar = ProgressBar::with_draw_target(expected, ProgressDrawTarget::hidden());
        let template = if expected.is_some() {
            "{prefix:>24} [{bar:30}] {human_pos}/{human_len} devices  {msg}  eta {eta}"
        } else {
            "{prefix:>24} {spinner} {human_pos} devices  {msg}"
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(channel.to_string());
        bar.set_message("0 records sent");
        BarProgress {
            multi: multi.clone(),
            bar: multi.add(bar),
            channel: channel.to_string(),
            started: Instant::now(),
            sent: AtomicU64::new(0),
            done: AtomicBool::new(false),
        }
    }
}

impl Progress for BarProgress {
    fn advance(&self, n: u64) {
        self.bar.inc(n);
    }
    fn sent(&self, n: u64) {
        let sent = self.sent.fetch_add(n, Ordering::Relaxed) + n;
        self.bar
            .set_message(format!("{} records sent", thousands(sent)));
    }
    fn finish(&self, stats: &SyncStats) {
        self.done.store(true, Ordering::Relaxed);
        // Every device was read by now; a channel that read none (it uploads what is not
        // per device) still ends full.
        if let Some(len) = self.bar.length() {
            self.bar.set_position(len);
        }
        self.bar.finish_and_clear();
        self.multi.remove(&self.bar);
        let line = summary(&self.channel, stats, self.started.elapsed().as_secs_f64());
        if self.multi.is_hidden() {
            eprintln!("{line}");
        } else {
            self.multi.suspend(|| eprintln!("{line}"));
        }
    }
}

impl Drop for BarProgress {
    /// An upload that failed leaves no half bar behind (its error is reported with the step).
    fn drop(&mut self) {
        if !self.done.load(Ordering::Relaxed) {
            self.bar.finish_and_clear();
            self.multi.remove(&self.bar);
        }
    }
}

/// Plain log lines: one per 50,000 records sent, and the channel's summary at the end.
struct LineProgress {
    channel: String,
    started: Instant,
    sent: AtomicU64,
}

impl Progress for LineProgress {
    fn advance(&self, _n: u64) {}
    fn sent(&self, n: u64) {
        let before = self.sent.fetch_add(n, Ordering::Relaxed);
        let now = before + n;
        if now / 50_000 > before / 50_000 {
            let rate = now as f64 / self.started.elapsed().as_secs_f64().max(0.001);
            eprintln!(
                "{}: {} records sent ({rate:.0}/s)",
                self.channel,
                thousands(now)
            );
        }
    }
    fn finish(&self, stats: &SyncStats) {
        eprintln!(
            "{}",
            summary(&self.channel, stats, self.started.elapsed().as_secs_f64())
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three channels uploading side by side, as a sync wave does: each bar has its own total
    /// and reaches it, and a finished channel's bar leaves the display.
    #[test]
    fn each_channel_has_its_own_bar_that_reaches_its_total() {
        let reporter = CliReporter::hidden();
        let multi = reporter.bars.as_ref().unwrap();
        let totals = [("devices", 3_000u64), ("analytics", 3_000), ("ext/x", 700)];
        let bars: Vec<BarProgress> = totals
            .iter()
            .map(|(c, n)| BarProgress::new(multi, c, Some(*n)))
            .collect();
        // Side by side, as a sync wave runs them.
        std::thread::scope(|s| {
            for (p, (_, n)) in bars.iter().zip(totals) {
                s.spawn(move || {
                    for _ in 0..n / 100 {
                        p.advance(100);
                        p.sent(7);
                    }
                });
            }
        });
        for (bar, (channel, n)) in bars.iter().zip(totals) {
            assert_eq!(bar.bar.length(), Some(n), "{channel}");
            assert_eq!(
                bar.bar.position(),
                n,
                "{channel}: the bar did not reach its total"
            );
            assert_eq!(bar.sent.load(Ordering::Relaxed), 7 * (n / 100), "{channel}");
            assert_eq!(bar.bar.prefix(), channel);
        }
        // A channel that read no device (it uploads what is not per device) still ends full.
        let other = BarProgress::new(multi, "ext/summary", Some(500));
        other.finish(&SyncStats::default());
        assert_eq!(other.bar.position(), 500);
        for bar in &bars {
            bar.finish(&SyncStats::default());
            assert!(bar.bar.is_finished());
        }
    }

    #[test]
    fn the_summary_names_the_channel_and_what_it_sent() {
        let mut stats = SyncStats::default();
        stats.sent = 1_250;
        stats.upserted = 1_200;
        stats.deleted = 50;
        stats.total = 3_000;
        assert_eq!(
            summary("analytics", &stats, 1.25),
            "analytics: 1,250 sent (1,200 added or changed, 50 deleted), 1,800 unchanged, 3,000 in scope, in 1.2s"
        );
    }
}
