//! The `rbac-authority` plugin: sets who authorizes cloud-console requests that touch the site —
//! Configuration Manager RBAC enforced in addition to Intune RBAC (the default), or Intune alone
//! (when the tenant uses Intune RBAC).
//!
//! The option `enforce_configmgr_rbac` is the wizard's checkbox "Enforce Configuration Manager
//! RBAC for cloud console requests that interact with Configuration Manager". Clearing it makes
//! Intune the only authority only once the tenant's "Use Intune RBAC" toggle is also on; the
//! cloud reports the result as `effective_authority` in the feature's status.

use cloudattach_sdk::gateway::HierarchyStatus;
use cloudattach_sdk::{
    ApplyOutcome, CheckReport, Environment, Finding, Host, Manifest, Method, OptionSpec, Options,
    PlanDecision, Plugin, SiteVersion, put_feature, settings_action,
};
use serde_json::{Value, json};

/// The plugin id.
pub const ID: &str = "rbac-authority";

/// `effective_authority` when Configuration Manager RBAC is enforced in addition to Intune's.
pub const AUTHORITY_BOTH: &str = "configmgr+intune";

/// `effective_authority` when Intune RBAC alone authorizes requests.
pub const AUTHORITY_INTUNE: &str = "intune";

/// Reads `enforce_configmgr_rbac`; absent means the default, `true` (the checkbox is checked by
/// default).
pub fn enforce_configmgr_rbac(options: &Options) -> bool {
    options
        .get("enforce_configmgr_rbac")
        .and_then(Value::as_bool)
        .unwrap_or(true)
}

/// The effective authority: Intune alone if and only if the checkbox is cleared
/// **and** the tenant's "Use Intune RBAC" toggle is on; otherwise both.
pub fn effective_authority(
    enforce_configmgr_rbac: bool,
    tenant_uses_intune_rbac: bool,
) -> &'static str {
    if !enforce_configmgr_rbac && tenant_uses_intune_rbac {
        AUTHORITY_INTUNE
    } else {
        AUTHORITY_BOTH
    }
}

const TOGGLE_OFF_WARNING: &str = "the tenant's \"Use Intune RBAC\" toggle is off, so Configuration \
     Manager RBAC is still enforced: turn it on in the admin center (Tenant administration, \
     <cloud>/admin/tenant) or with `cloudattach tenant rbac --set on` (a Global or Intune \
     Administrator; it applies to every hierarchy of the tenant) to make Intune the only authority";

/// The RBAC authority plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct RbacAuthority;

cloudattach_sdk::register_plugin!(RbacAuthority);

impl Plugin for RbacAuthority {
    fn manifest(&self) -> Manifest {
        Manifest::new(ID, "RBAC authority", env!("CARGO_PKG_VERSION"))
            .description(
                "Sets who authorizes cloud console requests that touch the site: Configuration \
                 Manager RBAC enforced (default) or Intune alone",
            )
            .depends_on(&["tenant-attach"])
            .environments(&[Environment::Public, Environment::Usgov])
            .min_site_version(SiteVersion(2207))
            .in_default_settings()
            .option(OptionSpec::boolean(
                "enforce_configmgr_rbac",
                true,
                "Enforce Configuration Manager RBAC for cloud console requests that interact with \
                 Configuration Manager (in addition to Intune RBAC)",
            ))
    }

    fn check(&self, _host: &dyn Host, options: &Options) -> CheckReport {
        let mut report = CheckReport::default();
        let enforce = enforce_configmgr_rbac(options);
        report
            .data
            .insert("enforce_configmgr_rbac".into(), enforce.into());
        report.push(Finding::info(
            "authority-rule",
            "cloud console requests are authorized by Intune RBAC alone only when \
             enforce_configmgr_rbac is false and the tenant's \"Use Intune RBAC\" toggle is on; \
             otherwise Configuration Manager RBAC is enforced as well",
        ));
        if enforce {
            report
                .data
                .insert("expected_authority".into(), AUTHORITY_BOTH.into());
            report.push(Finding::info(
                "configmgr-rbac-enforced",
                "Configuration Manager RBAC will be enforced in addition to Intune RBAC: cloud \
                 users need Configuration Manager permissions on the devices' collections",
            ));
        } else {
            report.push(Finding::warning(
                "intune-rbac-toggle-required",
                "enforce_configmgr_rbac = false makes Intune the only authority only once the \
                 tenant's \"Use Intune RBAC\" toggle is on (Intune Roles/Update permission; it \
                 applies to every hierarchy of the tenant); until then Configuration Manager RBAC \
                 is still enforced",
            ));
        }
        report
    }

    fn settings(&self, options: &Options) -> Value {
        json!({ "enforce_configmgr_rbac": enforce_configmgr_rbac(options) })
    }

    fn plan(&self, _host: &dyn Host, options: &Options, applied: Option<&Value>) -> PlanDecision {
        let wanted = self.settings(options);
        let decision = PlanDecision::new(settings_action(&wanted, applied));
        decision.with_detail(if enforce_configmgr_rbac(options) {
            "enforce Configuration Manager RBAC with Intune RBAC"
        } else {
            "Intune RBAC only (once the tenant's \"Use Intune RBAC\" toggle is on)"
        })
    }

    fn apply(&self, host: &dyn Host, options: &Options) -> ApplyOutcome {
        let enforce = enforce_configmgr_rbac(options);
        if let Err(e) = put_feature(host, ID, &self.settings(options)) {
            return ApplyOutcome::failed(e.code, e.message);
        }
        let mut outcome = ApplyOutcome::ok();
        // The setting is stored; reading the authority back only tells the admin whether it
        // took effect, so a failed read is a warning, not a failed step.
        let authority = host.cloud(Method::Get, "status", None).map(|status| {
            HierarchyStatus::entry_of(&status, ID)?
                .extra
                .get("effective_authority")
                .and_then(Value::as_str)
                .map(String::from)
        });
        match authority {
            Ok(Some(authority)) => {
                outcome.findings.push(Finding::info(
                    "effective-authority",
                    format!("effective authority: {authority}"),
                ));
                if !enforce && authority == AUTHORITY_BOTH {
                    outcome.findings.push(Finding::warning(
                        "intune-rbac-toggle-off",
                        TOGGLE_OFF_WARNING,
                    ));
                }
            }
            Ok(None) => outcome.findings.push(Finding::warning(
                "effective-authority-unknown",
                "the cloud's status does not report the effective authority",
            )),
            Err(e) => outcome.findings.push(Finding::warning(
                "effective-authority-unknown",
                format!("could not read the effective authority back: {}", e.message),
            )),
        }
        outcome
    }
}
