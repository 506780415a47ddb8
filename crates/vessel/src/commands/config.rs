//! `vessel config ...`: an instance's keys, or the daemon's settings.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use vessel_api::{
    ConfigEffect, InstanceConfig, InstanceConfigChange, InstanceConfigPatch, ServerConfig,
};

use crate::cli_config::{is_server_key, ConfigCommand};
use crate::client::Client;
use crate::output::{print_document, println, Format, Table};

/// `config ...`.
pub fn run(client: &Client, cmd: ConfigCommand) -> Result<i32> {
    match cmd {
        ConfigCommand::Set { args, format } => {
            if is_server_key(&args[0]) {
                let (key, value) = server_pair(&args)?;
                server_patch(client, key, value)?;
                return Ok(0);
            }
            let (instance, rest) = (&args[0], &args[1..]);
            let set = instance_pairs(instance, rest)?;
            let patch = InstanceConfigPatch {
                set,
                unset: Vec::new(),
            };
            report(&update(client, instance, &patch)?, format)?;
        }
        ConfigCommand::Unset { args, format } => {
            if is_server_key(&args[0]) {
                if args.len() > 1 {
                    bail!("unset one daemon setting at a time: vessel config unset KEY");
                }
                server_patch(client, args[0].clone(), String::new())?;
                return Ok(0);
            }
            if args.len() < 2 {
                bail!(
                    "name the keys to unset: vessel config unset {} KEY...",
                    args[0]
                );
            }
            let patch = InstanceConfigPatch {
                set: BTreeMap::new(),
                unset: args[1..].to_vec(),
            };
            report(&update(client, &args[0], &patch)?, format)?;
        }
        ConfigCommand::Get { args } => {
            let (values, key) = match args.as_slice() {
                [key] if is_server_key(key) => {
                    (client.get::<ServerConfig>("/1.0/config")?.values, key)
                }
                [instance] => bail!(
                    "name the key too: vessel config get {instance} KEY (or vessel config show \
                     {instance})"
                ),
                [instance, key] => (instance_config(client, instance)?, key),
                _ => unreachable!("clap takes one or two arguments"),
            };
            println(values.get(key).map(String::as_str).unwrap_or(""))?;
        }
        ConfigCommand::Show { instance, format } => {
            // `REMOTE:` alone names the remote's daemon.
            let instance = instance.filter(|i| !i.is_empty());
            let values = match &instance {
                Some(i) => instance_config(client, i)?,
                None => client.get::<ServerConfig>("/1.0/config")?.values,
            };
            match format {
                Format::Table => {
                    let mut t = Table::new(&["KEY", "VALUE"]);
                    for (k, v) in &values {
                        t.row(vec![k.clone(), v.clone()]);
                    }
                    t.print()?;
                }
                format => print_document(format, &values)?,
            }
        }
        ConfigCommand::Edit { instance } => return edit(client, &instance),
    }
    Ok(0)
}

fn server_pair(args: &[String]) -> Result<(String, String)> {
    match args {
        [key, value] => Ok((key.clone(), value.clone())),
        [pair] => match pair.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => bail!("give the value too: vessel config set {pair} VALUE (or {pair}=VALUE)"),
        },
        _ => bail!("set one daemon setting at a time: vessel config set KEY VALUE"),
    }
}

fn server_patch(client: &Client, key: String, value: String) -> Result<()> {
    let body = ServerConfig {
        values: BTreeMap::from([(key, value)]),
    };
    let _: ServerConfig = client.send("PATCH", "/1.0/config", &body)?;
    Ok(())
}

/// `KEY=VALUE...`, or one `KEY VALUE`.
fn instance_pairs(instance: &str, rest: &[String]) -> Result<BTreeMap<String, String>> {
    if rest.is_empty() {
        bail!("give keys and values: vessel config set {instance} KEY=VALUE...");
    }
    if let [key, value] = rest {
        if !key.contains('=') {
            return Ok(BTreeMap::from([(key.clone(), value.clone())]));
        }
    }
    key_values(rest)
}

/// `KEY=VALUE` arguments as keys and values.
pub fn key_values(items: &[String]) -> Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => Ok((k.trim().to_string(), v.to_string())),
            None => bail!("{p:?} is not KEY=VALUE (e.g. limits.memory=1GiB)"),
        })
        .collect()
}

fn config_path(instance: &str) -> String {
    format!(
        "/1.0/instances/{}/config",
        crate::encode::encode_segment(instance)
    )
}

fn instance_config(client: &Client, instance: &str) -> Result<BTreeMap<String, String>> {
    Ok(client.get::<InstanceConfig>(&config_path(instance))?.config)
}

fn update(
    client: &Client,
    instance: &str,
    patch: &InstanceConfigPatch,
) -> Result<InstanceConfigChange> {
    client.send("PATCH", &config_path(instance), patch)
}

/// What a change did, key by key.
pub fn report(change: &InstanceConfigChange, format: Format) -> Result<()> {
    if format != Format::Table {
        return print_document(format, change);
    }
    if change.changes.is_empty() {
        return println("Nothing changed: every key already had that value.");
    }
    for c in &change.changes {
        let what = match &c.value {
            Some(v) => format!("{}={v}", c.key),
            None => format!("{} unset", c.key),
        };
        let when = match c.effect {
            ConfigEffect::Live => "applied now".to_string(),
            ConfigEffect::NextStart => match &c.reason {
                Some(r) => format!("applies at the next start ({r})"),
                None => "applies at the next start".to_string(),
            },
            ConfigEffect::Stored => "kept".to_string(),
        };
        println(format!("{what}: {when}"))?;
    }
    Ok(())
}

/// The keys and values of an edited document: a mapping of keys to scalars.
pub fn parse_edited(text: &str) -> Result<BTreeMap<String, String>> {
    let doc: serde_yaml::Value = serde_yaml::from_str(text).context("the edit is not YAML")?;
    let map = match doc {
        serde_yaml::Value::Null => return Ok(BTreeMap::new()),
        serde_yaml::Value::Mapping(m) => m,
        _ => bail!("the edit is not a mapping of keys to values (KEY: VALUE per line)"),
    };
    map.into_iter()
        .map(|(k, v)| {
            let key = match k {
                serde_yaml::Value::String(s) => s,
                other => bail!("key {other:?} is not text"),
            };
            let value = match v {
                serde_yaml::Value::String(s) => s,
                serde_yaml::Value::Number(n) => n.to_string(),
                serde_yaml::Value::Bool(b) => b.to_string(),
                _ => bail!("the value of {key} is not a single value"),
            };
            Ok((key, value))
        })
        .collect()
}

/// The change from `before` to `after`.
pub fn diff(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> InstanceConfigPatch {
    InstanceConfigPatch {
        set: after
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        unset: before
            .keys()
            .filter(|k| !after.contains_key(*k))
            .cloned()
            .collect(),
    }
}

/// Opens `text` in $EDITOR (or $VISUAL, else vi) in a private file named after `label`;
/// returns the file (kept until the caller removes it) and what it holds after.
pub fn run_editor(label: &str, text: &str) -> Result<(std::path::PathBuf, String)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = std::env::temp_dir().join(format!(
        "vessel-{}-{}.yaml",
        label.replace(['/', ':'], "_"),
        std::process::id()
    ));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("{editor} \"$1\""), "sh"])
        .arg(&path)
        .status()
        .with_context(|| format!("cannot run the editor {editor:?}"))?;
    if !status.success() {
        bail!(
            "the editor {editor:?} failed ({status}); nothing changed; the edit is in {}",
            path.display()
        );
    }
    let edited = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok((path, edited))
}

/// `config edit`: the keys in an editor as YAML, the difference sent as one change. A
/// refused edit stays in its file, whose path is said, and changes nothing.
fn edit(client: &Client, instance: &str) -> Result<i32> {
    let before = instance_config(client, instance)?;
    let mut text = format!(
        "# Configuration of {instance}: KEY: VALUE per line; remove a line to unset it.\n\
         # See `vessel config set --help` for the keys.\n"
    );
    if !before.is_empty() {
        text.push_str(&serde_yaml::to_string(&before).context("cannot encode YAML")?);
    }
    let (path, edited) = run_editor(&format!("config-{instance}"), &text)?;
    let outcome = parse_edited(&edited).and_then(|after| {
        let patch = diff(&before, &after);
        if patch.set.is_empty() && patch.unset.is_empty() {
            println("Nothing changed.")?;
            return Ok(());
        }
        report(&update(client, instance, &patch)?, Format::Table)
    });
    kept_on_error(outcome, &path)
}

/// Removes an edit's file once it took effect; names it in the error otherwise.
pub fn kept_on_error(outcome: Result<()>, path: &std::path::Path) -> Result<i32> {
    match outcome {
        Ok(()) => {
            let _ = std::fs::remove_file(path);
            Ok(0)
        }
        Err(e) => Err(e.context(format!(
            "nothing changed; the edit is kept in {}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edit_becomes_the_keys_it_changed() {
        let before: BTreeMap<String, String> = [
            ("limits.memory", "256MiB"),
            ("user.a", "1"),
            ("limits.cpu", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let after =
            parse_edited("# comment\nlimits.memory: 1GiB\nlimits.cpu: 1\nboot.autostart: true\n")
                .unwrap();
        let p = diff(&before, &after);
        assert_eq!(
            p.set.into_iter().collect::<Vec<_>>(),
            [
                ("boot.autostart".to_string(), "true".to_string()),
                ("limits.memory".to_string(), "1GiB".to_string())
            ]
        );
        assert_eq!(p.unset, ["user.a"]);
        assert!(parse_edited("- a\n- b\n").is_err());
        assert!(parse_edited("a: [1, 2]\n").is_err());
        assert!(parse_edited("").unwrap().is_empty());
    }

    #[test]
    fn first_arguments_tell_a_daemon_setting_from_an_instance() {
        assert!(is_server_key("core.https_address"));
        assert!(is_server_key("core.https_address=[::]:8443"));
        assert!(!is_server_key("web"));
        assert_eq!(
            instance_pairs("web", &["limits.cpu".into(), "2".into()]).unwrap()["limits.cpu"],
            "2"
        );
        let two = instance_pairs("web", &["a.b=1".into(), "c.d=x=y".into()]).unwrap();
        assert_eq!(two["c.d"], "x=y");
        assert!(instance_pairs("web", &[]).is_err());
        assert!(instance_pairs("web", &["a".into(), "b".into(), "c".into()]).is_err());
    }
}
