//! Dynamic plugins: the built-ins loaded as libraries behave byte for byte like the linked
//! ones; the third-party example loads and runs; broken and hostile libraries each give one
//! clear line while the rest of the run works.
//!
//! The libraries are built by the first test that needs them, with a nested `cargo build` into
//! the workspace's target dir (incremental, and on the dependencies the test build compiled).

// Linked so that `Registry::with_static_plugins` has the five built-ins to compare against.
use cloudattach_plugin_co_management as _;
use cloudattach_plugin_defender_reporting as _;
use cloudattach_plugin_endpoint_analytics as _;
use cloudattach_plugin_rbac_authority as _;
use cloudattach_plugin_tenant_attach as _;

use cloudattach_core::dynamic::{self, LoadError, inspect, load_plugin_dirs};
use cloudattach_core::state::NothingApplied;
use cloudattach_core::{Config, Origin, Registry, Site};
use cloudattach_dynamic_plugins::built;
use cloudattach_sdk::{
    CheckStatus, Environment, Method, Options, PlanAction, SiteVersion, SyncMode, ValidateContext,
};
use cloudattach_sitegen::{GenerateOptions, generate_site};
use cloudattach_testkit::{MemoryHost, device, options, with};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const BUILTINS: [(&str, &str); 5] = [
    ("tenant-attach", "builtin_tenant_attach"),
    ("endpoint-analytics", "builtin_endpoint_analytics"),
    ("rbac-authority", "builtin_rbac_authority"),
    ("defender-reporting", "builtin_defender_reporting"),
    ("co-management", "builtin_co_management"),
];

fn lib_name(name: &str) -> String {
    format!(
        "{}{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// A fixture library (an example of `cloudattach-dynamic-plugins`).
fn fixture(name: &str) -> PathBuf {
    built().join("examples").join(lib_name(name))
}

/// The third-party example plugin.
fn collection_summary() -> PathBuf {
    built().join(lib_name("cloudattach_example_collection_summary"))
}

fn dll(name: &str) -> String {
    format!("{name}.{}", std::env::consts::DLL_EXTENSION)
}

/// A fresh plugin directory holding copies of `libs` under the given names.
fn plugin_dir(libs: &[(&Path, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (src, name) in libs {
        std::fs::copy(src, dir.path().join(dll(name))).unwrap();
    }
    dir
}

fn builtins_dir() -> tempfile::TempDir {
    let libs: Vec<(PathBuf, &str)> = BUILTINS
        .iter()
        .map(|(id, lib)| (fixture(lib), *id))
        .collect();
    plugin_dir(
        &libs
            .iter()
            .map(|(p, n)| (p.as_path(), *n))
            .collect::<Vec<_>>(),
    )
}

/// A generated site with an attach.toml.
struct Fixture {
    _dir: tempfile::TempDir,
    config: Config,
    site: Arc<Site>,
}

fn site_with(devices: u64, attach: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let opts = GenerateOptions {
        devices,
        seed: 7,
        ..Default::default()
    };
    generate_site(&opts, &dir.path().join("site"), false).unwrap();
    let path = dir.path().join("attach.toml");
    std::fs::write(&path, attach).unwrap();
    let config = Config::load(&path).unwrap();
    let site = Arc::new(Site::open(&config.site_dir).unwrap());
    Fixture {
        _dir: dir,
        config,
        site,
    }
}

/// `check` and `plan` JSON, as the CLI prints them.
fn check_and_plan(registry: &Registry, f: &Fixture) -> (String, String) {
    let selection = cloudattach_core::select(&f.config, registry, f.site.info.version).unwrap();
    let checks =
        cloudattach_core::ops::check::run_checks(registry, &f.config, &selection, &f.site, &[])
            .unwrap();
    let plan = cloudattach_core::ops::plan::make_plan(
        registry,
        &f.config,
        &selection,
        &f.site,
        &NothingApplied,
        &Default::default(),
    )
    .unwrap();
    (
        serde_json::to_string_pretty(&json!({ "plugins": checks })).unwrap(),
        serde_json::to_string_pretty(&plan).unwrap(),
    )
}

#[test]
fn every_builtin_loaded_as_a_library_gives_byte_identical_check_and_plan() {
    let dir = builtins_dir();
    let mut dynamic = Registry::new();
    load_plugin_dirs(&mut dynamic, &[dir.path().to_path_buf()]);
    assert!(
        dynamic.load_failures.is_empty(),
        "{:?}",
        dynamic.load_failures
    );
    assert_eq!(dynamic.len(), 5);
    assert!(
        dynamic
            .iter()
            .all(|p| matches!(p.origin, Origin::Dynamic(_)))
    );
    let linked = Registry::with_static_plugins().unwrap();
    assert_eq!(linked.len(), 5);
    for p in linked.iter() {
        assert_eq!(
            dynamic.get(&p.manifest.id).map(|d| &d.manifest),
            Some(&p.manifest),
            "{}",
            p.manifest.id
        );
    }

    let default = site_with(
        1_500,
        "[site]\npath = \"site\"\n[attach]\nsettings = \"default\"\n",
    );
    let pilot = default
        .site
        .collection_ids()
        .find(|id| !id.starts_with("SMS"))
        .expect("a generated collection")
        .to_string();
    let custom = site_with(
        1_500,
        &format!(
            "[site]\npath = \"site\"\n[attach]\nsettings = \"custom\"\n\
             [features.tenant-attach]\nupload = \"{pilot}\"\n\
             [features.endpoint-analytics]\nenabled = true\n\
             [features.rbac-authority]\nenforce_configmgr_rbac = false\n\
             [features.defender-reporting]\nenabled = false\n\
             [features.co-management]\nenrollment = \"pilot\"\npilot_collection = \"{pilot}\"\n"
        ),
    );
    for (name, f) in [("default settings", &default), ("custom settings", &custom)] {
        let (check_static, plan_static) = check_and_plan(&linked, f);
        let (check_dynamic, plan_dynamic) = check_and_plan(&dynamic, f);
        assert_eq!(check_dynamic, check_static, "check, {name}");
        assert_eq!(plan_dynamic, plan_static, "plan, {name}");
        assert!(
            check_static.contains("eligibility"),
            "the co-management data crosses too"
        );
    }
}

const SUMMARY_CONFIG: &str = "[site]\npath = \"site\"\n[attach]\nsettings = \"custom\"\n\
    [features.tenant-attach]\nupload = \"all\"\n\
    [features.collection-summary]\nmax_os_entries = 3\n";

#[test]
fn the_third_party_example_loads_next_to_the_builtins_and_checks_plans_and_applies() {
    let dir = plugin_dir(&[(&collection_summary(), "collection-summary")]);
    let mut registry = Registry::with_static_plugins().unwrap();
    load_plugin_dirs(&mut registry, &[dir.path().to_path_buf()]);
    assert!(
        registry.load_failures.is_empty(),
        "{:?}",
        registry.load_failures
    );
    let plugin = registry.get("collection-summary").expect("registered");
    assert_eq!(
        plugin.origin,
        Origin::Dynamic(std::fs::canonicalize(dir.path().join(dll("collection-summary"))).unwrap())
    );
    assert_eq!(plugin.manifest.depends_on, ["tenant-attach"]);

    let f = site_with(800, SUMMARY_CONFIG);
    let selection = cloudattach_core::select(&f.config, &registry, f.site.info.version).unwrap();
    let checks =
        cloudattach_core::ops::check::run_checks(&registry, &f.config, &selection, &f.site, &[])
            .unwrap();
    let summary = checks
        .iter()
        .find(|c| c.id == "collection-summary")
        .unwrap();
    assert_eq!(summary.status, CheckStatus::Pass, "{:?}", summary.findings);
    let plan = cloudattach_core::ops::plan::make_plan(
        &registry,
        &f.config,
        &selection,
        &f.site,
        &NothingApplied,
        &Default::default(),
    )
    .unwrap();
    let order: Vec<&str> = plan.steps.iter().map(|s| s.plugin.as_str()).collect();
    let at = |id| order.iter().position(|p| *p == id).unwrap();
    assert!(at("tenant-attach") < at("collection-summary"), "{order:?}");
    let step = &plan.steps[at("collection-summary")];
    assert_eq!(step.action, PlanAction::Enable);
    assert!(
        step.detail
            .as_deref()
            .unwrap_or("")
            .starts_with("upload summaries of"),
        "{step:?}"
    );

    // apply and sync across the boundary, against the test kit's in-memory cloud.
    let host = MemoryHost::new(MemoryHost::sample_site())
        .with_devices((1..=1200).map(|i| with(device(i), |d| d.client = i % 10 != 0)))
        .with_collection("PS100010", "Pilot", 1..=100)
        .with_feature("tenant-attach", options(json!({ "upload": "all" })))
        .with_cloud()
        .with_response(
            Method::Get,
            "ext/collection-summary/records",
            json!({ "@odata.count": 2, "value": [] }),
        );
    let opts: Options = plugin.manifest.resolve_options(&Options::new()).unwrap();
    let outcome = plugin.plugin.apply(&host, &opts);
    assert!(outcome.ok, "{outcome:?}");
    assert_eq!(outcome.counts["collections_uploaded"], 2);
    let records = host.channel("ext/collection-summary");
    assert_eq!(records["SMS00001"]["devices"], 1200);
    assert_eq!(records["SMS00001"]["clients"], 1080);
    assert_eq!(records["PS100010"]["uploaded"], 90);
    assert_eq!(
        host.feature_settings("collection-summary"),
        Some(json!({ "include_empty": false, "max_os_entries": 5 }))
    );
    let again = plugin
        .plugin
        .sync(&host, &opts, SyncMode::Delta)
        .unwrap()
        .unwrap();
    assert_eq!(again.sent, 0, "nothing changed");
    let status = plugin.plugin.status(&host).unwrap();
    assert!(status.enabled);
    assert_eq!(status.counts["collections_reported"], 2);
    assert!(plugin.plugin.disable(&host).ok);
    assert_eq!(host.feature_settings("collection-summary"), None);
}

#[test]
fn broken_and_hostile_libraries_each_give_one_clear_line_and_the_rest_of_the_run_works() {
    let truncated = tempfile::tempdir().unwrap();
    let whole = std::fs::read(fixture("builtin_co_management")).unwrap();
    // Cut inside the loadable segments (the system loader would die of SIGBUS on it) and after
    // them (only the section table is missing).
    let truncated_path = truncated.path().join("cut");
    std::fs::write(&truncated_path, &whole[..1 << 20]).unwrap();
    let half = truncated.path().join("half");
    std::fs::write(&half, &whole[..whole.len() / 2]).unwrap();
    let text = truncated.path().join("text");
    std::fs::write(&text, "#!/bin/sh\necho not a library\n").unwrap();
    let dir = plugin_dir(&[
        (&fixture("old_sdk"), "old-sdk"),
        (&fixture("bad_layout"), "bad-layout"),
        (&fixture("not_a_plugin"), "not-a-plugin"),
        (&truncated_path, "truncated"),
        (&half, "half"),
        (&text, "text"),
        (&fixture("builtin_tenant_attach"), "tenant-attach-again"),
        (&fixture("panicking"), "panicky"),
        (&collection_summary(), "collection-summary"),
    ]);
    std::fs::write(
        dir.path().join("README.md"),
        "not a library extension: ignored\n",
    )
    .unwrap();

    let started = Instant::now();
    let mut registry = Registry::with_static_plugins().unwrap();
    load_plugin_dirs(&mut registry, &[dir.path().to_path_buf()]);
    eprintln!(
        "loaded a directory of 9 files in {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );

    let failure = |file: &str| -> String {
        let path = std::fs::canonicalize(dir.path().join(dll(file))).unwrap();
        let found: Vec<&str> = registry
            .load_failures
            .iter()
            .filter(|f| f.path == path)
            .map(|f| f.message.as_str())
            .collect();
        assert_eq!(found.len(), 1, "{file}: {:?}", registry.load_failures);
        assert!(!found[0].contains('\n'), "one line: {}", found[0]);
        assert!(
            found[0].contains(&dll(file)),
            "names the file: {}",
            found[0]
        );
        found[0].to_string()
    };
    let old = failure("old-sdk");
    assert!(
        old.contains(&format!(
            "built against cloudattach-sdk 0.0.9; this cloudattach needs {}: rebuild the plugin",
            dynamic::accepted_sdk_versions()
        )),
        "{old}"
    );
    let layout = failure("bad-layout");
    assert!(
        layout.contains("layout mismatch") && layout.contains("rebuild"),
        "{layout}"
    );
    assert!(
        !layout.contains("expected"),
        "the full abi_stable report is for debug logs only: {layout}"
    );
    assert!(failure("not-a-plugin").contains("exports no cloudattach plugin"));
    for cut in ["truncated", "half"] {
        let message = failure(cut);
        assert!(
            message.contains("not a plugin library: the file is truncated or damaged"),
            "{message}"
        );
    }
    assert!(failure("text").contains("not a plugin library"));
    let duplicate = failure("tenant-attach-again");
    assert!(
        duplicate.contains("`tenant-attach` is registered twice")
            && duplicate.contains("by the binary (built in) and by")
            && duplicate.contains(&dll("tenant-attach-again")),
        "{duplicate}"
    );
    assert_eq!(
        registry.load_failures.len(),
        7,
        "{:?}",
        registry.load_failures
    );
    assert_eq!(
        registry.len(),
        7,
        "5 built-ins + panicky + collection-summary"
    );
    assert_eq!(
        registry.get("tenant-attach").unwrap().origin,
        Origin::Static,
        "the first one stays"
    );

    // The run goes on: check and plan work, the panicking plugin fails its own steps only.
    let f = site_with(300, &format!("{SUMMARY_CONFIG}[features.panicky]\n"));
    let selection = cloudattach_core::select(&f.config, &registry, f.site.info.version).unwrap();
    let checks =
        cloudattach_core::ops::check::run_checks(&registry, &f.config, &selection, &f.site, &[])
            .unwrap();
    for c in &checks {
        match c.id.as_str() {
            "panicky" => {
                assert_eq!(c.status, CheckStatus::Fail);
                assert!(
                    c.findings[0]
                        .message
                        .contains("boom in check, at the third device"),
                    "{:?}",
                    c.findings
                );
            }
            "tenant-attach" | "collection-summary" => {
                assert_ne!(c.status, CheckStatus::Fail, "{c:?}")
            }
            _ => {}
        }
    }
    let plan = cloudattach_core::ops::plan::make_plan(
        &registry,
        &f.config,
        &selection,
        &f.site,
        &NothingApplied,
        &Default::default(),
    )
    .unwrap();
    let step = |id: &str| plan.steps.iter().find(|s| s.plugin == id).unwrap().clone();
    assert_eq!(step("collection-summary").action, PlanAction::Enable);
    // Its check panicked too: a failed prerequisite check, which skips it before its plan.
    let panicky = step("panicky");
    assert_eq!(panicky.action, PlanAction::Skip);
    assert!(panicky.check_failed, "{panicky:?}");
    assert!(
        panicky.reason.as_deref().unwrap().contains("boom in check"),
        "{panicky:?}"
    );
}

#[test]
fn a_panic_in_any_step_is_a_failed_step_and_an_unfinished_upload_deletes_nothing() {
    let dir = plugin_dir(&[(&fixture("panicking"), "panicky")]);
    let mut registry = Registry::new();
    load_plugin_dirs(&mut registry, &[dir.path().to_path_buf()]);
    let plugin = &registry.get("panicky").expect("loaded").plugin;
    let host = MemoryHost::new(MemoryHost::sample_site())
        .with_devices((1..=10).map(device))
        .with_cloud();

    let check = plugin.check(&host, &Options::new());
    assert_eq!(check.status(), CheckStatus::Fail);
    let apply = plugin.apply(&host, &Options::new());
    assert!(!apply.ok);
    assert!(
        apply.findings[0].message.contains("panicking.rs:")
            && apply.findings[0]
                .message
                .contains("boom in apply, mid-upload"),
        "{apply:?}"
    );
    assert!(
        host.channel("ext/panicky").is_empty(),
        "the unfinished upload was dropped"
    );
    let sync = plugin
        .sync(&host, &Options::new(), SyncMode::Full)
        .unwrap_err();
    assert!(
        sync.message.contains("boom in sync, at record 5"),
        "{sync:?}"
    );
    assert!(host.channel("ext/panicky").is_empty());
    let status = plugin.status(&host).unwrap_err();
    assert!(status.message.contains("non-text payload"), "{status:?}");
    // Still alive and still answering.
    let ctx = ValidateContext::new(Environment::Public, SiteVersion(2303), false);
    assert!(plugin.validate(&Options::new(), &ctx).is_empty());
    assert_eq!(plugin.manifest().id, "panicky");
}

#[test]
fn two_libraries_with_one_id_name_both_files() {
    let dir = plugin_dir(&[
        (&fixture("builtin_co_management"), "a-co-management"),
        (&fixture("builtin_co_management"), "b-co-management"),
    ]);
    let mut registry = Registry::new();
    load_plugin_dirs(
        &mut registry,
        &[dir.path().to_path_buf(), dir.path().to_path_buf()],
    );
    assert_eq!(registry.len(), 1);
    assert_eq!(
        registry.load_failures.len(),
        1,
        "the directory given twice loads once: {:?}",
        registry.load_failures
    );
    let message = &registry.load_failures[0].message;
    assert!(
        message.contains(&dll("a-co-management")) && message.contains(&dll("b-co-management")),
        "{message}"
    );
    assert!(message.contains("registered twice"), "{message}");
}

#[test]
fn inspect_validates_a_library_and_returns_its_manifest() {
    let manifest = inspect(&collection_summary()).unwrap();
    assert_eq!(manifest.id, "collection-summary");
    assert_eq!(manifest.options.len(), 2);
    match inspect(&fixture("old_sdk")) {
        Err(LoadError::IncompatibleSdk { found, .. }) => assert_eq!(found, "0.0.9"),
        other => panic!("{:?}", other.map(|m| m.id)),
    }
    assert!(matches!(
        inspect(&fixture("not_a_plugin")),
        Err(LoadError::NoPlugin { .. })
    ));
    assert!(matches!(
        inspect(Path::new("/nonexistent/x.so")),
        Err(LoadError::Unreadable { .. })
    ));
}

/// Not a benchmark with assertions: prints what the boundary costs
/// (`cargo test -p cloudattach-core --test dynamic -- --ignored --nocapture boundary_figures`).
#[test]
#[ignore = "benchmark: prints figures, run with --ignored"]
fn boundary_figures() {
    let dir = plugin_dir(&[(&fixture("builtin_tenant_attach"), "tenant-attach")]);
    let started = Instant::now();
    let mut dynamic = Registry::new();
    load_plugin_dirs(&mut dynamic, &[dir.path().to_path_buf()]);
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;
    let linked = Registry::with_static_plugins().unwrap();
    let f = site_with(
        20_000,
        "[site]\npath = \"site\"\n[attach]\nsettings = \"custom\"\n[features.tenant-attach]\n",
    );
    let mut registry_times = vec![];
    for registry in [&linked, &dynamic] {
        let selection = cloudattach_core::select(&f.config, registry, f.site.info.version).unwrap();
        let ids = ["tenant-attach".to_string()];
        cloudattach_core::ops::check::run_checks(registry, &f.config, &selection, &f.site, &ids)
            .unwrap();
        let started = Instant::now();
        cloudattach_core::ops::check::run_checks(registry, &f.config, &selection, &f.site, &ids)
            .unwrap();
        registry_times.push(started.elapsed().as_secs_f64());
    }
    eprintln!(
        "load: {load_ms:.1} ms per library; tenant-attach check over 20,000 devices: linked {:.0} ms, loaded {:.0} ms ({:.0} devices/s across the boundary)",
        registry_times[0] * 1000.0,
        registry_times[1] * 1000.0,
        20_000.0 / registry_times[1]
    );
}

/// The cost of isolation: `check` (over a generated site) and a full `sync` (into the test kit's
/// in-memory cloud) of tenant attach loaded as a library, in this process and in its own, beside
/// the linked plugin; and the start-up cost of a plugin process. `BENCH_DEVICES` sets the size.
///
/// `BENCH_DEVICES=1000000 cargo test --release -p cloudattach-core --test dynamic process_boundary_figures -- --ignored --nocapture`
#[test]
#[ignore = "benchmark: prints figures, run with --ignored"]
fn process_boundary_figures() {
    use cloudattach_core::dynamic::{Isolation, load_plugin_dirs_with};
    let n: u64 = std::env::var("BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = plugin_dir(&[(&fixture("builtin_tenant_attach"), "tenant-attach")]);
    let time = |f: &mut dyn FnMut()| {
        let started = Instant::now();
        f();
        started.elapsed().as_secs_f64()
    };
    let mut isolated = Registry::new();
    let start_isolated = time(&mut || {
        load_plugin_dirs_with(
            &mut isolated,
            &[dir.path().to_path_buf()],
            &Isolation::default(),
        )
    });
    let mut in_process = Registry::new();
    let trusted = Isolation {
        in_process: vec!["tenant-attach".into()],
        ..Isolation::default()
    };
    let start_in_process =
        time(&mut || load_plugin_dirs_with(&mut in_process, &[dir.path().to_path_buf()], &trusted));
    let linked = Registry::with_static_plugins().unwrap();
    let f = site_with(
        n,
        "[site]\npath = \"site\"\n[attach]\nsettings = \"custom\"\n[features.tenant-attach]\n",
    );
    let host = MemoryHost::new(MemoryHost::sample_site())
        .with_devices((1..=n as i64).map(device))
        .with_cloud();
    eprintln!("{n} devices");
    eprintln!(
        "start: in its own process {:.1} ms (spawn, load, manifest); in this process {:.1} ms (the first load started a process too)",
        start_isolated * 1000.0,
        start_in_process * 1000.0
    );
    for (name, registry) in [
        ("linked", &linked),
        ("library, this process", &in_process),
        ("library, own process", &isolated),
    ] {
        let selection = cloudattach_core::select(&f.config, registry, f.site.info.version).unwrap();
        let ids = ["tenant-attach".to_string()];
        let check = time(&mut || {
            cloudattach_core::ops::check::run_checks(
                registry, &f.config, &selection, &f.site, &ids,
            )
            .unwrap();
        });
        let plugin = &registry.get("tenant-attach").unwrap().plugin;
        let sync = time(&mut || {
            plugin
                .sync(&host, &options(json!({})), SyncMode::Full)
                .unwrap();
        });
        eprintln!(
            "{name:<22} check {:>7.0} ms ({:>9.0} devices/s)   full sync {:>7.0} ms ({:>9.0} records/s)",
            check * 1000.0,
            n as f64 / check,
            sync * 1000.0,
            n as f64 / sync
        );
    }
}

#[test]
fn a_library_in_its_own_process_uploads_what_the_linked_plugin_uploads() {
    // Tenant attach pushes its records while it streams the devices: uploads cross inside a
    // device stream.
    let dir = plugin_dir(&[(&fixture("builtin_tenant_attach"), "tenant-attach")]);
    let mut isolated = Registry::new();
    load_plugin_dirs(&mut isolated, &[dir.path().to_path_buf()]);
    let linked = Registry::with_static_plugins().unwrap();
    let records = |registry: &Registry| {
        let host = MemoryHost::new(MemoryHost::sample_site())
            .with_devices((1..=2_000).map(device))
            .with_cloud();
        let stats = registry
            .get("tenant-attach")
            .unwrap()
            .plugin
            .sync(&host, &options(json!({})), SyncMode::Full)
            .unwrap()
            .unwrap();
        (stats.sent, host.channel("devices"))
    };
    let (sent, held) = records(&isolated);
    assert_eq!((sent, held.clone()), records(&linked));
    assert!(sent > 1_000, "{sent}");
    assert_eq!(held.len() as u64, sent);
}
