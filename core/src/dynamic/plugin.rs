//! The proxy plugin: [`DynamicPlugin`] implements [`Plugin`] over a library's root module.

use super::bridge::HostBridge;
use abi_stable::std_types::{RErr, ROk, RStr};
use cloudattach_plugin_protocol::{
    ActionRequest, ExplainRequest, FfiHost_TO, Op, OptionsRequest, PlanRequest, PluginModuleRef,
    RRef, SyncRequest, TD_Opaque, ValidateRequest,
};
use cloudattach_sdk::dynamic::{failed_finding, failed_step};
use cloudattach_sdk::{
    ActionCall, ActionError, ActionResult, ApplyOutcome, CheckReport, Device, Explanation, Finding,
    Host, HostError, Manifest, Options, PlanDecision, Plugin, StatusReport, SyncMode, SyncStats,
    ValidateContext,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// A plugin in a dynamic library: [`Plugin`] over its root module. Every step crosses the
/// boundary as JSON; a step the library cannot run (it panicked, or answered something
/// unreadable) becomes a failed step with the message.
pub struct DynamicPlugin {
    module: PluginModuleRef,
    manifest: Manifest,
    path: PathBuf,
    sdk_version: String,
}

impl DynamicPlugin {
    /// A loaded and checked library's plugin.
    pub(super) fn new(
        module: PluginModuleRef,
        manifest: Manifest,
        path: PathBuf,
        sdk_version: String,
    ) -> Self {
        DynamicPlugin {
            module,
            manifest,
            path,
            sdk_version,
        }
    }

    /// The manifest read at load time.
    pub(super) fn manifest_ref(&self) -> &Manifest {
        &self.manifest
    }

    /// The library's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The SDK (protocol) version the library was built against.
    pub fn sdk_version(&self) -> &str {
        &self.sdk_version
    }

    /// Runs one step in the library and reads its answer.
    fn call<T: DeserializeOwned>(
        &self,
        op: Op,
        request: &impl Serialize,
        host: Option<&dyn Host>,
    ) -> Result<T, String> {
        let request =
            serde_json::to_string(request).map_err(|e| format!("cannot write the request: {e}"))?;
        let bridge = HostBridge::new(host);
        let ffi_host = FfiHost_TO::from_ptr(RRef::new(&bridge), TD_Opaque);
        let answer = (self.module.call())(
            RStr::from_str(op.as_str()),
            RStr::from_str(&request),
            ffi_host,
        );
        match answer {
            ROk(json) => serde_json::from_str(json.as_str())
                .map_err(|e| format!("its `{}` answer is not readable: {e}", op.as_str())),
            RErr(message) => Err(message.into()),
        }
    }

    fn id(&self) -> &str {
        &self.manifest.id
    }

    /// Runs one step by name with a JSON request and returns the library's JSON answer (the
    /// plugin host process relays them as they are).
    pub(super) fn call_raw(
        &self,
        op: &str,
        request: &str,
        host: Option<&dyn Host>,
    ) -> Result<String, String> {
        let bridge = HostBridge::new(host);
        let ffi_host = FfiHost_TO::from_ptr(RRef::new(&bridge), TD_Opaque);
        match (self.module.call())(RStr::from_str(op), RStr::from_str(request), ffi_host) {
            ROk(json) => Ok(json.into()),
            RErr(message) => Err(message.into()),
        }
    }
}

/// The [`Plugin`] of a proxy over a plugin elsewhere (a loaded library, a child process): each
/// step crosses as its request and answer in JSON through the type's own `call`, with its
/// `manifest`, `path` and `id`; a step that cannot run becomes a failed step with the message.
macro_rules! plugin_over_calls {
    ($t:ty) => {
impl Plugin for $t {
    fn manifest(&self) -> Manifest {
        self.manifest.clone()
    }

    fn validate(&self, options: &Options, ctx: &ValidateContext) -> Vec<Finding> {
        let request = ValidateRequest {
            options: options.clone(),
            environment: ctx.environment,
            site_version: ctx.site_version,
            default_settings: ctx.default_settings,
        };
        self.call(Op::Validate, &request, None)
            .unwrap_or_else(|e| vec![failed_finding(self.id(), &e)])
    }

    fn check(&self, host: &dyn Host, options: &Options) -> CheckReport {
        let request = OptionsRequest {
            options: options.clone(),
        };
        self.call(Op::Check, &request, Some(host))
            .unwrap_or_else(|e| {
                let mut report = CheckReport::default();
                report.push(failed_finding(self.id(), &e));
                report
            })
    }

    fn settings(&self, options: &Options) -> serde_json::Value {
        let request = OptionsRequest {
            options: options.clone(),
        };
        self.call(Op::Settings, &request, None).unwrap_or_else(|e| {
            tracing::error!(
                "plugin `{}` ({}): settings: {e}",
                self.id(),
                self.path.display()
            );
            serde_json::Value::Null
        })
    }

    fn plan(
        &self,
        host: &dyn Host,
        options: &Options,
        applied: Option<&serde_json::Value>,
    ) -> PlanDecision {
        let request = PlanRequest {
            options: options.clone(),
            applied: applied.cloned(),
        };
        self.call(Op::Plan, &request, Some(host))
            .unwrap_or_else(|e| PlanDecision::skip(format!("plugin `{}` failed: {e}", self.id())))
    }

    fn apply(&self, host: &dyn Host, options: &Options) -> ApplyOutcome {
        let request = OptionsRequest {
            options: options.clone(),
        };
        self.call(Op::Apply, &request, Some(host))
            .unwrap_or_else(|e| failed_step(self.id(), &e))
    }

    fn sync(
        &self,
        host: &dyn Host,
        options: &Options,
        mode: SyncMode,
    ) -> Result<Option<SyncStats>, HostError> {
        let request = SyncRequest {
            options: options.clone(),
            mode,
        };
        self.call::<Result<Option<SyncStats>, HostError>>(Op::Sync, &request, Some(host))
            .unwrap_or_else(|e| {
                Err(HostError::new(
                    "plugin-failed",
                    format!("plugin `{}`: {e}", self.id()),
                ))
            })
    }

    fn status(&self, host: &dyn Host) -> Result<StatusReport, HostError> {
        self.call::<Result<StatusReport, HostError>>(
            Op::Status,
            &OptionsRequest::default(),
            Some(host),
        )
        .unwrap_or_else(|e| {
            Err(HostError::new(
                "plugin-failed",
                format!("plugin `{}`: {e}", self.id()),
            ))
        })
    }

    fn disable(&self, host: &dyn Host) -> ApplyOutcome {
        self.call(Op::Disable, &OptionsRequest::default(), Some(host))
            .unwrap_or_else(|e| failed_step(self.id(), &e))
    }

    fn serve_action(
        &self,
        host: &dyn Host,
        options: &Options,
        call: &ActionCall,
    ) -> Result<ActionResult, ActionError> {
        let request = ActionRequest {
            options: options.clone(),
            call: serde_json::to_value(call).unwrap_or_default(),
        };
        self.call::<Result<ActionResult, ActionError>>(Op::Action, &request, Some(host))
            .unwrap_or_else(|e| {
                Err(ActionError::new(
                    "plugin-failed",
                    format!("plugin `{}`: {e}", self.id()),
                ))
            })
    }

    fn explain_device(
        &self,
        host: &dyn Host,
        options: &Options,
        enabled: bool,
        device: &Device,
    ) -> Option<Explanation> {
        let request = ExplainRequest {
            options: options.clone(),
            enabled,
            device: device.clone(),
        };
        self.call::<Option<Explanation>>(Op::Explain, &request, Some(host))
            .unwrap_or_else(|e| {
                Some(Explanation::new(
                    self.id().replace('-', "_"),
                    serde_json::json!({ "error": format!("plugin `{}`: {e}", self.id()) }),
                ))
            })
    }
}
    };
}

pub(super) use plugin_over_calls;

plugin_over_calls!(DynamicPlugin);
