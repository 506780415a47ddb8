//! `vessel profile ...`.

use anyhow::{Context, Result};
use vessel_api::{Profile, ProfileChange, ProfilePut};

use super::config::{kept_on_error, key_values, report, run_editor};
use crate::cli_config::ProfileCommand;
use crate::client::Client;
use crate::output::{print_document, println, Format, Table};

fn path(name: &str) -> String {
    format!("/1.0/profiles/{}", crate::encode::encode_segment(name))
}

fn put_of(p: &Profile) -> ProfilePut {
    ProfilePut {
        description: p.description.clone(),
        config: p.config.clone(),
        networks: p.networks.clone(),
        volumes: p.volumes.clone(),
    }
}

/// `POOL/VOLUME[:PATH]`.
fn volume_device(s: &str) -> Result<vessel_api::VolumeDevice> {
    let (pv, path) = s.split_once(':').unwrap_or((s, ""));
    let (pool, volume) = pv
        .split_once('/')
        .with_context(|| format!("{s:?} is not POOL/VOLUME[:PATH] (e.g. local/data:/srv)"))?;
    Ok(vessel_api::VolumeDevice {
        pool: pool.to_string(),
        volume: volume.to_string(),
        path: path.to_string(),
    })
}

/// What a profile's change did to the instances using it.
fn changed(change: &ProfileChange, format: Format) -> Result<()> {
    if format != Format::Table {
        return print_document(format, change);
    }
    println(format!("Profile {} kept.", change.profile.name))?;
    for (inst, changes) in &change.instances {
        println(format!("{inst}:"))?;
        report(
            &vessel_api::InstanceConfigChange {
                config: Default::default(),
                changes: changes.clone(),
            },
            Format::Table,
        )?;
    }
    for (inst, why) in &change.errors {
        println(format!("{inst}: not changed: {why}"))?;
    }
    Ok(())
}

/// `profile ...`.
pub fn run(client: &Client, cmd: ProfileCommand) -> Result<i32> {
    match cmd {
        ProfileCommand::Create {
            name,
            config,
            networks,
            volumes,
            description,
        } => {
            let p = Profile {
                name,
                description,
                config: key_values(&config)?,
                networks,
                volumes: volumes
                    .iter()
                    .map(|v| volume_device(v))
                    .collect::<Result<_>>()?,
                used_by: Vec::new(),
            };
            let made: Profile = client.send("POST", "/1.0/profiles", &p)?;
            println(format!("Profile {} made", made.name))?;
        }
        ProfileCommand::List { format } => {
            let list: Vec<Profile> = client.get("/1.0/profiles")?;
            match format {
                Format::Table => {
                    let mut t = Table::new(&[
                        "NAME",
                        "KEYS",
                        "NETWORKS",
                        "VOLUMES",
                        "USED BY",
                        "DESCRIPTION",
                    ]);
                    for p in &list {
                        t.row(vec![
                            p.name.clone(),
                            p.config
                                .iter()
                                .map(|(k, v)| format!("{k}={v}"))
                                .collect::<Vec<_>>()
                                .join(" "),
                            p.networks.join(","),
                            p.volumes
                                .iter()
                                .map(|v| format!("{}/{}", v.pool, v.volume))
                                .collect::<Vec<_>>()
                                .join(","),
                            p.used_by.len().to_string(),
                            p.description.clone(),
                        ]);
                    }
                    t.print()?;
                }
                format => print_document(format, &list)?,
            }
        }
        ProfileCommand::Show { name, format } => {
            let p: Profile = client.get(&path(&name))?;
            print_document(format, &p)?;
        }
        ProfileCommand::Set {
            name,
            pairs,
            format,
        } => {
            let p: Profile = client.get(&path(&name))?;
            let mut put = put_of(&p);
            put.config.extend(key_values(&pairs)?);
            let change: ProfileChange = client.send("PUT", &path(&name), &put)?;
            changed(&change, format)?;
        }
        ProfileCommand::Unset { name, keys, format } => {
            let p: Profile = client.get(&path(&name))?;
            let mut put = put_of(&p);
            for k in &keys {
                put.config.remove(k);
            }
            let change: ProfileChange = client.send("PUT", &path(&name), &put)?;
            changed(&change, format)?;
        }
        ProfileCommand::Edit { name } => {
            let p: Profile = client.get(&path(&name))?;
            let text = format!(
                "# Profile {name}: its description, instance keys (config) and networks.\n{}",
                serde_yaml::to_string(&put_of(&p)).context("cannot encode YAML")?
            );
            let (file, edited) = run_editor(&format!("profile-{name}"), &text)?;
            let outcome = serde_yaml::from_str::<ProfilePut>(&edited)
                .context("the edit is not a profile (description, config, networks)")
                .and_then(|put| {
                    let change: ProfileChange = client.send("PUT", &path(&name), &put)?;
                    changed(&change, Format::Table)
                });
            return kept_on_error(outcome, &file);
        }
        ProfileCommand::Delete { name } => {
            let _: Profile = client.call("DELETE", &path(&name))?;
            println(format!("Profile {name} deleted"))?;
        }
    }
    Ok(0)
}
