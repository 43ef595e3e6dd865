//! The config's own words: the enums a file names and the runtime config keeps as they are.
//!
//! They belong to `config` (not to its file format) so that policy, proxy and admin name them
//! as `config::Mode` etc. without reaching into `config::file`; the serde derives only read
//! the file's snake_case words, strictly (a typo is an error, never a default).

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Super,
    Domain,
    Own,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    View,
    Control,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    Embedded,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdleBy {
    /// Every request that is not ignored resets the idle timer (as before `idle_by` existed).
    #[default]
    Requests,
    /// Only the person's input (reported by the heartbeat), a page navigation or a form post.
    Input,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expired {
    #[default]
    Login,
    Adopt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreErrorPolicy {
    FailClosed,
    FailOpen,
    LastKnown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Hold,
    Check,
    Exempt,
}
