//! What `apply` must do with a stack's projects, pools, networks, images and volumes (before
//! its instances), and with its forwards and balancers (after them): pure, from what is
//! declared and what is there.

use std::collections::{BTreeMap, BTreeSet};

use vessel_api::{NetworkForward, NetworkLoadBalancer};

use super::spec::{BalancerSpec, Content, Driver, ForwardSpec, Stack};
use super::step::{not_ours, Action, Change, Object, Step};
use super::OWNER_KEY;

/// A project as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Project {
    pub name: String,
    pub config: BTreeMap<String, String>,
}

/// A pool as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub name: String,
    pub driver: Driver,
    pub level: Option<String>,
    pub sources: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// A volume as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    pub pool: String,
    pub name: String,
    pub content: Content,
    pub size: u64,
    pub labels: BTreeMap<String, String>,
}

/// A network as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Network {
    pub name: String,
    pub subnet: String,
    pub ipv6: Option<String>,
    pub vlans: Vec<u16>,
    pub isolated_ports: bool,
    pub acl: String,
    pub labels: BTreeMap<String, String>,
    pub forwards: Vec<NetworkForward>,
    pub balancers: Vec<NetworkLoadBalancer>,
}

/// An image as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub fingerprint: String,
    pub aliases: Vec<String>,
    pub source: String,
}

/// What is there, as far as the stack's identity may read it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct World {
    pub projects: Vec<Project>,
    pub pools: Vec<Pool>,
    pub volumes: Vec<Volume>,
    pub networks: Vec<Network>,
    pub images: Vec<Image>,
}

fn owned(labels: &BTreeMap<String, String>, stack: &str) -> bool {
    labels.get(OWNER_KEY).map(String::as_str) == Some(stack)
}

/// `10.50.0.9/24` and `10.50.0.0/24` are the same subnet.
fn subnet(s: &str) -> String {
    let Some((a, p)) = s.split_once('/') else {
        return s.to_string();
    };
    match (a.parse::<std::net::Ipv4Addr>(), p.parse::<u32>()) {
        (Ok(a), Ok(p)) if p <= 32 => {
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            format!("{}/{p}", std::net::Ipv4Addr::from(u32::from(a) & mask))
        }
        _ => s.to_string(),
    }
}

fn prefix6(s: &str) -> String {
    let (a, p) = s.split_once('/').unwrap_or((s, "64"));
    match a.parse::<std::net::Ipv6Addr>() {
        Ok(a) => {
            let seg = a.segments();
            let net = std::net::Ipv6Addr::new(seg[0], seg[1], seg[2], seg[3], 0, 0, 0, 0);
            format!("{net}/{p}")
        }
        Err(_) => s.to_string(),
    }
}

/// The image step for `alias`, if one is needed: missing, or made from another source.
fn image_step(alias: &str, spec: &super::spec::ImageSpec, images: &[Image]) -> Option<Step> {
    let source = match (&spec.pull, &spec.build) {
        (Some(r), _) => format!("pull {}", r),
        (None, Some(b)) if b == "debian" => {
            format!("debian/{}", spec.release.as_deref().unwrap_or("bookworm"))
        }
        (None, Some(b)) => b.clone(),
        (None, None) => return None,
    };
    match images.iter().find(|i| i.aliases.iter().any(|a| a == alias)) {
        None => Some(Step::new(
            Object::Image,
            alias,
            Action::Create,
            format!("no image is called {alias}: {source}"),
        )),
        // A pulled image's source is "pull REFERENCE"; a built one's its recipe.
        Some(i) if i.source != source => Some(Step::new(
            Object::Image,
            alias,
            Action::Replace,
            format!("{alias} is from {}, the stack says {source}", i.source),
        )),
        Some(_) => None,
    }
}

/// The steps for everything an instance needs: projects, pools, networks, images and
/// volumes. An object of a declared name that the stack does not own is an error.
pub fn before_instances(stack: &Stack, w: &World, prune: bool) -> Result<Vec<Step>, String> {
    let s = stack.name.as_str();
    let mut steps = Vec::new();
    // Projects.
    for (name, spec) in &stack.projects {
        let want: BTreeMap<String, String> = spec
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.text()))
            .collect();
        match w.projects.iter().find(|p| &p.name == name) {
            None => steps.push(Step::new(
                Object::Project,
                name,
                Action::Create,
                "declared, not there",
            )),
            Some(p) if !owned(&p.config, s) => {
                return Err(not_ours(Object::Project, name, s, p.config.get(OWNER_KEY)))
            }
            Some(p) => {
                let set: BTreeMap<String, String> = want
                    .iter()
                    .filter(|(k, v)| p.config.get(*k) != Some(v))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let unset: Vec<String> = p
                    .config
                    .keys()
                    .filter(|k| k.as_str() != OWNER_KEY && !want.contains_key(*k))
                    .cloned()
                    .collect();
                if !set.is_empty() || !unset.is_empty() {
                    let keys: Vec<String> = set.keys().chain(unset.iter()).cloned().collect();
                    steps.push(Step::new(
                        Object::Project,
                        name,
                        Action::Change(Change::Config { set, unset }),
                        format!("settings {}", keys.join(", ")),
                    ));
                }
            }
        }
    }
    // Pools: made, never replaced.
    for (name, spec) in &stack.pools {
        match w.pools.iter().find(|p| &p.name == name) {
            None => steps.push(Step::new(
                Object::Pool,
                name,
                Action::Create,
                "declared, not there",
            )),
            Some(p) if !owned(&p.labels, s) => {
                return Err(not_ours(Object::Pool, name, s, p.labels.get(OWNER_KEY)))
            }
            Some(p) => {
                let mut differs = Vec::new();
                if p.driver != spec.driver {
                    differs
                        .push(format!("driver {:?} → {:?}", p.driver, spec.driver).to_lowercase());
                }
                if spec.level.is_some() && p.level != spec.level {
                    differs.push(format!(
                        "level {} → {}",
                        p.level.as_deref().unwrap_or("none"),
                        spec.level.as_deref().unwrap_or("none")
                    ));
                }
                if let Some(m) = spec.members {
                    if spec.sources.is_empty() && p.sources.len() != m as usize {
                        differs.push(format!("members {} → {m}", p.sources.len()));
                    }
                }
                if !spec.sources.is_empty() && p.sources != spec.sources {
                    differs.push("sources".into());
                }
                if !differs.is_empty() {
                    return Err(format!(
                        "pool {name}: {} cannot change in place, and apply never replaces a pool \
                         (its volumes' data would go): put it back as it is, or move the data \
                         and delete the pool yourself",
                        differs.join(", ")
                    ));
                }
            }
        }
    }
    // Networks.
    for (name, spec) in &stack.networks {
        match w.networks.iter().find(|n| &n.name == name) {
            None => steps.push(Step::new(
                Object::Network,
                name,
                Action::Create,
                "declared, not there",
            )),
            Some(n) if !owned(&n.labels, s) => {
                return Err(not_ours(Object::Network, name, s, n.labels.get(OWNER_KEY)))
            }
            Some(n) => {
                let mut replace = Vec::new();
                if subnet(&n.subnet) != subnet(&spec.subnet) {
                    replace.push(format!("subnet {} → {}", n.subnet, spec.subnet));
                }
                if n.ipv6.as_deref().map(prefix6) != spec.ipv6.as_deref().map(prefix6) {
                    replace.push("ipv6".to_string());
                }
                let mut vlans = spec.vlans.clone();
                vlans.sort_unstable();
                if n.vlans != vlans {
                    replace.push("vlans".to_string());
                }
                if n.isolated_ports != spec.isolated_ports {
                    replace.push("isolated_ports".to_string());
                }
                if !replace.is_empty() {
                    steps.push(Step::new(
                        Object::Network,
                        name,
                        Action::Replace,
                        format!("{} (its instances are made anew too)", replace.join("; ")),
                    ));
                } else if n.acl.trim() != spec.acl.as_deref().unwrap_or("").trim() {
                    steps.push(Step::new(
                        Object::Network,
                        name,
                        Action::Change(Change::Acl(spec.acl.clone().unwrap_or_default())),
                        "acl",
                    ));
                }
            }
        }
    }
    // Images: made when missing; never deleted.
    for (alias, spec) in &stack.images {
        steps.extend(image_step(alias, spec, &w.images));
    }
    // Volumes: made, grown; never replaced.
    for (name, spec) in &stack.volumes {
        let want = spec
            .size
            .as_ref()
            .map(|v| vessel_api::size::parse_size(&v.text()))
            .transpose()
            .map_err(|e| format!("volumes.{name}.size: {e}"))?;
        let key = format!("{}/{name}", spec.pool);
        match w
            .volumes
            .iter()
            .find(|v| v.pool == spec.pool && &v.name == name)
        {
            None => steps.push(Step::new(
                Object::Volume,
                key,
                Action::Create,
                "declared, not there",
            )),
            Some(v) if !owned(&v.labels, s) => {
                return Err(not_ours(Object::Volume, &key, s, v.labels.get(OWNER_KEY)))
            }
            Some(v) => {
                if v.content != spec.content {
                    return Err(format!(
                        "volume {key}: its type cannot change, and apply never replaces a volume \
                         (its data would go): put it back, or copy the data to a new volume"
                    ));
                }
                match want {
                    Some(b) if b > v.size => steps.push(Step::new(
                        Object::Volume,
                        key,
                        Action::Change(Change::Size(b)),
                        format!(
                            "grows {} → {}",
                            vessel_api::size::format_size(v.size),
                            vessel_api::size::format_size(b)
                        ),
                    )),
                    Some(b) if b < v.size => {
                        return Err(format!(
                            "volume {key}: {} is smaller than its {}; a volume never shrinks",
                            vessel_api::size::format_size(b),
                            vessel_api::size::format_size(v.size)
                        ))
                    }
                    _ => {}
                }
            }
        }
    }
    if prune {
        for v in w.volumes.iter().filter(|v| owned(&v.labels, s)) {
            if stack.volumes.get(&v.name).is_none_or(|d| d.pool != v.pool) {
                steps.push(Step::new(
                    Object::Volume,
                    format!("{}/{}", v.pool, v.name),
                    Action::Delete,
                    format!("stack {s}'s, no longer declared"),
                ));
            }
        }
        for n in w.networks.iter().filter(|n| owned(&n.labels, s)) {
            if !stack.networks.contains_key(&n.name) {
                steps.push(Step::new(
                    Object::Network,
                    &n.name,
                    Action::Delete,
                    format!("stack {s}'s, no longer declared"),
                ));
            }
        }
        for p in w.pools.iter().filter(|p| owned(&p.labels, s)) {
            if !stack.pools.contains_key(&p.name) {
                steps.push(Step::new(
                    Object::Pool,
                    &p.name,
                    Action::Delete,
                    format!("stack {s}'s, no longer declared"),
                ));
            }
        }
        for p in w.projects.iter().filter(|p| owned(&p.config, s)) {
            if !stack.projects.contains_key(&p.name) {
                steps.push(Step::new(
                    Object::Project,
                    &p.name,
                    Action::Delete,
                    format!("stack {s}'s, no longer declared"),
                ));
            }
        }
    }
    Ok(steps)
}

/// The forward a spec declares, as the API takes it.
pub fn forward_body(f: &ForwardSpec) -> NetworkForward {
    NetworkForward {
        protocol: f.protocol.clone(),
        listen_address: f.listen_address.clone(),
        listen_port: f.listen_port,
        instance: f.instance.clone(),
        target_port: f.target_port,
    }
}

/// The balancer a spec declares, as the API takes it.
pub fn balancer_body(name: &str, b: &BalancerSpec) -> NetworkLoadBalancer {
    let d = vessel_api::LbHealthCheckSpec::default();
    let h = b.health_check.clone().unwrap_or(super::spec::HealthSpec {
        interval_ms: None,
        timeout_ms: None,
        rise: None,
        fall: None,
        port: None,
    });
    NetworkLoadBalancer {
        name: name.to_string(),
        address: b.address.clone(),
        ports: b
            .ports
            .iter()
            .map(|p| vessel_api::LbPortSpec {
                protocol: p.protocol.clone(),
                listen_port: p.listen_port,
                target_port: p.target_port,
            })
            .collect(),
        backends: b.backends.clone(),
        health_check: vessel_api::LbHealthCheckSpec {
            interval_ms: h.interval_ms.unwrap_or(d.interval_ms),
            timeout_ms: h.timeout_ms.unwrap_or(d.timeout_ms),
            rise: h.rise.unwrap_or(d.rise),
            fall: h.fall.unwrap_or(d.fall),
            port: h.port,
        },
        status: Vec::new(),
    }
}

/// The steps for the forwards and balancers of the stack's networks, once its instances
/// are as declared. `remade` names the networks and instances this apply makes or makes
/// anew: what points at them is made again.
pub fn after_instances(
    stack: &Stack,
    networks: &[Network],
    remade: &BTreeSet<String>,
    prune: bool,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for (net, spec) in &stack.networks {
        let there = networks
            .iter()
            .find(|n| &n.name == net && !remade.contains(&format!("network {net}")));
        let fwd_key = |p: &str, port: u16| format!("{net}/{p}/{port}");
        for f in &spec.forwards {
            let want = forward_body(f);
            let have = there.and_then(|n| {
                n.forwards
                    .iter()
                    .find(|g| g.protocol == f.protocol && g.listen_port == f.listen_port)
            });
            let key = fwd_key(&f.protocol, f.listen_port);
            match have {
                None => steps.push(Step::new(
                    Object::Forward,
                    key,
                    Action::Create,
                    "declared, not there",
                )),
                Some(_) if remade.contains(&format!("instance {}", f.instance)) => {
                    steps.push(Step::new(
                        Object::Forward,
                        key,
                        Action::Replace,
                        format!("instance {} is made anew", f.instance),
                    ))
                }
                Some(g) if *g != want => steps.push(Step::new(
                    Object::Forward,
                    key,
                    Action::Replace,
                    "its target or address",
                )),
                Some(_) => {}
            }
        }
        for (name, b) in &spec.balancers {
            let want = balancer_body(name, b);
            let key = format!("{net}/{name}");
            let have = there.and_then(|n| n.balancers.iter().find(|l| &l.name == name));
            let Some(have) = have else {
                steps.push(Step::new(
                    Object::Balancer,
                    key,
                    Action::Create,
                    "declared, not there",
                ));
                continue;
            };
            let anew: Vec<&str> = b
                .backends
                .iter()
                .filter(|i| remade.contains(&format!("instance {i}")))
                .map(String::as_str)
                .collect();
            let have_set: BTreeSet<&String> = have.backends.iter().collect();
            let want_set: BTreeSet<&String> = want.backends.iter().collect();
            let reason = if !anew.is_empty() {
                Some(format!("backends made anew: {}", anew.join(", ")))
            } else if have_set != want_set {
                Some("backends".to_string())
            } else if have.address != want.address
                || have.ports != want.ports
                || have.health_check != want.health_check
            {
                Some("address, ports or health check".to_string())
            } else {
                None
            };
            if let Some(r) = reason {
                steps.push(Step::new(Object::Balancer, key, Action::Replace, r));
            }
        }
        if prune {
            if let Some(n) = there {
                for g in &n.forwards {
                    if !spec
                        .forwards
                        .iter()
                        .any(|f| f.protocol == g.protocol && f.listen_port == g.listen_port)
                    {
                        steps.push(Step::new(
                            Object::Forward,
                            fwd_key(&g.protocol, g.listen_port),
                            Action::Delete,
                            format!("on stack {}'s network, not declared", stack.name),
                        ));
                    }
                }
                for l in &n.balancers {
                    if !spec.balancers.contains_key(&l.name) {
                        steps.push(Step::new(
                            Object::Balancer,
                            format!("{net}/{}", l.name),
                            Action::Delete,
                            format!("on stack {}'s network, not declared", stack.name),
                        ));
                    }
                }
            }
        }
    }
    steps
}

#[cfg(test)]
mod tests;
