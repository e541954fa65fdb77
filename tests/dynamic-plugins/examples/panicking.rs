//! A hostile plugin: it panics in its steps — inside the device stream, in the middle of an
//! upload, and plainly. The host must turn each panic into a failed step and carry on.

use cloudattach_sdk::*;

struct Panicky;

fn everywhere(options: &Options) -> bool {
    options.get("panic_in").and_then(|v| v.as_str()) != Some("apply-and-after")
}

impl Plugin for Panicky {
    fn manifest(&self) -> Manifest {
        Manifest::new("panicky", "Panics on purpose", "0.0.1").option(OptionSpec::choice(
            "panic_in",
            &["every-step", "apply-and-after"],
            Some("every-step"),
            "Where to panic: every step, or only from apply on (check and plan pass)",
        ))
    }

    fn check(&self, host: &dyn Host, options: &Options) -> CheckReport {
        if !everywhere(options) {
            return CheckReport::default();
        }
        let mut seen = 0;
        let _ = host.for_each_device(&mut |_| {
            seen += 1;
            if seen == 3 {
                panic!("boom in check, at the third device");
            }
        });
        CheckReport::default()
    }

    fn plan(
        &self,
        _host: &dyn Host,
        options: &Options,
        _applied: Option<&serde_json::Value>,
    ) -> PlanDecision {
        if !everywhere(options) {
            return PlanDecision::new(PlanAction::Enable);
        }
        panic!("boom in plan")
    }

    fn apply(&self, host: &dyn Host, _options: &Options) -> ApplyOutcome {
        // One record pushed, then a panic before `finish`: the upload must be dropped unfinished.
        if let Ok(mut sink) = host.open_sync("ext/panicky", SyncMode::Full) {
            let _ = sink.push(Record {
                key: "1".into(),
                value: serde_json::json!({ "n": 1 }),
            });
        }
        panic!("boom in apply, mid-upload")
    }

    fn sync(
        &self,
        host: &dyn Host,
        _options: &Options,
        mode: SyncMode,
    ) -> Result<Option<SyncStats>, HostError> {
        let mut records = (0..10).map(|i| {
            if i == 5 {
                panic!("boom in sync, at record 5");
            }
            Record {
                key: i.to_string(),
                value: serde_json::json!({ "i": i }),
            }
        });
        host.sync_records("ext/panicky", &mut records, mode)
            .map(Some)
    }

    fn status(&self, _host: &dyn Host) -> Result<StatusReport, HostError> {
        std::panic::panic_any(42_u32)
    }
}

cloudattach_sdk::export_plugin!(Panicky);
