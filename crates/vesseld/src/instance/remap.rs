//! Moving a tree's file owners from one instance's id range to another's (a restore, an
//! import or a copy into an instance with other ids).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::driver::IDMAP_SIZE;

/// Gives files of a tree owned by ids of range `from` (the old instance's) the same ids of
/// range `to`; set-id bits stay as they were.
pub(super) fn remap(root: &Path, from: u32, to: u32) -> std::io::Result<()> {
    if from == to {
        return Ok(());
    }
    let map = |id: u32| {
        if (from..from + IDMAP_SIZE).contains(&id) {
            id - from + to
        } else {
            id
        }
    };
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p)?;
        let (u, g) = (map(m.uid()), map(m.gid()));
        if (u, g) != (m.uid(), m.gid()) {
            std::os::unix::fs::lchown(&p, Some(u), Some(g))?;
            if m.is_file() && m.mode() & 0o6000 != 0 {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
            }
        }
        if m.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    Ok(())
}
