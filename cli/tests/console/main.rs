//! The admin center in a real browser: headless Chromium driven through WebDriver
//! (`chromedriver`, the `fantoccini` client), one browser for the whole binary, against a cloud
//! holding an attached generated site. Each page is walked as a person would, what it shows is
//! compared with the read API, and a screenshot of each is saved under
//! `target/tmp/console-screenshots/` for a reviewer to look at.
//!
//! Needs Debian's `chromium` and `chromium-driver`. Without them the test says loudly that it
//! was skipped — unless `CLOUDATTACH_REQUIRE_BROWSER=1` (set by `.ci/run`), which makes their
//! absence a failure.

#[path = "../e2e/common.rs"]
mod common;

mod browser;
mod walk;
