//! Writing outputs atomically: to a temporary name beside the target, then
//! renamed into place, so a failed or interrupted run leaves the previous
//! output intact and never a half-written file.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A temporary path in the same folder as `target` (so the rename is atomic).
fn temp_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    target.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `bytes` to `target` atomically.
pub fn write_atomic(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_path(target);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes a directory atomically: `fill` populates a temporary directory,
/// which then replaces `target` (an existing `target` is removed only after
/// `fill` succeeded).
pub fn write_dir_atomic(
    target: &Path,
    fill: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = temp_path(target);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if target.exists() {
        let old = target.with_file_name(format!(
            ".{}.old-{}",
            target
                .file_name()
                .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned()),
            std::process::id()
        ));
        std::fs::rename(target, &old)?;
        if let Err(e) = std::fs::rename(&tmp, target) {
            let _ = std::fs::rename(&old, target);
            return Err(e);
        }
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    } else {
        std::fs::rename(&tmp, target)
    }
}
