//! The floor under any pass over an inventory: reading `devices.jsonl` line by line, and doing
//! that while hashing each line's bytes (xxh3, as the line index does). No parsing.
//!
//! `cargo run --release -p cloudattach-core --example line_floor -- SITE/devices.jsonl`
//!
//! Prints one JSON line: lines, bytes, read seconds, read+hash seconds (best of three each, from
//! the page cache after the first).

use std::io::BufRead;
use std::time::Instant;

fn pass(path: &str, hash: bool) -> (u64, u64, f64) {
    let started = Instant::now();
    let file = std::fs::File::open(path).unwrap_or_else(|e| {
        eprintln!("line_floor: {path}: {e}");
        std::process::exit(2)
    });
    let mut reader = std::io::BufReader::with_capacity(256 * 1024, file);
    let (mut lines, mut bytes, mut sum) = (0u64, 0u64, 0u64);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).expect("read");
        if n == 0 {
            break;
        }
        lines += 1;
        bytes += n as u64;
        if hash {
            sum = sum.wrapping_add(xxhash_rust::xxh3::xxh3_64(line.trim_ascii()));
        }
    }
    std::hint::black_box(sum);
    (lines, bytes, started.elapsed().as_secs_f64())
}

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        eprintln!("usage: line_floor DEVICES_JSONL");
        std::process::exit(2)
    });
    let best = |hash| {
        (0..3)
            .map(|_| pass(&path, hash))
            .min_by(|a, b| a.2.total_cmp(&b.2))
            .expect("three passes")
    };
    let (lines, bytes, read) = best(false);
    let (_, _, hashed) = best(true);
    println!(
        "{}",
        serde_json::json!({"lines": lines, "bytes": bytes, "read_seconds": read,
                           "read_hash_seconds": hashed})
    );
}
