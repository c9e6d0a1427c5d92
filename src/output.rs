//! Files the CLI writes for the user (`save`, `export`): written next to their
//! destination and renamed into place once complete, so a failed or interrupted
//! command never leaves a partial file under the requested name.

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};

/// Creates `output` atomically from what `fill` writes.
pub fn write_atomically(
    output: &Path,
    fill: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    {
        let mut out = BufWriter::new(tmp.as_file_mut());
        fill(&mut out)?;
        out.flush()
            .with_context(|| format!("writing {}", output.display()))?;
    }
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("writing {}", output.display()))?;
    tmp.persist(output)
        .with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_fill_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.tar");
        let err = write_atomically(&target, |w| {
            w.write_all(b"partial")?;
            anyhow::bail!("broken source")
        });
        assert!(err.is_err());
        assert!(!target.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no temporary file left"
        );
        write_atomically(&target, |w| Ok(w.write_all(b"whole")?)).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"whole");
    }
}
