//! Generates a sample site and reports how fast: `generate N DIR [SEED] [--overwrite]`.
//!
//! ```text
//! cargo run -p cloudattach-sitegen --release --example generate -- 1000000 /tmp/gen1m
//! ```

use cloudattach_sitegen::{GenerateOptions, generate_site};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let overwrite = args.iter().any(|a| a == "--overwrite");
    args.retain(|a| a != "--overwrite");
    let usage = "usage: generate N DIR [SEED] [--overwrite]";
    let (Some(n), Some(dir)) = (args.first(), args.get(1)) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let Ok(devices) = n.replace('_', "").parse::<u64>() else {
        eprintln!("{n:?} is not a number of devices; {usage}");
        return ExitCode::from(2);
    };
    let mut opts = GenerateOptions {
        devices,
        ..Default::default()
    };
    if let Some(seed) = args.get(2) {
        match seed.parse() {
            Ok(s) => opts.seed = s,
            Err(_) => {
                eprintln!("{seed:?} is not a seed; {usage}");
                return ExitCode::from(2);
            }
        }
    }
    let start = Instant::now();
    match generate_site(&opts, &PathBuf::from(dir), overwrite) {
        Ok(summary) => {
            let secs = start.elapsed().as_secs_f64();
            let mb = summary.bytes_written as f64 / 1e6;
            println!(
                "{} devices ({} with a client), {} collections, {:.1} MB in {:.2} s: {:.0} MB/s, {:.0} devices/s",
                summary.devices,
                summary.clients,
                summary.collections,
                mb,
                secs,
                mb / secs,
                summary.devices as f64 / secs
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
