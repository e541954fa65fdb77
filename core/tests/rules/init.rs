//! The init wizard against plan, exhaustively: every combination of the wizard's answers (as
//! `--no-input` flags: environment × site version around each gate × default/custom settings ×
//! upload all/collection/none/unknown × each feature on/off/unasked × co-management
//! all/pilot/none/off with a known or unknown pilot × app register/import) is run through
//! `ops::init::wizard`, and `plan` (`ops::plan::run` on a loaded workspace) is run on what it
//! wrote and on what the flags say, written by hand here ([`naive`], from the feature table of
//! docs/domain.md). The wizard must write exactly the configurations plan accepts, select what
//! the flags asked for, and refuse (nothing written) every combination plan would refuse. A few
//! runs answer the pages as a person would (a scripted [`Front`]).

use super::common::{registry, small_site};

use cloudattach_core::ops::init::{Front, InitFlags, wizard};
use cloudattach_core::ops::{self, OpError, Workspace};
use cloudattach_core::report::Silent;
use cloudattach_core::{Config, Decision, Site};
use cloudattach_sdk::{Environment, Options};
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use tempfile::TempDir;

/// The versions around each gate: below the wizard, the wizard, RBAC authority's and Defender
/// reporting's.
const VERSIONS: [u32; 6] = [2107, 2111, 2206, 2207, 2302, 2303];
const ENVIRONMENTS: [Environment; 3] =
    [Environment::Public, Environment::Usgov, Environment::China];
/// A collection of `small-site`, and one it does not have.
const KNOWN: &str = "PS100102";
const UNKNOWN: &str = "PS1FFFFF";
/// The pilot page's default on `small-site` (it has no PS100020): its first collection.
const FIRST_COLLECTION: &str = "PS100100";

/// A front end without a person: every page takes its flag or default.
#[derive(Default)]
struct NoInput {
    warnings: Vec<String>,
}

impl Front for NoInput {
    fn interactive(&self) -> bool {
        false
    }
    fn ask(&mut self, question: &str, _default: &str) -> Result<String, OpError> {
        panic!("asked {question:?} without a terminal")
    }
    fn say(&mut self, _line: &str) {}
    fn warn(&mut self, message: &str) {
        self.warnings.push(message.to_string());
    }
    fn sign_in(&mut self, _config: &Config) -> Result<String, OpError> {
        panic!("no sign-in was asked for")
    }
}

/// A person answering from a script; records the questions and what was shown.
struct Person {
    answers: VecDeque<&'static str>,
    questions: Vec<String>,
    shown: Vec<String>,
}

impl Person {
    fn new(answers: &[&'static str]) -> Person {
        Person {
            answers: answers.iter().copied().collect(),
            questions: vec![],
            shown: vec![],
        }
    }
}

impl Front for Person {
    fn interactive(&self) -> bool {
        true
    }
    fn ask(&mut self, question: &str, _default: &str) -> Result<String, OpError> {
        self.questions.push(question.to_string());
        self.answers
            .pop_front()
            .map(str::to_string)
            .ok_or_else(|| OpError::Input(format!("input ended at {question:?}")))
    }
    fn say(&mut self, line: &str) {
        self.shown.push(line.to_string());
    }
    fn warn(&mut self, message: &str) {
        self.shown.push(format!("warning: {message}"));
    }
    fn sign_in(&mut self, _config: &Config) -> Result<String, OpError> {
        panic!("no sign-in in these tests")
    }
}

/// A `small-site` copy at each version, with a secret file next to its attach.toml.
struct Sites {
    dirs: Vec<(u32, TempDir, Arc<Site>)>,
}

impl Sites {
    fn new() -> Sites {
        let dirs = VERSIONS
            .iter()
            .map(|v| {
                let dir = TempDir::new().unwrap();
                let site = small_site(dir.path(), &format!("version = \"{v}\""));
                std::fs::write(dir.path().join("app-secret.txt"), "s3cret\n").unwrap();
                let site = Arc::new(Site::open(&site).unwrap());
                (*v, dir, site)
            })
            .collect();
        Sites { dirs }
    }
}

/// Whether the feature table of docs/domain.md offers a feature here (every version below is at
/// least the wizard's 2111, above tenant attach's and co-management's own minimums).
fn offered(id: &str, env: Environment, version: u32) -> bool {
    let uploads = env != Environment::China;
    match id {
        "tenant-attach" | "endpoint-analytics" => uploads,
        "rbac-authority" => uploads && version >= 2207,
        "defender-reporting" => uploads && version >= 2303,
        _ => true,
    }
}

/// What the flags ask for, written by hand: under custom settings each flag is its feature's
/// table, an unasked page its default (on where the feature is offered and devices are
/// uploaded); default settings stay default unless co-management is not "all", which takes
/// custom settings with the offered defaults.
fn naive(f: &InitFlags, version: u32) -> String {
    let env = f.environment.unwrap();
    let mut t = format!(
        "[site]\npath = \"site\"\n[cloud]\nenvironment = \"{env}\"\nendpoint = \"embedded\"\ntenant = \"contoso.example\"\n"
    );
    if f.app.as_deref() == Some("import") {
        t.push_str(&format!(
            "[cloud.app]\ntenant_id = {:?}\nclient_id = {:?}\nname = {:?}\napp_id_uri = {:?}\n{}secret_expiry = {:?}\n",
            f.app_tenant_id.as_deref().unwrap_or(""),
            f.app_client_id.as_deref().unwrap_or(""),
            f.app_name.as_deref().unwrap_or("ConfigMgrService"),
            f.app_id_uri.clone().unwrap_or_else(|| format!(
                "api://{}/{}",
                f.app_tenant_id.as_deref().unwrap_or(""),
                f.app_name.as_deref().unwrap_or("ConfigMgrService")
            )),
            match (&f.app_secret_file, &f.app_secret_env) {
                (Some(p), _) => format!("secret_file = {p:?}\n"),
                (None, Some(v)) => format!("secret_env = {v:?}\n"),
                _ => String::new(),
            },
            f.app_secret_expiry.as_deref().unwrap_or(""),
        ));
    }
    let co = f.co_management.as_deref().unwrap_or("all");
    let custom = f.settings.as_deref() == Some("custom");
    if !custom && co == "all" {
        t.push_str("[attach]\nsettings = \"default\"\n");
        return t;
    }
    t.push_str("[attach]\nsettings = \"custom\"\n");
    let on = |id: &str| offered(id, env, version);
    let (upload, ea, rbac, enforce, defender) = if custom {
        let upload = f
            .upload
            .clone()
            .unwrap_or_else(|| if on("tenant-attach") { "all" } else { "none" }.into());
        let up = upload != "none";
        let rbac = f
            .rbac_authority
            .unwrap_or(f.enforce_configmgr_rbac.is_some() || (up && on("rbac-authority")));
        (
            upload,
            f.endpoint_analytics
                .unwrap_or(up && on("endpoint-analytics")),
            rbac,
            f.enforce_configmgr_rbac,
            f.defender_reporting
                .unwrap_or(up && on("defender-reporting")),
        )
    } else {
        let up = on("tenant-attach");
        (
            if up { "all" } else { "none" }.to_string(),
            up && on("endpoint-analytics"),
            up && on("rbac-authority"),
            None,
            up && on("defender-reporting"),
        )
    };
    if upload == "none" {
        t.push_str("[features.tenant-attach]\nenabled = false\n");
    } else {
        t.push_str(&format!(
            "[features.tenant-attach]\nenabled = true\nupload = {upload:?}\n"
        ));
    }
    t.push_str(&format!("[features.endpoint-analytics]\nenabled = {ea}\n"));
    t.push_str(&format!("[features.rbac-authority]\nenabled = {rbac}\n"));
    if let Some(e) = enforce {
        t.push_str(&format!("enforce_configmgr_rbac = {e}\n"));
    }
    t.push_str(&format!(
        "[features.defender-reporting]\nenabled = {defender}\n"
    ));
    if co == "off" {
        t.push_str("[features.co-management]\nenabled = false\n");
    } else {
        t.push_str(&format!("[features.co-management]\nenrollment = {co:?}\n"));
        if co == "pilot" {
            let p = f.pilot_collection.as_deref().unwrap_or(FIRST_COLLECTION);
            t.push_str(&format!("pilot_collection = {p:?}\n"));
        }
    }
    t
}

/// `plan` on a configuration text in `dir`: the features it selects with their options, or
/// its refusal.
fn plan(text: &str, dir: &Path, site: &Arc<Site>) -> Result<BTreeMap<String, Options>, String> {
    let config = Config::parse(text, &dir.join("attach.toml"), dir).map_err(|e| e.to_string())?;
    let ws = Workspace::new(config, registry(), site.clone()).map_err(|e| e.to_string())?;
    let planned = ops::plan::run(&ws, &ops::plan::PlanOptions::default(), &Silent)
        .map_err(|e| e.to_string())?;
    Ok(planned
        .selection
        .entries
        .iter()
        .filter_map(|(id, d)| match d {
            Decision::Selected(o) => Some((id.clone(), o.clone())),
            _ => None,
        })
        .collect())
}

fn bools() -> [Option<bool>; 3] {
    [None, Some(true), Some(false)]
}

/// Co-management answers: unasked, each choice, and pilot with no, a known and an unknown
/// collection.
fn co_managements() -> Vec<(Option<&'static str>, Option<&'static str>)> {
    vec![
        (None, None),
        (Some("all"), None),
        (Some("none"), None),
        (Some("off"), None),
        (Some("pilot"), None),
        (Some("pilot"), Some("PS100101")),
        (Some("pilot"), Some(UNKNOWN)),
        // A number picks from the list a person sees, never from a flag.
        (Some("pilot"), Some("2")),
    ]
}

fn import(f: &mut InitFlags) {
    f.app = Some("import".into());
    f.app_tenant_id = Some("c0257050-0000-4000-8000-000000000001".into());
    f.app_client_id = Some("11111111-0000-4000-8000-000000000001".into());
    f.app_secret_file = Some("app-secret.txt".into());
    f.app_secret_expiry = Some("2999-12-31".into());
}

/// Every combination of flags, per environment and site version.
fn combinations(env: Environment) -> Vec<InitFlags> {
    let base = InitFlags {
        site: Some("site".into()),
        environment: Some(env),
        ..InitFlags::default()
    };
    let mut out = vec![];
    // Default settings: the co-management page and the app page; custom flags are ignored.
    for (co, pilot) in co_managements() {
        for app_import in [false, true] {
            for with_custom_flags in [false, true] {
                let mut f = base.clone();
                f.settings = (with_custom_flags || app_import).then(|| "default".into());
                f.co_management = co.map(Into::into);
                f.pilot_collection = pilot.map(Into::into);
                if with_custom_flags {
                    f.upload = Some(UNKNOWN.into());
                    f.defender_reporting = Some(true);
                }
                if app_import {
                    import(&mut f);
                }
                out.push(f);
            }
        }
    }
    // Custom settings: every page's answer.
    let uploads = [
        None,
        Some("all"),
        Some("none"),
        Some(KNOWN),
        Some(UNKNOWN),
        Some("some"),
        Some("3"),
    ];
    for upload in uploads {
        for ea in bools() {
            for rbac in bools() {
                for enforce in bools() {
                    for defender in bools() {
                        for (co, pilot) in co_managements() {
                            let mut f = base.clone();
                            f.settings = Some("custom".into());
                            f.upload = upload.map(Into::into);
                            f.endpoint_analytics = ea;
                            f.rbac_authority = rbac;
                            f.enforce_configmgr_rbac = enforce;
                            f.defender_reporting = defender;
                            f.co_management = co.map(Into::into);
                            f.pilot_collection = pilot.map(Into::into);
                            out.push(f);
                        }
                    }
                }
            }
        }
    }
    out
}

/// The wizard writes exactly what plan accepts: for every combination, the wizard succeeds
/// exactly when plan accepts what the flags ask for, plan accepts what the wizard wrote and
/// selects the same features with the same options, and a refusal is an input error (exit 2).
#[test]
fn every_combination_of_answers_is_written_only_if_plan_accepts_it() {
    let sites = Sites::new();
    let registry = registry();
    let (mut written, mut refused) = (0, 0);
    // Many answers make the same file: plan each text once.
    type Planned = Result<BTreeMap<String, Options>, String>;
    let mut plans: BTreeMap<(u32, String), Planned> = BTreeMap::new();
    for (version, dir, site) in &sites.dirs {
        let out = dir.path().join("attach.toml");
        let mut plan_once = |text: &str| -> Planned {
            plans
                .entry((*version, text.to_string()))
                .or_insert_with(|| plan(text, dir.path(), site))
                .clone()
        };
        for env in ENVIRONMENTS {
            for flags in combinations(env) {
                let expected = plan_once(&naive(&flags, *version));
                let made = wizard(&flags, &out, &registry, &mut NoInput::default());
                match (made, expected) {
                    (Ok(made), Ok(selected)) => {
                        let got = plan_once(&made.text).unwrap_or_else(|e| {
                            panic!(
                                "{version} {flags:?}: plan refuses what init wrote: {e}\n{}",
                                made.text
                            )
                        });
                        assert_eq!(
                            got, selected,
                            "{version} {flags:?}: init selects other features than asked:\n{}",
                            made.text
                        );
                        written += 1;
                    }
                    (Err(e), Err(_)) => {
                        assert!(e.is_input(), "{version} {flags:?}: {e}");
                        assert!(e.to_string().starts_with("init: "), "{e}");
                        refused += 1;
                    }
                    (Ok(made), Err(e)) => panic!(
                        "{version} {flags:?}: init wrote what plan refuses ({e}):\n{}",
                        made.text
                    ),
                    (Err(e), Ok(_)) => panic!(
                        "{version} {flags:?}: init refuses ({e}) what plan accepts:\n{}",
                        naive(&flags, *version)
                    ),
                }
            }
        }
        assert!(!out.exists(), "the wizard itself writes nothing");
    }
    // Both outcomes are well represented (a guard against a domain that tests nothing).
    assert!(
        written > 1000 && refused > 1000,
        "{written} written, {refused} refused"
    );
}

/// An imported app is checked as plan checks it: each broken answer is refused naming its flag.
#[test]
fn an_imported_app_is_refused_at_its_page_like_plan_refuses_it() {
    let sites = Sites::new();
    let registry = registry();
    let (_, dir, site) = &sites.dirs[5];
    let out = dir.path().join("attach.toml");
    type Edit = fn(&mut InitFlags);
    let cases: &[(&str, Edit, &[&str])] = &[
        ("valid", |_| {}, &[]),
        (
            "a URI of another tenant",
            |f| f.app_id_uri = Some("api://another/ConfigMgrService".into()),
            &["--app-id-uri", "tenant id"],
        ),
        (
            "a URI without a scheme",
            |f| f.app_id_uri = Some("ConfigMgrService".into()),
            &["--app-id-uri", "api://"],
        ),
        (
            "a missing secret file",
            |f| f.app_secret_file = Some("nowhere.txt".into()),
            &["--app-secret-file", "nowhere.txt"],
        ),
        (
            "an unset variable",
            |f| {
                f.app_secret_file = None;
                f.app_secret_env = Some("CLOUDATTACH_INIT_TEST_UNSET".into())
            },
            &[
                "--app-secret-env",
                "CLOUDATTACH_INIT_TEST_UNSET",
                "is not set",
            ],
        ),
        (
            "an expired secret",
            |f| f.app_secret_expiry = Some("2001-01-01".into()),
            &["--app-secret-expiry", "expired"],
        ),
        (
            "a bad date",
            |f| f.app_secret_expiry = Some("next year".into()),
            &["--app-secret-expiry", "YYYY-MM-DD"],
        ),
    ];
    for (name, edit, needles) in cases {
        let mut f = InitFlags {
            site: Some("site".into()),
            environment: Some(Environment::Public),
            ..InitFlags::default()
        };
        import(&mut f);
        edit(&mut f);
        let expected = plan(&naive(&f, 2303), dir.path(), site);
        let made = wizard(&f, &out, &registry, &mut NoInput::default());
        assert_eq!(made.is_ok(), expected.is_ok(), "{name}: {expected:?}");
        match made {
            Ok(made) => {
                assert!(
                    made.text.contains("secret_file = \"app-secret.txt\""),
                    "{}",
                    made.text
                );
                assert!(
                    !made.text.contains("s3cret"),
                    "the secret itself is never written"
                );
            }
            Err(e) => {
                let e = e.to_string();
                for n in *needles {
                    assert!(e.contains(n), "{name}: {e:?} lacks {n:?}");
                }
                assert!(!e.contains("s3cret"), "{e}");
            }
        }
    }
    // Flags of an imported app without --app import, or both secret sources: refused.
    let mut f = InitFlags {
        site: Some("site".into()),
        environment: Some(Environment::Public),
        app: Some("register".into()),
        app_client_id: Some("x".into()),
        ..InitFlags::default()
    };
    let e = wizard(&f, &out, &registry, &mut NoInput::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("--app-client-id") && e.contains("--app import"),
        "{e}"
    );
    import(&mut f);
    f.app_secret_env = Some("X".into());
    let e = wizard(&f, &out, &registry, &mut NoInput::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("keep one"), "{e}");
}

/// A site that cannot be read, or is below the wizard's version, is refused at the site page
/// naming the file or 2111, before any other page.
#[test]
fn an_unreadable_or_too_old_site_is_refused_naming_it() {
    let sites = Sites::new();
    let registry = registry();
    let (_, dir, _) = &sites.dirs[5];
    let out = dir.path().join("attach.toml");
    std::fs::create_dir_all(dir.path().join("broken")).unwrap();
    std::fs::write(dir.path().join("broken/site.toml"), "code = \n").unwrap();
    for (site, needle) in [
        ("nowhere", "nowhere/site.toml"),
        ("broken", "broken/site.toml"),
    ] {
        let f = InitFlags {
            site: Some(site.into()),
            ..InitFlags::default()
        };
        let e = wizard(&f, &out, &registry, &mut NoInput::default())
            .err()
            .unwrap();
        assert!(e.is_input(), "{e}");
        assert!(e.to_string().contains(needle), "{e}");
    }
    let (_, old, _) = &sites.dirs[0];
    let e = wizard(
        &InitFlags::default(),
        &old.path().join("attach.toml"),
        &registry,
        &mut NoInput::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("2107") && e.contains("2111"), "{e}");
}

/// A person sees exactly the pages the site and cloud support, each with its consequence; a
/// refused answer (an unreadable site, an unknown collection) is asked again.
#[test]
fn a_person_is_offered_only_the_pages_the_site_supports_and_asked_again_when_refused() {
    let sites = Sites::new();
    let registry = registry();
    struct Case {
        version: usize,
        answers: &'static [&'static str],
        questions: &'static [&'static str],
        has: &'static [&'static str],
        written: &'static [&'static str],
    }
    let cases = [
        // 2206, custom: no RBAC authority or Defender page; the site page and the collection
        // pages ask again.
        Case {
            version: 2,
            answers: &[
                "nowhere",
                "site",
                "public",
                "",
                "",
                "n",
                "",
                "custom",
                "collection",
                UNKNOWN,
                "3",
                "y",
                "pilot",
                UNKNOWN,
                "PS100101",
            ],
            questions: &[
                "Site directory",
                "Site directory",
                "Azure environment",
                "Tenant",
                "Cloud endpoint",
                "Sign in now",
                "App",
                "Settings",
                "Upload devices",
                "Collection to upload",
                "Collection to upload",
                "Endpoint analytics",
                "Co-management",
                "Pilot collection",
                "Pilot collection",
            ],
            has: &[
                "nowhere/site.toml",
                "has no collection PS1FFFFF",
                "needs site version",
                "Default: on.",
                "Default: all",
            ],
            written: &[
                "upload = \"PS100102\"",
                "# RBAC authority needs site version 2207",
                "# Microsoft Defender reporting needs site version 2303",
                "pilot_collection = \"PS100101\"",
            ],
        },
        // 2303, custom: every page, RBAC with Intune alone.
        Case {
            version: 5,
            answers: &[
                "", "", "", "", "", "", "custom", "all", "n", "y", "n", "y", "none",
            ],
            questions: &[
                "Site directory",
                "Azure environment",
                "Tenant",
                "Cloud endpoint",
                "Sign in now",
                "App",
                "Settings",
                "Upload devices",
                "Endpoint analytics",
                "RBAC authority",
                "Enforce Configuration Manager RBAC",
                "Defender",
                "Co-management",
            ],
            has: &["Sets who authorizes cloud console requests"],
            written: &[
                "[features.endpoint-analytics]\nenabled = false",
                "enforce_configmgr_rbac = false",
                "[features.defender-reporting]\nenabled = true",
                "enrollment = \"none\"",
            ],
        },
        // China, custom: no upload pages; co-management all or off.
        Case {
            version: 5,
            answers: &["", "china", "", "", "", "", "custom", "pilot", "all"],
            questions: &[
                "Site directory",
                "Azure environment",
                "Tenant",
                "Cloud endpoint",
                "Sign in now",
                "App",
                "Settings",
                "Co-management",
                "Co-management",
            ],
            has: &["can only enroll all eligible devices"],
            written: &[
                "# Tenant attach (device upload) can't be enabled for Azure China Cloud",
                "enrollment = \"all\"",
            ],
        },
        // An imported app, asked page by page; a bad URI is asked again.
        Case {
            version: 5,
            answers: &[
                "",
                "",
                "",
                "",
                "",
                "import",
                "t1",
                "c1",
                "",
                "api://t2/x",
                "",
                "file",
                "nowhere.txt",
                "app-secret.txt",
                "2999-01-01",
                "",
                "",
            ],
            questions: &[
                "Site directory",
                "Azure environment",
                "Tenant",
                "Cloud endpoint",
                "Sign in now",
                "App",
                "tenant id",
                "client",
                "name",
                "App ID URI",
                "App ID URI",
                "file or an environment variable",
                "Secret file",
                "Secret file",
                "expires",
                "Settings",
                "Co-management",
            ],
            has: &[
                "import: use an existing app",
                "the tenant id in it is not the app's tenant_id",
            ],
            written: &[
                "app_id_uri = \"api://t1/ConfigMgrService\"",
                "secret_file = \"app-secret.txt\"",
                "settings = \"default\"",
            ],
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        let (_, dir, _) = &sites.dirs[c.version];
        let mut person = Person::new(c.answers);
        let made = wizard(
            &InitFlags::default(),
            &dir.path().join("attach.toml"),
            &registry,
            &mut person,
        )
        .unwrap_or_else(|e| {
            panic!(
                "case {i}: {e}\nasked: {:#?}\nshown: {:#?}",
                person.questions, person.shown
            )
        });
        assert!(
            person.answers.is_empty(),
            "case {i}: not asked: {:?}",
            person.answers
        );
        assert_eq!(
            person.questions.len(),
            c.questions.len(),
            "case {i}: {:#?}",
            person.questions
        );
        for (q, want) in person.questions.iter().zip(c.questions) {
            assert!(
                q.contains(want),
                "case {i}: asked {q:?}, expected {want:?}: {:#?}",
                person.questions
            );
        }
        let shown = person.shown.join("\n");
        for n in c.has {
            assert!(shown.contains(n), "case {i}: not shown {n:?}:\n{shown}");
        }
        for n in c.written {
            assert!(
                made.text.contains(n),
                "case {i}: not written {n:?}:\n{}",
                made.text
            );
        }
    }
}
