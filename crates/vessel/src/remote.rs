//! Remotes, as in Incus: daemons reached over HTTPS, named in the client's configuration
//! file, picked with `REMOTE:NAME` on the command line (or `--remote`, or the default). The
//! remote `local` is implicit: the daemon's unix socket.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::{ArgAction, CommandFactory, ValueHint};
use serde::{Deserialize, Serialize};

use crate::cli::Cli;
use crate::client::{Client, Endpoint};
use crate::tls::ClientIdentity;

/// The implicit remote: the daemon's unix socket.
pub const LOCAL: &str = "local";

/// The configuration file's name in its directory.
const CONFIG_FILE: &str = "config.yml";

/// Longest remote name.
const MAX_NAME: usize = 63;

/// The client's configuration: `config.yml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// The remote commands go to when none is named.
    #[serde(default = "local_name")]
    pub default_remote: String,
    /// Remotes by name (`local` is never stored).
    #[serde(default)]
    pub remotes: BTreeMap<String, RemoteConfig>,
    /// The project commands use on each remote when none is named (`vessel project
    /// switch`); absent: the identity's own (`default` for the socket).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub projects: BTreeMap<String, String>,
}

fn local_name() -> String {
    LOCAL.to_string()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            default_remote: local_name(),
            remotes: BTreeMap::new(),
            projects: BTreeMap::new(),
        }
    }
}

/// One remote daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteConfig {
    /// `https://HOST:PORT`.
    pub url: String,
    /// Bearer token sent with every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// SHA-256 of the trusted server certificate's DER, 64 lowercase hex characters.
    pub fingerprint: String,
    /// PEM file of a client certificate (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// PEM file of the client certificate's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
}

impl RemoteConfig {
    /// The client certificate, when both files are named.
    pub fn identity(&self) -> Result<Option<ClientIdentity>> {
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Ok(Some(ClientIdentity {
                cert: cert.clone(),
                key: key.clone(),
            })),
            (None, None) => Ok(None),
            _ => bail!("client_cert and client_key go together"),
        }
    }
}

/// Where the configuration lives: `$VESSEL_CONFIG_DIR/config.yml`, else
/// `$HOME/.config/vessel/config.yml`.
pub fn config_path() -> Result<PathBuf> {
    let from = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty());
    if let Some(dir) = from("VESSEL_CONFIG_DIR") {
        return Ok(PathBuf::from(dir).join(CONFIG_FILE));
    }
    let home = from("HOME").ok_or_else(|| {
        anyhow!(
            "neither VESSEL_CONFIG_DIR nor HOME is set: no place for the client's configuration"
        )
    })?;
    Ok(PathBuf::from(home)
        .join(".config")
        .join("vessel")
        .join(CONFIG_FILE))
}

/// Whether `name` may name a remote: a letter, then letters, digits, '-' and '_' (so never
/// a host name with dots, an address, or a path).
pub fn valid_name(name: &str) -> bool {
    name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Config {
    /// Reads the file at `path`; a missing file is the empty configuration.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let config: Self = serde_yaml::from_str(&text)
            .with_context(|| format!("{} is not a valid client configuration", path.display()))?;
        if config.remotes.contains_key(LOCAL) {
            bail!(
                "{}: the remote '{LOCAL}' is the daemon's unix socket and cannot be configured",
                path.display()
            );
        }
        Ok(config)
    }

    /// Writes the file at `path` (mode 0600; its directory is made with mode 0700), replacing
    /// it at once.
    pub fn save(&self, path: &Path) -> Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let text = serde_yaml::to_string(self).context("cannot encode the configuration")?;
        let tmp = dir.join(format!(".{CONFIG_FILE}.{}.tmp", std::process::id()));
        let written = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(text.as_bytes())?;
                f.sync_all()
            })
            .and_then(|()| fs::rename(&tmp, path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("cannot write {}", path.display()));
        }
        Ok(())
    }

    /// Whether `name` is a remote: `local` or a configured one.
    pub fn has(&self, name: &str) -> bool {
        name == LOCAL || self.remotes.contains_key(name)
    }

    /// Every remote's name, `local` first.
    pub fn names(&self) -> Vec<&str> {
        std::iter::once(LOCAL)
            .chain(self.remotes.keys().map(String::as_str))
            .collect()
    }

    /// The error for a name that is no remote.
    pub fn unknown(&self, name: &str) -> anyhow::Error {
        anyhow!(
            "no remote named '{name}' (remotes: {}); add one with `vessel remote add {name} https://HOST:8443`",
            self.names().join(", ")
        )
    }

    /// A client of the remote `name`; `local` is the daemon at `socket`.
    pub fn client(&self, name: &str, socket: &Path) -> Result<Client> {
        if name == LOCAL {
            return Ok(Client::new(socket));
        }
        let remote = self.remotes.get(name).ok_or_else(|| self.unknown(name))?;
        let make = || -> Result<Client> {
            let endpoint = Endpoint::parse(&remote.url)?;
            let identity = remote.identity()?;
            Client::https(
                Some(name),
                endpoint,
                &remote.fingerprint,
                remote.token.as_deref(),
                identity.as_ref(),
            )
        };
        make().with_context(|| format!("the remote '{name}' is misconfigured"))
    }
}

/// The command line with `REMOTE:` prefixes taken off, and the remote they named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The arguments to parse.
    pub args: Vec<OsString>,
    /// The remote named by prefixes or `--remote`, if any.
    pub remote: Option<String>,
}

/// The remote named by `text`'s prefix and the rest, when the text before the first ':' is
/// exactly a remote's name; a port after the colon (`localhost:5000/app`) is a registry's
/// address, not a remote.
fn split_prefix<'a>(text: &'a str, config: &Config) -> Option<(&'a str, &'a str)> {
    let (prefix, rest) = text.split_once(':')?;
    if !config.has(prefix) {
        return None;
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 && matches!(rest.as_bytes().get(digits), None | Some(b'/')) {
        return None;
    }
    Some((prefix, rest))
}

/// Whether a positional's values are local: files, directories, commands, URLs.
fn is_local_value(arg: &clap::Arg) -> bool {
    matches!(
        arg.get_value_hint(),
        ValueHint::AnyPath
            | ValueHint::FilePath
            | ValueHint::DirPath
            | ValueHint::ExecutablePath
            | ValueHint::CommandName
            | ValueHint::CommandString
            | ValueHint::CommandWithArguments
            | ValueHint::Url
    )
}

/// Whether a positional takes several values (then it takes every remaining one).
fn is_multiple(arg: &clap::Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
        || arg.get_num_args().is_some_and(|n| n.max_values() > 1)
}

/// Takes `REMOTE:` prefixes off the positional arguments that name objects on the daemon
/// (instances, images, networks, pools, ...), and returns the remote they name. Options'
/// values, local paths, the command after `exec NAME` and everything after `--` are left
/// alone, and so is every `remote` subcommand. Naming two remotes (with prefixes or with
/// `--remote`) is an error.
pub fn route(args: Vec<OsString>, config: &Config) -> Result<Routed> {
    let mentions_remote = |a: &OsString| {
        a.to_str()
            .is_some_and(|s| s.contains(':') || s.starts_with("--remote"))
    };
    if !args.iter().skip(1).any(mentions_remote) {
        return Ok(Routed { args, remote: None });
    }
    let mut root = Cli::command();
    root.build();
    let mut cmd = &root;
    let mut out = Vec::with_capacity(args.len());
    let mut named: Vec<(String, String)> = Vec::new();
    let mut position = 0usize;
    let mut rest = args.into_iter();
    if let Some(bin) = rest.next() {
        out.push(bin);
    }
    while let Some(arg) = rest.next() {
        let Some(text) = arg.to_str().map(str::to_string) else {
            out.push(arg);
            position += 1;
            continue;
        };
        if text == "--" {
            out.push(arg);
            out.extend(rest.by_ref());
            break;
        }
        if let Some(long) = text.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let option = cmd.get_arguments().find(|a| {
                a.get_long() == Some(name)
                    || a.get_all_aliases().is_some_and(|al| al.contains(&name))
            });
            out.push(arg);
            let takes_value = option.is_some_and(|o| o.get_action().takes_values());
            let value = match inline {
                Some(v) => Some(v),
                None if takes_value => rest.next().map(|v| {
                    let s = v.to_string_lossy().into_owned();
                    out.push(v);
                    s
                }),
                None => None,
            };
            if option.is_some_and(|o| o.get_id() == "remote") {
                if let Some(v) = value {
                    named.push((v, "--remote".to_string()));
                }
            }
            continue;
        }
        if text.len() > 1 && text.starts_with('-') {
            // A cluster of short flags; the first one that takes a value takes the rest of
            // the cluster, or the next argument.
            out.push(arg);
            for (i, c) in text.char_indices().skip(1) {
                let takes_value = cmd
                    .get_arguments()
                    .find(|a| a.get_short() == Some(c))
                    .is_some_and(|a| a.get_action().takes_values());
                if takes_value {
                    if i + c.len_utf8() == text.len() {
                        if let Some(v) = rest.next() {
                            out.push(v);
                        }
                    }
                    break;
                }
            }
            continue;
        }
        if position == 0 && cmd.has_subcommands() {
            match cmd.find_subcommand(&text) {
                Some(sub) if sub.get_name() == "remote" => {
                    out.push(arg);
                    out.extend(rest.by_ref());
                    break;
                }
                Some(sub) => {
                    cmd = sub;
                    out.push(arg);
                    continue;
                }
                None => {
                    // Clap will say what is wrong.
                    out.push(arg);
                    out.extend(rest.by_ref());
                    break;
                }
            }
        }
        let mut positionals = cmd.get_positionals();
        let Some(positional) = positionals
            .nth(position)
            .or_else(|| cmd.get_positionals().filter(|a| is_multiple(a)).last())
        else {
            out.push(arg);
            continue;
        };
        if positional.is_trailing_var_arg_set() || positional.is_last_set() {
            out.push(arg);
            out.extend(rest.by_ref());
            break;
        }
        if !is_multiple(positional) {
            position += 1;
        }
        if is_local_value(positional) {
            out.push(arg);
            continue;
        }
        match split_prefix(&text, config) {
            Some((remote, name)) => {
                if name.is_empty() && positional.is_required_set() {
                    bail!(
                        "'{text}' names the remote '{remote}' but nothing on it: write {remote}:NAME"
                    );
                }
                named.push((remote.to_string(), text.clone()));
                out.push(OsString::from(name));
            }
            None => out.push(arg),
        }
    }
    let mut remote: Option<(String, String)> = None;
    for (name, from) in named {
        match &remote {
            None => remote = Some((name, from)),
            Some((chosen, first)) if *chosen != name => bail!(
                "one command goes to one remote, but '{first}' names '{chosen}' and '{from}' \
                 names '{name}'"
            ),
            Some(_) => {}
        }
    }
    Ok(Routed {
        args: out,
        remote: remote.map(|(name, _)| name),
    })
}

/// The value of a positional that only names a remote (`vessel list prod:`): after routing,
/// nothing is left of it.
pub fn parse_remote_only(value: &str) -> Result<String, String> {
    if value.is_empty() {
        Ok(String::new())
    } else {
        Err(format!(
            "expected a remote followed by ':' (e.g. `prod:`; see `vessel remote list`), \
             not '{value}'"
        ))
    }
}

/// Picks the remote of a command: a prefix's or `--remote`'s, else the default one.
pub fn chosen<'a>(routed: Option<&'a str>, config: &'a Config) -> Result<&'a str> {
    let name = routed.unwrap_or(&config.default_remote);
    if !config.has(name) {
        return Err(config.unknown(name));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let remote = |url: &str| RemoteConfig {
            url: url.into(),
            token: Some("t".into()),
            fingerprint: "a".repeat(64),
            client_cert: None,
            client_key: None,
        };
        let mut c = Config::default();
        c.remotes
            .insert("prod".into(), remote("https://10.0.0.5:8443"));
        c.remotes
            .insert("localhost".into(), remote("https://127.0.0.1:8443"));
        c
    }

    fn route_str(args: &[&str]) -> Result<(Vec<String>, Option<String>)> {
        let mut all = vec!["vessel".to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        let routed = route(all.into_iter().map(OsString::from).collect(), &config())?;
        let args = routed
            .args
            .iter()
            .skip(1)
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        Ok((args, routed.remote))
    }

    fn routes_to(args: &[&str], want: &[&str], remote: Option<&str>) {
        let (got, r) = route_str(args).unwrap();
        assert_eq!(got, want, "{args:?}");
        assert_eq!(r.as_deref(), remote, "{args:?}");
        // What comes out still parses.
        let mut all = vec!["vessel".to_string()];
        all.extend(got);
        Cli::try_parse_from_args(&all);
    }

    impl Cli {
        fn try_parse_from_args(args: &[String]) {
            use clap::Parser;
            if let Err(e) = Cli::try_parse_from(args) {
                panic!("{args:?} does not parse: {e}");
            }
        }
    }

    #[test]
    fn prefixes_of_remote_names_are_taken_off() {
        routes_to(
            &["start", "prod:c1", "c2"],
            &["start", "c1", "c2"],
            Some("prod"),
        );
        routes_to(
            &["start", "prod:c1", "prod:c2"],
            &["start", "c1", "c2"],
            Some("prod"),
        );
        routes_to(&["list", "prod:"], &["list", ""], Some("prod"));
        routes_to(&["list", "local:"], &["list", ""], Some("local"));
        routes_to(
            &["ls", "prod:", "--format", "json"],
            &["ls", "", "--format", "json"],
            Some("prod"),
        );
        routes_to(&["info", "prod:"], &["info", ""], Some("prod"));
        routes_to(
            &["info", "prod:c1", "--format=yaml"],
            &["info", "c1", "--format=yaml"],
            Some("prod"),
        );
        routes_to(
            &["launch", "busybox", "prod:web"],
            &["launch", "busybox", "web"],
            Some("prod"),
        );
        routes_to(
            &["--socket", "/tmp/x.sock", "delete", "-f", "local:c1"],
            &["--socket", "/tmp/x.sock", "delete", "-f", "c1"],
            Some("local"),
        );
        routes_to(
            &["network", "info", "prod:lan"],
            &["network", "info", "lan"],
            Some("prod"),
        );
        routes_to(
            &["storage", "volume", "list", "prod:fast"],
            &["storage", "volume", "list", "fast"],
            Some("prod"),
        );
    }

    #[test]
    fn image_references_are_not_remotes() {
        for args in [
            &["image", "pull", "docker.io/library/alpine:3.19"][..],
            &["image", "pull", "127.0.0.1:5000/app:1"],
            &["image", "pull", "localhost:5000/app:1"],
            &["image", "pull", "localhost:5000"],
            &["launch", "alpine:3.19", "c1"],
            &["image", "info", "prod2:x"],
        ] {
            routes_to(args, args, None);
        }
        // A registry on a remote's daemon: the prefix goes, the reference stays.
        routes_to(
            &["image", "pull", "prod:127.0.0.1:5000/app:1"],
            &["image", "pull", "127.0.0.1:5000/app:1"],
            Some("prod"),
        );
    }

    #[test]
    fn local_paths_options_and_commands_are_left_alone() {
        // NAME/PATH in the instance is routed; the local file is not.
        routes_to(
            &["file", "push", "prod:notes.txt", "prod:c1/etc/x"],
            &["file", "push", "prod:notes.txt", "c1/etc/x"],
            Some("prod"),
        );
        routes_to(
            &["file", "pull", "prod:c1/etc/hostname", "prod:copy"],
            &["file", "pull", "c1/etc/hostname", "prod:copy"],
            Some("prod"),
        );
        routes_to(
            &["file", "pull", "c1/etc/a:b", "-"],
            &["file", "pull", "c1/etc/a:b", "-"],
            None,
        );
        routes_to(
            &["exec", "prod:c1", "echo", "prod:hi"],
            &["exec", "c1", "echo", "prod:hi"],
            Some("prod"),
        );
        routes_to(
            &["exec", "prod:c1", "-T", "--", "ls", "local:x"],
            &["exec", "c1", "-T", "--", "ls", "local:x"],
            Some("prod"),
        );
        routes_to(
            &[
                "launch",
                "busybox",
                "c1",
                "-e",
                "prod:x",
                "--network",
                "prod:y",
                "--",
                "local:z",
            ],
            &[
                "launch",
                "busybox",
                "c1",
                "-e",
                "prod:x",
                "--network",
                "prod:y",
                "--",
                "local:z",
            ],
            None,
        );
        routes_to(
            &[
                "console",
                "prod:vm1",
                "--type",
                "vga",
                "--listen",
                "127.0.0.1:5901",
            ],
            &[
                "console",
                "vm1",
                "--type",
                "vga",
                "--listen",
                "127.0.0.1:5901",
            ],
            Some("prod"),
        );
        routes_to(
            &["logs", "-n5", "prod:c1"],
            &["logs", "-n5", "c1"],
            Some("prod"),
        );
        routes_to(
            &["image", "export", "prod:busybox", "local:out.tar"],
            &["image", "export", "busybox", "local:out.tar"],
            Some("prod"),
        );
        // `remote` manages the remotes themselves.
        routes_to(
            &["remote", "add", "prod2", "https://h:8443"],
            &["remote", "add", "prod2", "https://h:8443"],
            None,
        );
    }

    #[test]
    fn remote_flag_and_conflicts() {
        routes_to(
            &["--remote", "prod", "list"],
            &["--remote", "prod", "list"],
            Some("prod"),
        );
        routes_to(
            &["list", "--remote=prod", "prod:"],
            &["list", "--remote=prod", ""],
            Some("prod"),
        );
        let err = route_str(&["start", "prod:c1", "local:c2"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "one command goes to one remote, but 'prod:c1' names 'prod' and 'local:c2' names 'local'"
        );
        let err = route_str(&["--remote", "local", "start", "prod:c1"]).unwrap_err();
        assert!(
            err.to_string().contains("'--remote' names 'local'"),
            "{err}"
        );
        let err = route_str(&["start", "prod:"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "'prod:' names the remote 'prod' but nothing on it: write prod:NAME"
        );
    }

    #[test]
    fn list_takes_only_a_remote() {
        use clap::Parser;
        assert!(Cli::try_parse_from(["vessel", "list", ""]).is_ok());
        let err = Cli::try_parse_from(["vessel", "list", "nope"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected a remote followed by ':'"), "{err}");
    }

    #[test]
    fn names() {
        for ok in ["prod", "a", "site-2", "eu_west"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "2x", "a.b", "a:b", "a/b", "-x", &"a".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn config_round_trip_with_modes() {
        use std::os::unix::fs::PermissionsExt;

        let dir = crate::testutil::temp_dir().join("conf");
        let path = dir.join(CONFIG_FILE);
        assert_eq!(Config::load(&path).unwrap(), Config::default());
        let mut c = config();
        c.default_remote = "prod".into();
        c.save(&path).unwrap();
        assert_eq!(Config::load(&path).unwrap(), c);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir), 0o700);
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("default_remote: prod\nremotes:\n"),
            "{text}"
        );
        assert!(
            text.contains("  prod:\n    url: https://10.0.0.5:8443\n    token: t\n"),
            "{text}"
        );

        fs::write(
            &path,
            "remotes:\n  local:\n    url: https://x\n    fingerprint: x\n",
        )
        .unwrap();
        assert!(Config::load(&path).is_err());
        fs::write(&path, "default_remote: [").unwrap();
        let err = format!("{:#}", Config::load(&path).unwrap_err());
        assert!(err.contains("is not a valid client configuration"), "{err}");
    }

    #[test]
    fn clients_of_remotes() {
        let c = config();
        assert!(c.client("local", Path::new("/run/x.sock")).is_ok());
        assert!(c.client("prod", Path::new("/run/x.sock")).is_ok());
        let err = c.client("nope", Path::new("/x")).unwrap_err().to_string();
        assert_eq!(
            err,
            "no remote named 'nope' (remotes: local, localhost, prod); add one with \
             `vessel remote add nope https://HOST:8443`"
        );
        let mut broken = c.clone();
        broken.remotes.get_mut("prod").unwrap().fingerprint = "x".into();
        let err = format!("{:#}", broken.client("prod", Path::new("/x")).unwrap_err());
        assert!(
            err.starts_with("the remote 'prod' is misconfigured: invalid certificate fingerprint"),
            "{err}"
        );
        assert_eq!(chosen(None, &c).unwrap(), "local");
        assert_eq!(chosen(Some("prod"), &c).unwrap(), "prod");
        assert!(chosen(Some("gone"), &c).is_err());
    }
}
