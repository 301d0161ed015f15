//! `[search]` in the node's configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the index lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchBackend {
    /// A tantivy index in `dir` (default: `search/` in the data
    /// directory): one machine.
    #[default]
    Embedded,
    /// No search: `/v1/search` answers `unavailable`.
    Off,
}

/// `[search]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// `embedded` or `off`.
    pub backend: SearchBackend,
    /// Embedded: the index's directory.
    pub dir: Option<PathBuf>,
}
