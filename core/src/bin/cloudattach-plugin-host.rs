//! The plugin host on its own, for the core's tests (the `cloudattach` binary serves the same as
//! `cloudattach plugin-host --library FILE`): runs one plugin library for its parent over
//! standard input and output.

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(cmd), Some(flag), Some(library)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: cloudattach-plugin-host plugin-host --library FILE");
        std::process::exit(2);
    };
    if cmd != "plugin-host" || flag != "--library" {
        eprintln!("usage: cloudattach-plugin-host plugin-host --library FILE");
        std::process::exit(2);
    }
    std::process::exit(cloudattach_core::dynamic::serve_library(
        std::path::Path::new(&library),
    ));
}
