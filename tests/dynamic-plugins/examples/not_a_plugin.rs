//! A dynamic library that exports no cloudattach plugin.

// `no_mangle` is what makes this an ordinary C library.
#![allow(unsafe_code)]

/// Something a C program might call.
#[unsafe(no_mangle)]
pub extern "C" fn cloudattach_fixture_answer() -> u32 {
    42
}
