//! What is there, read through the API, in the forms the plan compares.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use vessel_api::config::VolumeDevice;
use vessel_api::{
    Image, Instance, InstanceStatus, InstanceType, Network, PoolDriver, Project, StoragePool,
    StorageVolume, VolumeContent,
};

use crate::client::{ApiError, Client};
use crate::stack::diff::{Current, Desired};
use crate::stack::infra::{self, World};
use crate::stack::spec::{Content, Driver};
use crate::stack::{Kind, Stack};

/// The HTTP status of a failed request, if the daemon answered one.
pub fn status(e: &anyhow::Error) -> Option<u16> {
    e.chain()
        .find_map(|c| c.downcast_ref::<ApiError>())
        .map(|a| a.status)
}

/// A list the identity may not be allowed to read: refused (403) reads as empty unless
/// the stack declares objects of the kind, whose answer is the error.
fn list_or_none<T: serde::de::DeserializeOwned>(
    client: &Client,
    path: &str,
    declared: bool,
) -> Result<Vec<T>> {
    match client.get::<Vec<T>>(path) {
        Ok(v) => Ok(v),
        Err(e) if !declared && matches!(status(&e), Some(403)) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn driver(d: PoolDriver) -> Driver {
    match d {
        PoolDriver::Dir => Driver::Dir,
        PoolDriver::Btrfs => Driver::Btrfs,
        PoolDriver::Raid => Driver::Raid,
        PoolDriver::Ceph => Driver::Ceph,
    }
}

fn content(c: VolumeContent) -> Content {
    match c {
        VolumeContent::Filesystem => Content::Filesystem,
        VolumeContent::Block => Content::Block,
    }
}

/// Whether the stack's project is not there (yet, when the stack declares it): then nothing
/// is in it, and reading would be refused.
pub fn project_missing(stack: &Stack, w: &World) -> bool {
    // The list holds `default` whenever it could be read.
    stack
        .project
        .as_ref()
        .is_some_and(|p| !w.projects.is_empty() && !w.projects.iter().any(|q| &q.name == p))
}

/// Projects, pools, volumes, networks and images. `global` reads what belongs to no
/// project; `client` is in the stack's project.
pub fn world(global: &Client, client: &Client, stack: &Stack, everything: bool) -> Result<World> {
    let mut w = World::default();
    let projects: Vec<Project> = list_or_none(global, "/1.0/projects", !stack.projects.is_empty())?;
    w.projects = projects
        .into_iter()
        .map(|p| infra::Project {
            name: p.name,
            config: p.config,
        })
        .collect();
    let pools: Vec<StoragePool> =
        list_or_none(global, "/1.0/storage/pools", !stack.pools.is_empty())?;
    let missing = project_missing(stack, &w);
    for p in &pools {
        // Volumes are read where the stack may have some: every pool for a prune or a
        // destroy, else the pools its volumes name.
        let wanted = everything || stack.volumes.values().any(|v| v.pool == p.name);
        if wanted && !missing && p.status != "unavailable" {
            let vols: Vec<StorageVolume> = list_or_none(
                client,
                &format!("{}/volumes", crate::commands::storage::pool_path(&p.name)),
                stack.volumes.values().any(|v| v.pool == p.name),
            )?;
            w.volumes.extend(vols.into_iter().map(|v| infra::Volume {
                pool: v.pool,
                name: v.name,
                content: content(v.content),
                size: v.size_bytes,
                labels: v.config,
            }));
        }
    }
    w.pools = pools
        .into_iter()
        .map(|p| infra::Pool {
            name: p.name,
            driver: driver(p.driver),
            level: p.level,
            sources: p.sources,
            labels: p.config,
        })
        .collect();
    // A project not made yet holds nothing; its images are default's if it is declared
    // with `features.images: false`, else its own (none yet).
    let shares_images = |p: &str| {
        stack.projects.get(p).is_some_and(|s| {
            s.config
                .get(vessel_api::FEATURES_IMAGES)
                .is_some_and(|v| v.text() == "false")
        })
    };
    let image_client = match stack.project.as_deref() {
        Some(p) if missing && shares_images(p) => Some(global),
        _ if missing => None,
        _ => Some(client),
    };
    if let Some(c) = image_client {
        let images: Vec<Image> = c.get("/1.0/images")?;
        w.images = images
            .into_iter()
            .map(|i| infra::Image {
                fingerprint: i.fingerprint,
                aliases: i.aliases,
                source: i.source,
            })
            .collect();
    }
    if !missing {
        let nets: Vec<Network> = client.get("/1.0/networks")?;
        w.networks = nets.into_iter().map(network).collect();
    }
    Ok(w)
}

/// A network in the form the plan compares.
pub fn network(n: Network) -> infra::Network {
    let mut vlans: Vec<u16> = n.segments.iter().map(|s| s.vlan).collect();
    vlans.sort_unstable();
    infra::Network {
        name: n.name,
        subnet: n.subnet,
        ipv6: n.ipv6,
        vlans,
        isolated_ports: n.isolated_ports,
        acl: n.acl,
        labels: n.config,
        forwards: n.forwards,
        balancers: n
            .load_balancers
            .into_iter()
            .map(|mut l| {
                l.status.clear();
                l
            })
            .collect(),
    }
}

/// The fingerprint `image` (an alias, a fingerprint or its prefix) names among `images`.
fn fingerprint(images: &[infra::Image], image: &str) -> Option<String> {
    images
        .iter()
        .find(|i| i.aliases.iter().any(|a| a == image))
        .or_else(|| {
            let hits: Vec<_> = images
                .iter()
                .filter(|i| image.len() >= 12 && i.fingerprint.starts_with(image))
                .collect();
            (hits.len() == 1).then(|| hits[0])
        })
        .map(|i| i.fingerprint.clone())
}

/// The stack's instances as declared, their images resolved (an image the stack will pull
/// or build and has not yet is "(to be made)"), and the image alias each names.
pub fn desired(
    stack: &Stack,
    images: &[infra::Image],
) -> Result<(Vec<Desired>, BTreeMap<String, String>)> {
    let mut out = Vec::new();
    let mut aliases = BTreeMap::new();
    for (name, spec) in &stack.instances {
        let image = match fingerprint(images, &spec.image) {
            Some(f) => f,
            None if stack.images.contains_key(&spec.image) => "(to be made)".to_string(),
            None => bail!(
                "instances.{name}.image: no image {:?} here; declare it under images (pull or \
                 build), or see `vessel image list`",
                spec.image
            ),
        };
        aliases.insert(name.clone(), spec.image.clone());
        let limit_args = spec.limit_args();
        let mut config = spec.config.clone();
        if let Some(s) = &spec.snapshots {
            config.insert("snapshots.schedule".into(), s.schedule.clone());
            if let Some(e) = &s.expiry {
                config.insert("snapshots.expiry".into(), e.clone());
            }
        }
        out.push(Desired {
            name: name.clone(),
            image,
            kind: spec.kind,
            limits: crate::limits::parse_limits(&limit_args)?,
            limit_args,
            command: spec.command.clone(),
            environment: spec.environment.clone(),
            networks: spec.networks.clone(),
            volumes: spec
                .volumes
                .iter()
                .map(|m| VolumeDevice {
                    pool: m
                        .pool
                        .clone()
                        .or_else(|| stack.volumes.get(&m.volume).map(|v| v.pool.clone()))
                        .unwrap_or_default(),
                    volume: m.volume.clone(),
                    path: m.path.clone(),
                })
                .collect(),
            config,
        });
    }
    Ok((out, aliases))
}

/// How long to wait for instances between states (made, started or stopped by an
/// operation still running, e.g. of an apply that was killed).
const SETTLE: std::time::Duration = std::time::Duration::from_secs(120);

/// The instances there are in the stack's project, once none of them is between states.
pub fn current(client: &Client) -> Result<Vec<Current>> {
    let deadline = std::time::Instant::now() + SETTLE;
    let mut told = false;
    let list = loop {
        let list: Vec<Instance> = client.get("/1.0/instances")?;
        let moving: Vec<String> = list
            .iter()
            .filter(|i| {
                matches!(
                    i.status,
                    InstanceStatus::Creating | InstanceStatus::Starting | InstanceStatus::Stopping
                )
            })
            .map(|i| format!("{} ({})", i.name, i.status.as_str()))
            .collect();
        if moving.is_empty() || std::time::Instant::now() > deadline {
            break list;
        }
        if !told {
            eprintln!("Waiting for {} ...", moving.join(", "));
            told = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    Ok(list
        .into_iter()
        .map(|i| Current {
            networks: i.nics.iter().map(|n| n.network.clone()).collect(),
            kind: match i.instance_type {
                InstanceType::Container => Kind::Container,
                InstanceType::Vm => Kind::Vm,
            },
            volumes: i
                .volumes
                .iter()
                .map(|v| VolumeDevice {
                    pool: v.pool.clone(),
                    volume: v.volume.clone(),
                    path: v.path.clone(),
                })
                .collect(),
            name: i.name,
            image: i.image,
            limits: i.limits,
            command: i.command,
            environment: i.environment,
            config: i.config,
        })
        .collect())
}
