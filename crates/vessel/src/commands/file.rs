//! `file push` and `file pull`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use vessel_api::FileInfo;

use super::instance_path;
use crate::cli::{FileCommand, PullArgs, PushArgs};
use crate::client::{Client, RequestBody};
use crate::http::with_query;
use crate::output::{write_stdout, StdoutClosed};

/// Header of a file pull that carries the file's permission bits in octal.
const MODE_HEADER: &str = "x-vessel-mode";

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
    let mut mode = args.mode.as_deref().map(parse_mode).transpose()?;
    let from_stdin = args.source == Path::new("-");
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

    let mut query = vec![("path", path.clone())];
    let mut stdin_data = Vec::new();
    let mut file = None;
    let len = if from_stdin {
        io::stdin()
            .read_to_end(&mut stdin_data)
            .context("cannot read standard input")?;
        stdin_data.len() as u64
    } else {
        let src = args.source.display();
        let f = File::open(&args.source).with_context(|| format!("cannot open {src}"))?;
        let meta = f
            .metadata()
            .with_context(|| format!("cannot inspect {src}"))?;
        if !meta.is_file() {
            bail!("{src} is not a regular file; push files one at a time");
        }
        mode = mode.or(Some(meta.permissions().mode() & 0o7777));
        file = Some(f);
        meta.len()
    };
    let mut stdin_slice = &stdin_data[..];
    let reader: &mut dyn Read = match file.as_mut() {
        Some(f) => f,
        None => &mut stdin_slice,
    };
    if let Some(m) = mode {
        query.push(("mode", format!("{m:04o}")));
    }
    if let Some(uid) = args.uid {
        query.push(("uid", uid.to_string()));
    }
    if let Some(gid) = args.gid {
        query.push(("gid", gid.to_string()));
    }
    let target = with_query(&format!("{}/files", instance_path(&name)), &query);
    let _: FileInfo = client
        .request("PUT", &target, RequestBody::Stream(reader, len))?
        .json()?;
    Ok(0)
}

fn pull(client: &Client, args: PullArgs) -> Result<i32> {
    let (name, path) = split_remote(&args.source)?;
    let target = with_query(
        &format!("{}/files", instance_path(&name)),
        &[("path", path.clone())],
    );
    let mut resp = client.request("GET", &target, RequestBody::Empty)?;

    if args.target == Path::new("-") {
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
    let shown = dest.display().to_string();
    let mut out = File::create(&dest).with_context(|| format!("cannot create {shown}"))?;
    let copied = io::copy(&mut resp.body, &mut out).and_then(|_| out.flush());
    if let Err(e) = copied {
        // A partial file looks like a whole one later: remove it.
        let _ = std::fs::remove_file(&dest);
        if e.kind() == io::ErrorKind::BrokenPipe {
            return Err(StdoutClosed.into());
        }
        return Err(e).with_context(|| format!("cannot copy {} to {shown}", args.source));
    }
    // The daemon tells the file's permission bits in a header; keep them, as `cp -p` would.
    // Ownership is left to the local user: ids inside the instance mean nothing here.
    if let Some(mode) = resp
        .head
        .header(MODE_HEADER)
        .and_then(|m| parse_mode(m).ok())
    {
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of {shown} to {mode:04o}"))?;
    }
    Ok(0)
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
