//! `seatgate`: run the gateway, check a config, manage sessions like lmstat/lmremove.

use clap::{Parser, Subcommand};
use seatgate::server::{build_app, build_server, Inherited, RunOptions};
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "seatgate",
    version,
    about = "Concurrent-license gateway: one seat per session, clear denials"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Take over the listeners of a running gateway (pingora graceful upgrade).
        #[arg(long, short)]
        upgrade: bool,
        #[arg(long, short)]
        daemon: bool,
        /// An already bound listening socket to serve on instead of binding (repeatable): it
        /// serves the `listen` or `admin.listen` entry with its address. systemd socket
        /// activation (`LISTEN_FDS`) is taken the same way without this option.
        #[arg(long = "listen-fd", value_name = "FD")]
        listen_fd: Vec<i32>,
    },
    /// Run the gateway plus a tiny sample app on the first product's upstream address.
    Demo {
        #[arg(long, short, default_value = "config/seatgate.yaml")]
        config: PathBuf,
    },
    /// Validate a config without contacting anything; exit 1 with the reason.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// List or end sessions through a running gateway's admin API.
    Sessions {
        #[command(subcommand)]
        cmd: SessionsCmd,
    },
    /// Ask a running gateway to re-read its config (like SIGHUP).
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print an argon2id hash for `admin.users[].password_hash` (password read from stdin).
    HashPassword,
    /// Exit 0 when the gateway's `/healthz` answers 200, else 1 with the reason (for container
    /// HEALTHCHECKs on images without curl).
    Health {
        /// Admin listener URL.
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        admin: String,
    },
}

#[derive(clap::Args)]
struct AdminArgs {
    /// Admin listener URL, e.g. http://127.0.0.1:9090
    #[arg(long)]
    admin: String,
    /// Admin user (or SEATGATE_ADMIN_USER).
    #[arg(long, env = "SEATGATE_ADMIN_USER", default_value = "admin")]
    user: String,
    /// Admin password (or SEATGATE_ADMIN_PASSWORD).
    #[arg(long, env = "SEATGATE_ADMIN_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

#[derive(Subcommand)]
enum SessionsCmd {
    List {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        product: Option<String>,
        #[arg(long = "for-user")]
        for_user: Option<String>,
        #[arg(long = "license-type")]
        license_type: Option<String>,
        #[arg(long)]
        json: bool,
    },
    End {
        #[command(flatten)]
        admin: AdminArgs,
        /// Session ids (from `sessions list`).
        #[arg(required = true)]
        ids: Vec<String>,
        #[arg(long, default_value_t = 30)]
        grace: u64,
    },
}

/// env_logger, plus a count of the error lines that are pingora's only report of an event
/// (`metrics::count_log_line`). `max`: the level RUST_LOG prints; error lines reach the logger
/// even below it, to be counted.
struct CountingLogger {
    inner: env_logger::Logger,
    max: log::LevelFilter,
}

impl log::Log for CountingLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        self.inner.enabled(m)
    }

    fn log(&self, r: &log::Record<'_>) {
        if r.level() == log::Level::Error {
            seatgate::metrics::count_log_line(r.target(), r.args());
        }
        if r.level() <= self.max {
            self.inner.log(r);
        }
    }

    fn flush(&self) {
        self.inner.flush()
    }
}

fn main() -> ExitCode {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    // Error lines reach the logger whatever RUST_LOG says (they are counted); nothing below
    // what it prints is even formatted: pingora has several debug lines per request.
    let max = inner.filter();
    log::set_max_level(max.max(log::LevelFilter::Error));
    let _ = log::set_boxed_logger(Box::new(CountingLogger { inner, max }));
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seatgate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.cmd {
        Cmd::CheckConfig { config } => {
            let cfg = seatgate::config::load(&config).map_err(|e| e.to_string())?;
            let seats: u32 = cfg
                .products
                .iter()
                .flat_map(|p| p.pools.iter())
                .map(|p| p.capacity(seatgate::domain::now_ms()))
                .sum();
            println!(
                "{}: ok ({} products, {} seats)",
                config.display(),
                cfg.products.len(),
                seats
            );
            Ok(())
        }
        Cmd::Run {
            config,
            upgrade,
            daemon,
            listen_fd,
        } => {
            // Taken first, so the sockets are owned (and checked) before anything else opens fds.
            let inherited = Inherited::from_env()?.merge(Inherited::from_fds(&listen_fd)?);
            let cfg = seatgate::config::load(&config).map_err(|e| e.to_string())?;
            let opts = RunOptions {
                upgrade,
                daemon,
                config_path: Some(config),
            };
            let app = build_app(cfg, &opts)?;
            seatgate::server::run(
                app,
                &opts,
                inherited,
                Box::new(pingora_core::server::UnixShutdownSignalWatch),
            )
        }
        Cmd::Demo { config } => {
            let cfg = seatgate::config::load(&config).map_err(|e| e.to_string())?;
            let upstream = cfg.products[0].upstream.clone();
            let listen = cfg.listen[0].address.clone();
            let admin = cfg.admin.listen.clone();
            let opts = RunOptions {
                config_path: Some(config),
                ..Default::default()
            };
            let app = build_app(cfg, &opts)?;
            let mut server = build_server(app, &opts)?;
            let mut demo = pingora_core::services::listening::Service::new(
                "demo app".to_string(),
                seatgate::demo::DemoApp::default(),
            );
            demo.add_tcp(&upstream);
            server.add_service(demo);
            eprintln!(
                "seatgate demo: open http://{listen}/ (sample app on {upstream}, password `demo`); \
License Usage page and metrics on http://{admin}/ (admin / admin)"
            );
            server.run(Box::new(pingora_core::server::UnixShutdownSignalWatch));
            Ok(())
        }
        Cmd::HashPassword => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprint!("password: ");
            }
            let mut line = String::new();
            stdin
                .lock()
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            let pw = line.trim_end_matches(['\r', '\n']);
            if pw.is_empty() {
                return Err("empty password".into());
            }
            println!("{}", seatgate::admin::auth::hash_password(pw)?);
            Ok(())
        }
        Cmd::Reload { admin } => {
            let v = call(&admin, "POST", "/api/reload", None)?;
            println!("{v}");
            Ok(())
        }
        Cmd::Sessions { cmd } => sessions(cmd),
        Cmd::Health { admin } => {
            let url = format!("{}/healthz", admin.trim_end_matches('/'));
            let agent = ureq::AgentBuilder::new()
                .timeout(std::time::Duration::from_secs(5))
                .build();
            match agent.get(&url).call() {
                Ok(r) => {
                    println!("{}", r.into_string().unwrap_or_default().trim());
                    Ok(())
                }
                Err(ureq::Error::Status(code, r)) => Err(format!(
                    "{url}: HTTP {code}: {}",
                    r.into_string().unwrap_or_default().trim()
                )),
                Err(e) => Err(format!("{url}: {e}")),
            }
        }
    }
}

fn call(
    a: &AdminArgs,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, String> {
    use base64::Engine;
    let url = format!("{}{path}", a.admin.trim_end_matches('/'));
    let password = a.password.clone().unwrap_or_default();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", a.user));
    let req = ureq::request(method, &url).set("authorization", &format!("Basic {auth}"));
    let res = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    match res {
        Ok(r) => r.into_json().map_err(|e| format!("{url}: bad answer: {e}")),
        Err(ureq::Error::Status(code, r)) => {
            let msg = r.into_string().unwrap_or_default();
            Err(format!("{url}: HTTP {code}: {msg}"))
        }
        Err(e) => Err(format!("{url}: {e}")),
    }
}

fn sessions(cmd: SessionsCmd) -> Result<(), String> {
    match cmd {
        SessionsCmd::List {
            admin,
            product,
            for_user,
            license_type,
            json,
        } => {
            let mut q = form_urlencoded::Serializer::new(String::new());
            if let Some(p) = &product {
                q.append_pair("product", p);
            }
            if let Some(u) = &for_user {
                q.append_pair("user", u);
            }
            if let Some(l) = &license_type {
                q.append_pair("license_type", l);
            }
            let v = call(
                &admin,
                "GET",
                &format!("/api/sessions?{}", q.finish()),
                None,
            )?;
            if json {
                println!("{v}");
                return Ok(());
            }
            println!(
                "{:<17} {:<10} {:<12} {:<16} {:<8} {:<8} LAST ACTIVITY",
                "ID", "PRODUCT", "LICENSE", "USER", "CLIENT", "STATE"
            );
            for s in v.as_array().into_iter().flatten() {
                let f = |k: &str| s.get(k).and_then(|x| x.as_str()).unwrap_or("-").to_string();
                println!(
                    "{:<17} {:<10} {:<12} {:<16} {:<8} {:<8} {}",
                    f("id"),
                    f("product"),
                    f("license_type"),
                    f("user"),
                    f("client"),
                    f("state"),
                    f("last_activity")
                );
            }
            Ok(())
        }
        SessionsCmd::End { admin, ids, grace } => {
            let v = call(
                &admin,
                "POST",
                "/api/sessions/end",
                Some(serde_json::json!({"ids": ids, "grace_seconds": grace})),
            )?;
            for e in v
                .get("ended")
                .and_then(|x| x.as_array())
                .into_iter()
                .flatten()
            {
                let at = e["ends_at"]
                    .as_str()
                    .map_or(String::new(), |t| format!(" at {t}"));
                println!(
                    "{} {}{at}",
                    e["id"].as_str().unwrap_or("?"),
                    e["result"].as_str().unwrap_or("?")
                );
            }
            Ok(())
        }
    }
}
