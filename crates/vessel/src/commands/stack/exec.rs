//! Carrying out one step through the API: each made object labelled with its stack.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context, Result};
use vessel_api::{
    ImageBuild, ImagePull, ImageSource, InstanceConfigPatch, InstanceCreate, InstanceType, Network,
    NetworkCreate, Operation, PoolCreate, PoolDriver, Project, ProjectCreate, ProjectUpdate,
    StoragePool, StorageVolume, VolumeContent, VolumeCreate, VolumeUpdate,
};

use crate::client::{Client, RequestBody};
use crate::commands::instance_path;
use crate::commands::network::path as net_path;
use crate::commands::storage::{pool_path, volume_path};
use crate::encode::encode_segment;
use crate::operation::wait_quietly;
use crate::stack::diff::Desired;
use crate::stack::infra::{balancer_body, forward_body};
use crate::stack::spec::{Content, Driver};
use crate::stack::step::{Action, Change, Object, Step};
use crate::stack::{Kind, Stack, OWNER_KEY};

/// The API clients a stack is applied with: `global` for what belongs to no project
/// (projects, pools), `client` in the stack's project.
pub struct Clients {
    pub global: Client,
    pub client: Client,
}

fn label(stack: &Stack) -> BTreeMap<String, String> {
    [(OWNER_KEY.to_string(), stack.name.clone())].into()
}

fn size(v: &Option<crate::stack::spec::Scalar>) -> Result<Option<u64>> {
    v.as_ref()
        .map(|v| vessel_api::size::parse_size(&v.text()).map_err(|e| anyhow!(e)))
        .transpose()
}

fn op(client: &Client, method: &str, path: &str, body: RequestBody<'_>) -> Result<()> {
    let op: Operation = client.request(method, path, body)?.json()?;
    wait_quietly(client, op)?;
    Ok(())
}

/// `POOL/NAME` of a volume step, `NETWORK/NAME` of a balancer step.
fn pair<'a>(name: &'a str, what: &str) -> Result<(&'a str, &'a str)> {
    name.split_once('/')
        .with_context(|| format!("a {what} step names its parent, then itself: {name:?}"))
}

/// `NETWORK/PROTOCOL/PORT` of a forward step.
fn forward_parts(name: &str) -> Result<(&str, &str, &str)> {
    let (net, rest) = pair(name, "forward")?;
    let (proto, port) = pair(rest, "forward")?;
    Ok((net, proto, port))
}

/// Creates the instance `d` of `stack` and waits until it runs.
pub fn create_instance(client: &Client, stack: &Stack, d: &Desired) -> Result<()> {
    let mut config = d.config.clone();
    config.extend(label(stack));
    let body = InstanceCreate {
        name: d.name.clone(),
        image: d.image.clone(),
        instance_type: match d.kind {
            Kind::Container => InstanceType::Container,
            Kind::Vm => InstanceType::Vm,
        },
        privileged: false,
        idmap_isolated: None,
        limits: d.limits.clone(),
        start: true,
        command: (!d.command.is_empty()).then(|| d.command.clone()),
        environment: d.environment.clone(),
        ssh_keys: Vec::new(),
        storage: None,
        networks: d.networks.clone(),
        no_network: d.networks.is_empty(),
        profiles: Vec::new(),
        config,
        volumes: d.volumes.clone(),
    };
    let op: Operation = client.send("POST", "/1.0/instances", &body)?;
    wait_quietly(client, op)?;
    Ok(())
}

/// Deletes the instance `name` (stopping it first).
pub fn delete_instance(client: &Client, name: &str) -> Result<()> {
    op(
        client,
        "DELETE",
        &format!("{}?force=1", instance_path(name)),
        RequestBody::Empty,
    )
}

/// Deletes the object of a step (a Delete, or the first half of a Replace).
pub fn delete(c: &Clients, s: &Step) -> Result<()> {
    let client = &c.client;
    match s.object {
        Object::Instance => delete_instance(client, &s.name),
        Object::Network => {
            let _: Network = client.call("DELETE", &net_path(&s.name))?;
            Ok(())
        }
        Object::Volume => {
            let (pool, vol) = pair(&s.name, "volume")?;
            let _: StorageVolume = client.call("DELETE", &volume_path(pool, vol))?;
            Ok(())
        }
        Object::Pool => {
            let _: StoragePool = c.global.call("DELETE", &pool_path(&s.name))?;
            Ok(())
        }
        Object::Project => {
            let _: Project = c.global.call(
                "DELETE",
                &format!("/1.0/projects/{}", encode_segment(&s.name)),
            )?;
            Ok(())
        }
        Object::Forward => {
            let (net, proto, port) = forward_parts(&s.name)?;
            let _: Network = client.call(
                "DELETE",
                &format!(
                    "{}/forwards/{}/{}",
                    net_path(net),
                    encode_segment(proto),
                    encode_segment(port)
                ),
            )?;
            Ok(())
        }
        Object::Balancer => {
            let (net, lb) = pair(&s.name, "balancer")?;
            let _: Network = client.call(
                "DELETE",
                &format!("{}/load-balancers/{}", net_path(net), encode_segment(lb)),
            )?;
            Ok(())
        }
        Object::Image => Ok(()),
    }
}

/// Makes or changes the object of a step (a Create, a Change, or the second half of a
/// Replace). Instances are made by [`create_instance`].
pub fn make(c: &Clients, stack: &Stack, s: &Step) -> Result<()> {
    let client = &c.client;
    match (&s.action, s.object) {
        (Action::Change(Change::Config { set, unset }), Object::Project) => {
            let mut config = set.clone();
            config.extend(unset.iter().map(|k| (k.clone(), String::new())));
            let _: Project = c.global.send(
                "PATCH",
                &format!("/1.0/projects/{}", encode_segment(&s.name)),
                &ProjectUpdate {
                    description: None,
                    config,
                },
            )?;
        }
        (Action::Change(Change::Config { set, unset }), Object::Instance) => {
            let _: serde_json::Value = client.send(
                "PATCH",
                &format!("{}/config", instance_path(&s.name)),
                &InstanceConfigPatch {
                    set: set.clone(),
                    unset: unset.clone(),
                },
            )?;
        }
        (Action::Change(Change::Size(bytes)), Object::Volume) => {
            let (pool, vol) = pair(&s.name, "volume")?;
            let _: StorageVolume = client.send(
                "PATCH",
                &volume_path(pool, vol),
                &VolumeUpdate { size: *bytes },
            )?;
        }
        (Action::Change(Change::Acl(rules)), Object::Network) => {
            let _: Network = client.send(
                "PUT",
                &format!("{}/acl", net_path(&s.name)),
                &vessel_api::NetworkAclSet {
                    rules: rules.clone(),
                },
            )?;
        }
        (Action::Change(_), _) => unreachable!("no such change of a {}", s.object.name()),
        (Action::Delete, _) => delete(c, s)?,
        (Action::Create | Action::Replace, object) => create(c, stack, object, &s.name)?,
    }
    Ok(())
}

fn create(c: &Clients, stack: &Stack, object: Object, name: &str) -> Result<()> {
    let client = &c.client;
    match object {
        Object::Project => {
            let spec = &stack.projects[name];
            let mut config: BTreeMap<String, String> = spec
                .config
                .iter()
                .map(|(k, v)| (k.clone(), v.text()))
                .collect();
            config.extend(label(stack));
            let _: Project = c.global.send(
                "POST",
                "/1.0/projects",
                &ProjectCreate {
                    name: name.into(),
                    description: spec.description.clone(),
                    config,
                },
            )?;
        }
        Object::Pool => {
            let spec = &stack.pools[name];
            let body = PoolCreate {
                name: name.into(),
                driver: match spec.driver {
                    Driver::Dir => PoolDriver::Dir,
                    Driver::Btrfs => PoolDriver::Btrfs,
                    Driver::Raid => PoolDriver::Raid,
                    Driver::Ceph => PoolDriver::Ceph,
                },
                sources: spec.sources.clone(),
                size: size(&spec.size)?,
                members: spec.members,
                level: spec.level.clone(),
                chunk_size: size(&spec.chunk_size)?,
                replica: None,
                adopt: None,
                description: format!("stack {}", stack.name),
                config: label(stack),
            };
            let op: Operation = c.global.send("POST", "/1.0/storage/pools", &body)?;
            wait_quietly(&c.global, op)?;
        }
        Object::Network => {
            let spec = &stack.networks[name];
            let _: Network = client.send(
                "POST",
                "/1.0/networks",
                &NetworkCreate {
                    name: name.into(),
                    subnet: spec.subnet.clone(),
                    ipv6: spec.ipv6.clone(),
                    vni: None,
                    peers: Vec::new(),
                    local: None,
                    cluster: false,
                    vlans: spec.vlans.clone(),
                    isolated_ports: spec.isolated_ports,
                    description: format!("stack {}", stack.name),
                    config: label(stack),
                },
            )?;
            if let Some(rules) = spec.acl.as_ref().filter(|r| !r.trim().is_empty()) {
                let _: Network = client.send(
                    "PUT",
                    &format!("{}/acl", net_path(name)),
                    &vessel_api::NetworkAclSet {
                        rules: rules.clone(),
                    },
                )?;
            }
        }
        Object::Image => {
            let spec = &stack.images[name];
            let op: Operation = match (&spec.pull, &spec.build) {
                (Some(reference), _) => client.send(
                    "POST",
                    "/1.0/images/pull",
                    &ImagePull {
                        reference: reference.clone(),
                        alias: Some(name.into()),
                        insecure: spec.insecure,
                    },
                )?,
                (None, Some(b)) => client.send(
                    "POST",
                    "/1.0/images",
                    &ImageBuild {
                        source: if b == "debian" {
                            ImageSource::Debian
                        } else {
                            ImageSource::Busybox
                        },
                        alias: Some(name.into()),
                        release: spec.release.clone(),
                        vm_layout: None,
                    },
                )?,
                (None, None) => return Ok(()),
            };
            wait_quietly(client, op)?;
        }
        Object::Volume => {
            let (pool, vol) = pair(name, "volume")?;
            let spec = &stack.volumes[vol];
            let body = VolumeCreate {
                name: vol.into(),
                content: match spec.content {
                    Content::Filesystem => VolumeContent::Filesystem,
                    Content::Block => VolumeContent::Block,
                },
                size: size(&spec.size)?,
                source: None,
                config: label(stack),
            };
            let op: Operation =
                client.send("POST", &format!("{}/volumes", pool_path(pool)), &body)?;
            wait_quietly(client, op)?;
        }
        Object::Forward => {
            let (net, proto, port) = forward_parts(name)?;
            let f = stack.networks[net]
                .forwards
                .iter()
                .find(|f| f.protocol == proto && f.listen_port.to_string() == port)
                .context("declared forward")?;
            let _: Network = client.send(
                "POST",
                &format!("{}/forwards", net_path(net)),
                &forward_body(f),
            )?;
        }
        Object::Balancer => {
            let (net, lb) = pair(name, "balancer")?;
            let spec = &stack.networks[net].balancers[lb];
            let _: Network = client.send(
                "POST",
                &format!("{}/load-balancers", net_path(net)),
                &balancer_body(lb, spec),
            )?;
        }
        Object::Instance => unreachable!("instances are made by create_instance"),
    }
    Ok(())
}
