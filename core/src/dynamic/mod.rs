//! Plugins from dynamic libraries: every library in the plugin directories is loaded by its
//! absolute path through `abi_stable`'s per-file loading, checked (a cloudattach plugin, a
//! compatible SDK version, the expected layout) and registered as a [`DynamicPlugin`], which
//! implements [`Plugin`](cloudattach_sdk::Plugin) over the library's root module — the
//! orchestrator does not know the difference. Libraries are never unloaded.
//!
//! Failures never stop the run: each is one line naming the file and what to do, recorded in
//! [`Registry::load_failures`](crate::Registry::load_failures); the other plugins still load.
//!
//! - `elf`: the bounds check of an ELF file before the system loader maps it;
//! - `load`: loading and checking one library ([`load_library`]), the plugin directories
//!   ([`load_plugin_dirs`]), the version rule ([`sdk_compatible`]);
//! - `plugin`: the proxy plugin, [`DynamicPlugin`];
//! - `bridge`: the host's side of the boundary, `HostBridge`, which answers the library's
//!   calls with the real host.

mod bridge;
mod child;
mod elf;
mod load;
mod plugin;
mod process;

pub use child::serve_library;
pub use load::{
    Isolation, LoadError, LoadedLibrary, accepted_sdk_versions, executables_in, inspect,
    inspect_isolated, libraries_in, load_library, load_plugin_dirs, load_plugin_dirs_with,
    sdk_compatible,
};
pub use plugin::DynamicPlugin;
pub use process::{
    DEFAULT_MEMORY_BYTES, Launch, Limits, PLUGIN_HOST_ENV, ProcessPlugin, default_timeout,
    exit_description, start_process_plugin, stop_plugin_processes,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use std::path::PathBuf;

    #[test]
    fn sdk_compatibility_table() {
        let cases = [
            ("0.1.0", "0.1.0", true),
            ("0.1.7", "0.1.0", true),
            ("0.1.0", "0.1.9", true),
            ("0.0.9", "0.1.0", false),
            ("0.2.0", "0.1.0", false),
            ("1.2.0", "1.3.0", true),
            ("1.4.0", "1.3.0", false),
            ("2.0.0", "1.3.0", false),
            ("x", "0.1.0", false),
            // 0.2 is the SDK split: a library of 0.1 must be rebuilt.
            ("0.1.0", "0.2.0", false),
            ("0.2.4", "0.2.0", true),
        ];
        for (found, host, ok) in cases {
            assert_eq!(sdk_compatible(found, host), ok, "{found} on {host}");
        }
    }

    #[test]
    fn a_missing_directory_is_one_failure_and_nothing_else() {
        let mut r = Registry::new();
        load_plugin_dirs(&mut r, &[PathBuf::from("/nonexistent/cloudattach-plugins")]);
        assert_eq!(r.load_failures.len(), 1);
        assert!(
            r.load_failures[0]
                .message
                .contains("cannot read the plugin directory"),
            "{:?}",
            r.load_failures
        );
        assert!(r.is_empty());
    }

    #[test]
    fn a_text_file_is_not_a_plugin_library() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir
            .path()
            .join(format!("notes.{}", std::env::consts::DLL_EXTENSION));
        std::fs::write(&file, "not a library\n").unwrap();
        std::fs::write(
            dir.path().join("README.txt"),
            "ignored: not a library extension\n",
        )
        .unwrap();
        let mut r = Registry::new();
        load_plugin_dirs(&mut r, &[dir.path().to_path_buf()]);
        assert_eq!(r.load_failures.len(), 1, "{:?}", r.load_failures);
        let message = &r.load_failures[0].message;
        assert!(
            message.contains("notes.") && message.contains("not a plugin library"),
            "{message}"
        );
        assert!(!message.contains('\n'), "one line: {message}");
    }
}
