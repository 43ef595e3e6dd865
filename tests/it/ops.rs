//! Issue 16: what ops ship and run. The container and Kubernetes configs pass `check-config`,
//! the manifests say what the README promises, the Grafana dashboard only queries metrics a
//! live gateway exports, `seatgate health` (the image's HEALTHCHECK) follows `/healthz`, and a
//! reload turns the access log on.

use crate::harness::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn check_config(path: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_seatgate"))
        .args(["check-config", "--config"])
        .arg(path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The Kubernetes config as the pods see it, with `admin.users_file` pointed at the Secret's
/// source file instead of its mount path.
fn k8s_config(text: &str, dir: &Path) -> PathBuf {
    let users = repo("deploy/k8s/config/admin-users.yaml");
    assert!(text.contains("/etc/seatgate-admin/users.yaml"), "{text}");
    let path = dir.join("seatgate.yaml");
    std::fs::write(
        &path,
        text.replace(
            "/etc/seatgate-admin/users.yaml",
            &users.display().to_string(),
        ),
    )
    .unwrap();
    path
}

fn yaml_docs(text: &str) -> Vec<serde_norway::Value> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(text)
        .map(|d| serde_norway::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn container_and_kubernetes_configs_pass_check_config() {
    let (ok, text) = check_config(&repo("deploy/docker/seatgate.yaml"));
    assert!(ok, "deploy/docker/seatgate.yaml: {text}");

    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read_to_string(repo("deploy/k8s/config/seatgate.yaml")).unwrap();
    let (ok, text) = check_config(&k8s_config(&src, dir.path()));
    assert!(ok, "deploy/k8s/config/seatgate.yaml: {text}");
    // Without its Secret the config is refused, naming the key.
    let (ok, text) = check_config(&repo("deploy/k8s/config/seatgate.yaml"));
    assert!(!ok);
    assert!(
        text.contains("admin.users_file") && text.contains("cannot read"),
        "{text}"
    );
}

/// `kubectl kustomize` renders what `kubectl apply -k deploy/k8s` would apply (no cluster
/// needed); without kubectl the manifests are read as they are.
fn k8s_objects() -> (Vec<serde_norway::Value>, bool) {
    let rendered = Command::new("kubectl")
        .args(["kustomize"])
        .arg(repo("deploy/k8s"))
        .output();
    match rendered {
        Ok(out) if out.status.success() => (yaml_docs(&String::from_utf8_lossy(&out.stdout)), true),
        Ok(out) => panic!(
            "kubectl kustomize deploy/k8s: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => {
            eprintln!("kubectl not installed: checking the manifests without kustomize");
            let mut docs = Vec::new();
            for f in ["namespace.yaml", "gateway.yaml", "redis.yaml"] {
                let text = std::fs::read_to_string(repo(&format!("deploy/k8s/{f}"))).unwrap();
                docs.extend(yaml_docs(&text));
            }
            (docs, false)
        }
    }
}

fn find<'a>(docs: &'a [serde_norway::Value], kind: &str, name: &str) -> &'a serde_norway::Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n == name || n.starts_with(&format!("{name}-")))
        })
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn kubernetes_manifests_run_two_probed_replicas_on_redis() {
    let (docs, rendered) = k8s_objects();
    let dep = find(&docs, "Deployment", "seatgate");
    assert_eq!(dep["spec"]["replicas"], 2);
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    find(&docs, "Service", "seatgate");
    let pdb = find(&docs, "PodDisruptionBudget", "seatgate");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let redis = find(&docs, "StatefulSet", "seatgate-redis");
    let args: Vec<&str> = redis["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(
        args.windows(2).any(|w| w == ["--appendonly", "yes"]),
        "{args:?}"
    );
    find(&docs, "Service", "seatgate-redis");

    // Config from the ConfigMap, admin users from the Secret, both mounted where the config
    // says; the ConfigMap's embedded config passes check-config.
    let vols = pod["volumes"].as_sequence().unwrap();
    let vol = |key: &str| vols.iter().find(|v| !v[key].is_null()).unwrap().clone();
    let cm_name = vol("configMap")["configMap"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let secret = vol("secret")["secret"]["secretName"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(cm_name.starts_with("seatgate-config"), "{cm_name}");
    assert!(secret.starts_with("seatgate-admin-users"), "{secret}");
    if rendered {
        let cm = find(&docs, "ConfigMap", &cm_name);
        let embedded = cm["data"]["seatgate.yaml"].as_str().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (ok, text) = check_config(&k8s_config(embedded, dir.path()));
        assert!(ok, "ConfigMap {cm_name}: {text}");
        assert!(embedded.contains("redis://seatgate-redis:6379"));
        let s = find(&docs, "Secret", &secret);
        assert!(!s["data"]["users.yaml"].is_null(), "{s:?}");
    }
}

#[test]
fn dockerfile_is_multi_stage_non_root_with_volume_and_healthcheck() {
    let text = std::fs::read_to_string(repo("deploy/Dockerfile")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert!(lines.iter().filter(|l| l.starts_with("FROM ")).count() >= 2);
    assert!(lines.iter().any(|l| l.contains("--profile dist")));
    let user = lines.iter().find(|l| l.starts_with("USER ")).unwrap();
    assert!(!user.contains("root") && !user.ends_with(" 0"), "{user}");
    assert!(lines.contains(&"VOLUME /var/lib/seatgate"));
    assert!(lines
        .iter()
        .any(|l| l.starts_with("CMD [\"/usr/local/bin/seatgate\", \"health\"")));
    assert!(text.contains("HEALTHCHECK"));
    let ignore = std::fs::read_to_string(repo(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target/"));
}

/// Every metric name in the dashboard's queries, without the histogram suffixes.
fn dashboard_metrics() -> Vec<String> {
    let text = std::fs::read_to_string(repo("deploy/grafana/seatgate.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone())
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&dash, &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:?}");
    let mut names: Vec<String> = exprs
        .iter()
        .flat_map(|e| {
            e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("seatgate_"))
                .map(|w| {
                    ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| w.strip_suffix(s))
                        .unwrap_or(w)
                        .to_string()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[tokio::test]
async fn dashboard_queries_only_metrics_a_live_gateway_exports() {
    let names = dashboard_metrics();
    for want in [
        "seatgate_seats_in_use",
        "seatgate_seats_capacity",
        "seatgate_pool_in_use",
        "seatgate_seats_available",
        "seatgate_logins_total",
        "seatgate_denials_total",
        "seatgate_checks_total",
        "seatgate_seat_releases_total",
        "seatgate_request_duration_seconds",
        "seatgate_store_errors_total",
        "seatgate_heartbeats_total",
        "seatgate_queue_length",
        "seatgate_queue_total",
        "seatgate_queue_wait_seconds",
    ] {
        assert!(names.iter().any(|n| n == want), "dashboard lacks {want}");
    }
    let up = upstream("SID").await;
    let g = Gateway::start(BASIC, &basic_vars(&up, 2)).await;
    // One request so the histogram and the request series have a sample.
    let sid = set_cookie(&login(&g, "ann", PASSWORD, None).await, "SID").unwrap();
    assert_eq!(g.get_with_sid("/home", &sid).await.status(), 200);
    let scrape = g.metrics().await;
    for n in &names {
        assert!(
            scrape.contains(&format!("# TYPE {n} ")),
            "the dashboard queries {n}, which a fresh gateway does not export"
        );
    }
}

#[tokio::test]
async fn health_command_follows_healthz() {
    let up = upstream("SID").await;
    let g = Gateway::start(BASIC, &basic_vars(&up, 1)).await;
    let admin = g.admin_url("");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_seatgate"))
        .args(["health", "--admin", &admin])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"ok\""));
    let (_held, port) = refusing_port();
    let nobody = format!("http://127.0.0.1:{port}");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_seatgate"))
        .args(["health", "--admin", &nobody])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&nobody));
}

#[tokio::test]
async fn reload_turns_the_access_log_on_and_sigusr1_reopens_it() {
    let up = upstream("SID").await;
    let g = Gateway::start(BASIC, &basic_vars(&up, 1)).await;
    let log = g.dir.path().join("access.log");
    assert_eq!(g.get_with_sid("/before", "nobody").await.status(), 302);
    let text = std::fs::read_to_string(&g.config_path).unwrap();
    std::fs::write(
        &g.config_path,
        format!("{text}\naccess_log:\n  path: \"{}\"\n", log.display()),
    )
    .unwrap();
    let pid = g.child.as_ref().unwrap().id().to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(ok.success(), "kill {sig}");
    };
    signal("-HUP");
    let audit = g.dir.path().join("audit.jsonl");
    let reloaded = eventually(Duration::from_secs(10), || {
        let t = std::fs::read_to_string(&audit).unwrap_or_default();
        async move { t.contains("\"config_reload\"") }
    })
    .await;
    assert!(reloaded, "{}", g.log());
    let sid = set_cookie(&login(&g, "ann", PASSWORD, None).await, "SID").unwrap();
    assert_eq!(g.get_with_sid("/one?secret=1", &sid).await.status(), 200);
    let logged = |path: &'static str, file: PathBuf| async move {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains(&format!("\"path\":\"{path}\"")))
    };
    assert!(
        eventually(Duration::from_secs(5), || logged("/one", log.clone())).await,
        "{}",
        g.log()
    );
    // logrotate: move the file, SIGUSR1, and new lines go to a new file at the same path.
    let rotated = g.dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    signal("-USR1");
    let reopened = eventually(Duration::from_secs(10), || {
        let gw = &g;
        let (sid, log) = (sid.clone(), log.clone());
        async move {
            gw.get_with_sid("/two", &sid).await;
            logged("/two", log).await
        }
    })
    .await;
    assert!(reopened, "{}", g.log());
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(!old.contains("/before"), "logged before it was on: {old}");
    for l in old.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(!l.contains(&sid) && !l.contains("secret=1"), "{l}");
        assert_eq!(v["product"], "crm");
    }
}

/// With `audit.hash_users`, the access log names users the way the audit log does.
#[tokio::test]
async fn access_log_hashes_users_like_the_audit_log() {
    let up = upstream("SID").await;
    let yaml = BASIC.replace(
        "  path: \"{dir}/audit.jsonl\"\n",
        "  path: \"{dir}/audit.jsonl\"\n  hash_users: true\naccess_log: { path: \"{dir}/access.log\" }\n",
    );
    assert_ne!(yaml, BASIC);
    let g = Gateway::start(&yaml, &basic_vars(&up, 1)).await;
    assert_eq!(login(&g, "ann", PASSWORD, None).await.status(), 302);
    let (log, audit) = (
        g.dir.path().join("access.log"),
        g.dir.path().join("audit.jsonl"),
    );
    let mut line = serde_json::Value::Null;
    let found = eventually(Duration::from_secs(5), || {
        line = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["action"] == "login")
            .unwrap_or_default();
        let done = !line.is_null();
        async move { done }
    })
    .await;
    assert!(found, "{}", g.log());
    let user = line["user"].as_str().unwrap();
    assert!(user.starts_with("hmac:"), "{line}");
    // The audit log has its own writer thread: its line may come after the access log's.
    let mut admit = serde_json::Value::Null;
    let audited = eventually(Duration::from_secs(5), || {
        admit = std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["event"] == "admit")
            .unwrap_or_default();
        let done = !admit.is_null();
        async move { done }
    })
    .await;
    assert!(audited, "no admit line in the audit log");
    assert_eq!(admit["user"], user);
    assert!(!std::fs::read_to_string(&log).unwrap().contains("ann"));
}

/// Handed no sockets (no `--listen-fd`, no `LISTEN_FDS`), the gateway binds its configured
/// `listen` and `admin.listen` itself, as before sockets could be handed over.
#[tokio::test]
async fn the_gateway_binds_its_configured_addresses_when_handed_no_sockets() {
    let up = upstream("SID").await;
    let g = Gateway::start_binding(BASIC, &basic_vars(&up, 1)).await;
    assert_eq!(login(&g, "ann", PASSWORD, None).await.status(), 302);
    assert_eq!(login(&g, "bob", PASSWORD, None).await.status(), 503);
    assert_eq!(g.in_use("crm").await, 1);
}

/// A handed socket that no `listen` or `admin.listen` entry names stops the start, with its
/// address: it would be held open and never served.
#[tokio::test]
async fn a_handed_socket_that_matches_no_listener_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, admin, stray) = (bound(), bound(), bound());
    let at = |l: &std::net::TcpListener| l.local_addr().unwrap().to_string();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        BASIC
            .replace("{listen}", &at(&proxy))
            .replace("{admin}", &at(&admin))
            .replace("{dir}", &dir.path().display().to_string())
            .replace("{admin_hash}", ADMIN_HASH)
            .replace("{upstream}", "127.0.0.1:9")
            .replace("{sweep}", "1s")
            .replace("{idle}", "20m")
            .replace("{lifetime}", "12h")
            .replace("{expired}", "login")
            .replace("{seats_per}", "session")
            .replace("{seats}", "1"),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_seatgate"));
    cmd.args(["run", "--config"]).arg(&cfg);
    pass_sockets(&mut cmd, &[&proxy, &admin, &stray]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("inherited socket bound to {}", at(&stray)))
            && err.contains("matches no `listen` or `admin.listen` address"),
        "{err}"
    );
}

/// systemd socket activation: the sockets come as fds 3 and 4 with `LISTEN_FDS=2` and
/// `LISTEN_PID` naming the gateway's own pid (a shell sets it to its pid, then execs the
/// gateway, which keeps the pid), and the gateway serves them with no `--listen-fd`.
#[tokio::test]
async fn systemd_socket_activation_serves_the_sockets_it_is_handed() {
    let up = upstream("SID").await;
    let dir = tempfile::tempdir().unwrap();
    let (proxy, admin) = (bound(), bound());
    let at = |l: &std::net::TcpListener| l.local_addr().unwrap().to_string();
    let cfg = dir.path().join("activated.yaml");
    let vars = basic_vars(&up, 1);
    let mut yaml = BASIC
        .replace("{listen}", &at(&proxy))
        .replace("{admin}", &at(&admin))
        .replace("{dir}", &dir.path().display().to_string())
        .replace("{admin_hash}", ADMIN_HASH);
    for (k, v) in &vars {
        yaml = yaml.replace(&format!("{{{k}}}"), v);
    }
    std::fs::write(&cfg, yaml).unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"LISTEN_PID=$$ LISTEN_FDS=2 exec "$0" run --config "$1""#)
        .arg(env!("CARGO_BIN_EXE_seatgate"))
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let fds = [proxy.as_raw_fd(), admin.as_raw_fd()];
        // SAFETY: between fork and exec only dup2 runs (async-signal-safe), onto fds 3 and 4
        // of the child alone; dup2's copies are not close-on-exec.
        unsafe {
            cmd.pre_exec(move || {
                for (i, &fd) in fds.iter().enumerate() {
                    if libc::dup2(fd, 3 + i as i32) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().unwrap();
    // Bounded: a socket nobody serves still completes the handshake (this process holds it).
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let health = format!("http://{}/healthz", at(&admin));
    let served = eventually(Duration::from_secs(30), || async {
        client
            .get(&health)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    let through = client
        .get(format!("http://{}/activated", at(&proxy)))
        .send()
        .await
        .map(|r| r.status().as_u16());
    child.kill().ok();
    child.wait().ok();
    assert!(served, "the admin socket handed as fd 4 answers /healthz");
    assert_eq!(
        through.ok(),
        Some(200),
        "the proxy socket handed as fd 3 serves"
    );
    assert_eq!(up.seen.count("/activated"), 1);
}

/// Ctrl-C (SIGINT) stops the gateway: it exits with success, and promptly, after serving
/// (four worker threads, `work_stealing` off). The race that made a fast shutdown spin forever
/// (see `server::stop_first`) is rare in this setting: the in-process
/// `server::tests::run_serves_the_given_sockets_until_the_shutdown_signal` is the one that
/// caught it (about 1 run in 15 before the fix); this checks the signal's path through the
/// binary.
#[tokio::test]
async fn ctrl_c_stops_the_gateway() {
    let up = upstream("SID").await;
    for round in 0..6 {
        let mut g = Gateway::start(&format!("threads: 4\n{BASIC}"), &basic_vars(&up, 1)).await;
        for _ in 0..4 {
            assert_eq!(g.get_with_sid("/", "nobody").await.status(), 302);
        }
        let mut child = g.child.take().unwrap();
        let pid = child.id().to_string();
        assert!(Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "round {round}: still running 15 s after SIGINT: {}",
                    g.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(status.success(), "round {round}: {status}: {}", g.log());
    }
}
