//! Test fixtures for dynamic plugin loading, as `cdylib` examples (see `examples/`):
//!
//! - `builtin_*`: each built-in plugin exported with `cloudattach_sdk::export_plugin!`, to show
//!   that a plugin behaves the same loaded as it does linked in;
//! - `panicking`: a plugin that panics in its steps (the host must survive);
//! - `old_sdk`: a root module claiming cloudattach-sdk 0.0.9;
//! - `bad_layout`: a root module of the right name and version with another layout;
//! - `not_a_plugin`: a dynamic library that exports no plugin.
//!
//! The loading tests build them with
//! `cargo build -p cloudattach-dynamic-plugins --examples --features fixtures --target-dir target/dynamic-plugins`.
