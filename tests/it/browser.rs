//! A minimal WebDriver client (JSON over HTTP to chromedriver) for real-browser tests with
//! Debian's headless Chromium. No extra crate: the protocol is a handful of POSTs.

#![allow(dead_code)]

use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    profile: std::path::PathBuf,
    reaped: bool,
}

impl Drop for Browser {
    /// A failing test must not leave browsers behind.
    fn drop(&mut self) {
        self.reap();
    }
}

fn find_exe(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find(|n| std::path::Path::new(n).exists())
        .map(|s| s.to_string())
}

impl Browser {
    /// Starts chromedriver and a fresh headless Chromium (own profile dir).
    pub async fn start() -> Browser {
        let chromedriver = find_exe(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])
            .expect("chromedriver is required (scripts/setup --test installs chromium-driver)");
        let chromium = find_exe(&["/usr/bin/chromium", "/usr/lib/chromium/chromium"])
            .expect("chromium is required");
        // Port 0: chromedriver binds a port of the kernel's choosing and says which on stdout,
        // so no other test can take it first. Its own process group: killing the group takes
        // chromedriver and the browsers it started, and nothing else.
        let mut driver = Command::new(chromedriver)
            .process_group(0)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let out = driver.stdout.take().unwrap();
        // Its stdout is read to the end, so it never blocks on (or dies of) a full or closed
        // pipe.
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(p) = line
                    .split_once("started successfully on port ")
                    .and_then(|(_, p)| p.trim_end_matches('.').trim().parse::<u16>().ok())
                {
                    let _ = tx.send(p);
                }
            }
        });
        let port = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .ok()
            .flatten()
            .expect("chromedriver did not say its port");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap().keep();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-quic", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_string();
        Browser {
            driver,
            base,
            session,
            http,
            profile,
            reaped: false,
        }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        if let Some(err) = v["value"].get("error") {
            panic!("webdriver {path}: {err} {}", v["value"]["message"]);
        }
        v["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body; `arguments` available) and returns its result.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Runs `script` every 100 ms until it returns `want`; fails the test after `within`.
    pub async fn wait_for(&self, script: &str, want: Value, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let got = self.execute(script, vec![]).await;
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "{script}: {got} != {want}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs an async script: call `arguments[arguments.length-1](result)` when done.
    pub async fn execute_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    pub async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(|x| x.as_str())
            .unwrap()
            .to_string()
    }

    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    pub async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.cmd(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub async fn current_url(&self) -> String {
        self.cmd(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Accepts a `confirm()` dialog.
    pub async fn accept_alert(&self) {
        self.cmd(reqwest::Method::POST, "/alert/accept", Some(json!({})))
            .await;
    }

    pub async fn screenshot_png(&self) -> Vec<u8> {
        use base64::Engine;
        let v = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    }

    /// Kills the browser the hard way: no unload handlers, no beacons — a crashed or
    /// force-closed browser.
    pub fn kill(mut self) {
        self.reap();
    }

    pub async fn quit(mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
        self.reap();
    }

    /// SIGKILLs chromedriver's process group, then any process still running with this
    /// browser's own profile dir (Chromium may leave the group), by pid.
    fn reap(&mut self) {
        if std::mem::replace(&mut self.reaped, true) {
            return;
        }
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.wait();
        let needle = format!("--user-data-dir={}", self.profile.display());
        let pids: Vec<String> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
                let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
                cmd.split(|b| *b == 0)
                    .any(|arg| arg == needle.as_bytes())
                    .then(|| pid.to_string())
            })
            .collect();
        if !pids.is_empty() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .args(&pids)
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
