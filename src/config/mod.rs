//! Configuration: the YAML file format (`file`), the validated runtime form (`runtime`) and
//! the validation between them (`validate`, one validator per section).
//!
//! `load` is the only way in: it reads, parses and validates, returning a [`ConfigError`] that
//! names the file, the key and the line. Nothing here contacts the network. Config's own
//! vocabulary (`kinds`, `on_full`, `paths`) is what the rest of the crate names; nothing
//! outside this module names a `file` type. Config imports only `domain` and `crypto`.

pub mod file;
pub mod kinds;
pub mod on_full;
pub mod paths;
pub mod runtime;
pub mod tls;
mod validate;

pub use crate::domain::SeatsPer;
pub use kinds::*;
pub use on_full::{OnFull, OnFullBody, Page};
pub use runtime::*;

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// serde_norway's message already carries the key path, line and column.
    #[error("{path}: {source}")]
    Syntax {
        path: PathBuf,
        source: serde_norway::Error,
    },
    #[error("{key}{}: {reason}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Invalid {
        key: String,
        line: Option<usize>,
        reason: String,
    },
}

pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&src).map_err(|e| match e {
        ConfigError::Syntax { source, .. } => ConfigError::Syntax {
            path: path.to_owned(),
            source,
        },
        ConfigError::Invalid { key, line, reason } => ConfigError::Invalid {
            key: format!("{}: {key}", path.display()),
            line,
            reason,
        },
        other => other,
    })
}

pub fn parse(src: &str) -> Result<Config, ConfigError> {
    let f: file::FileConfig =
        serde_norway::from_str(src).map_err(|source| ConfigError::Syntax {
            path: PathBuf::from("<config>"),
            source,
        })?;
    Config::from_file(f, src)
}
