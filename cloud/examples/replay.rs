//! Replays captured upload batches against a cloud: the yardstick of a client that spends
//! nothing on producing its batches, only on sending them.
//!
//! ```text
//! cloudattach cloud serve --capture-uploads DIR …     # the product's batches, as accepted
//! CLOUDATTACH_REPLAY_TOKEN=<app token> \
//!   cargo run --release -p cloudattach-cloud --example replay -- BASE HIERARCHY_ID DIR \
//!   [--in-flight N] [--channel NAME]
//! ```
//!
//! Sends every captured body (`00000042.devices.zstd`: order, channel, encoding) to
//! `BASE/api/v1/hierarchies/HIERARCHY_ID/upload/<channel>` in the order the cloud accepted
//! them, `--in-flight` requests at a time (default 4, what the product keeps in flight per
//! channel). Analytics and Defender records need their devices uploaded first: such a batch
//! waits for the device batches before it. `--channel` replays one channel's batches only.
//! Prints one JSON line: batches, records (the cloud's upserted + deleted + unchanged), bytes
//! sent and seconds.

use serde_json::Value;
use std::collections::VecDeque;
use std::time::Instant;

fn usage() -> ! {
    eprintln!("usage: replay BASE HIERARCHY_ID DIR [--in-flight N] [--channel NAME]");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut positional, mut in_flight, mut only) = (Vec::new(), 4usize, None::<String>);
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--in-flight" => {
                in_flight = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| usage())
            }
            "--channel" => only = Some(it.next().unwrap_or_else(|| usage())),
            _ => positional.push(a),
        }
    }
    let [base, hierarchy, dir] = &positional[..] else {
        usage()
    };
    let token = std::env::var("CLOUDATTACH_REPLAY_TOKEN").unwrap_or_else(|_| {
        eprintln!("replay: set CLOUDATTACH_REPLAY_TOKEN to an access token of the hierarchy's app");
        std::process::exit(2)
    });
    let mut batches: Vec<(String, String, std::path::PathBuf)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| {
            eprintln!("replay: cannot read {dir}: {e}");
            std::process::exit(2)
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            let mut parts = name.splitn(3, '.');
            let (_, channel, enc) = (parts.next()?, parts.next()?, parts.next()?);
            let channel = channel.replacen("ext~", "ext/", 1);
            Some((channel, enc.to_string(), p))
        })
        .filter(|(c, _, _)| only.as_ref().is_none_or(|o| o == c))
        .collect();
    batches.sort_by(|a, b| a.2.cmp(&b.2));
    let client = reqwest::Client::new();
    let started = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut sending: VecDeque<(String, tokio::task::JoinHandle<Value>)> = VecDeque::new();
    let count = |answer: Value| -> u64 {
        ["upserted", "deleted", "unchanged"]
            .iter()
            .map(|k| answer[*k].as_u64().unwrap_or(0))
            .sum()
    };
    let n = batches.len();
    for (channel, enc, path) in batches {
        let needs_devices = channel == "analytics" || channel == "defender";
        while sending.len() >= in_flight
            || (needs_devices && sending.iter().any(|(c, _)| c == "devices"))
        {
            let (_, h) = sending.pop_front().expect("a request in flight");
            records += count(h.await.expect("request task"));
        }
        let body = std::fs::read(&path).expect("captured batch");
        bytes += body.len() as u64;
        let mut request = client
            .post(format!(
                "{base}/api/v1/hierarchies/{hierarchy}/upload/{channel}"
            ))
            .bearer_auth(&token)
            .header("content-type", "application/json");
        if enc != "identity" {
            request = request.header("content-encoding", enc);
        }
        let request = request.body(body);
        sending.push_back((
            channel,
            tokio::spawn(async move {
                let answer = request.send().await.expect("upload request");
                let status = answer.status();
                let text = answer.text().await.unwrap_or_default();
                if !status.is_success() {
                    eprintln!("replay: {} answered {status}: {text}", path.display());
                    std::process::exit(1)
                }
                serde_json::from_str(&text).unwrap_or(Value::Null)
            }),
        ));
    }
    for (_, h) in sending {
        records += count(h.await.expect("request task"));
    }
    println!(
        "{}",
        serde_json::json!({"batches": n, "records": records, "bytes": bytes,
                           "seconds": started.elapsed().as_secs_f64()})
    );
}
