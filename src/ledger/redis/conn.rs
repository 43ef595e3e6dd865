//! Connection and health: the clients of each target (single, cluster, Sentinel), connecting
//! on first use with a backoff, the call timeout, and the health `/healthz` reports.

use super::*;

pub(super) enum Clients {
    Single(redis::Client),
    Cluster(ClusterClient),
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

#[derive(Clone)]
pub(super) enum Conn {
    /// Reconnects by itself.
    Managed(ConnectionManager),
    /// Follows slot moves and reconnects by itself.
    Cluster(ClusterConnection),
    /// A connection to the master Sentinel named; dropped on error so the next call asks the
    /// Sentinels again (that is how a failover is followed).
    Plain(MultiplexedConnection),
}

#[derive(Default, Clone)]
pub(super) struct Health {
    pub(super) up: bool,
    pub(super) last_error: Option<String>,
    pub(super) changed_at: Millis,
    /// The last script call failed and none has succeeded since. A PING does not clear it:
    /// a primary that refuses writes (`NOREPLICAS`, `READONLY`, `OOM`) still answers PING.
    pub(super) write_error: Option<String>,
}

impl RedisLedger {
    /// Builds the client for the configured target without connecting: a URL that cannot be
    /// used is an error now, a server that is down is not (the gateway starts and reports it).
    pub fn new(cfg: &RedisConfig, observer: Arc<dyn LedgerObserver>) -> Result<Self, LedgerError> {
        let (target, clients) = match &cfg.target {
            RedisTarget::Single(url) => (
                "single",
                Clients::Single(redis::Client::open(url.as_str()).map_err(unavailable)?),
            ),
            RedisTarget::Cluster(urls) => (
                "cluster",
                Clients::Cluster(
                    ClusterClient::builder(urls.clone())
                        .connection_timeout(CONNECT_TIMEOUT)
                        .response_timeout(CALL_TIMEOUT)
                        .build()
                        .map_err(unavailable)?,
                ),
            ),
            RedisTarget::Sentinel { master, urls } => (
                "sentinel",
                Clients::Sentinel(tokio::sync::Mutex::new(
                    SentinelClient::build(
                        urls.clone(),
                        master.clone(),
                        None,
                        SentinelServerType::Master,
                    )
                    .map_err(unavailable)?,
                )),
            ),
        };
        Ok(RedisLedger {
            inner: Arc::new(Inner {
                target,
                clients,
                script: redis::Script::new(SCRIPT),
                once: redis::Script::new(ONCE),
                swap: redis::Script::new(SWAP),
                conn: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                failed_at: Mutex::new(None),
                prefix: cfg.prefix.clone(),
                pools: RwLock::new(HashMap::default()),
                cache: DashMap::new(),
                activity: DashMap::new(),
                requests: DashMap::new(),
                views: DashMap::new(),
                refresher: AtomicBool::new(false),
                observer,
                health: Mutex::new(Health::default()),
                clock_offset: AtomicI64::new(0),
                caller_clock: AtomicBool::new(false),
                caller_now: AtomicU64::new(0),
            }),
        })
    }
}

impl Inner {
    pub(super) fn set_health(&self, up: bool, err: Option<String>) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if h.up != up || h.changed_at == 0 {
            h.changed_at = now_ms();
            if up {
                log::info!("redis store reachable");
            } else {
                log::warn!("redis store unreachable: {}", err.as_deref().unwrap_or("?"));
            }
        }
        h.up = up;
        if err.is_some() {
            h.last_error = err;
        }
    }

    pub(super) fn set_write_error(&self, err: Option<String>) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if h.write_error.is_some() != err.is_some() {
            match &err {
                Some(e) => log::warn!("redis store refuses writes: {e}"),
                None => log::info!("redis store takes writes again"),
            }
        }
        h.write_error = err;
    }

    pub(super) fn write_error(&self) -> Option<String> {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_error
            .clone()
    }

    pub(super) async fn connect(&self) -> redis::RedisResult<Conn> {
        match &self.clients {
            Clients::Single(c) => {
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(CALL_TIMEOUT)
                    .set_number_of_retries(2)
                    .set_max_delay(500);
                ConnectionManager::new_with_config(c.clone(), cfg)
                    .await
                    .map(Conn::Managed)
            }
            Clients::Cluster(c) => c.get_async_connection().await.map(Conn::Cluster),
            Clients::Sentinel(c) => c.lock().await.get_async_connection().await.map(Conn::Plain),
        }
    }

    pub(super) async fn conn(self: &Arc<Self>) -> Result<Conn, LedgerError> {
        if let Some(c) = self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(c);
        }
        let _one = self.connecting.lock().await;
        if let Some(c) = self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(c);
        }
        if self
            .failed_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() < RECONNECT_BACKOFF)
        {
            return Err(LedgerError::Unavailable(
                "redis: not connected (retrying)".into(),
            ));
        }
        let res = match tokio::time::timeout(CONNECT_TIMEOUT * 2, self.connect()).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(LedgerError::Unavailable("redis: connect timed out".into())),
        };
        match res {
            Ok(c) => {
                *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
                *self.failed_at.lock().unwrap_or_else(|e| e.into_inner()) = None;
                self.start_refresher();
                Ok(c)
            }
            Err(e) => {
                *self.failed_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                self.set_health(false, Some(e.to_string()));
                Err(e)
            }
        }
    }

    /// Runs a prepared script call with the call timeout, keeping the health state.
    pub(super) async fn invoke(
        self: &Arc<Self>,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<String, LedgerError> {
        let conn = self.conn().await?;
        let fut = async {
            match conn.clone() {
                Conn::Managed(mut c) => inv.invoke_async::<String>(&mut c).await,
                Conn::Cluster(mut c) => inv.invoke_async::<String>(&mut c).await,
                Conn::Plain(mut c) => inv.invoke_async::<String>(&mut c).await,
            }
        };
        let res = match tokio::time::timeout(CALL_TIMEOUT, fut).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("call timed out".to_string()),
        };
        match res {
            Ok(s) => {
                self.set_health(true, None);
                self.set_write_error(None);
                Ok(s)
            }
            Err(e) => {
                if matches!(conn, Conn::Plain(_)) {
                    *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
                self.set_health(false, Some(e.clone()));
                self.set_write_error(Some(e.clone()));
                Err(LedgerError::Unavailable(format!("redis: {e}")))
            }
        }
    }

    /// A PING, which also refreshes the health state: whether the store answers and takes
    /// writes.
    pub(super) async fn ping(self: &Arc<Self>) -> bool {
        let conn = match self.conn().await {
            Ok(c) => c,
            Err(_) => return false,
        };
        let ping = async {
            let cmd = redis::cmd("PING");
            match conn {
                Conn::Managed(mut c) => cmd.query_async::<String>(&mut c).await,
                Conn::Cluster(mut c) => cmd.query_async::<String>(&mut c).await,
                Conn::Plain(mut c) => cmd.query_async::<String>(&mut c).await,
            }
        };
        let ok = match tokio::time::timeout(CALL_TIMEOUT, ping).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("ping timed out".into()),
        };
        let up = ok.is_none();
        self.set_health(up, ok);
        up && self.write_error().is_none()
    }

    pub(super) fn describe(&self) -> serde_json::Value {
        let h = self
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        serde_json::json!({
            "kind": "redis",
            "target": self.target,
            "up": h.up,
            "since": h.changed_at,
            "last_error": h.last_error,
            "write_error": h.write_error,
            "cached_sessions": self.cache.len(),
        })
    }
}
