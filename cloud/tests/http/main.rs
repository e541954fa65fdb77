//! HTTP-level tests of the cloud tenant service on 127.0.0.1:0.

mod actions;
mod common;
mod console;
mod devices;
mod faults;
mod gateway;
mod identity;
mod security;
