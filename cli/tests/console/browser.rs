//! One headless Chromium behind one chromedriver, for the whole test binary.

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: [&str; 2] = ["/usr/bin/chromium", "/usr/bin/chromium-browser"];
const DRIVER: [&str; 2] = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"];

fn first_existing(paths: &[&str]) -> Option<PathBuf> {
    paths.iter().map(PathBuf::from).find(|p| p.exists())
}

/// The browser, or `None` (after saying so loudly) when Chromium is not installed and the run
/// does not require it.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    pub shots: PathBuf,
}

pub async fn start() -> Option<Browser> {
    let (Some(chromium), Some(driver)) = (first_existing(&CHROMIUM), first_existing(&DRIVER))
    else {
        if std::env::var("CLOUDATTACH_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!(
                "CLOUDATTACH_REQUIRE_BROWSER=1 but chromium or chromedriver is missing: \
                 apt-get install -y chromium chromium-driver"
            );
        }
        eprintln!(
            "\n\n*** SKIPPED: the admin center browser test needs chromium and chromedriver \
             (apt-get install -y chromium chromium-driver); .ci/run installs them ***\n"
        );
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut cmd = Command::new(&driver);
    cmd.arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Its own process group: the drop kills chromedriver and the Chromium it started.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let driver = cmd.spawn().expect("start chromedriver");
    let profile = tempfile::tempdir().expect("profile dir");
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-dev-shm-usage", "--window-size=1440,900",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        },
    });
    let caps = caps.as_object().cloned().expect("capabilities");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        let r = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await;
        match r {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("connect to chromedriver: {e}"),
        }
    };
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    Some(Browser {
        client,
        driver,
        _profile: profile,
        shots,
    })
}

impl Browser {
    /// Saves a PNG of the whole page (the window is stretched to the page's height, at most
    /// 4,000 px, for the shot).
    pub async fn shot(&self, name: &str) -> PathBuf {
        let (w, h) = self.client.get_window_size().await.expect("window size");
        let page_h = self
            .client
            .execute("return document.documentElement.scrollHeight;", vec![])
            .await
            .ok()
            .and_then(|v| v.as_u64())
            .unwrap_or(h);
        let tall = page_h.clamp(h, 4000) as u32;
        if tall as u64 > h {
            // The window's height includes the browser's frame: a little more than the page.
            self.client
                .set_window_size(w as u32, tall + 140)
                .await
                .expect("stretch the window");
        }
        let png = self.client.screenshot().await.expect("screenshot");
        if tall as u64 > h {
            self.client
                .set_window_size(w as u32, h as u32)
                .await
                .expect("restore the window");
        }
        let p = self.shots.join(format!("{name}.png"));
        std::fs::write(&p, png).expect("write screenshot");
        p
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// The text of the first element matching a CSS selector, waiting up to 10 s for it.
    pub async fn text(&self, css: &str) -> String {
        let e = match self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e,
            Err(e) => panic!("no element {css:?} on {}: {e}", self.url_now().await),
        };
        e.text().await.expect("text")
    }

    pub async fn exists(&self, css: &str) -> bool {
        self.client.find(Locator::Css(css)).await.is_ok()
    }

    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map(|v| v.len())
            .unwrap_or(0)
    }

    pub async fn fill(&self, css: &str, value: &str) {
        let e = self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no field {css:?}: {e}"));
        e.clear().await.expect("clear");
        e.send_keys(value).await.expect("type");
    }

    /// Chooses an option of a `<select>` by its value.
    pub async fn choose(&self, css: &str, value: &str) {
        let e = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no select {css:?}: {e}"));
        e.select_by_value(value).await.expect("select");
    }

    pub async fn click(&self, css: &str) {
        let e = match self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e,
            Err(e) => panic!(
                "nothing to click at {css:?} on {}: {e}",
                self.url_now().await
            ),
        };
        e.click().await.expect("click");
    }

    /// Clicks something that loads a new page, and waits for that page.
    pub async fn click_nav(&self, css: &str) {
        self.client
            .execute("document.documentElement.dataset.old = '1';", vec![])
            .await
            .expect("mark the page");
        self.click(css).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let fresh = self
                .client
                .execute(
                    "return document.readyState === 'complete' && !document.documentElement.dataset.old;",
                    vec![],
                )
                .await
                .ok()
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            if fresh {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "clicking {css:?} loaded no new page (still {})",
                self.url_now().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Accessibility basics of the current page: every visible form control has a label, every
    /// chart has a role and a name, the page has one `h1` and a skip link. The problems found.
    pub async fn a11y_problems(&self) -> Vec<String> {
        let v = self
            .client
            .execute(
                r#"const p = [];
                   document.querySelectorAll('input:not([type=hidden]), select, textarea').forEach(e => {
                     if (!(e.labels && e.labels.length) && !e.getAttribute('aria-label')) p.push('unlabelled ' + e.outerHTML.slice(0, 80));
                   });
                   document.querySelectorAll('svg').forEach(e => {
                     if (e.getAttribute('role') !== 'img' || !e.getAttribute('aria-label')) p.push('chart without role/name');
                   });
                   if (document.querySelectorAll('h1').length !== 1) p.push('not exactly one h1');
                   return p;"#,
                vec![],
            )
            .await
            .expect("run the accessibility check");
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Fetches a path with the page's session (as a link the person follows would); the body.
    pub async fn fetch_text(&self, path: &str) -> String {
        let v = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 fetch(arguments[0], {credentials: 'same-origin'}).then(r => r.text()).then(done, e => done('ERROR ' + e));",
                vec![serde_json::json!(path)],
            )
            .await
            .expect("fetch");
        v.as_str().unwrap_or_default().to_string()
    }

    pub async fn url_now(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    pub async fn set_size(&self, w: u32, h: u32) {
        self.client
            .set_window_size(w, h)
            .await
            .expect("window size");
    }

    /// Ends the WebDriver session; the drop stops chromedriver and Chromium.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

fn kill_group(child: &mut Child) {
    let pid = child.id() as i32;
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.wait();
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}
