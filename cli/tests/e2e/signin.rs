//! End to end: the administrator's sign-in (RFC 8628 device code) when it is not
//! auto-approved: approved or declined at the verification page, an expired code, and
//! `slow_down`.

use super::common::*;
use cloudattach_cloud::ServeOptions;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEFAULT: &str = "[attach]\nsettings = \"default\"\n";

fn manual() -> ServeOptions {
    ServeOptions {
        auto_approve: None,
        ..cloud_opts()
    }
}

/// Spawns `apply --yes` with stderr piped; returns the child, the user code it printed, and
/// the stderr lines (all of them once the child ended).
fn spawn_apply(w: &World) -> (Child, String, Arc<Mutex<Vec<String>>>) {
    let mut child = w
        .command(&["apply", "--yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn apply");
    let stderr = child.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("enter the code ").nth(1) {
                let code = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let _ = tx.send(code);
            }
            sink.lock().unwrap().push(line);
        }
    });
    let code = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no user code printed; stderr: {:?}", lines.lock().unwrap()));
    (child, code, lines)
}

fn finish(mut child: Child, lines: &Arc<Mutex<Vec<String>>>) -> (i32, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("apply did not end; stderr: {:?}", lines.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(100));
    (
        status.code().unwrap_or(-1),
        lines.lock().unwrap().join("\n"),
    )
}

fn devicelogin(w: &World, code: &str, action: &str) -> u16 {
    w.form(
        "/devicelogin",
        &[
            ("user_code", code),
            ("upn", ADMIN),
            ("password", "cloudattach-dev"),
            ("action", action),
        ],
    )
    .0
}

/// Approved at the verification page: apply goes on and attaches.
#[test]
fn sign_in_approved_at_the_page() {
    let w = World::start_with(manual());
    let site = w.generate(200, 2303);
    w.config("public", DEFAULT);
    let (child, code, lines) = spawn_apply(&w);
    std::thread::sleep(Duration::from_millis(1500)); // a pending poll or two first
    assert_eq!(devicelogin(&w, &code, "approve"), 200);
    let (status, stderr) = finish(child, &lines);
    assert_eq!(status, 0, "{stderr}");
    assert!(
        stderr.contains("signed in as admin@contoso.example"),
        "{stderr}"
    );
    assert_counts(&w.counts(&site.hid), &site.expected(None, None));
}

/// Declined at the verification page: apply stops with a clear message; nothing changed.
#[test]
fn sign_in_declined_stops_apply() {
    let w = World::start_with(manual());
    w.generate(200, 2303);
    w.config("public", DEFAULT);
    let (child, code, lines) = spawn_apply(&w);
    assert_eq!(devicelogin(&w, &code, "decline"), 200);
    let (status, stderr) = finish(child, &lines);
    assert_eq!(status, 1, "{stderr}");
    assert!(stderr.contains("declined"), "{stderr}");
    assert!(w.hierarchies().is_empty());
    assert!(!w.state_dir().join("tokens.json").exists());
}

/// Nobody signs in before the code expires: apply stops with a clear message.
#[test]
fn sign_in_code_expires() {
    let w = World::start_with(ServeOptions {
        device_code_expiry_secs: 3,
        ..manual()
    });
    w.generate(200, 2303);
    w.config("public", DEFAULT);
    let started = Instant::now();
    let r = w.cli(&["apply", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("expired"), "{}", r.stderr);
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(w.hierarchies().is_empty());
}

/// The cloud says `slow_down` (RFC 8628 §3.5) to a direct poller that polls too fast, and a
/// `slow_down` answer to the CLI's poll makes it wait 5 s longer and go on: a proxy in front of
/// the cloud answers the CLI's first device code poll with `slow_down`.
#[test]
fn slow_down_is_honoured() {
    let w = World::start_with(manual());
    // The cloud's side: two polls in a row, the second too fast.
    let (_, dc) = w.form(
        &format!("/{TENANT}/oauth2/v2.0/devicecode"),
        &[
            ("client_id", PUBLIC_CLIENT_ID),
            ("scope", "api://cloudattach/.default offline_access"),
        ],
    );
    let code = dc["device_code"].as_str().expect("device_code").to_string();
    let poll = || {
        w.token_form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", PUBLIC_CLIENT_ID),
            ("device_code", &code),
        ])
    };
    assert_eq!(poll()["error"], "authorization_pending");
    assert_eq!(poll()["error"], "slow_down");

    // The CLI's side, through a proxy that answers its first poll with slow_down.
    let polls: Arc<Mutex<Vec<(Instant, u16)>>> = Arc::new(Mutex::new(Vec::new()));
    let proxy = start_proxy(&w, polls.clone());
    let site = w.generate(200, 2303);
    w.config("public", DEFAULT);
    let cfg = std::fs::read_to_string(w.dir().join("attach.toml")).unwrap();
    std::fs::write(w.dir().join("attach.toml"), cfg.replace(&w.base, &proxy)).unwrap();
    let (child, user_code, lines) = spawn_apply(&w);
    wait_for(30, "the CLI's first poll", || {
        !polls.lock().unwrap().is_empty()
    });
    assert_eq!(devicelogin(&w, &user_code, "approve"), 200);
    let (status, stderr) = finish(child, &lines);
    assert_eq!(status, 0, "{stderr}");
    let polls = polls.lock().unwrap().clone();
    assert!(polls.len() >= 2, "{polls:?}");
    assert_eq!(polls[0].1, 400, "the first poll is answered slow_down");
    assert_eq!(polls[1].1, 200, "the next poll gets the token: {polls:?}");
    let gap = polls[1].0 - polls[0].0;
    assert!(
        gap >= Duration::from_secs(6),
        "polled again after {gap:?}, not after interval (1 s) + 5 s"
    );
    assert_counts(&w.counts(&site.hid), &site.expected(None, None));
}

/// A reverse proxy to the cloud that answers the first device code poll with `slow_down` and
/// records the time and status of every device code poll.
fn start_proxy(w: &World, polls: Arc<Mutex<Vec<(Instant, u16)>>>) -> String {
    use axum::body::{Body, to_bytes};
    use axum::extract::Request;
    use axum::response::Response;
    let base = w.base.clone();
    let http = reqwest::Client::new();
    let handler = move |req: Request| {
        let (base, http, polls) = (base.clone(), http.clone(), polls.clone());
        async move {
            let (parts, body) = req.into_parts();
            let bytes = to_bytes(body, 64 * 1024 * 1024).await.unwrap_or_default();
            let path = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
                .to_string();
            let is_poll = path.ends_with("/oauth2/v2.0/token")
                && String::from_utf8_lossy(&bytes).contains("device_code");
            if is_poll {
                let first = polls.lock().unwrap().is_empty();
                if first {
                    polls.lock().unwrap().push((Instant::now(), 400));
                    let v: Value = serde_json::json!({"error": "slow_down", "error_description": "polled too fast (proxy)"});
                    return Response::builder()
                        .status(400)
                        .header("content-type", "application/json")
                        .body(Body::from(v.to_string()))
                        .unwrap();
                }
            }
            let mut rq = http.request(parts.method.clone(), format!("{base}{path}"));
            for (k, v) in parts.headers.iter() {
                if k != "host" && k != "content-length" {
                    rq = rq.header(k, v);
                }
            }
            let r = rq.body(bytes.to_vec()).send().await.expect("forward");
            let status = r.status();
            if is_poll {
                polls
                    .lock()
                    .unwrap()
                    .push((Instant::now(), status.as_u16()));
            }
            let mut b = Response::builder().status(status);
            for (k, v) in r.headers().iter() {
                if k != "content-length" && k != "transfer-encoding" {
                    b = b.header(k, v);
                }
            }
            b.body(Body::from(r.bytes().await.unwrap_or_default()))
                .unwrap()
        }
    };
    let app = axum::Router::new().fallback(handler);
    let listener =
        w.rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind proxy");
    let addr = listener.local_addr().unwrap();
    w.rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// A cloud that cannot be reached: the error names it and a hint says where to look.
#[test]
fn an_unreachable_endpoint_gives_a_hint() {
    let w = World::start();
    w.generate(50, 2303);
    let cfg = w.dir().join("attach.toml");
    std::fs::write(
        &cfg,
        format!("[site]\npath = \"site\"\n[cloud]\nendpoint = \"http://127.0.0.1:9\"\ntenant = \"{TENANT}\"\n"),
    )
    .unwrap();
    let r = w.cli(&["status"]);
    r.code(1);
    assert!(
        r.stderr
            .contains("cannot reach the cloud at http://127.0.0.1:9"),
        "{}",
        r.stderr
    );
    let hint = format!(
        "check `[cloud] endpoint` in {}, or start a local cloud with `cloudattach cloud serve`",
        cfg.display()
    );
    assert!(r.stderr.contains(&hint), "{hint:?} in:\n{}", r.stderr);
}

/// When the application already has as many unfinished sign-ins in the tenant as the cloud
/// allows, the cloud refuses a new device code and apply says so clearly; nothing changed.
#[test]
fn a_refused_device_code_is_explained() {
    let w = World::start_with(ServeOptions {
        max_device_codes: 1,
        ..manual()
    });
    w.generate(50, 2303);
    w.config("public", DEFAULT);
    let (s, v) = w.form(
        "/contoso.example/oauth2/v2.0/devicecode",
        &[
            ("client_id", "00000000-0000-4000-8000-00000000c11e"),
            ("scope", "api://cloudattach/.default"),
        ],
    );
    assert_eq!(s, 200, "{v}");
    let r = w.cli(&["apply", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("the cloud refuses new sign-ins to contoso.example for now")
            && r.stderr.contains("try again in"),
        "{}",
        r.stderr
    );
    assert!(w.hierarchies().is_empty());
}

/// A data dir written by a newer cloudattach: `cloud serve` refuses to start with exit 2, names
/// the database's schema version and the newest this build knows, and changes nothing.
#[test]
fn cloud_serve_refuses_a_database_from_a_newer_version() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cloud");
    std::fs::create_dir_all(&data).unwrap();
    drop(cloudattach_cloud::SqliteStore::open(&data).unwrap());
    let db = data.join("cloud.db");
    let known: i64 = {
        let c = rusqlite::Connection::open(&db).unwrap();
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        c.execute_batch(&format!(
            "PRAGMA user_version={}; PRAGMA wal_checkpoint(TRUNCATE);",
            v + 1
        ))
        .unwrap();
        v
    };
    let before = std::fs::read(&db).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cloudattach"))
        .args(["cloud", "serve", "--addr", "127.0.0.1:0", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("schema version {}", known + 1))
            && stderr.contains(&format!("up to {known}")),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), before);
    assert!(!data.join("signing-key.pem").exists());
}

/// `init --sign-in` in a fresh directory against a real cloud: the token cache's directory
/// does not exist yet; init creates it (0700, the cache 0600), and the apply that follows uses
/// the cached tokens.
#[test]
fn init_signs_in_from_a_fresh_directory() {
    let w = World::start();
    w.generate(200, 2303);
    assert!(!w.state_dir().exists());
    let r = w.cli(&["init", "--no-input", "--sign-in", "--endpoint", &w.base]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("admin@contoso.example is a Global Administrator"),
        "{}",
        r.stderr
    );
    let tokens = w.state_dir().join("tokens.json");
    assert!(tokens.is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&w.state_dir()), 0o700);
        assert_eq!(mode(&tokens), 0o600);
    }
    let r = w.cli(&["apply", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        !r.stderr.contains("enter the code"),
        "asked to sign in again: {}",
        r.stderr
    );
}
