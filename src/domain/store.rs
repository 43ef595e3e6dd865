//! Where a shared store lives: read from config, opened by the ledger, so it is vocabulary
//! both speak without importing each other.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub target: RedisTarget,
    pub prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Single(String),
    Cluster(Vec<String>),
    Sentinel { master: String, urls: Vec<String> },
}
