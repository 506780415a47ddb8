//! `file push` and `file pull`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use vessel_api::{FileEntry, FileInfo, FileKind};

use super::instance_path;
use crate::cli::{FileCommand, PullArgs, PushArgs};
use crate::client::{Client, RequestBody};
use crate::encode::with_query;
use crate::output::{write_stdout, StdoutClosed};

/// Header of a file pull that carries the file's permission bits in octal.
const MODE_HEADER: &str = "x-vessel-mode";
/// Header of a pull that says whether a file or a directory's listing came.
const TYPE_HEADER: &str = "x-vessel-type";

/// `file ...`.
pub fn run(client: &Client, cmd: FileCommand) -> Result<i32> {
    match cmd {
        FileCommand::Push(args) => push(client, args),
        FileCommand::Pull(args) => pull(client, args),
    }
}

/// Splits `NAME/PATH` into the instance name and the absolute path inside it.
pub fn split_remote(spec: &str) -> Result<(String, String)> {
    match spec.split_once('/') {
        Some((name, path)) if !name.is_empty() => Ok((name.to_string(), format!("/{path}"))),
        _ => bail!("invalid instance path '{spec}': use NAME/PATH, e.g. c1/etc/hosts"),
    }
}

/// Parses `--mode` as octal permission bits.
pub fn parse_mode(mode: &str) -> Result<u32> {
    let digits = mode.strip_prefix("0o").unwrap_or(mode);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o7777 && !digits.is_empty() => Ok(m),
        _ => bail!("invalid --mode '{mode}': use octal permission bits such as 0644 or 755"),
    }
}

fn push(client: &Client, args: PushArgs) -> Result<i32> {
    let (name, mut path) = split_remote(&args.target)?;
    let mode = args.mode.as_deref().map(parse_mode).transpose()?;
    let owner = Owner {
        uid: args.uid,
        gid: args.gid,
    };
    let from_stdin = args.source == Path::new("-");
    if args.recursive && !from_stdin && args.source.is_dir() {
        let base = args
            .source
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_os_string()))
            .ok_or_else(|| anyhow!("'{}' has no name to copy", args.source.display()))?;
        let dest = join_remote(&path, &base.to_string_lossy());
        if args.parents {
            put_remote(client, &name, &path, Kind::Directory(0o755), owner, true)?;
        }
        return push_tree(client, &name, &args.source, &dest, owner).map(|()| 0);
    }
    if path.ends_with('/') {
        let file_name = args
            .source
            .file_name()
            .filter(|_| !from_stdin)
            .ok_or_else(|| {
                anyhow!(
                    "'{}' names a directory; give the file's name too",
                    args.target
                )
            })?;
        path.push_str(&file_name.to_string_lossy());
    }
    if from_stdin {
        let mut data = Vec::new();
        io::stdin()
            .read_to_end(&mut data)
            .context("cannot read standard input")?;
        let len = data.len() as u64;
        let kind = Kind::File(mode, &mut &data[..], len);
        return put_remote(client, &name, &path, kind, owner, args.parents).map(|()| 0);
    }
    let src = args.source.display();
    let mut f = File::open(&args.source).with_context(|| format!("cannot open {src}"))?;
    let meta = f
        .metadata()
        .with_context(|| format!("cannot inspect {src}"))?;
    if meta.is_dir() {
        bail!("{src} is a directory: push it with -r");
    }
    if !meta.is_file() {
        bail!("{src} is not a regular file");
    }
    let mode = mode.or(Some(meta.permissions().mode() & 0o7777));
    let kind = Kind::File(mode, &mut f, meta.len());
    put_remote(client, &name, &path, kind, owner, args.parents)?;
    Ok(0)
}

/// Owner and group given on the command line (the daemon's default is root).
#[derive(Debug, Clone, Copy)]
struct Owner {
    uid: Option<u32>,
    gid: Option<u32>,
}

/// What one push request makes.
enum Kind<'a> {
    /// A file with its mode, its content and its length.
    File(Option<u32>, &'a mut dyn Read, u64),
    /// A directory with its mode.
    Directory(u32),
    /// A symbolic link to this target.
    Symlink(Vec<u8>),
}

/// One push request: a file, a directory or a symbolic link at `path` in instance `name`.
fn put_remote(
    client: &Client,
    name: &str,
    path: &str,
    kind: Kind<'_>,
    owner: Owner,
    parents: bool,
) -> Result<()> {
    let mut query = vec![("path", path.to_string())];
    let (typ, mode) = match &kind {
        Kind::File(m, ..) => ("file", *m),
        Kind::Directory(m) => ("directory", Some(*m)),
        Kind::Symlink(_) => ("symlink", None),
    };
    if typ != "file" {
        query.push(("type", typ.to_string()));
    }
    if parents {
        query.push(("parents", "1".to_string()));
    }
    if let Some(m) = mode {
        query.push(("mode", format!("{m:04o}")));
    }
    if let Some(uid) = owner.uid {
        query.push(("uid", uid.to_string()));
    }
    if let Some(gid) = owner.gid {
        query.push(("gid", gid.to_string()));
    }
    let target = with_query(&format!("{}/files", instance_path(name)), &query);
    let mut empty: &[u8] = &[];
    let mut link;
    let body = match kind {
        Kind::File(_, reader, len) => RequestBody::Stream(reader, len),
        Kind::Directory(_) => RequestBody::Stream(&mut empty, 0),
        Kind::Symlink(t) => {
            let len = t.len() as u64;
            link = std::io::Cursor::new(t);
            RequestBody::Stream(&mut link, len)
        }
    };
    let _: FileInfo = client.request("PUT", &target, body)?.json()?;
    Ok(())
}

/// The remote path of `name` inside remote directory `dir`.
fn join_remote(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

/// Pushes the local tree at `local` to `remote` (made as a directory), depth first.
fn push_tree(client: &Client, name: &str, local: &Path, remote: &str, owner: Owner) -> Result<()> {
    let meta = std::fs::symlink_metadata(local)
        .with_context(|| format!("cannot inspect {}", local.display()))?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(local)
            .with_context(|| format!("cannot read the link {}", local.display()))?;
        let t = std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()).to_vec();
        return put_remote(client, name, remote, Kind::Symlink(t), owner, false);
    }
    if ft.is_file() {
        let mut f =
            File::open(local).with_context(|| format!("cannot open {}", local.display()))?;
        let kind = Kind::File(Some(meta.permissions().mode() & 0o7777), &mut f, meta.len());
        return put_remote(client, name, remote, kind, owner, false);
    }
    if !ft.is_dir() {
        eprintln!(
            "skipping {}: not a file, directory or link",
            local.display()
        );
        return Ok(());
    }
    let mode = meta.permissions().mode() & 0o7777;
    put_remote(client, name, remote, Kind::Directory(mode), owner, false)?;
    let mut entries: Vec<_> = std::fs::read_dir(local)
        .with_context(|| format!("cannot list {}", local.display()))?
        .collect::<io::Result<_>>()
        .with_context(|| format!("cannot list {}", local.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let child = join_remote(remote, &e.file_name().to_string_lossy());
        push_tree(client, name, &e.path(), &child, owner)?;
    }
    Ok(())
}

fn pull(client: &Client, args: PullArgs) -> Result<i32> {
    let (name, path) = split_remote(&args.source)?;
    if args.target == Path::new("-") {
        let mut resp = get_remote(client, &name, &path)?;
        if is_directory(&resp) {
            bail!(
                "{} is a directory: pull it with -r into a local directory",
                args.source
            );
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = resp.body.read(&mut buf).context("cannot read the file")?;
            if n == 0 {
                return Ok(0);
            }
            write_stdout(&buf[..n])?;
        }
    }
    let dest = local_destination(&args.target, &path)?;
    pull_to(client, &name, &path, &dest, args.recursive, &args.source)?;
    Ok(0)
}

fn get_remote(client: &Client, name: &str, path: &str) -> Result<crate::client::Response> {
    let target = with_query(
        &format!("{}/files", instance_path(name)),
        &[("path", path.to_string())],
    );
    client.request("GET", &target, RequestBody::Empty)
}

fn is_directory(resp: &crate::client::Response) -> bool {
    resp.head
        .header(TYPE_HEADER)
        .is_some_and(|t| t.eq_ignore_ascii_case("directory"))
}

/// Pulls remote `path` to local `dest`: a file, or with `recursive` a whole tree.
fn pull_to(
    client: &Client,
    name: &str,
    path: &str,
    dest: &Path,
    recursive: bool,
    shown: &str,
) -> Result<()> {
    let mut resp = get_remote(client, name, path)?;
    if is_directory(&resp) {
        if !recursive {
            bail!("{shown} is a directory: pull it with -r");
        }
        let entries: Vec<FileEntry> = {
            let mut buf = Vec::new();
            resp.body
                .read_to_end(&mut buf)
                .context("cannot read the directory listing")?;
            serde_json::from_slice(&buf).context("the daemon sent a garbled listing")?
        };
        match std::fs::create_dir(dest) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(e).with_context(|| format!("cannot create {}", dest.display()))
            }
            _ => {}
        }
        for e in &entries {
            if e.name.contains('/') || e.name == ".." || e.name == "." {
                bail!("the daemon listed a bad name {:?} in {path}", e.name);
            }
            let remote = join_remote(path, &e.name);
            let local = dest.join(&e.name);
            match e.kind {
                FileKind::Directory | FileKind::File => {
                    pull_to(client, name, &remote, &local, true, &remote)?
                }
                FileKind::Symlink => {
                    let target = e.target.as_deref().unwrap_or_default();
                    let _ = std::fs::remove_file(&local);
                    std::os::unix::fs::symlink(target, &local)
                        .with_context(|| format!("cannot create the link {}", local.display()))?;
                }
                FileKind::Other => eprintln!("skipping {remote}: not a file, directory or link"),
            }
        }
        // Last, so that a read-only directory could still be filled.
        if let Some(mode) = entries_mode(client, name, path)? {
            std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("cannot set the mode of {}", dest.display()))?;
        }
        return Ok(());
    }
    let shown_dest = dest.display().to_string();
    let mut out = File::create(dest).with_context(|| format!("cannot create {shown_dest}"))?;
    let copied = io::copy(&mut resp.body, &mut out).and_then(|_| out.flush());
    if let Err(e) = copied {
        // A partial file looks like a whole one later: remove it.
        let _ = std::fs::remove_file(dest);
        if e.kind() == io::ErrorKind::BrokenPipe {
            return Err(StdoutClosed.into());
        }
        return Err(e).with_context(|| format!("cannot copy {shown} to {shown_dest}"));
    }
    // The daemon tells the file's permission bits in a header; keep them, as `cp -p` would.
    // Ownership is left to the local user: ids inside the instance mean nothing here.
    if let Some(mode) = resp
        .head
        .header(MODE_HEADER)
        .and_then(|m| parse_mode(m).ok())
    {
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of {shown_dest} to {mode:04o}"))?;
    }
    Ok(())
}

/// The permission bits of remote directory `path`, from its parent's listing (the root has
/// none to give).
fn entries_mode(client: &Client, name: &str, path: &str) -> Result<Option<u32>> {
    let p = Path::new(path);
    let (Some(parent), Some(base)) = (p.parent(), p.file_name()) else {
        return Ok(None);
    };
    let mut resp = get_remote(client, name, &parent.to_string_lossy())?;
    let mut buf = Vec::new();
    resp.body
        .read_to_end(&mut buf)
        .context("cannot read the directory listing")?;
    let entries: Vec<FileEntry> = serde_json::from_slice(&buf).unwrap_or_default();
    Ok(entries
        .into_iter()
        .find(|e| e.name == base.to_string_lossy())
        .map(|e| e.mode))
}

/// Where a pulled file goes: into `local` when it is a directory, else `local` itself.
fn local_destination(local: &Path, remote: &str) -> Result<PathBuf> {
    if local.is_dir() {
        let base = Path::new(remote).file_name().ok_or_else(|| {
            anyhow!(
                "'{remote}' has no file name to use inside {}",
                local.display()
            )
        })?;
        Ok(local.join(base))
    } else {
        Ok(local.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{json_response, temp_socket_path, FakeServer};

    #[test]
    fn remote_specs() {
        assert_eq!(
            split_remote("c1/etc/hosts").unwrap(),
            ("c1".into(), "/etc/hosts".into())
        );
        assert_eq!(split_remote("c1/").unwrap(), ("c1".into(), "/".into()));
        assert!(split_remote("/etc/hosts").is_err());
        assert!(split_remote("c1").is_err());
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0644").unwrap(), 0o644);
        assert_eq!(parse_mode("755").unwrap(), 0o755);
        assert_eq!(parse_mode("0o600").unwrap(), 0o600);
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("17777").is_err());
        assert!(parse_mode("").is_err());
    }

    #[test]
    fn push_sends_bytes_and_encoded_query() {
        let local = temp_socket_path().with_extension("data");
        std::fs::write(&local, b"hello file").unwrap();
        std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o600)).unwrap();
        let info = r#"{"path":"/tmp/my file","size":10,"mode":420,"uid":5,"gid":0}"#;
        let server = FakeServer::start(vec![json_response(200, info)]);
        let code = push(
            &Client::new(server.path()),
            PushArgs {
                source: local.clone(),
                target: "c1/tmp/my file".into(),
                mode: None,
                uid: Some(5),
                gid: None,
                parents: false,
                recursive: false,
            },
        )
        .unwrap();
        assert_eq!(code, 0);
        let rec = &server.finish()[0];
        assert_eq!(rec.method, "PUT");
        assert_eq!(
            rec.target,
            "/1.0/instances/c1/files?path=/tmp/my%20file&mode=0600&uid=5"
        );
        assert_eq!(rec.header("content-type"), Some("application/octet-stream"));
        assert_eq!(rec.body, b"hello file");
        let _ = std::fs::remove_file(local);
    }

    #[test]
    fn pull_writes_the_file() {
        let dest = temp_socket_path().with_extension("pulled");
        let server = FakeServer::start(vec![
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nX-Vessel-Mode: 0751\r\nContent-Length: 6\r\n\r\nabc\x00ef"
                .to_vec(),
        ]);
        pull(
            &Client::new(server.path()),
            PullArgs {
                source: "c1/etc/hostname".into(),
                recursive: false,
                target: dest.clone(),
            },
        )
        .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"abc\x00ef");
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o751);
        assert_eq!(
            server.finish()[0].target,
            "/1.0/instances/c1/files?path=/etc/hostname"
        );
        let _ = std::fs::remove_file(dest);
    }
}
