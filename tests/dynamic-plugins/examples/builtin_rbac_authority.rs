//! The built-in `rbac_authority` plugin as a dynamic library.

cloudattach_sdk::export_plugin!(cloudattach_plugin_rbac_authority::RbacAuthority);
