//! The CLI: `check-config` on good and bad files, `hash-password`, and the shipped configs.

use std::io::Write;
use std::process::{Command, Stdio};

fn check(yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_seatgate"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

const GOOD: &str = "listen: 127.0.0.1:8080
admin: { listen: 127.0.0.1:9090 }
store: { kind: embedded, path: /tmp/never-opened.redb }
products:
  - name: crm
    upstream: app.internal:8000
    session:
      cookie: SID
      idle_timeout: 20m
      max_lifetime: 12h
    login: { path: /login, user: { form_field: username } }
    seats: 5
";

#[test]
fn shipped_configs_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let out = Command::new(env!("CARGO_BIN_EXE_seatgate"))
                .args(["check-config", "--config"])
                .arg(&p)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    assert!(n >= 1);
}

#[test]
fn good_config_passes_without_contacting_anything() {
    let (ok, text) = check(GOOD);
    assert!(ok, "{text}");
    assert!(text.contains("ok (1 products, 5 seats)"), "{text}");
}

#[test]
fn bad_configs_name_key_and_line() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "    seats: 5\n",
            "    seats: 5\n    colour: blue\n",
            &["unknown field `colour`", "line 13"],
        ),
        (
            "idle_timeout: 20m",
            "idle_timeout: 20 minutes please",
            &["invalid duration `20 minutes please`", "line 9"],
        ),
        (
            "idle_timeout: 20m",
            "idle_timeout: 20",
            &["needs a unit", "line 9"],
        ),
        ("seats: 5", "seats: 0", &["nonzero", "line 12"]),
        (
            "upstream: app.internal:8000",
            "upstream: app.internal",
            &["must be host:port", "line 6"],
        ),
        (
            "upstream: app.internal:8000",
            "upstream: app:99999",
            &["invalid port", "line 6"],
        ),
        (
            "listen: 127.0.0.1:8080",
            "listen: 127.0.0.1:9090",
            &["admin.listen", "must differ"],
        ),
        (
            "kind: embedded",
            "kind: floppy",
            &["unknown variant `floppy`", "line 3"],
        ),
        (
            "cookie: SID",
            "cookie: \"S I D\"",
            &[
                "products[0].session.cookie",
                "not a valid cookie name",
                "line 8",
            ],
        ),
        (
            "    seats: 5\n",
            "    seats: 5\n    seats_per: user_device\n    login2: 1\n",
            &["unknown field `login2`"],
        ),
    ];
    for (from, to, wants) in cases {
        let yaml = GOOD.replacen(from, to, 1);
        assert_ne!(yaml, GOOD, "case {to} did not apply");
        let (ok, text) = check(&yaml);
        assert!(!ok, "{to}: accepted");
        for w in *wants {
            assert!(text.contains(w), "{to}: missing `{w}` in: {text}");
        }
        assert!(!text.contains("panicked"), "{text}");
    }
}

#[test]
fn cross_field_errors() {
    let two_defaults = format!("{GOOD}    clients:\n      - kind: web\n      - kind: other\n");
    let (ok, text) = check(&two_defaults);
    assert!(!ok);
    assert!(
        text.contains("products[0].clients[1].match") && text.contains("second default client"),
        "{text}"
    );
    let user_device_without_user = GOOD
        .replace(
            "login: { path: /login, user: { form_field: username } }",
            "login: { path: /login }",
        )
        .replace("seats: 5", "seats: 5\n    seats_per: user_device");
    let (ok, text) = check(&user_device_without_user);
    assert!(!ok);
    assert!(
        text.contains("products[0].login.user") && text.contains("required when seats_per"),
        "{text}"
    );
    let (ok, text) = check("listen: [1, 2]\n");
    assert!(!ok && text.contains("listen"), "{text}");
    let (ok, text) = check("");
    assert!(!ok && !text.contains("panicked"), "{text}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_seatgate"))
        .args(["check-config", "--config", "/nonexistent/x.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.yaml: cannot read"));
}

#[test]
fn hash_password_prints_a_usable_argon2_hash() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_seatgate"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    // The hash is accepted by check-config as an admin password hash.
    let yaml = GOOD.replace(
        "admin: { listen: 127.0.0.1:9090 }",
        &format!("admin:\n  listen: 127.0.0.1:9090\n  users: [{{ name: a, password_hash: \"{}\", role: super }}]", hash.trim()),
    );
    let (ok, text) = check(&yaml);
    assert!(ok, "{text}");
}

/// The shipped alert rules parse, and every seatgate metric they use is one the gateway
/// registers (a renamed metric must not leave an alert that can never fire).
#[test]
fn shipped_alert_rules_are_valid_and_name_real_metrics() {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/alerts.yml");
    let out = Command::new("promtool")
        .args(["check", "rules", rules])
        .output()
        .expect("promtool is required (scripts/setup --test installs prometheus)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(rules).unwrap();
    let registered = include_str!("../../src/metrics.rs");
    let mut used = 0;
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        let Some(name) = word.strip_prefix("seatgate_") else {
            continue;
        };
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            registered.contains(&format!("\"seatgate_{base}\"")),
            "alert rule uses seatgate_{name}, which src/metrics.rs does not register"
        );
        used += 1;
    }
    assert!(used >= 4, "the rules should watch seatgate's own metrics");
}
