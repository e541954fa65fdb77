//! Throughput of the query engine: devices per second for three kinds of query.
//!
//! ```text
//! cargo run --release -p cloudattach-query --example query_bench [-- DEVICES]
//! ```
//!
//! DEVICES (default 1,000,000) devices are pushed to each query. To keep memory small they
//! are drawn in turn from a pool of 65,536 distinct, deterministically generated devices
//! (varied OS, builds, join types, users, hardware, Defender and analytics blocks); only the
//! evaluation is timed (the best of three runs), not the generation.

use cloudattach_model::{Analytics, AppUsage, DefenderState, Detection, Device, JoinType};
use std::time::Instant;

const POOL: usize = 65_536;

/// splitmix64: a tiny deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

fn generate(i: usize, rng: &mut Rng) -> Device {
    let mut d = Device::new(16_777_220 + i as i64, format!("PC-{i:06}"));
    let kind = rng.below(100);
    let (os, builds): (&str, &[&str]) = if kind < 88 {
        (
            "Microsoft Windows NT Workstation 10.0",
            &[
                "10.0.19044",
                "10.0.19045",
                "10.0.22621",
                "10.0.22631",
                "10.0.26100",
            ],
        )
    } else if kind < 95 {
        (
            "Microsoft Windows NT Server 10.0",
            &["10.0.17763", "10.0.20348", "10.0.26100"],
        )
    } else {
        ("macOS", &["13.6", "14.5", "15.0"])
    };
    d.os = os.into();
    d.os_build = rng.pick(builds).into();
    d.client = rng.chance(95);
    if d.client {
        d.client_version = Some(
            rng.pick(&["5.00.9088.1000", "5.00.9106.1000", "5.00.9122.1000"])
                .into(),
        );
        d.client_active = rng.chance(85);
    }
    d.join_type = match rng.below(20) {
        0..=11 => JoinType::Hybrid,
        12..=15 => JoinType::Entra,
        16..=17 => JoinType::Domain,
        18 => JoinType::Workgroup,
        _ => JoinType::Registered,
    };
    d.mdm_enrolled = rng.chance(30);
    if rng.chance(80) {
        d.primary_user = Some(format!("user{}@contoso.com", rng.below(50_000)));
    }
    let (maker, models): (&str, &[&str]) = match rng.below(5) {
        0 => ("Dell Inc.", &["Latitude 7440", "OptiPlex 7010"]),
        1 => ("HP", &["EliteBook 840 G10", "ProDesk 400 G9"]),
        2 => ("Lenovo", &["ThinkPad T14 Gen 4", "ThinkCentre M70q"]),
        3 => (
            "Microsoft Corporation",
            &["Surface Laptop 5", "Surface Pro 9"],
        ),
        _ => ("VMware, Inc.", &["VMware7,1"]),
    };
    d.manufacturer = Some(maker.into());
    d.model = Some(rng.pick(models).into());
    d.serial_number = Some(format!("SN{:010}", rng.next() % 10_000_000_000));
    if d.join_type != JoinType::Workgroup {
        d.domain = Some("corp.contoso.com".into());
    }
    d.last_active = Some(format!(
        "2024-{:02}-{:02}T{:02}:00:00Z",
        9 + rng.below(2),
        1 + rng.below(28),
        rng.below(24)
    ));
    if d.client && d.os != "macOS" && rng.chance(90) {
        let mut s = DefenderState::default();
        s.defender_enabled = true;
        s.rtp_enabled = rng.chance(93);
        s.signature_out_of_date = rng.chance(5);
        s.engine_version = Some("1.1.24090.11".into());
        s.signature_version = Some(format!("1.419.{}.0", 100 + rng.below(60)));
        if rng.chance(5) {
            s.detections.push(Detection::new(
                2_147_000_000 + rng.below(1000) as i64,
                rng.pick(&["Trojan:Win32/Wacatac.B!ml", "PUA:Win32/Presenoker"]),
                rng.pick(&["Trojan", "Adware"]),
                rng.pick(&["low", "moderate", "high", "severe"]),
                rng.pick(&["active", "quarantined", "removed"]),
                "2024-10-01T08:00:00Z",
                1 + rng.below(5) as u32,
            ));
        }
        d.defender = Some(s);
    }
    if d.os.contains("Workstation") && rng.chance(60) {
        let apps = (0..rng.below(4))
            .map(|_| {
                AppUsage::new(
                    rng.pick(&["Microsoft Teams", "Outlook", "Edge", "Excel"]),
                    rng.below(2000) as u32,
                    vec![rng.below(2) as u32; 14],
                )
            })
            .collect();
        d.analytics = Some(
            Analytics::new(
                5_000 + rng.below(30_000) as u32,
                20_000 + rng.below(60_000) as u32,
                rng.below(10_000) as u32,
                5_000 + rng.below(20_000) as u32,
            )
            .with_apps(apps),
        );
    }
    d
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| {
            a.replace(['_', ','], "")
                .parse()
                .expect("DEVICES is a number")
        })
        .unwrap_or(1_000_000);
    let mut rng = Rng(42);
    let pool: Vec<Device> = (0..POOL.min(n.max(1)))
        .map(|i| generate(i, &mut rng))
        .collect();
    println!(
        "{n} devices (drawn from a pool of {} distinct ones)\n",
        pool.len()
    );

    let queries = [
        (
            "where + summarize",
            "Device | where client and os contains 'workstation' | summarize count() by os_build, join_type",
        ),
        (
            "where + project + take",
            "Device | where manufacturer == 'Microsoft Corporation' and model startswith 'surface pro' and isnull(primary_user) and client_active == false | project name, model, os_build | take 1000",
        ),
        (
            "order by + take",
            "Device | where client | order by last_active asc, resource_id desc | take 100 | project name, last_active",
        ),
    ];
    for (label, text) in queries {
        let query = cloudattach_query::parse(text).expect("the query parses");
        // The best of three runs (the machine may be shared).
        let mut best = f64::INFINITY;
        let (mut read, mut table) = (0, None);
        for _ in 0..3 {
            let start = Instant::now();
            let mut eval = query.evaluator();
            read = 0usize;
            for device in pool.iter().cycle().take(n) {
                if eval.is_done() {
                    break;
                }
                eval.push(device);
                read += 1;
            }
            table = Some(eval.finish());
            best = best.min(start.elapsed().as_secs_f64());
        }
        let (secs, table) = (best, table.expect("ran"));
        println!("{label}: {text}");
        println!(
            "  {read} devices read in {:.3} s: {:.2} M devices/s; {} rows{}\n",
            secs,
            read as f64 / secs / 1e6,
            table.rows.len(),
            if table.truncated { " (truncated)" } else { "" }
        );
    }
}
