//! `remote`: add, list, remove and pick the remote daemons of the client's configuration.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::cli::{RemoteAddArgs, RemoteCommand};
use crate::client::{ApiError, Client, Endpoint};
use crate::output::{print_document, println, short, Format, Table};
use crate::remote::{valid_name, Config, RemoteConfig, LOCAL};
use crate::tls::ClientIdentity;
use crate::transport;

/// Characters of a fingerprint shown in the table.
const FINGERPRINT_CHARS: usize = 12;

/// Runs a `remote` subcommand against the configuration file at `path`.
pub fn run(cmd: RemoteCommand, path: &Path, socket: &Path) -> Result<i32> {
    let mut config = Config::load(path)?;
    match cmd {
        RemoteCommand::Add(args) => {
            let stdin = io::stdin();
            let terminal = stdin.is_terminal();
            let mut lock = stdin.lock();
            let answer: Option<&mut dyn BufRead> = if terminal { Some(&mut lock) } else { None };
            add(&mut config, path, args, answer)?;
        }
        RemoteCommand::List { format } => list(&config, socket, format)?,
        RemoteCommand::Remove { name } => {
            remove(&mut config, &name)?;
            config.save(path)?;
        }
        RemoteCommand::Switch { name } => {
            switch(&mut config, &name)?;
            config.save(path)?;
        }
        RemoteCommand::GetDefault => println(&config.default_remote)?,
    }
    Ok(0)
}

/// `remote add`: connects once to learn the server's certificate, has it trusted (by
/// `answer`, a terminal, or `--accept-certificate`), checks the credentials with
/// `GET /1.0`, and only then stores the remote in `config` and at `path`.
pub fn add(
    config: &mut Config,
    path: &Path,
    args: RemoteAddArgs,
    answer: Option<&mut dyn BufRead>,
) -> Result<()> {
    let name = args.name;
    if name == LOCAL {
        bail!("'{LOCAL}' is this machine's daemon (on its unix socket): pick another name");
    }
    if !valid_name(&name) {
        bail!(
            "invalid remote name '{name}': a letter, then letters, digits, '-' and '_' \
             (at most 63)"
        );
    }
    if config.remotes.contains_key(&name) {
        bail!(
            "there is already a remote named '{name}' ({}); remove it first with \
             `vessel remote remove {name}`",
            config.remotes[&name].url
        );
    }
    let endpoint = Endpoint::parse(&args.url)?;
    let identity = match (args.client_cert, args.client_key) {
        (Some(cert), Some(key)) => {
            let absolute = |p: &Path| {
                std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display()))
            };
            let id = ClientIdentity {
                cert: absolute(&cert)?,
                key: absolute(&key)?,
            };
            crate::tls::check_identity(&id)?;
            Some(id)
        }
        (None, None) => None,
        _ => bail!("--client-cert and --client-key go together"),
    };
    if args.token.is_none() && identity.is_none() {
        eprintln!(
            "Note: neither --token nor --client-cert was given; the daemon is likely to refuse \
             requests without credentials."
        );
    }

    let fingerprint = transport::fetch_fingerprint(&endpoint, identity.as_ref())
        .context("cannot fetch the server's certificate")?;
    println(format!("Certificate fingerprint: {fingerprint}"))?;
    if !args.accept_certificate {
        let Some(answer) = answer else {
            bail!(
                "the server's certificate must be trusted, and standard input is not a \
                 terminal to ask: check the fingerprint above, then run again with \
                 --accept-certificate"
            );
        };
        eprint!("Trust this certificate? (y/N) ");
        let _ = io::stderr().flush();
        let mut line = String::new();
        answer
            .read_line(&mut line)
            .context("cannot read the answer")?;
        if !matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            bail!("the certificate was not trusted: remote '{name}' was not added");
        }
    }

    let client = Client::https(
        Some(&name),
        endpoint.clone(),
        &fingerprint,
        args.token.as_deref(),
        identity.as_ref(),
    )?;
    if let Err(e) = client.get::<serde_json::Value>("/1.0") {
        let refused = e
            .downcast_ref::<ApiError>()
            .filter(|api| api.status == 401 || api.status == 403);
        return Err(match refused {
            Some(api) => anyhow!(
                "{} refused the credentials ({} {}): check --token or --client-cert and \
                 --client-key. Remote '{name}' was not added",
                endpoint.url(),
                api.status,
                api.message
            ),
            None => e.context(format!(
                "cannot check the credentials with {}: remote '{name}' was not added",
                endpoint.url()
            )),
        });
    }

    config.remotes.insert(
        name.clone(),
        RemoteConfig {
            url: endpoint.url(),
            token: args.token,
            fingerprint,
            client_cert: identity.as_ref().map(|i| i.cert.clone()),
            client_key: identity.map(|i| i.key),
        },
    );
    config.save(path)?;
    println(format!(
        "Remote {name} added: {}. Use it as `{name}:NAME`, or `vessel remote switch {name}`",
        endpoint.url()
    ))
}

/// One remote as `remote list` shows it (never its token).
#[derive(Debug, Serialize)]
struct Row {
    name: String,
    url: String,
    auth: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fingerprint: Option<String>,
    default: bool,
}

fn rows(config: &Config, socket: &Path) -> Vec<Row> {
    let mut rows = vec![Row {
        name: LOCAL.to_string(),
        url: format!("unix://{}", socket.display()),
        auth: "unix socket".to_string(),
        fingerprint: None,
        default: config.default_remote == LOCAL,
    }];
    for (name, r) in &config.remotes {
        let mut auth = Vec::new();
        if r.token.is_some() {
            auth.push("token");
        }
        if r.client_cert.is_some() {
            auth.push("client certificate");
        }
        rows.push(Row {
            name: name.clone(),
            url: r.url.clone(),
            auth: if auth.is_empty() {
                "none".to_string()
            } else {
                auth.join(", ")
            },
            fingerprint: Some(r.fingerprint.clone()),
            default: config.default_remote == *name,
        });
    }
    rows
}

/// The table `remote list` prints: the default remote is marked `(current)`, as in Incus.
fn table(rows: &[Row]) -> Table {
    let mut table = Table::new(&["NAME", "URL", "AUTH", "FINGERPRINT"]);
    for r in rows {
        let name = if r.default {
            format!("{} (current)", r.name)
        } else {
            r.name.clone()
        };
        table.row(vec![
            name,
            r.url.clone(),
            r.auth.clone(),
            r.fingerprint
                .as_deref()
                .map_or_else(|| "-".to_string(), |f| short(f, FINGERPRINT_CHARS)),
        ]);
    }
    table
}

/// `remote list`.
pub fn list(config: &Config, socket: &Path, format: Format) -> Result<()> {
    let rows = rows(config, socket);
    match format {
        Format::Table => table(&rows).print(),
        _ => print_document(format, &rows),
    }
}

/// `remote remove`.
pub fn remove(config: &mut Config, name: &str) -> Result<()> {
    if name == LOCAL {
        bail!("'{LOCAL}' is this machine's daemon and cannot be removed");
    }
    if !config.remotes.contains_key(name) {
        return Err(config.unknown(name));
    }
    if config.default_remote == name {
        bail!(
            "'{name}' is the default remote: switch to another first (e.g. `vessel remote \
             switch {LOCAL}`)"
        );
    }
    config.remotes.remove(name);
    Ok(())
}

/// `remote switch`.
pub fn switch(config: &mut Config, name: &str) -> Result<()> {
    if !config.has(name) {
        return Err(config.unknown(name));
    }
    config.default_remote = name.to_string();
    Ok(())
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::testutil::{answer, json_response, temp_dir, Recorded, ScriptServer, TestIdentity};

    fn add_args(name: &str, url: &str, token: Option<&str>, accept: bool) -> RemoteAddArgs {
        RemoteAddArgs {
            name: name.into(),
            url: url.into(),
            token: token.map(str::to_string),
            client_cert: None,
            client_key: None,
            accept_certificate: accept,
        }
    }

    /// A daemon that answers `GET /1.0` with `response` after the client's probe.
    fn daemon(id: &TestIdentity, response: Vec<u8>) -> ScriptServer<Recorded> {
        ScriptServer::tls_after_probe(id, answer(response))
    }

    #[test]
    fn add_list_switch_remove_round_trip() {
        let path = temp_dir().join("config.yml");
        let id = TestIdentity::new();
        let server = daemon(&id, json_response(200, r#"{"api_version":"1.0"}"#));
        let url = server.url();
        let mut config = Config::load(&path).unwrap();
        let mut yes = &b"y\n"[..];
        add(
            &mut config,
            &path,
            add_args("prod", &url, Some("s3cret"), false),
            Some(&mut yes),
        )
        .unwrap();
        let req = server.finish().result.unwrap();
        assert_eq!((req.method.as_str(), req.target.as_str()), ("GET", "/1.0"));
        assert_eq!(req.header("authorization"), Some("Bearer s3cret"));

        let stored = Config::load(&path).unwrap();
        assert_eq!(stored, config);
        let prod = &stored.remotes["prod"];
        assert_eq!(prod.url, url);
        assert_eq!(prod.fingerprint, id.fingerprint);
        assert_eq!(prod.token.as_deref(), Some("s3cret"));

        // The stored remote is usable: a client of it reaches the same certificate.
        assert!(stored.client("prod", Path::new("/x")).is_ok());

        let shown = rows(&stored, Path::new("/run/vessel/vessel.sock"));
        assert_eq!(shown.len(), 2);
        assert_eq!(shown[0].url, "unix:///run/vessel/vessel.sock");
        assert!(shown[0].default);
        assert_eq!(shown[1].auth, "token");
        let rendered = table(&shown).render();
        assert!(rendered.contains("| local (current) |"), "{rendered}");
        assert!(rendered.contains(&id.fingerprint[..12]), "{rendered}");
        assert!(!rendered.contains("s3cret"));
        let json = serde_json::to_string(&shown).unwrap();
        assert!(!json.contains("s3cret"), "{json}");

        let mut config = stored;
        switch(&mut config, "prod").unwrap();
        assert_eq!(config.default_remote, "prod");
        let err = remove(&mut config, "prod").unwrap_err().to_string();
        assert!(err.contains("is the default remote"), "{err}");
        assert!(switch(&mut config, "nope").is_err());
        switch(&mut config, "local").unwrap();
        remove(&mut config, "prod").unwrap();
        assert!(remove(&mut config, "prod").is_err());
        let err = remove(&mut config, "local").unwrap_err().to_string();
        assert_eq!(
            err,
            "'local' is this machine's daemon and cannot be removed"
        );
        assert_eq!(config, Config::default());
    }

    #[test]
    fn add_refuses_bad_input_before_connecting() {
        let path = temp_dir().join("config.yml");
        let mut config = Config::default();
        config.remotes.insert(
            "prod".into(),
            RemoteConfig {
                url: "https://10.0.0.5:8443".into(),
                token: None,
                fingerprint: "a".repeat(64),
                client_cert: None,
                client_key: None,
            },
        );
        let before = config.clone();
        for (name, url, want) in [
            ("local", "https://h", "'local' is this machine's daemon"),
            ("a.b", "https://h", "invalid remote name 'a.b'"),
            (
                "prod",
                "https://h",
                "there is already a remote named 'prod'",
            ),
            ("new", "http://h:8443", "invalid remote URL 'http://h:8443'"),
        ] {
            let err = add(&mut config, &path, add_args(name, url, None, true), None)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(want), "{err}");
        }
        assert_eq!(config, before);
        assert!(!path.exists(), "nothing was written");
    }

    #[test]
    fn add_without_a_terminal_needs_accept_certificate() {
        let path = temp_dir().join("config.yml");
        let id = TestIdentity::new();
        let server = ScriptServer::tls(&id, |_stream| ());
        let mut config = Config::default();
        let err = add(
            &mut config,
            &path,
            add_args("prod", &server.url(), Some("t"), false),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("run again with --accept-certificate"), "{err}");
        assert!(!path.exists());
        assert!(config.remotes.is_empty());
    }

    #[test]
    fn add_when_the_user_says_no() {
        let path = temp_dir().join("config.yml");
        let id = TestIdentity::new();
        let server = ScriptServer::tls(&id, |_stream| ());
        let mut config = Config::default();
        let mut no = &b"\n"[..];
        let err = add(
            &mut config,
            &path,
            add_args("prod", &server.url(), Some("t"), false),
            Some(&mut no),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "the certificate was not trusted: remote 'prod' was not added"
        );
        assert!(!path.exists());
    }

    #[test]
    fn add_with_refused_credentials_stores_nothing() {
        for status in [401, 403] {
            let path = temp_dir().join("config.yml");
            let id = TestIdentity::new();
            let body = format!(r#"{{"error":"bad token","code":{status}}}"#);
            let server = daemon(&id, json_response(status, &body));
            let mut config = Config::default();
            let err = add(
                &mut config,
                &path,
                add_args("prod", &server.url(), Some("wrong"), true),
                None,
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains(&format!("refused the credentials ({status} bad token)")),
                "{err}"
            );
            assert!(err.ends_with("Remote 'prod' was not added"), "{err}");
            assert!(config.remotes.is_empty());
            assert!(!path.exists());
            server.finish();
        }
    }

    #[test]
    fn add_with_a_client_certificate() {
        let path = temp_dir().join("config.yml");
        let server_id = TestIdentity::new();
        let client_id = TestIdentity::new();
        let files = client_id.write_files();
        let server = daemon(&server_id, json_response(200, "{}"));
        let mut config = Config::default();
        let mut args = add_args("lab", &server.url(), None, true);
        args.client_cert = Some(files.cert.clone());
        args.client_key = Some(files.key.clone());
        add(&mut config, &path, args, None).unwrap();
        assert_eq!(
            server.finish().client_fingerprint,
            Some(client_id.fingerprint)
        );
        let lab = &Config::load(&path).unwrap().remotes["lab"];
        assert_eq!(lab.client_cert.as_deref(), Some(files.cert.as_path()));
        assert_eq!(lab.client_key.as_deref(), Some(files.key.as_path()));
        assert_eq!(lab.token, None);
    }
}
