//! The built-in `endpoint_analytics` plugin as a dynamic library.

cloudattach_sdk::export_plugin!(cloudattach_plugin_endpoint_analytics::EndpointAnalytics);
