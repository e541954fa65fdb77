//! The plugin runner: every call into a plugin goes through here. It
//!
//! - catches a panic, so one plugin never takes the run down, and maps it to a diagnostic with a
//!   stable code (`plugin-panic`), in the shape the call returns (a failed finding, outcome or
//!   host error);
//! - gives the plugin its own view of the host ([`PluginHost`]), which knows which plugin it
//!   serves: the uploads it opens are recorded as that plugin's channels;
//! - times each call (`-v` shows `plugin <id>: <call> took … ms`).
//!
//! Static and dynamic plugins are called the same way: a dynamic plugin is a [`Plugin`] proxy.

use crate::host::OwnedHost;
use cloudattach_sdk::{
    ActionCall, ActionError, ActionResult, ApplyOutcome, CheckReport, CollectionInfo, Device,
    DeviceParts, Environment, Explanation, Finding, Host, HostError, Manifest, Method, Options,
    PlanDecision, Plugin, Record, RecordSink, SiteInfo, StatusReport, SyncMode, SyncStats,
    ValidateContext,
};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

/// The code of the diagnostic a panicking plugin gets.
pub const PANIC_CODE: &str = "plugin-panic";

pub use cloudattach_sdk::panic_message;

/// Runs `f` for plugin `id`'s `call`, timed; a panic becomes `Err("plugin {id} panicked: …")`.
fn guarded<T>(id: &str, call: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    let started = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(f))
        .map_err(|p| format!("plugin {id} panicked: {}", panic_message(p.as_ref())));
    tracing::info!(
        "plugin {id}: {call} took {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    result
}

/// Reads a plugin's manifest (once, when it is registered). A panic is an error naming it.
pub fn manifest_of(plugin: &dyn Plugin) -> Result<Manifest, String> {
    catch_unwind(AssertUnwindSafe(|| plugin.manifest()))
        .map_err(|p| format!("its manifest() panicked: {}", panic_message(p.as_ref())))
}

/// Calls into one plugin. Cheap to make: borrow one per call site.
#[derive(Clone, Copy)]
pub struct Runner<'p> {
    id: &'p str,
    plugin: &'p dyn Plugin,
}

impl<'p> Runner<'p> {
    /// A runner for `plugin`, registered as `id`.
    pub fn new(id: &'p str, plugin: &'p dyn Plugin) -> Self {
        Runner { id, plugin }
    }

    /// The plugin's id.
    pub fn id(&self) -> &'p str {
        self.id
    }

    fn view<'h>(&self, host: &'h dyn OwnedHost) -> PluginHost<'h>
    where
        'p: 'h,
    {
        PluginHost {
            base: host,
            plugin: self.id,
        }
    }

    /// [`Plugin::validate`]: a panic is one error finding.
    pub fn validate(&self, options: &Options, ctx: &ValidateContext) -> Vec<Finding> {
        guarded(self.id, "validate", || self.plugin.validate(options, ctx))
            .unwrap_or_else(|m| vec![Finding::error(PANIC_CODE, m)])
    }

    /// [`Plugin::check`]: a panicking plugin fails its own check.
    pub fn check(&self, host: &dyn OwnedHost, options: &Options) -> CheckReport {
        let host = self.view(host);
        guarded(self.id, "check", || self.plugin.check(&host, options)).unwrap_or_else(|m| {
            let mut r = CheckReport::default();
            r.push(Finding::error(PANIC_CODE, m));
            r
        })
    }

    /// [`Plugin::settings`]: a panic is an error finding.
    pub fn settings(&self, options: &Options) -> Result<serde_json::Value, Finding> {
        guarded(self.id, "settings", || self.plugin.settings(options))
            .map_err(|m| Finding::error(PANIC_CODE, m))
    }

    /// [`Plugin::plan`]: a panic plans a skip.
    pub fn plan(
        &self,
        host: &dyn OwnedHost,
        options: &Options,
        applied: Option<&serde_json::Value>,
    ) -> PlanDecision {
        let host = self.view(host);
        guarded(self.id, "plan", || {
            self.plugin.plan(&host, options, applied)
        })
        .unwrap_or_else(|_| {
            PlanDecision::skip(format!(
                "plugin {} panicked while planning; see the log above",
                self.id
            ))
        })
    }

    /// [`Plugin::apply`]: a panic is a failed outcome.
    pub fn apply(&self, host: &dyn OwnedHost, options: &Options) -> ApplyOutcome {
        let host = self.view(host);
        guarded(self.id, "apply", || self.plugin.apply(&host, options))
            .unwrap_or_else(|m| ApplyOutcome::failed(PANIC_CODE, m))
    }

    /// [`Plugin::sync`]: a panic is a host error.
    pub fn sync(
        &self,
        host: &dyn OwnedHost,
        options: &Options,
        mode: SyncMode,
    ) -> Result<Option<SyncStats>, HostError> {
        let host = self.view(host);
        guarded(self.id, "sync", || self.plugin.sync(&host, options, mode))
            .unwrap_or_else(|m| Err(HostError::new(PANIC_CODE, m)))
    }

    /// [`Plugin::status`]: a panic is a host error.
    pub fn status(&self, host: &dyn OwnedHost) -> Result<StatusReport, HostError> {
        let host = self.view(host);
        guarded(self.id, "status", || self.plugin.status(&host))
            .unwrap_or_else(|m| Err(HostError::new(PANIC_CODE, m)))
    }

    /// [`Plugin::serve_action`], only with the proof that the request passed the whole
    /// authorization chain ([`crate::access::Decision::authorized`]): the plugin never sees a
    /// refused request. A panic is a failed action.
    pub fn serve_action(
        &self,
        host: &dyn OwnedHost,
        options: &Options,
        call: &ActionCall,
        _authorized: &crate::access::Authorized,
    ) -> Result<ActionResult, ActionError> {
        let host = self.view(host);
        guarded(self.id, "serve_action", || {
            self.plugin.serve_action(&host, options, call)
        })
        .unwrap_or_else(|m| Err(ActionError::new(PANIC_CODE, m)))
    }

    /// [`Plugin::explain_device`]: a panic is a section carrying the error.
    pub fn explain_device(
        &self,
        host: &dyn OwnedHost,
        options: &Options,
        enabled: bool,
        device: &Device,
    ) -> Option<Explanation> {
        let host = self.view(host);
        guarded(self.id, "explain_device", || {
            self.plugin.explain_device(&host, options, enabled, device)
        })
        .unwrap_or_else(|m| {
            Some(Explanation::new(
                self.id.replace('-', "_"),
                serde_json::json!({ "error": m }),
            ))
        })
    }

    /// [`Plugin::disable`]: a panic is a failed outcome.
    pub fn disable(&self, host: &dyn OwnedHost) -> ApplyOutcome {
        let host = self.view(host);
        guarded(self.id, "disable", || self.plugin.disable(&host))
            .unwrap_or_else(|m| ApplyOutcome::failed(PANIC_CODE, m))
    }
}

/// One plugin's view of the host: every [`Host`] method is forwarded to the host underneath,
/// except that an upload is opened on behalf of this plugin.
pub struct PluginHost<'h> {
    base: &'h dyn OwnedHost,
    plugin: &'h str,
}

impl Host for PluginHost<'_> {
    fn site(&self) -> &SiteInfo {
        self.base.site()
    }
    fn environment(&self) -> Environment {
        self.base.environment()
    }
    fn for_each_device(&self, visit: &mut dyn FnMut(&Device)) -> Result<(), HostError> {
        self.base.for_each_device(visit)
    }
    fn for_each_device_with(
        &self,
        parts: DeviceParts,
        visit: &mut dyn FnMut(&Device),
    ) -> Result<(), HostError> {
        self.base.for_each_device_with(parts, visit)
    }
    fn collection(&self, id: &str) -> Option<CollectionInfo> {
        self.base.collection(id)
    }
    fn collections(&self) -> Vec<CollectionInfo> {
        self.base.collections()
    }
    fn is_member(&self, collection_id: &str, resource_id: i64) -> bool {
        self.base.is_member(collection_id, resource_id)
    }
    fn memberships(&self, resource_id: i64) -> Vec<cloudattach_sdk::DeviceMembership> {
        self.base.memberships(resource_id)
    }
    fn device_events(
        &self,
        resource_id: i64,
        since: Option<&str>,
    ) -> Result<Vec<cloudattach_sdk::TimelineEvent>, HostError> {
        self.base.device_events(resource_id, since)
    }
    fn feature_options(&self, plugin_id: &str) -> Option<Options> {
        self.base.feature_options(plugin_id)
    }
    fn is_uploaded(&self, device: &Device) -> bool {
        self.base.is_uploaded(device)
    }
    fn cloud(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, HostError> {
        self.base.cloud(method, path, body)
    }
    fn open_sync(
        &self,
        channel: &str,
        mode: SyncMode,
    ) -> Result<Box<dyn RecordSink + '_>, HostError> {
        self.base.open_sync_as(self.plugin, channel, mode)
    }
    fn upload_devices(
        &self,
        channel: &str,
        mode: SyncMode,
        parts: DeviceParts,
        produce: &mut dyn FnMut(&Device) -> Option<Record>,
    ) -> Result<SyncStats, HostError> {
        self.base
            .upload_devices_as(self.plugin, channel, mode, parts, produce)
    }
    // `sync_records` is not forwarded: its default opens the upload through `open_sync` above,
    // with this plugin as the owner, where the base's would open it without.
    fn log(&self, message: &str) {
        self.base.log(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{CloudPort, SiteHost};
    use crate::site::Site;
    use std::sync::{Arc, Mutex};

    struct Panicky;
    impl Plugin for Panicky {
        fn manifest(&self) -> Manifest {
            Manifest::new("panicky", "Panicky", "0.1.0")
        }
        fn check(&self, _host: &dyn Host, _options: &Options) -> CheckReport {
            panic!("boom in check")
        }
        fn apply(&self, host: &dyn Host, _options: &Options) -> ApplyOutcome {
            // Opens an upload, so the test sees who the host thinks is uploading.
            let sink = host.open_sync("ext/panicky", SyncMode::Delta);
            assert!(sink.is_err(), "the recording port refuses");
            panic!("{}", String::from("boom in apply"))
        }
    }

    /// Records the owner of every upload opened through it.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, String)>>);
    impl CloudPort for Recorder {
        fn cloud(
            &self,
            _m: Method,
            _p: &str,
            _b: Option<&serde_json::Value>,
        ) -> Result<serde_json::Value, HostError> {
            Err(HostError::offline())
        }
        fn open_sync(
            &self,
            owner: &str,
            channel: &str,
            _mode: SyncMode,
        ) -> Result<Box<dyn RecordSink + '_>, HostError> {
            self.0
                .lock()
                .unwrap()
                .push((owner.to_string(), channel.to_string()));
            Err(HostError::new("refused", "recording only"))
        }
        fn log(&self, _message: &str) {}
    }

    fn sample_site() -> Arc<Site> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.keep();
        std::fs::write(
            path.join("site.toml"),
            "code = \"PS1\"\nname = \"Primary\"\nversion = \"2303\"\nhierarchy_id = \"6f1c1f0e-3d1b-4b36-9a51-0f3c2e6f8a10\"\nservice_connection_point = \"online\"\nadministration_service = true\nentra_user_discovery = true\nad_user_discovery = true\n",
        )
        .unwrap();
        std::fs::write(path.join("devices.jsonl"), "").unwrap();
        std::fs::write(path.join("collections.json"), "[]").unwrap();
        Arc::new(Site::open(&path).unwrap())
    }

    #[test]
    fn panics_become_diagnostics_and_uploads_name_their_plugin() {
        let site = sample_site();
        let port = Arc::new(Recorder::default());
        let host = SiteHost::new(site, Environment::Public, Default::default(), None)
            .with_cloud(port.clone());
        let runner = Runner::new("panicky", &Panicky);
        let report = runner.check(&host, &Options::new());
        assert_eq!(report.findings[0].code, PANIC_CODE);
        assert_eq!(
            report.findings[0].message,
            "plugin panicky panicked: boom in check"
        );
        let outcome = runner.apply(&host, &Options::new());
        assert!(!outcome.ok);
        assert_eq!(
            outcome.findings[0].message,
            "plugin panicky panicked: boom in apply"
        );
        assert_eq!(
            port.0.lock().unwrap().as_slice(),
            &[("panicky".to_string(), "ext/panicky".to_string())]
        );
        // The default plan and status go through the guard too.
        assert_eq!(
            runner.plan(&host, &Options::new(), None).action.as_str(),
            "enable"
        );
    }
}
