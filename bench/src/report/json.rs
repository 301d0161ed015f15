//! The JSON files: a run's or a summary's written, runs read back.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::run::RunReport;
use super::summary::Summary;

impl RunReport {
    /// Writes the JSON file.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        write_json(path, self)
    }
}

impl Summary {
    /// Writes the JSON file.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        write_json(path, self)
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// Reads run reports written with `--json`.
pub fn read_runs(paths: &[impl AsRef<Path>]) -> Result<Vec<RunReport>> {
    paths
        .iter()
        .map(|p| {
            let p = p.as_ref();
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a run report", p.display()))
        })
        .collect()
}
