//! `dealflow init DIR`: writes the starter folder shipped in
//! `examples/starter/`, which the tests keep valid.

use anyhow::Context;
use std::path::Path;
use std::process::ExitCode;

/// The starter folder's files, compiled into the binary.
const STARTER: &[(&str, &str)] = &[
    (
        "workflow.yaml",
        include_str!("../../examples/starter/workflow.yaml"),
    ),
    (
        "templates/welcome.md",
        include_str!("../../examples/starter/templates/welcome.md"),
    ),
];

/// Writes the starter folder; refuses to overwrite anything.
pub fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    for (rel, _) in STARTER {
        let path = dir.join(rel);
        if path.exists() {
            anyhow::bail!(
                "{} already exists; init never overwrites files",
                path.display()
            );
        }
    }
    for (rel, text) in STARTER {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("Wrote a starter workflow folder to {}.", dir.display());
    println!("Next: dealflow validate {}", dir.display());
    Ok(ExitCode::SUCCESS)
}
