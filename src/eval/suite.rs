//! TEMP stub (not committed).
use super::{Case, Check};
use crate::error::CliError;
use std::path::Path;
pub fn load(root: &Path, dir: &Path) -> Result<Vec<Case>, CliError> {
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| CliError::usage(e.to_string()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    for p in names {
        let id = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let spec = std::fs::read_to_string(p.join("spec.md")).map_err(|e| CliError::usage(e.to_string()))?;
        let start = crate::git::head(root)?.unwrap_or_default();
        out.push(Case {
            id,
            start,
            spec,
            check: Check::Script(std::path::absolute(p.join("check")).unwrap_or_default()),
            setup: None,
        });
    }
    Ok(out)
}
