//! The commands that talk to the cloud: apply, status, sync, disable, detach, cloud serve.

use crate::render::{Table, Tone, colour_enabled};
use crate::{Context, Failure, Outcome, Output, input, print_json};
use cloudattach_cloud::{RunningCloud, ServeOptions};
use cloudattach_core::apply::{self, StepStatus};
use cloudattach_core::session::{AppPolicy, Progress, Reporter, Session, SessionError};
use cloudattach_core::state::{StateLock, StateStore};
use cloudattach_core::{Endpoint, orchestrator};
use cloudattach_sdk::{PlanAction, SyncMode, SyncStats, thousands};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{BufRead, IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Messages and progress on stderr: a progress bar on a terminal, plain lines otherwise.
pub struct CliReporter {
    bars: bool,
}

impl CliReporter {
    pub fn new() -> Self {
        CliReporter {
            bars: std::io::stderr().is_terminal(),
        }
    }
}

impl Reporter for CliReporter {
    fn say(&self, message: &str) {
        eprintln!("{message}");
    }
    fn warn(&self, message: &str) {
        eprintln!("warning: {message}");
    }
    fn progress(&self, channel: &str, expected: Option<u64>) -> Box<dyn Progress> {
        if self.bars {
            let bar = match expected {
                Some(n) => ProgressBar::new(n),
                None => ProgressBar::no_length(),
            };
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>14} [{bar:30}] {human_pos} records  {per_sec}  eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(channel.to_string());
            Box::new(BarProgress(bar))
        } else {
            Box::new(LineProgress {
                channel: channel.to_string(),
                started: Instant::now(),
                sent: Mutex::new((0, 0)),
            })
        }
    }
}

struct BarProgress(ProgressBar);

impl Progress for BarProgress {
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
    fn finish(&self, _stats: &SyncStats) {
        self.0.finish_and_clear();
    }
}

/// Plain log lines: one per 50,000 records, and one at the end when anything was sent.
struct LineProgress {
    channel: String,
    started: Instant,
    sent: Mutex<(u64, u64)>,
}

impl Progress for LineProgress {
    fn advance(&self, n: u64) {
        let mut s = self.sent.lock().expect("progress lock");
        s.0 += n;
        if s.0 / 50_000 > s.1 / 50_000 {
            let rate = s.0 as f64 / self.started.elapsed().as_secs_f64().max(0.001);
            eprintln!(
                "{}: {} records sent ({:.0}/s)",
                self.channel,
                thousands(s.0),
                rate
            );
        }
        s.1 = s.0;
    }
    fn finish(&self, stats: &SyncStats) {
        if stats.sent > 0 {
            let secs = self.started.elapsed().as_secs_f64();
            eprintln!(
                "{}: sent {} of {} records in {:.1}s ({:.0}/s)",
                self.channel,
                thousands(stats.sent),
                thousands(stats.total),
                secs,
                stats.sent as f64 / secs.max(0.001)
            );
        }
    }
}

/// A live connection to the cloud: the runtime, the embedded cloud if any, the session.
pub struct Connected {
    pub session: Arc<Session>,
    pub state: Arc<Mutex<StateStore>>,
    cloud: Option<RunningCloud>,
    runtime: tokio::runtime::Runtime,
    _lock: Option<StateLock>,
}

impl Connected {
    fn close(self) {
        let Connected {
            session,
            cloud,
            runtime,
            ..
        } = self;
        drop(session);
        if let Some(c) = cloud {
            runtime.block_on(c.shutdown());
        }
    }
}

fn session_failure(ctx: &Context, e: SessionError) -> Failure {
    match e {
        SessionError::Input(m) => Failure::Input(m),
        SessionError::Api(e @ cloudattach_core::client::ApiError::Transport { .. }) => {
            let file = ctx
                .config
                .file
                .as_ref()
                .map(|f| f.display().to_string())
                .unwrap_or_else(|| "attach.toml".into());
            Failure::Runtime(format!(
                "{e}\nhint: check `[cloud] endpoint` in {file}, or start a local cloud with `cloudattach cloud serve`"
            ))
        }
        other => Failure::Runtime(other.to_string()),
    }
}

/// The options of the embedded cloud for a configuration: its data in the state directory, the
/// configured environment, the seeded administrator of the configured tenant approved.
pub fn embedded_options(config: &cloudattach_core::Config) -> ServeOptions {
    ServeOptions {
        addr: "127.0.0.1:0".into(),
        data: Some(config.state_dir().join("cloud")),
        environment: config.environment.as_str().into(),
        auto_approve: Some(format!("admin@{}", config.tenant)),
        device_code_interval_secs: 1,
        ..ServeOptions::default()
    }
}

/// Starts the embedded cloud for a configuration.
fn start_embedded(
    runtime: &tokio::runtime::Runtime,
    config: &cloudattach_core::Config,
) -> Result<RunningCloud, Failure> {
    runtime
        .block_on(cloudattach_cloud::start(embedded_options(config)))
        .map_err(|e| match e {
            // Its administrator is approved automatically, so the tenant must be a seeded one.
            cloudattach_cloud::CloudError::InvalidOption(m) if m.contains("auto-approve") => Failure::Input(format!(
                "[cloud] tenant = {:?}: the embedded cloud has the tenants contoso.example and fabrikam.example; use one of them, or set [cloud] endpoint to a cloud service that has this tenant",
                config.tenant
            )),
            other => Failure::Runtime(format!("cannot start the embedded cloud: {other}")),
        })
}

/// `init`'s sign-in page: signs in against the configured cloud (starting the embedded one if
/// that is the endpoint) and checks the account; the tokens stay cached for apply.
pub fn sign_in_check(config: &cloudattach_core::Config) -> Result<String, Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    let (base, cloud) = match &config.endpoint {
        Endpoint::Url(u) => (u.clone(), None),
        Endpoint::Embedded => {
            let running = start_embedded(&runtime, config)?;
            (running.base_url(), Some(running))
        }
    };
    let result =
        cloudattach_core::session::sign_in(runtime.handle(), &base, config, &CliReporter::new());
    if let Some(c) = cloud {
        runtime.block_on(c.shutdown());
    }
    result.map_err(|e| match e {
        SessionError::Input(m) => Failure::Input(m),
        other => Failure::Runtime(other.to_string()),
    })
}

/// Opens the state (and its lock, for commands that change things), starts the embedded cloud
/// when configured, signs in.
pub fn connect(ctx: &Context, command: &str, lock: bool) -> Result<Connected, Failure> {
    let state_dir = ctx.config.state_dir();
    let lock = if lock {
        Some(StateLock::acquire(&state_dir, command).map_err(|e| Failure::Runtime(e.to_string()))?)
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    let (base, cloud) = match &ctx.config.endpoint {
        Endpoint::Url(u) => (u.clone(), None),
        Endpoint::Embedded => {
            let running = start_embedded(&runtime, &ctx.config)?;
            tracing::info!("embedded cloud at {}", running.base_url());
            (running.base_url(), Some(running))
        }
    };
    let state = Arc::new(Mutex::new(
        StateStore::open(&state_dir).map_err(|e| Failure::Runtime(e.to_string()))?,
    ));
    // Only apply registers an app; the other commands use the one apply registered.
    let policy = if command == "apply" {
        AppPolicy::RegisterIfMissing
    } else {
        AppPolicy::ExistingOnly
    };
    let session = Session::connect(
        runtime.handle().clone(),
        &base,
        &ctx.config,
        &ctx.site,
        state.clone(),
        Arc::new(CliReporter::new()),
        policy,
    )
    .map_err(|e| session_failure(ctx, e))?;
    Ok(Connected {
        session: Arc::new(session),
        state,
        cloud,
        runtime,
        _lock: lock,
    })
}

/// Asks on the terminal; without one, `command` (apply or detach) cannot ask, and the message
/// says to run it with `--yes`.
fn confirm(command: &str, question: &str) -> Result<bool, Failure> {
    if !std::io::stdin().is_terminal() {
        let review = if command == "apply" {
            "review `cloudattach plan`, then run"
        } else {
            "run"
        };
        return Err(Failure::Input(format!(
            "standard input is not a terminal, so {command} cannot ask for confirmation: {review} `cloudattach {command} --yes`"
        )));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}

pub fn apply(ctx: &Context, output: Output, yes: bool) -> Outcome {
    let version = ctx.site.info.version;
    orchestrator::require_wizard_version(version).map_err(input)?;
    let selection = cloudattach_core::select(&ctx.config, &ctx.registry, version).map_err(input)?;
    for w in &selection.warnings {
        eprintln!("warning: {w}");
    }
    let state_dir = ctx.config.state_dir();
    let plan = {
        let store = StateStore::open(&state_dir).map_err(|e| Failure::Runtime(e.to_string()))?;
        cloudattach_core::plan(&ctx.registry, &ctx.config, &selection, &ctx.site, &store)
            .map_err(input)?
    };
    if output == Output::Text {
        crate::print_plan(ctx, &plan, true);
    }
    let changes = plan
        .steps
        .iter()
        .filter(|s| !matches!(s.action, PlanAction::Noop | PlanAction::Skip))
        .count();
    if !yes && changes > 0 {
        let app_note = if ctx.config.app.is_none() {
            "\nA Global Administrator signs in, and cloudattach registers an app in the tenant for this hierarchy."
        } else {
            ""
        };
        eprintln!("{app_note}");
        if !confirm("apply", "Apply these changes?")? {
            eprintln!("nothing changed");
            return Err(Failure::Failed);
        }
    }
    let started = Instant::now();
    let conn = connect(ctx, "apply", true)?;
    conn.session
        .onboard(&ctx.site, selection.environment)
        .map_err(|e| session_failure(ctx, e))?;
    let reports = apply::apply(
        &ctx.registry,
        &ctx.config,
        &selection,
        &ctx.site,
        &plan,
        conn.session.clone(),
        &conn.state,
    );
    let (requests, retries, bytes) = conn.session.client_stats();
    let failed = reports.iter().any(|r| r.status == StepStatus::Failed);
    if output == Output::Json {
        print_json(&serde_json::json!({
            "environment": plan.environment,
            "settings": plan.settings,
            "site_version": plan.site_version,
            "app": { "client_id": conn.session.app().client_id, "name": conn.session.app().name },
            "steps": reports,
            "requests": requests,
            "retries": retries,
        }))?;
    } else {
        let colour = colour_enabled();
        let mut t = Table::new(&["plugin", "result", "details"]);
        for r in &reports {
            let (word, tone) = match r.status {
                StepStatus::Done => (r.action.as_str(), Tone::Good),
                StepStatus::Noop => ("noop", Tone::Dim),
                StepStatus::Skipped => ("skipped", Tone::Dim),
                StepStatus::Failed => ("failed", Tone::Bad),
            };
            let mut details: Vec<String> = r
                .counts
                .iter()
                .map(|(k, v)| match v.as_u64() {
                    Some(n) => format!("{k}={}", thousands(n)),
                    None => format!("{k}={v}"),
                })
                .collect();
            if let Some(reason) = &r.reason {
                details.push(reason.clone());
            }
            t.row(vec![
                (r.plugin.clone(), Tone::Plain),
                (word.to_string(), tone),
                (details.join(", "), Tone::Plain),
            ]);
        }
        println!();
        print!("{}", t.render(colour));
        for r in &reports {
            for f in r
                .findings
                .iter()
                .filter(|f| f.severity != cloudattach_sdk::Severity::Info)
            {
                eprintln!("{}: {}", r.plugin, f.message);
            }
        }
        eprintln!(
            "{} in {:.1}s: {requests} requests ({retries} retried), {} KiB sent",
            if failed {
                "finished with failures"
            } else {
                "attached"
            },
            started.elapsed().as_secs_f64(),
            bytes / 1024
        );
    }
    conn.close();
    if failed { Err(Failure::Failed) } else { Ok(()) }
}

/// The message for a plugin whose status could not be read: a hierarchy the cloud does not
/// know (offboarded by `detach`, or never attached) says what to run instead of a raw 404.
fn status_error(ctx: &Context, e: &cloudattach_sdk::HostError) -> String {
    if e.code == "http-404" && e.message.contains("not attached") {
        format!(
            "site not attached to {}: run `cloudattach apply`",
            ctx.config.tenant
        )
    } else {
        e.message.clone()
    }
}

pub fn status(ctx: &Context, output: Output) -> Outcome {
    let selection = crate::selection_for_reading(ctx)?;
    let conn = connect(ctx, "status", false)?;
    let host =
        orchestrator::host_for(&ctx.site, &ctx.config, &selection).with_cloud(conn.session.clone());
    let order = ctx.registry.execution_order().map_err(input)?;
    let plugins: Vec<(apply::PluginStatus, Option<String>)> =
        apply::status(&ctx.registry, &order, &host)
            .into_iter()
            .map(|p| {
                let error = p.failure.as_ref().map(|e| status_error(ctx, e));
                (p, error)
            })
            .collect();
    drop(host);
    conn.close();
    let failed = plugins.iter().any(|(_, e)| e.is_some());
    if output == Output::Json {
        let rows: Vec<serde_json::Value> = plugins
            .iter()
            .map(|(p, error)| {
                let mut v = serde_json::to_value(p).unwrap_or_default();
                if let (Some(e), Some(obj)) = (error, v.as_object_mut()) {
                    obj.insert("error".into(), e.clone().into());
                }
                v
            })
            .collect();
        print_json(&serde_json::json!({ "plugins": rows }))?;
    } else {
        let colour = colour_enabled();
        let mut t = Table::new(&["plugin", "enabled", "counts", "last sync", "error"]);
        for (p, error) in &plugins {
            let mut counts: Vec<String> = p
                .counts
                .iter()
                .map(|(k, v)| match v.as_u64() {
                    Some(n) => format!("{k}={}", thousands(n)),
                    None => format!("{k}={v}"),
                })
                .collect();
            // Scalar extras (rbac-authority's effective_authority) read well as counts; the
            // applied settings are a JSON object, left to --output json.
            counts.extend(
                p.extra
                    .iter()
                    .filter(|(k, v)| *k != "settings" && !v.is_object() && !v.is_array())
                    .map(|(k, v)| {
                        format!(
                            "{k}={}",
                            v.as_str()
                                .map(String::from)
                                .unwrap_or_else(|| v.to_string())
                        )
                    }),
            );
            t.row(vec![
                (p.id.clone(), Tone::Plain),
                (
                    if p.enabled { "yes" } else { "no" }.into(),
                    if p.enabled { Tone::Good } else { Tone::Dim },
                ),
                (
                    if counts.is_empty() {
                        "-".into()
                    } else {
                        counts.join(", ")
                    },
                    Tone::Plain,
                ),
                (p.last_sync.clone().unwrap_or_else(|| "-".into()), Tone::Dim),
                (error.clone().unwrap_or_else(|| "-".into()), Tone::Bad),
            ]);
        }
        print!("{}", t.render(colour));
    }
    if failed {
        if let Some((_, Some(e))) = plugins.iter().find(|(_, e)| e.is_some())
            && e.starts_with("site not attached")
        {
            eprintln!("error: {e}");
        }
        Err(Failure::Failed)
    } else {
        Ok(())
    }
}

/// Parses an interval: seconds, or a number with s, m or h.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not an interval: expected e.g. 90, 90s, 15m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => {
            return Err(format!(
                "{s:?} is not an interval: expected e.g. 90, 90s, 15m or 1h"
            ));
        }
    };
    if secs == 0 {
        return Err("the interval must be at least one second".into());
    }
    Ok(Duration::from_secs(secs))
}

pub fn sync(ctx: &Context, output: Output, full: bool, watch: Option<Duration>) -> Outcome {
    let selection = cloudattach_core::select(&ctx.config, &ctx.registry, ctx.site.info.version)
        .map_err(input)?;
    let conn = connect(ctx, "sync", true)?;
    let mode = if full {
        SyncMode::Full
    } else {
        SyncMode::Delta
    };
    let mut any_failed = false;
    loop {
        let host = orchestrator::host_for(&ctx.site, &ctx.config, &selection)
            .with_cloud(conn.session.clone());
        let reports = apply::sync(
            &ctx.registry,
            &selection,
            &host,
            &conn.session,
            &conn.state,
            mode,
        );
        any_failed |= reports.iter().any(|r| r.error.is_some());
        if output == Output::Json && watch.is_some() {
            // JSON Lines: one compact document per round, flushed, so a reader sees each now.
            let line = serde_json::to_string(&serde_json::json!({ "plugins": reports }))
                .map_err(|e| Failure::Runtime(e.to_string()))?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}")
                .and_then(|()| out.flush())
                .map_err(|e| Failure::Runtime(e.to_string()))?;
        } else if output == Output::Json {
            print_json(&serde_json::json!({ "plugins": reports }))?;
        } else {
            let mut t = Table::new(&["plugin", "sent", "in scope", "error"]);
            for r in &reports {
                t.row(vec![
                    (r.id.clone(), Tone::Plain),
                    (thousands(r.sent), Tone::Plain),
                    (thousands(r.total), Tone::Dim),
                    (r.error.clone().unwrap_or_default(), Tone::Bad),
                ]);
            }
            print!("{}", t.render(colour_enabled()));
            if reports.is_empty() {
                eprintln!("no enabled feature uploads anything: run `cloudattach apply` first");
            }
        }
        let Some(every) = watch else { break };
        eprintln!("next sync in {}s (Ctrl-C to stop)", every.as_secs());
        std::thread::sleep(every);
    }
    conn.close();
    if any_failed {
        Err(Failure::Failed)
    } else {
        Ok(())
    }
}

pub fn disable(ctx: &Context, output: Output, ids: &[String]) -> Outcome {
    let unknown: Vec<&String> = ids
        .iter()
        .filter(|id| ctx.registry.get(id).is_none())
        .collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = ctx
            .registry
            .iter()
            .map(|p| p.manifest.id.as_str())
            .collect();
        let names: Vec<String> = unknown.iter().map(|id| format!("`{id}`")).collect();
        return Err(Failure::Input(format!(
            "no plugin has the id {}; known plugins: {} (load others with --plugin-dir)",
            names.join(", "),
            known.join(", ")
        )));
    }
    let state_dir = ctx.config.state_dir();
    let enabled: Vec<String> = StateStore::open(&state_dir)
        .and_then(|s| s.features())
        .map_err(|e| Failure::Runtime(e.to_string()))?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let order = ctx.registry.execution_order().map_err(input)?;
    // Every enabled feature that depends (directly or not) on a named one and is not named.
    let mut blocking: Vec<String> = vec![];
    for id in ids {
        for dependent in ctx.registry.dependents_of(id) {
            if enabled.contains(&dependent)
                && !ids.contains(&dependent)
                && !blocking.contains(&dependent)
            {
                blocking.push(dependent);
            }
        }
    }
    if !blocking.is_empty() {
        blocking.sort();
        // The whole command, in the order disable runs it: dependents first.
        let all: Vec<&str> = order
            .iter()
            .rev()
            .filter(|id| ids.contains(id) || blocking.contains(id))
            .map(String::as_str)
            .collect();
        let named: Vec<&str> = order
            .iter()
            .filter(|id| ids.contains(id))
            .map(String::as_str)
            .collect();
        return Err(Failure::Input(format!(
            "{} can't be disabled while features that depend on it are enabled: {}; disable them too: cloudattach disable {}",
            named.join(", "),
            blocking.join(", "),
            all.join(" ")
        )));
    }
    let selection = selection_or_default(ctx)?;
    let conn = connect(ctx, "disable", true)?;
    let host =
        orchestrator::host_for(&ctx.site, &ctx.config, &selection).with_cloud(conn.session.clone());
    let mut results = vec![];
    let mut failed = false;
    for id in order.iter().rev().filter(|id| ids.contains(id)) {
        let p = ctx.registry.get(id).expect("checked");
        conn.session.set_current_plugin(id);
        let outcome = p.plugin.disable(&host);
        let outcome = if outcome.ok {
            match apply::forget_feature(&conn.state, id) {
                Ok(()) => outcome,
                Err(e) => cloudattach_sdk::ApplyOutcome::failed("state", e.to_string()),
            }
        } else {
            outcome
        };
        failed |= !outcome.ok;
        let error = outcome
            .findings
            .iter()
            .find(|f| f.severity == cloudattach_sdk::Severity::Error)
            .map(|f| f.message.clone());
        results.push(serde_json::json!({ "id": id, "disabled": outcome.ok, "error": error }));
        if output == Output::Text {
            match error {
                None => eprintln!("{id}: disabled"),
                Some(e) => eprintln!("{id}: failed: {e}"),
            }
        }
    }
    drop(host);
    conn.close();
    if output == Output::Json {
        print_json(&serde_json::json!({ "plugins": results }))?;
    }
    if failed { Err(Failure::Failed) } else { Ok(()) }
}

pub fn detach(ctx: &Context, output: Output, yes: bool) -> Outcome {
    if !yes
        && !confirm(
            "detach",
            &format!(
                "Offboard hierarchy {} from tenant {}? Its devices and reports are removed from the tenant.",
                ctx.site.info.hierarchy_id, ctx.config.tenant
            ),
        )?
    {
        eprintln!("nothing changed");
        return Err(Failure::Failed);
    }
    let conn = connect(ctx, "detach", true)?;
    conn.session
        .offboard()
        .map_err(|e| session_failure(ctx, e))?;
    conn.state
        .lock()
        .expect("state lock")
        .reset()
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    conn.close();
    if output == Output::Json {
        print_json(&serde_json::json!({ "detached": ctx.site.info.hierarchy_id }))?;
    } else {
        eprintln!(
            "hierarchy {} detached from {}",
            ctx.site.info.hierarchy_id, ctx.config.tenant
        );
    }
    Ok(())
}

/// The selection used by commands that only read or turn things off: the configuration's, or,
/// when it has conflicts, the lenient one check uses.
fn selection_or_default(ctx: &Context) -> Result<cloudattach_core::Selection, Failure> {
    crate::selection_for_reading(ctx)
}

pub fn cloud_serve(opts: ServeOptions) -> Outcome {
    opts.validate().map_err(input)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    runtime
        .block_on(cloudattach_cloud::serve(opts))
        .map_err(|e| match e {
            cloudattach_cloud::CloudError::InvalidOption(m) => Failure::Input(m),
            other => Failure::Runtime(other.to_string()),
        })
}
