//! The access log: one JSON line per request (`access_log: { path | stdout: true }`).
//!
//! The proxy hands over a plain [`Request`] in its `logging` phase; this module adds the UTC
//! time and writes the line. It never sees the `Session`, so it cannot log what it is not
//! given: no cookie value, no password, no query string (the path is cut at `?` and `;`, where
//! legacy apps put `;jsessionid=`). The session appears only as `seat`, a short hash.
//!
//! Requests never wait on the disk: lines go through a bounded channel to one writer thread,
//! which writes them in batches and flushes whenever the channel runs dry. When the writer
//! falls behind by [`QUEUE`] lines, further lines are dropped and counted (warned about once
//! per thousand) rather than slowing the proxy down. SIGUSR1 makes the writer reopen the file
//! (logrotate's `postrotate`), and a reload may switch the target or turn the log on or off.

use crate::config::AccessLogTarget;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// Lines that may wait for the writer before new ones are dropped.
const QUEUE: usize = 64 * 1024;

/// What the proxy knows about a finished request. Borrowed, so building it allocates nothing
/// when the log is off (the caller checks [`AccessLog::enabled`] first anyway).
#[derive(Debug, Serialize)]
pub struct Request<'a> {
    /// The product that served it; `None` when no product matched.
    pub product: Option<&'a str>,
    /// The client kind (`default` for the built-in one).
    pub client: &'a str,
    /// login, logout, session, check, heartbeat, self_service, pass …
    pub action: &'a str,
    pub method: &'a str,
    /// The request path without query or `;` parameters.
    pub path: &'a str,
    /// The status sent to the client; 0 when none was (the connection broke first).
    pub status: u16,
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Duration,
    /// Response body bytes sent to the client.
    pub bytes: u64,
    /// A short hash of the session (of its key in the store), never the cookie value.
    pub seat: Option<&'a str>,
    /// The user, when the request names one (a login).
    pub user: Option<&'a str>,
    /// Why the gateway answered itself, when it did (full, expired, check_full …).
    pub denied: Option<&'a str>,
    /// The client's address.
    pub peer: Option<&'a str>,
    /// "1.1" or "2".
    pub http: &'a str,
    pub tls: bool,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1e6).round() / 1e3)
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(flatten)]
    req: &'a Request<'a>,
}

/// The path as logged: no query, no `;` parameters.
pub fn log_path(path: &str) -> &str {
    let end = path.find(['?', ';']).unwrap_or(path.len());
    &path[..end]
}

enum Msg {
    Line(String),
    Reopen,
    Target(Option<Sink>),
    Flush(std::sync::mpsc::Sender<()>),
}

enum Sink {
    File { path: PathBuf, out: BufWriter<File> },
    Stdout(BufWriter<std::io::Stdout>),
}

impl Sink {
    fn open(t: &AccessLogTarget) -> std::io::Result<Sink> {
        Ok(match t {
            AccessLogTarget::File(p) => Sink::File {
                path: p.clone(),
                out: BufWriter::new(open_append(p)?),
            },
            AccessLogTarget::Stdout => Sink::Stdout(BufWriter::new(std::io::stdout())),
        })
    }

    fn out(&mut self) -> &mut dyn Write {
        match self {
            Sink::File { out, .. } => out,
            Sink::Stdout(out) => out,
        }
    }
}

fn open_append(p: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(p)
}

pub struct AccessLog {
    enabled: AtomicBool,
    tx: OnceLock<SyncSender<Msg>>,
    /// The target the writer has now, to tell a reload what changed.
    target: Mutex<Option<AccessLogTarget>>,
    dropped: AtomicU64,
}

impl AccessLog {
    /// Opens the log (an unwritable file is an error here, at start, not a silent gap later).
    pub fn open(target: Option<&AccessLogTarget>) -> Result<AccessLog, String> {
        let log = AccessLog {
            enabled: AtomicBool::new(false),
            tx: OnceLock::new(),
            target: Mutex::new(None),
            dropped: AtomicU64::new(0),
        };
        log.set_target(target)?;
        Ok(log)
    }

    pub fn disabled() -> AccessLog {
        AccessLog {
            enabled: AtomicBool::new(false),
            tx: OnceLock::new(),
            target: Mutex::new(None),
            dropped: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Switches to `target` (a reload): a new file is opened first, so a bad path keeps the old
    /// log and is reported.
    pub fn set_target(&self, target: Option<&AccessLogTarget>) -> Result<(), String> {
        let mut cur = self.target.lock().unwrap_or_else(|e| e.into_inner());
        if cur.as_ref() == target {
            return Ok(());
        }
        let sink = target
            .map(|t| {
                Sink::open(t).map_err(|e| match t {
                    AccessLogTarget::File(p) => {
                        format!("access_log: cannot open `{}`: {e}", p.display())
                    }
                    AccessLogTarget::Stdout => format!("access_log: stdout: {e}"),
                })
            })
            .transpose()?;
        if sink.is_some() || self.tx.get().is_some() {
            self.sender().send_msg(Msg::Target(sink));
        }
        self.enabled.store(target.is_some(), Ordering::Relaxed);
        *cur = target.cloned();
        Ok(())
    }

    fn sender(&self) -> &SyncSender<Msg> {
        self.tx.get_or_init(|| {
            let (tx, rx) = sync_channel(QUEUE);
            let spawned = std::thread::Builder::new()
                .name("seatgate-access-log".into())
                .spawn(move || writer(rx));
            if let Err(e) = spawned {
                log::error!("access log writer thread: {e}");
            }
            tx
        })
    }

    pub fn write(&self, req: &Request<'_>) {
        if !self.enabled() {
            return;
        }
        let line = Line {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            req,
        };
        let Ok(mut text) = serde_json::to_string(&line) else {
            return;
        };
        text.push('\n');
        match self.sender().try_send(Msg::Line(text)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed);
                crate::metrics::limit_reached("access_log_queue");
                if n.is_multiple_of(1000) {
                    log::warn!("access log writer behind: {} lines dropped so far", n + 1);
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// SIGUSR1: reopen the file at its path (after logrotate moved it away).
    pub fn reopen(&self) {
        if self.enabled() {
            self.sender().send_msg(Msg::Reopen);
        }
    }

    /// Waits until every line written so far is out of the process (shutdown, tests).
    pub fn flush(&self) {
        if let Some(tx) = self.tx.get() {
            let (done, wait) = std::sync::mpsc::channel();
            if tx.send(Msg::Flush(done)).is_ok() {
                let _ = wait.recv_timeout(Duration::from_secs(5));
            }
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

trait SendMsg {
    fn send_msg(&self, m: Msg);
}

impl SendMsg for SyncSender<Msg> {
    /// Control messages wait for room (they are rare); only lines are ever dropped.
    fn send_msg(&self, m: Msg) {
        let _ = self.send(m);
    }
}

fn writer(rx: Receiver<Msg>) {
    let mut sink: Option<Sink> = None;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(m) = next.take() {
            handle(&mut sink, m);
            next = rx.try_recv().ok();
        }
        if let Some(s) = sink.as_mut() {
            if let Err(e) = s.out().flush() {
                log::warn!("access log: write failed: {e}");
            }
        }
    }
}

fn handle(sink: &mut Option<Sink>, m: Msg) {
    match m {
        Msg::Line(l) => {
            if let Some(s) = sink.as_mut() {
                // A full disk must not stop the proxy: the failure is logged at flush.
                let _ = s.out().write_all(l.as_bytes());
            }
        }
        Msg::Target(new) => {
            if let Some(old) = sink.as_mut() {
                let _ = old.out().flush();
            }
            *sink = new;
        }
        Msg::Reopen => {
            if let Some(Sink::File { path, out }) = sink.as_mut() {
                let _ = out.flush();
                match open_append(path) {
                    Ok(f) => {
                        *out = BufWriter::new(f);
                        log::info!("access log reopened: {}", path.display());
                    }
                    Err(e) => log::error!(
                        "access log: cannot reopen `{}`, still writing the old file: {e}",
                        path.display()
                    ),
                }
            }
        }
        Msg::Flush(done) => {
            if let Some(s) = sink.as_mut() {
                let _ = s.out().flush();
            }
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(path: &'a str) -> Request<'a> {
        Request {
            product: Some("crm"),
            client: "web",
            action: "login",
            method: "POST",
            path: log_path(path),
            status: 302,
            duration: Duration::from_micros(1500),
            bytes: 12,
            seat: Some("0123456789ab"),
            user: Some("ann"),
            denied: None,
            peer: Some("127.0.0.1:5000"),
            http: "2",
            tls: true,
        }
    }

    #[test]
    fn paths_lose_query_and_parameters() {
        assert_eq!(log_path("/a/b?token=x"), "/a/b");
        assert_eq!(log_path("/app;jsessionid=SECRET?x=1"), "/app");
        assert_eq!(log_path("/plain"), "/plain");
    }

    #[test]
    fn lines_are_json_with_utc_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::open(Some(&AccessLogTarget::File(path.clone()))).unwrap();
        log.write(&req("/login?next=/secret"));
        log.flush();
        // logrotate: move the file away, SIGUSR1, and the next line goes to a new file.
        let rotated = dir.path().join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        log.write(&req("/home"));
        log.flush();
        let old = std::fs::read_to_string(&rotated).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(old.trim()).unwrap();
        assert_eq!(v["path"], "/login");
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["user"], "ann");
        assert!(v["time"].as_str().unwrap().ends_with('Z'), "{v}");
        let v: serde_json::Value = serde_json::from_str(new.trim()).unwrap();
        assert_eq!(v["path"], "/home");
    }

    #[test]
    fn off_writes_nothing_and_a_bad_path_is_an_error() {
        let log = AccessLog::open(None).unwrap();
        assert!(!log.enabled());
        log.write(&req("/"));
        let e = AccessLog::open(Some(&AccessLogTarget::File(
            "/nonexistent/dir/a.log".into(),
        )))
        .err()
        .unwrap();
        assert!(e.contains("cannot open `/nonexistent/dir/a.log`"), "{e}");
    }
}
