//! The built-in `co_management` plugin as a dynamic library.

cloudattach_sdk::export_plugin!(cloudattach_plugin_co_management::CoManagement);
