//! The scripts: `seats.lua` (every change to a pool, one atomic call) and the two shared-value
//! scripts, how a call is made (keys, spec argument, test clock) and how its answer is told to
//! the observer and the cache.

use super::*;

pub(super) const SCRIPT: &str = include_str!("seats.lua");

/// `shared_once`: set unless present (with an optional expiry in ms), answer what is there.
pub(super) const ONCE: &str = r#"
local set
if ARGV[2] ~= '' then set = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
else set = redis.call('SET', KEYS[1], ARGV[1], 'NX') end
if set then return ARGV[1] end
return redis.call('GET', KEYS[1])
"#;

/// `shared_swap`: set (or, with an empty value, delete), answer the old value ('' for none).
pub(super) const SWAP: &str = r#"
local old = redis.call('GET', KEYS[1])
if ARGV[1] == '' then redis.call('DEL', KEYS[1])
else redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
return old or ''
"#;

impl Inner {
    /// The spec argument of a script call, with the test clock when one is set.
    pub(super) fn spec_arg<'a>(&self, pool: &'a Pool) -> Cow<'a, str> {
        let with = |name: &str, v: String| {
            let j = &pool.spec_json;
            Cow::Owned(format!(
                "{},\"{name}\":{v}}}",
                &j[..j.len().saturating_sub(1)]
            ))
        };
        if self.caller_clock.load(Ordering::Relaxed) {
            return with(
                "clock_ms",
                self.caller_now.load(Ordering::Relaxed).to_string(),
            );
        }
        match self.clock_offset.load(Ordering::Relaxed) {
            0 => Cow::Borrowed(&pool.spec_json),
            off => with("clock_offset", off.to_string()),
        }
    }

    /// Shared values live under their own hash tag, apart from every pool's.
    pub(super) fn shared_key(&self, name: &str) -> String {
        format!("{{{}:shared}}:{name}", self.prefix)
    }

    /// One script call. Returns the raw JSON answer.
    pub(super) async fn eval(
        self: &Arc<Self>,
        pool: &Pool,
        op: &str,
        args: &[String],
    ) -> Result<String, LedgerError> {
        let mut inv = self.script.prepare_invoke();
        for k in &pool.keys {
            inv.key(k);
        }
        inv.arg(op).arg(self.spec_arg(pool).as_ref());
        for a in args {
            inv.arg(a);
        }
        self.invoke(inv).await
    }

    /// A script call whose answer is parsed, and whose releases reach the observer and the cache.
    pub(super) async fn call(
        self: &Arc<Self>,
        pool: &Pool,
        op: &str,
        args: &[String],
    ) -> Result<Answer, LedgerError> {
        let raw = self.eval(pool, op, args).await?;
        let a: Answer =
            serde_json::from_str(&raw).map_err(|e| corrupt(format!("bad answer to {op}: {e}")))?;
        // Every release is told before any unreadable one is reported: the script made them all.
        let mut bad = None;
        for r in &a.released {
            match r.seat.record(&pool.spec.key) {
                Ok(rec) => {
                    if let Some(k) = rec.session {
                        self.cache.remove(&k);
                    }
                    self.activity.remove(&rec.id);
                    self.requests.remove(&rec.id);
                    self.observer.released(&rec, r.reason);
                }
                Err(e) => bad = Some(e),
            }
        }
        if let Some(r) = &a.resumed {
            self.observer.resumed(&r.record(&pool.spec.key)?);
        }
        // The line's events likewise: this replica's call did them, so it tells them, once.
        for e in &a.line {
            match (e.ticket.ticket(&pool.spec.key), e.event()) {
                (Ok(t), Ok(ev)) => self.observer.queue_event(&t, ev, e.at),
                (Err(err), _) | (_, Err(err)) => bad = Some(err),
            }
        }
        match bad {
            Some(e) => Err(e),
            None => Ok(a),
        }
    }
}

impl RedisLedger {
    /// Evaluates the pure rules of the script on one case (tests compare them with Rust).
    #[doc(hidden)]
    pub async fn script_rules(
        &self,
        spec: &PoolSpec,
        case: &serde_json::Value,
    ) -> Result<serde_json::Value, LedgerError> {
        let pool = Pool {
            spec: spec.clone(),
            spec_json: spec_json(spec),
            keys: pool_keys(&self.inner.prefix, &spec.key),
        };
        let raw = self.inner.eval(&pool, "rules", &[case.to_string()]).await?;
        serde_json::from_str(&raw).map_err(unavailable)
    }
}

#[async_trait]
impl SharedState for RedisLedger {
    async fn shared_once(
        &self,
        name: &str,
        value: &str,
        ttl_ms: Option<Millis>,
    ) -> Result<Shared<String>, LedgerError> {
        let mut inv = self.inner.once.prepare_invoke();
        inv.key(self.inner.shared_key(name))
            .arg(value)
            .arg(ttl_ms.map(|t| t.max(1).to_string()).unwrap_or_default());
        self.inner.invoke(inv).await.map(Shared::Value)
    }

    async fn shared_swap(
        &self,
        name: &str,
        value: Option<&str>,
        ttl_ms: Millis,
    ) -> Result<Shared<Option<String>>, LedgerError> {
        let mut inv = self.inner.swap.prepare_invoke();
        inv.key(self.inner.shared_key(name))
            .arg(value.unwrap_or_default())
            .arg(ttl_ms.max(1).to_string());
        let old = self.inner.invoke(inv).await?;
        Ok(Shared::Value(Some(old).filter(|o| !o.is_empty())))
    }
}
