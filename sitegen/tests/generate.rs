//! The sample site generator: deterministic, valid, varied, careful with existing data.

use cloudattach_sdk::version::client;
use cloudattach_sdk::{Device, JoinType, SiteInfo, SiteVersion};
use cloudattach_sitegen::{FIRST_RESOURCE_ID, GenerateError, GenerateOptions, generate_site};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Collection {
    id: String,
    name: String,
    members: Vec<i64>,
    includes: Vec<String>,
    limiting: Option<String>,
}

fn opts(devices: u64, seed: u64) -> GenerateOptions {
    GenerateOptions {
        devices,
        seed,
        ..Default::default()
    }
}

fn read_devices(dir: &Path) -> Vec<Device> {
    fs::read_to_string(dir.join("devices.jsonl"))
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("line {} is not a Device: {e}\n{line}", i + 1))
        })
        .collect()
}

fn read_collections(dir: &Path) -> Vec<Collection> {
    serde_json::from_str(&fs::read_to_string(dir.join("collections.json")).unwrap()).unwrap()
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut all: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    all.sort();
    all
}

#[test]
fn same_seed_gives_identical_bytes_and_another_seed_differs() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let sa = generate_site(&opts(500, 7), a.path(), false).unwrap();
    let sb = generate_site(&opts(500, 7), b.path(), false).unwrap();
    generate_site(&opts(500, 8), c.path(), false).unwrap();
    assert_eq!(sa, sb);
    let (fa, fb, fc) = (files(a.path()), files(b.path()), files(c.path()));
    let names: Vec<&str> = fa.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["collections.json", "devices.jsonl", "site.toml"],
        "no temporary files left"
    );
    assert_eq!(fa, fb);
    for ((name, x), (_, y)) in fa.iter().zip(&fc) {
        assert_ne!(x, y, "{name} should differ with another seed");
    }
    let total: u64 = fa.iter().map(|(_, bytes)| bytes.len() as u64).sum();
    assert_eq!(sa.bytes_written, total);
    assert_eq!(sa.devices, 500);
}

#[test]
fn a_2000_device_site_is_valid_and_covers_every_case() {
    let dir = tempfile::tempdir().unwrap();
    let summary = generate_site(&opts(2_000, 42), dir.path(), false).unwrap();
    let devices = read_devices(dir.path());
    assert_eq!(devices.len(), 2_000);
    assert_eq!(
        summary.clients,
        devices.iter().filter(|d| d.client).count() as u64
    );

    // site.toml is a SiteInfo.
    let site: SiteInfo =
        toml::from_str(&fs::read_to_string(dir.path().join("site.toml")).unwrap()).unwrap();
    assert_eq!(site.code, "PS1");
    assert_eq!(site.name, "Contoso Primary Site");
    assert_eq!(site.version, SiteVersion(2303));
    assert!(uuid::Uuid::parse_str(&site.hierarchy_id).is_ok());

    // Ids ascend from 16777220, names are unique and well formed.
    for (i, d) in devices.iter().enumerate() {
        assert_eq!(d.resource_id, FIRST_RESOURCE_ID + i as i64);
        assert!(d.name.starts_with("PS1-"), "{}", d.name);
        assert_eq!(d.client_version.is_some(), d.client, "{}", d.name);
        assert!(d.client || !d.client_active);
        let t = d.last_active.as_deref().unwrap();
        assert!(
            ("2024-09-15T12:00:00Z"..="2024-10-15T12:00:00Z").contains(&t),
            "{t}"
        );
        if let Some(a) = &d.analytics {
            assert!(
                (6_000..=30_000).contains(&a.core_boot_ms),
                "{}",
                a.core_boot_ms
            );
            assert!(a.total_boot_ms > a.core_boot_ms);
            assert!(a.apps.iter().all(|app| app.daily_crashes.len() <= 14));
        }
    }
    let names: HashSet<&str> = devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names.len(), devices.len());

    let v = |d: &Device| d.client_version();
    let between = |d: &Device, lo: [u32; 3], hi: [u32; 3]| {
        v(d).is_some_and(|v| client::at_least(&v, lo) && !client::at_least(&v, hi))
    };
    let build_below_1709 = |d: &Device| {
        d.is_windows_client_os()
            && d.os_build()
                .is_some_and(|b| !client::at_least(&b, client::WINDOWS_1709_BUILD))
    };
    let unhealthy = |d: &Device| {
        d.defender.as_ref().is_some_and(|s| {
            !s.rtp_enabled
                || s.signature_out_of_date
                || s.quick_scan_overdue
                || s.full_scan_overdue
                || s.reboot_required
                || s.product_status != 0
        })
    };
    type Check<'a> = Box<dyn Fn(&Device) -> bool + 'a>;
    let checks: Vec<(&str, Check)> = vec![
        (
            "no client",
            Box::new(|d| !d.client && d.client_version.is_none()),
        ),
        (
            "client < 5.00.8577",
            Box::new(|d| v(d).is_some_and(|v| !client::at_least(&v, client::CO_MANAGEMENT))),
        ),
        (
            "client 8577..8968",
            Box::new(move |d| between(d, client::CO_MANAGEMENT, client::ENDPOINT_ANALYTICS)),
        ),
        (
            "client 8968..9012",
            Box::new(move |d| between(d, client::ENDPOINT_ANALYTICS, client::APP_RELIABILITY)),
        ),
        (
            "client >= 9012",
            Box::new(|d| d.client_at_least(client::APP_RELIABILITY)),
        ),
        (
            "current client 5.00.9106",
            Box::new(|d| {
                d.client_version
                    .as_deref()
                    .is_some_and(|v| v.starts_with("5.00.9106."))
            }),
        ),
        (
            "inactive client",
            Box::new(|d| d.client && !d.client_active),
        ),
        (
            "server",
            Box::new(|d| d.is_server() && d.os == "Microsoft Windows NT Server 10.0"),
        ),
        ("non-Windows", Box::new(|d| !d.os.contains("Windows"))),
        (
            "Windows 7/8.1",
            Box::new(|d| d.os.starts_with("Microsoft Windows NT Workstation 6.")),
        ),
        ("Windows 10 below 1709", Box::new(build_below_1709)),
        (
            "Windows 10 current",
            Box::new(|d| d.is_windows_client_os() && !d.is_windows_11() && !build_below_1709(d)),
        ),
        ("Windows 11", Box::new(|d| d.is_windows_11())),
        (
            "4-part build",
            Box::new(|d| d.os_build.split('.').count() == 4),
        ),
        ("hybrid", Box::new(|d| d.join_type == JoinType::Hybrid)),
        ("entra", Box::new(|d| d.join_type == JoinType::Entra)),
        ("domain", Box::new(|d| d.join_type == JoinType::Domain)),
        (
            "workgroup",
            Box::new(|d| d.join_type == JoinType::Workgroup),
        ),
        (
            "registered",
            Box::new(|d| d.join_type == JoinType::Registered),
        ),
        ("co-managed", Box::new(|d| d.client && d.mdm_enrolled)),
        (
            "defender healthy",
            Box::new(move |d| d.defender.is_some() && !unhealthy(d)),
        ),
        ("defender unhealthy", Box::new(unhealthy)),
        (
            "defender rtp off",
            Box::new(|d| d.defender.as_ref().is_some_and(|s| !s.rtp_enabled)),
        ),
        (
            "defender signatures out of date",
            Box::new(|d| d.defender.as_ref().is_some_and(|s| s.signature_out_of_date)),
        ),
        (
            "defender detections",
            Box::new(|d| {
                d.defender
                    .as_ref()
                    .is_some_and(|s| !s.detections.is_empty())
            }),
        ),
        (
            "active detection",
            Box::new(|d| {
                d.defender
                    .as_ref()
                    .is_some_and(|s| s.detections.iter().any(|x| x.current_status == "active"))
            }),
        ),
        ("analytics", Box::new(|d| d.analytics.is_some())),
        (
            "analytics with apps",
            Box::new(|d| d.analytics.as_ref().is_some_and(|a| !a.apps.is_empty())),
        ),
        (
            "analytics without apps (client < 9012)",
            Box::new(|d| d.analytics.as_ref().is_some_and(|a| a.apps.is_empty())),
        ),
        (
            "an app crash",
            Box::new(|d| {
                d.analytics.as_ref().is_some_and(|a| {
                    a.apps
                        .iter()
                        .any(|x| x.daily_crashes.iter().any(|c| *c > 0))
                })
            }),
        ),
        (
            "primary user",
            Box::new(|d| {
                d.primary_user
                    .as_deref()
                    .is_some_and(|u| u.starts_with("user") && u.ends_with("@contoso.example"))
            }),
        ),
        (
            "hardware",
            Box::new(|d| {
                d.model.is_some() && d.manufacturer.is_some() && d.serial_number.is_some()
            }),
        ),
        (
            "domain",
            Box::new(|d| d.domain.as_deref() == Some("corp.contoso.com")),
        ),
        (
            "entra device id",
            Box::new(|d| {
                d.entra_device_id
                    .as_deref()
                    .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok())
            }),
        ),
    ];
    let mut counts = BTreeMap::new();
    for (name, check) in &checks {
        let n = devices.iter().filter(|d| check(d)).count();
        assert!(n > 0, "no device in the 2,000-device site is: {name}");
        counts.insert(*name, n);
    }
    // Proportions roughly as designed.
    let pct = |name: &str| counts[name] * 100 / devices.len();
    assert!((3..=8).contains(&pct("no client")), "{counts:?}");
    assert!((5..=12).contains(&pct("co-managed")), "{counts:?}");
    assert!(counts["hybrid"] > devices.len() / 2, "{counts:?}");
}

#[test]
fn collections_reference_existing_ids_and_devices() {
    let dir = tempfile::tempdir().unwrap();
    generate_site(&opts(2_000, 3), dir.path(), false).unwrap();
    let devices = read_devices(dir.path());
    let ids: HashSet<i64> = devices.iter().map(|d| d.resource_id).collect();
    let collections = read_collections(dir.path());
    assert!((8..=12).contains(&collections.len()));
    let known: HashSet<&str> = collections.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(known.len(), collections.len(), "collection ids are unique");
    assert!(!known.contains("SMS00001"), "All Systems is built in");
    for c in &collections {
        assert!(cloudattach_sdk::is_collection_id(&c.id), "{}", c.id);
        assert!(!c.name.is_empty());
        for r in c.includes.iter().chain(&c.limiting) {
            assert!(
                known.contains(r.as_str()) || r == "SMS00001",
                "{} references unknown {r}",
                c.id
            );
            assert_ne!(r, &c.id);
        }
        for m in &c.members {
            assert!(ids.contains(m), "{} has unknown member {m}", c.id);
        }
        let unique: HashSet<i64> = c.members.iter().copied().collect();
        assert_eq!(
            unique.len(),
            c.members.len(),
            "{} has duplicate members",
            c.id
        );
    }
    let by_id = |id: &str| {
        collections
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("{id} is missing"))
    };
    let all = by_id("PS100010");
    assert_eq!(all.name, "All Windows 10/11 Workstations");
    assert_eq!(all.limiting.as_deref(), Some("SMS00001"));
    let windows: Vec<i64> = devices
        .iter()
        .filter(|d| d.is_windows_client_os())
        .map(|d| d.resource_id)
        .collect();
    assert_eq!(all.members, windows);
    let upload = by_id("PS100012");
    assert!(!upload.includes.is_empty());
    assert_eq!(upload.limiting.as_deref(), Some("PS100010"));
    let pilot = by_id("PS100020");
    assert_eq!(pilot.name, "Co-management Pilot");
    assert!(!pilot.members.is_empty());
    assert!(
        collections
            .iter()
            .any(|c| c.name == "All Departments" && c.includes.len() >= 3)
    );
    // Department collections stay small: a few percent each.
    for c in collections.iter().filter(|c| c.id != "PS100010") {
        assert!(
            c.members.len() * 100 / devices.len() <= 15,
            "{} has {} members",
            c.name,
            c.members.len()
        );
    }
    // No cycles: includes/limiting only point at collections listed earlier or at leaves.
    fn visit<'a>(id: &'a str, all: &'a [Collection], path: &mut Vec<&'a str>) {
        assert!(!path.contains(&id), "cycle: {path:?} -> {id}");
        let Some(c) = all.iter().find(|c| c.id == id) else {
            return;
        };
        path.push(id);
        for r in c.includes.iter().chain(&c.limiting) {
            visit(r, all, path);
        }
        path.pop();
    }
    for c in &collections {
        visit(&c.id, &collections, &mut Vec::new());
    }
}

#[test]
fn refuses_to_overwrite_a_site_without_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    generate_site(&opts(50, 1), dir.path(), false).unwrap();
    let before = files(dir.path());
    let err = generate_site(&opts(60, 2), dir.path(), false).unwrap_err();
    assert!(
        matches!(err, GenerateError::WouldOverwrite { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("site.toml") && message.contains("--overwrite"),
        "{message}"
    );
    assert_eq!(files(dir.path()), before, "nothing changed");

    // A lone devices.jsonl of the user's is protected too.
    let other = tempfile::tempdir().unwrap();
    fs::write(other.path().join("devices.jsonl"), "precious\n").unwrap();
    assert!(matches!(
        generate_site(&opts(5, 1), other.path(), false),
        Err(GenerateError::WouldOverwrite { .. })
    ));
    assert_eq!(
        fs::read_to_string(other.path().join("devices.jsonl")).unwrap(),
        "precious\n"
    );

    // With the flag it replaces the site.
    let summary = generate_site(&opts(60, 2), dir.path(), true).unwrap();
    assert_eq!(summary.devices, 60);
    assert_eq!(read_devices(dir.path()).len(), 60);
    assert_eq!(files(dir.path()).len(), 3);
}

#[test]
fn creates_the_directory_and_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b/site");
    generate_site(&opts(0, 1), &nested, false).unwrap();
    assert_eq!(read_devices(&nested).len(), 0);
    assert!(
        read_collections(&nested)
            .iter()
            .all(|c| c.members.is_empty())
    );

    let file = dir.path().join("file");
    fs::write(&file, "x").unwrap();
    let err = generate_site(&opts(1, 1), &file, false).unwrap_err();
    assert!(matches!(err, GenerateError::NotADirectory { .. }), "{err}");

    let bad = GenerateOptions {
        site_code: "ps1".into(),
        ..opts(1, 1)
    };
    let err = generate_site(&bad, &dir.path().join("x"), false).unwrap_err();
    assert!(err.to_string().contains("\"ps1\""), "{err}");
    assert!(
        !dir.path().join("x").exists(),
        "nothing created for invalid options"
    );
}

#[test]
fn site_code_and_version_shape_the_site() {
    let dir = tempfile::tempdir().unwrap();
    let o = GenerateOptions {
        site_code: "CM7".into(),
        site_version: SiteVersion(2111),
        ..opts(300, 5)
    };
    generate_site(&o, dir.path(), false).unwrap();
    let devices = read_devices(dir.path());
    assert!(devices.iter().all(|d| d.name.starts_with("CM7-")));
    // No client is newer than the 2111 site's own (5.00.9068).
    assert!(
        devices
            .iter()
            .filter_map(|d| d.client_version())
            .all(|v| v.part(2) <= 9068)
    );
    assert!(
        read_collections(dir.path())
            .iter()
            .all(|c| c.id.starts_with("CM7"))
    );
    let site = fs::read_to_string(dir.path().join("site.toml")).unwrap();
    assert!(
        site.contains("version = \"2111\"") && site.contains("code = \"CM7\""),
        "{site}"
    );
}

#[test]
fn a_failed_run_leaves_no_temporary_or_half_written_files() {
    // A directory in the way of devices.jsonl: the rename at the end fails.
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("devices.jsonl")).unwrap();
    let err = generate_site(&opts(100, 1), dir.path(), true).unwrap_err();
    assert!(matches!(err, GenerateError::Rename { .. }), "{err:?}");
    assert!(err.to_string().contains("devices.jsonl"), "{err}");
    let left: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["devices.jsonl"], "only the obstacle is left");
}

#[test]
fn the_site_reader_accepts_a_generated_site() {
    let dir = tempfile::tempdir().unwrap();
    generate_site(&opts(2_000, 11), dir.path(), false).unwrap();
    let site = cloudattach_core::Site::open(dir.path()).unwrap();
    let mut n = 0u64;
    site.for_each_device(&mut |_| n += 1).unwrap();
    assert_eq!(n, 2_000);
    assert_eq!(site.scan_summary().unwrap().skipped, 0);
    let count = |id: &str| {
        site.collection(id)
            .unwrap_or_else(|| panic!("{id}"))
            .member_count
    };
    let all_windows = count("PS100010");
    for id in ["PS100012", "PS100018", "PS100020"] {
        assert!((1..all_windows).contains(&count(id)), "{id}: {}", count(id));
    }
}
