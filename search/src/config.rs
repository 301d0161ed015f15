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
    /// An OpenSearch cluster (`[search.opensearch]`): clusters, whose
    /// nodes keep nothing of the index.
    Opensearch,
    /// No search: `/v1/search` answers `unavailable`.
    Off,
}

/// `[search.opensearch]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenSearchConfig {
    /// The cluster's address (`http://127.0.0.1:9200`).
    pub url: String,
    /// The index is `<prefix>-messages`.
    pub prefix: String,
}

impl Default for OpenSearchConfig {
    fn default() -> Self {
        OpenSearchConfig {
            url: "http://127.0.0.1:9200".into(),
            prefix: "chat".into(),
        }
    }
}

/// `[search]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// `embedded`, `opensearch` or `off`.
    pub backend: SearchBackend,
    /// Embedded: the index's directory.
    pub dir: Option<PathBuf>,
    /// OpenSearch: where.
    pub opensearch: OpenSearchConfig,
}
