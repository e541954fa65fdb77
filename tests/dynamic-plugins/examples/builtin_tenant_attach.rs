//! The built-in `tenant_attach` plugin as a dynamic library.

cloudattach_sdk::export_plugin!(cloudattach_plugin_tenant_attach::TenantAttach);
