//! How the person running a command is told things: the port the use cases report through and
//! the front end (the CLI) implements — messages, warnings and upload progress, all on stderr.

use cloudattach_sdk::SyncStats;

/// How the person running the command is told things (stderr), and asked to sign in.
pub trait Reporter: Send + Sync {
    /// A line for the person.
    fn say(&self, message: &str);
    /// A warning.
    fn warn(&self, message: &str);
    /// A progress bar for an upload; returns a handle updated with records sent.
    fn progress(&self, channel: &str, expected: Option<u64>) -> Box<dyn Progress>;
}

/// Progress of one upload.
pub trait Progress: Send {
    /// `n` more records sent.
    fn advance(&self, n: u64);
    /// Done.
    fn finish(&self, stats: &SyncStats);
}

/// A reporter that says nothing (tests, library callers).
pub struct Silent;

impl Reporter for Silent {
    fn say(&self, _message: &str) {}
    fn warn(&self, _message: &str) {}
    fn progress(&self, _channel: &str, _expected: Option<u64>) -> Box<dyn Progress> {
        Box::new(Silent)
    }
}

impl Progress for Silent {
    fn advance(&self, _n: u64) {}
    fn finish(&self, _stats: &SyncStats) {}
}
