//! The built-in `defender_reporting` plugin as a dynamic library.

cloudattach_sdk::export_plugin!(cloudattach_plugin_defender_reporting::DefenderReporting);
