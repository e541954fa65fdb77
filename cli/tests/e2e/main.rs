//! End to end: the real binary against a cloud tenant service each test starts on
//! `127.0.0.1:0`, in one test binary (linked once, its tests scheduled together). Counts are
//! computed independently from the site files (`common`).

mod actions;
mod apply;
mod commands;
mod common;
mod convergence;
mod dynamic;
mod import;
mod python_plugin;
mod signin;
mod state;
mod sync;
mod tenant;
