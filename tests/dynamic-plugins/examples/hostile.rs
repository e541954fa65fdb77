//! A hostile plugin for the process-isolation tests: in one lifecycle step it aborts, segfaults,
//! exits with code 77, overflows its stack, allocates past any limit, loops forever, sleeps for
//! an hour, panics twice, or prints on standard output. Which, and in which step, it reads from
//! its own file name — `hostile__<how>__<step>.so` — as the plugin host process was given it
//! (`--library FILE`), so one build serves every case.
// The segfault needs a raw write to address 0.
#![allow(unsafe_code)]

use cloudattach_sdk::*;

struct Hostile;

/// `(how, step)` from the library's file name.
fn behaviour() -> (String, String) {
    let mut args = std::env::args().skip_while(|a| a != "--library");
    let file = args.nth(1).unwrap_or_default();
    let stem = std::path::Path::new(&file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let mut parts = stem.split("__").skip(1);
    (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    )
}

#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    let frame = std::hint::black_box([n; 256]);
    recurse(n + 1).wrapping_add(frame[0])
}

struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("the second panic, while unwinding the first");
    }
}

fn act(step: &str) {
    let (how, at) = behaviour();
    if at != step {
        return;
    }
    match how.as_str() {
        "abort" => std::process::abort(),
        "segfault" => unsafe { std::ptr::null_mut::<u8>().write_volatile(1) },
        "exit" => std::process::exit(77),
        "stack" => {
            std::hint::black_box(recurse(0));
        }
        "alloc" => {
            let mut held: Vec<Vec<u8>> = Vec::new();
            loop {
                held.push(vec![1u8; 64 << 20]);
                std::hint::black_box(&held);
            }
        }
        "loop" => loop {
            std::hint::spin_loop();
        },
        "sleep" => std::thread::sleep(std::time::Duration::from_secs(3600)),
        "doublepanic" => {
            let _guard = PanicsOnDrop;
            panic!("the first panic");
        }
        "print" => println!("this line is not the plugin protocol"),
        _ => {}
    }
}

impl Plugin for Hostile {
    fn manifest(&self) -> Manifest {
        act("manifest");
        Manifest::new("hostile", "Hostile on purpose", "0.0.1").action(ActionDecl::new(
            "poke",
            "Poke",
            ActionTarget::Device,
            &[actions::SITE_READ],
            &[],
        ))
    }
    fn validate(&self, _options: &Options, _ctx: &ValidateContext) -> Vec<Finding> {
        act("validate");
        vec![]
    }
    fn check(&self, host: &dyn Host, _options: &Options) -> CheckReport {
        act("check");
        let mut n = 0u64;
        let _ = host.for_each_device(&mut |_| n += 1);
        let mut r = CheckReport::default();
        r.push(Finding::info("devices", format!("{n} devices")));
        r
    }
    fn plan(
        &self,
        _host: &dyn Host,
        _options: &Options,
        _applied: Option<&serde_json::Value>,
    ) -> PlanDecision {
        act("plan");
        PlanDecision::new(PlanAction::Enable)
    }
    fn apply(&self, _host: &dyn Host, _options: &Options) -> ApplyOutcome {
        act("apply");
        ApplyOutcome::ok()
    }
    fn sync(
        &self,
        host: &dyn Host,
        _options: &Options,
        mode: SyncMode,
    ) -> Result<Option<SyncStats>, HostError> {
        let mut records = (0..3).map(|i| {
            if i == 1 {
                act("sync");
            }
            Record {
                key: i.to_string(),
                value: serde_json::json!({ "i": i }),
            }
        });
        host.sync_records("ext/hostile", &mut records, mode)
            .map(Some)
    }
    fn status(&self, _host: &dyn Host) -> Result<StatusReport, HostError> {
        act("status");
        Ok(StatusReport::new(true))
    }
    fn disable(&self, _host: &dyn Host) -> ApplyOutcome {
        act("disable");
        ApplyOutcome::ok()
    }
    fn serve_action(
        &self,
        _host: &dyn Host,
        _options: &Options,
        _call: &ActionCall,
    ) -> Result<ActionResult, ActionError> {
        act("action");
        Ok(ActionResult::Document {
            document: serde_json::json!({"poked": true}),
        })
    }
}

cloudattach_sdk::export_plugin!(Hostile);
