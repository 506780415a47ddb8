//! `vessel cluster ...`.

use anyhow::Result;
use vessel_api::{
    ClusterInfo, ClusterInit, ClusterJoin, ClusterMember, ClusterPlacement, ClusterToken,
    ClusterTokenCreate,
};

use crate::cli_cluster::ClusterCommand;
use crate::client::Client;
use crate::encode::encode_segment;
use crate::output::{format_bytes, print_document, println, Format, Table};

fn members_table(members: &[ClusterMember]) -> Result<()> {
    let mut t = Table::new(&[
        "NAME",
        "ADDRESS",
        "STATE",
        "CPUS",
        "MEMORY",
        "INSTANCES",
        "MEMORY USED",
        "LOAD",
        "LAST HEARTBEAT",
    ]);
    for m in members {
        let u = m.usage.clone().unwrap_or_default();
        let live = m.usage.is_some();
        t.row(vec![
            m.name.clone(),
            m.address.clone(),
            m.state.clone(),
            m.cpus.to_string(),
            format_bytes(m.memory),
            if live {
                format!("{} ({} running)", u.instances, u.running)
            } else {
                "-".into()
            },
            if live {
                format_bytes(u.memory)
            } else {
                "-".into()
            },
            if live {
                format!("{:.2}", u.load1)
            } else {
                "-".into()
            },
            m.last_heartbeat.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    t.print()
}

fn info_table(i: &ClusterInfo) -> Result<()> {
    if !i.enabled {
        return println(format!(
            "Not in a cluster (certificate fingerprint {}).",
            i.fingerprint
        ));
    }
    if let Some(why) = &i.ended {
        println(format!(
            "The membership as {name} of cluster {} ended: {why}\n  join a cluster again, this one as {name}: vessel cluster join TOKEN --address IP:PORT\n  (TOKEN from `vessel cluster add {name}` on one of its members)\n  (looked at again every few seconds: where the reason passes, it is a member again by itself)",
            i.id.as_deref().unwrap_or("?"),
            name = i.name.as_deref().unwrap_or("?"),
        ))?;
    }
    println(format!(
        "Member {} of cluster {}\n  address:     {}\n  etcd:        {}\n  connected:   {}\n  fenced:      {}\n  shared:      {}\n  placement:   {}\n  failover:    {}\n  fingerprint: {}",
        i.name.as_deref().unwrap_or("?"),
        i.id.as_deref().unwrap_or("?"),
        i.address.as_deref().unwrap_or("?"),
        i.etcd.join(", "),
        match (i.connected, i.ended.is_some()) {
            (true, _) => "yes",
            (false, true) => "no (the membership ended, above)",
            (false, false) => "no (etcd does not answer; see the daemon's log)",
        },
        match (i.fenced, i.ended.is_some()) {
            (_, true) => "its cluster.ha instances do not start (the membership ended)",
            (true, false) => {
                "yes: no lease renewal for half its TTL; its cluster.ha instances were stopped"
            }
            (false, false) => "no",
        },
        match (i.shared_current, i.ended.is_some()) {
            (_, true) => "no: projects, identities and profiles are this server's own again",
            (true, false) => "current (projects, identities and profiles are the cluster's)",
            (false, false) => {
                "catching up: projects, identities and profiles can be read, not changed"
            }
        },
        i.policy.as_deref().unwrap_or("?"),
        i.healing_threshold
            .map_or("off".to_string(), |t| format!("after {t} s offline")),
        i.fingerprint
    ))
}

fn healing_line(i: &ClusterInfo) -> String {
    match i.healing_threshold {
        Some(t) => format!(
            "Failover: the cluster.ha instances of a member offline for {t} s start on \
             another member."
        ),
        None => "Failover is off: instances of an offline member wait for it \
                 (`vessel cluster healing SECONDS` turns it on)."
            .into(),
    }
}

/// `vessel cluster ...`.
pub fn run(client: &Client, cmd: ClusterCommand) -> Result<i32> {
    match cmd {
        ClusterCommand::Init {
            name,
            address,
            etcd,
        } => {
            let i: ClusterInfo = client.send(
                "POST",
                "/1.0/cluster",
                &ClusterInit {
                    name,
                    address,
                    etcd,
                },
            )?;
            info_table(&i)?;
        }
        ClusterCommand::Add {
            name,
            lifetime,
            format,
        } => {
            let t: ClusterToken = client.send(
                "POST",
                "/1.0/cluster/tokens",
                &ClusterTokenCreate { name, lifetime },
            )?;
            if format == Format::Table {
                println(format!(
                    "Join token for {} (single use, valid until {}):\n{}",
                    t.name, t.expires_at, t.token
                ))?;
            } else {
                print_document(format, &t)?;
            }
        }
        ClusterCommand::Join { token, address } => {
            let i: ClusterInfo =
                client.send("POST", "/1.0/cluster/join", &ClusterJoin { token, address })?;
            info_table(&i)?;
        }
        ClusterCommand::List { format } => {
            let m: Vec<ClusterMember> = client.get("/1.0/cluster/members")?;
            if format == Format::Table {
                members_table(&m)?;
            } else {
                print_document(format, &m)?;
            }
        }
        ClusterCommand::Place {
            cpu,
            memory,
            policy,
            group,
            format,
        } => {
            let mut q = vec![("cpu", cpu), ("memory", memory)];
            q.extend(policy.map(|p| ("policy", p)));
            q.extend(group.map(|g| ("group", g)));
            let path = crate::encode::with_query("/1.0/cluster/placement", &q);
            let p: ClusterPlacement = client.get(&path)?;
            if format == Format::Table {
                println(format!("{}\n  {}", p.member, p.reason))?;
            } else {
                print_document(format, &p)?;
            }
        }
        ClusterCommand::Policy { policy } => {
            let i: ClusterInfo = match policy {
                Some(policy) => client.send(
                    "PATCH",
                    "/1.0/cluster",
                    &vessel_api::ClusterUpdate {
                        policy: Some(policy),
                        ..Default::default()
                    },
                )?,
                None => client.get("/1.0/cluster")?,
            };
            println(format!(
                "New instances are placed by {}.",
                i.policy.as_deref().unwrap_or("?")
            ))?;
        }
        ClusterCommand::Healing { threshold } => {
            let i: ClusterInfo = match threshold {
                Some(t) => {
                    let secs = match t.as_str() {
                        "off" | "0" => 0,
                        t => match t.trim_end_matches('s').parse::<u64>() {
                            Ok(n) if n > 0 => n,
                            _ => {
                                anyhow::bail!(
                                    "{t:?}: give the seconds a member may stay offline \
                                     (e.g. 10), or `off`"
                                )
                            }
                        },
                    };
                    client.send(
                        "PATCH",
                        "/1.0/cluster",
                        &vessel_api::ClusterUpdate {
                            healing_threshold: Some(secs),
                            ..Default::default()
                        },
                    )?
                }
                None => client.get("/1.0/cluster")?,
            };
            println(healing_line(&i))?;
        }
        ClusterCommand::Info { format } => {
            let i: ClusterInfo = client.get("/1.0/cluster")?;
            if format == Format::Table {
                info_table(&i)?;
            } else {
                print_document(format, &i)?;
            }
        }
        ClusterCommand::Remove { name, force } => {
            let _: Vec<ClusterMember> = client.call(
                "DELETE",
                &format!(
                    "/1.0/cluster/members/{}{}",
                    encode_segment(&name),
                    if force { "?force=1" } else { "" }
                ),
            )?;
            println(format!("Member {name} removed."))?;
        }
        ClusterCommand::Evacuate { name, action } => {
            let op: vessel_api::Operation = client.send(
                "POST",
                &format!("/1.0/cluster/members/{}/evacuate", encode_segment(&name)),
                &vessel_api::ClusterEvacuate { action },
            )?;
            crate::operation::wait(client, op)?;
            println(format!("Member {name} evacuated."))?;
        }
        ClusterCommand::Restore { name } => {
            let op: vessel_api::Operation = client.call(
                "POST",
                &format!("/1.0/cluster/members/{}/restore", encode_segment(&name)),
            )?;
            crate::operation::wait(client, op)?;
            println(format!("Member {name} restored."))?;
        }
    }
    Ok(0)
}
