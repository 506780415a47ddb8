//! Users and groups of an instance or an image, read from its own `/etc/passwd` and
//! `/etc/group` — never from the host's: every path is resolved inside the tree it belongs
//! to (`openat2(RESOLVE_IN_ROOT)`), only a regular file of bounded size is read, and nothing
//! that could block (a FIFO, a device) is ever opened for reading.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use crate::error::{Error, Result};

/// Largest passwd or group file read (real ones are a few KiB).
pub const MAX_DB_FILE: u64 = 1 << 20;

/// Reads `rel` (e.g. `etc/passwd`) inside the tree opened as `root`: `Ok(None)` when it is
/// not there, an error when it is not a regular file or is too big.
pub fn read_db_file(root: &OwnedFd, rel: &str) -> std::io::Result<Option<String>> {
    let fd = match super::files::open_in_root(root, Path::new(rel), libc::O_PATH, 0) {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let md = File::from(fd.try_clone()?).metadata()?;
    if !md.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("/{rel} is not a regular file"),
        ));
    }
    if md.len() > MAX_DB_FILE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("/{rel} is {} bytes, over {MAX_DB_FILE}", md.len()),
        ));
    }
    let mut f = super::files::reopen(&fd, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY)?;
    let mut buf = Vec::new();
    f.by_ref().take(MAX_DB_FILE).read_to_end(&mut buf)?;
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// Fields 3 and 4 (id, and the primary group for passwd) of the line of `name` in a passwd
/// or group file's text.
fn find_entry(text: &str, name: &str) -> Option<(u32, Option<u32>)> {
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 3 || f[0] != name {
            return None;
        }
        let id = f[2].parse().ok()?;
        Some((id, f.get(3).and_then(|g| g.parse().ok())))
    })
}

/// Resolves a user spec — `uid`, `uid:gid`, `name`, `name:group` (ids or names on either
/// side) — with `db(file)` giving the text of `etc/passwd` or `etc/group` (or `None`). A
/// user given by name takes its primary group unless one is given; by id, group 0.
pub fn resolve(
    spec: &str,
    what: &str,
    mut db: impl FnMut(&str) -> Result<Option<String>>,
) -> Result<(u32, u32)> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if u.is_empty() || g.is_some_and(str::is_empty) {
        return Err(Error::invalid(format!(
            "invalid user {:?}: use NAME, UID, NAME:GROUP or UID:GID",
            crate::error::truncated(spec, 64)
        )));
    }
    let (uid, primary) = match u.parse::<u32>() {
        Ok(n) => (n, None),
        Err(_) => {
            let text = db("etc/passwd")?.unwrap_or_default();
            let (uid, primary) = find_entry(&text, u).ok_or_else(|| {
                Error::invalid(format!(
                    "{what} has no user {:?} in its /etc/passwd",
                    crate::error::truncated(u, 64)
                ))
            })?;
            (uid, primary)
        }
    };
    let gid = match g {
        None => primary.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let text = db("etc/group")?.unwrap_or_default();
                find_entry(&text, g).map(|(n, _)| n).ok_or_else(|| {
                    Error::invalid(format!(
                        "{what} has no group {:?} in its /etc/group",
                        crate::error::truncated(g, 64)
                    ))
                })?
            }
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nweb:x:1000:100:Web:/srv:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nusers:x:100:\nadm:x:4:web\n";

    fn db(file: &str) -> Result<Option<String>> {
        Ok(Some(match file {
            "etc/passwd" => PASSWD.into(),
            _ => GROUP.into(),
        }))
    }

    #[test]
    fn users_resolve_by_name_and_id() {
        assert_eq!(resolve("web", "c1", db).unwrap(), (1000, 100));
        assert_eq!(resolve("web:adm", "c1", db).unwrap(), (1000, 4));
        assert_eq!(resolve("1000", "c1", db).unwrap(), (1000, 0));
        assert_eq!(resolve("1000:4", "c1", db).unwrap(), (1000, 4));
        assert_eq!(resolve("0:adm", "c1", db).unwrap(), (0, 4));
        let e = resolve("nobody", "c1", db).unwrap_err();
        assert!(
            e.message.contains("c1 has no user \"nobody\""),
            "{}",
            e.message
        );
        assert!(resolve("web:nogroup", "c1", db).is_err());
        assert!(resolve("", "c1", db).is_err());
        assert!(resolve("web:", "c1", db).is_err());
        // No passwd at all: names do not resolve, ids do.
        let none = |_: &str| Ok(None);
        assert!(resolve("web", "c1", none).is_err());
        assert_eq!(resolve("5:6", "c1", none).unwrap(), (5, 6));
    }

    #[test]
    fn only_regular_bounded_files_inside_the_tree_are_read() {
        let dir = std::env::temp_dir().join(format!("vessel-users-{}", uuid::Uuid::new_v4()));
        let etc = dir.join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        let root: OwnedFd = File::open(&dir).unwrap().into();
        assert_eq!(read_db_file(&root, "etc/passwd").unwrap(), None);
        std::fs::write(etc.join("passwd"), PASSWD).unwrap();
        assert_eq!(read_db_file(&root, "etc/passwd").unwrap().unwrap(), PASSWD);
        // A link out of the tree resolves inside it: to its own /etc/shadow, not the host's.
        std::fs::remove_file(etc.join("passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", etc.join("passwd")).unwrap();
        assert_eq!(read_db_file(&root, "etc/passwd").unwrap(), None);
        std::fs::remove_file(etc.join("passwd")).unwrap();
        std::os::unix::fs::symlink("../../../../../../dev/zero", etc.join("passwd")).unwrap();
        assert_eq!(read_db_file(&root, "etc/passwd").unwrap(), None);
        // A FIFO is refused without blocking.
        std::fs::remove_file(etc.join("passwd")).unwrap();
        nix::unistd::mkfifo(
            &etc.join("passwd"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        assert!(read_db_file(&root, "etc/passwd").is_err());
        // Too big.
        std::fs::remove_file(etc.join("passwd")).unwrap();
        std::fs::write(etc.join("passwd"), vec![b'x'; MAX_DB_FILE as usize + 1]).unwrap();
        assert!(read_db_file(&root, "etc/passwd").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
