//! How the person running a command is told things: the port the use cases report through and
//! the front end (the CLI) implements — messages, warnings and upload progress, all on stderr.

use cloudattach_sdk::SyncStats;

/// How the person running the command is told things (stderr), and asked to sign in.
pub trait Reporter: Send + Sync {
    /// A line for the person.
    fn say(&self, message: &str);
    /// A warning.
    fn warn(&self, message: &str);
    /// A progress bar for an upload of `channel`; `expected` is the number of devices the
    /// upload's pass reads (the bar's total). The handle hears the devices read, the records
    /// the cloud acknowledged, and the end, where the front end shows the channel's summary.
    fn progress(&self, channel: &str, expected: Option<u64>) -> Box<dyn Progress>;
}

/// Progress of one upload.
pub trait Progress: Send + Sync {
    /// `n` more of the expected devices read for this upload.
    fn advance(&self, n: u64);
    /// `n` more records sent and acknowledged by the cloud.
    fn sent(&self, _n: u64) {}
    /// Done: what the upload sent, changed, deleted and found unchanged.
    fn finish(&self, stats: &SyncStats);
}

thread_local! {
    /// The uploads open on this thread. A plugin opens an upload and streams the inventory on
    /// the same thread (through its host, or across the dynamic boundary, which calls back
    /// synchronously), so the devices read on a thread are the devices its open uploads
    /// consider; this is how an upload's bar counts devices without the plugin's help.
    static READING: std::cell::RefCell<Vec<std::sync::Arc<dyn Progress>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Counts `n` devices read on this thread towards every upload open on it.
pub fn devices_read(n: u64) {
    if n == 0 {
        return;
    }
    READING.with(|r| {
        for p in r.borrow().iter() {
            p.advance(n);
        }
    });
}

/// While the guard lives, the devices read on this thread advance `progress`.
pub fn count_devices_read(progress: std::sync::Arc<dyn Progress>) -> DevicesRead {
    READING.with(|r| r.borrow_mut().push(progress.clone()));
    DevicesRead(progress)
}

/// See [`count_devices_read`]; must be dropped on the thread that made it (an upload lives on
/// the thread that opened it).
pub struct DevicesRead(std::sync::Arc<dyn Progress>);

impl Drop for DevicesRead {
    fn drop(&mut self) {
        let _ = READING.try_with(|r| {
            r.borrow_mut()
                .retain(|p| !std::sync::Arc::ptr_eq(p, &self.0));
        });
    }
}

/// Counts devices as they are read and hands them on in batches, so the count costs a
/// thread-local look-up per thousand devices rather than per device.
pub struct DeviceCounter(u64);

impl DeviceCounter {
    /// A counter at zero.
    pub fn new() -> Self {
        DeviceCounter(0)
    }
    /// One more device read.
    pub fn one(&mut self) {
        self.0 += 1;
        if self.0 == 1024 {
            devices_read(self.0);
            self.0 = 0;
        }
    }
}

impl Default for DeviceCounter {
    fn default() -> Self {
        DeviceCounter::new()
    }
}

impl Drop for DeviceCounter {
    fn drop(&mut self) {
        devices_read(self.0);
    }
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
