//! Test fixtures for dynamic plugin loading, as `cdylib` examples (see `examples/`):
//!
//! - `builtin_*`: each built-in plugin exported with `cloudattach_sdk::export_plugin!`, to show
//!   that a plugin behaves the same loaded as it does linked in;
//! - `panicking`: a plugin that panics in its steps (the host must survive);
//! - `old_sdk`: a root module claiming cloudattach-sdk 0.0.9;
//! - `bad_layout`: a root module of the right name and version with another layout;
//! - `not_a_plugin`: a dynamic library that exports no plugin.
//!
//! The loading tests (`core/tests/dynamic.rs`, `cli/tests/e2e/dynamic.rs`) build them, with the
//! example third-party plugin, through [`built`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

/// The workspace's root directory.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("tests/dynamic-plugins is in the workspace")
}

/// The workspace's target dir (the one `cargo test` built into): the plugin libraries are built
/// there too, reusing the dependencies already compiled. Cargo does not hold its lock on the
/// directory while the tests run.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// Builds the fixture libraries and the example plugin once per test process, in the profile of
/// the test that loads them; returns the profile's directory (fixtures under `examples/`).
pub fn built() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = target_dir();
        let started = Instant::now();
        let status = Command::new(env!("CARGO"))
            .current_dir(workspace())
            .args([
                "build",
                "--quiet",
                "-p",
                "cloudattach-dynamic-plugins",
                "--examples",
            ])
            .args(["--features", "cloudattach-dynamic-plugins/fixtures"])
            .args(["-p", "cloudattach-example-collection-summary", "--lib"])
            .args(if cfg!(debug_assertions) {
                &[][..]
            } else {
                &["--release"][..]
            })
            .arg("--target-dir")
            .arg(&target)
            .status()
            .expect("run cargo to build the plugin libraries");
        assert!(status.success(), "building the plugin libraries failed");
        eprintln!(
            "plugin libraries built in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        target.join(if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        })
    })
}
