//! What a stack must satisfy beyond its types: names, limits and sizes that parse, and
//! references between its parts. An error is the path of the field and why.

use super::spec::{ImageSpec, NetworkSpec, Scalar, Stack};
use super::OWNER_KEY;

type Failure = (Vec<String>, String);

fn at(parts: &[&str], why: impl Into<String>) -> Failure {
    (parts.iter().map(|s| s.to_string()).collect(), why.into())
}

/// 1-`max` letters, digits and '-', starting with a letter and not ending with '-'.
fn name_ok(n: &str, max: usize) -> bool {
    (1..=max).contains(&n.len())
        && n.starts_with(|c: char| c.is_ascii_alphabetic())
        && !n.ends_with('-')
        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn name(parts: &[&str], n: &str, max: usize) -> Result<(), Failure> {
    if name_ok(n, max) {
        Ok(())
    } else {
        Err(at(
            parts,
            format!("{n:?} is not a name: 1-{max} letters, digits and '-', starting with a letter"),
        ))
    }
}

fn size(parts: &[&str], v: &Option<Scalar>) -> Result<(), Failure> {
    if let Some(v) = v {
        vessel_api::size::parse_size(&v.text())
            .map_err(|e| at(parts, format!("{:?}: {e}", v.text())))?;
    }
    Ok(())
}

fn image(parts: &[&str], i: &ImageSpec) -> Result<(), Failure> {
    match (&i.pull, &i.build) {
        (Some(_), None) if i.release.is_none() => Ok(()),
        (None, Some(b)) if matches!(b.as_str(), "busybox" | "debian") => {
            if i.insecure {
                return Err(at(parts, "insecure goes with pull, not build"));
            }
            if i.release.is_some() && b != "debian" {
                return Err(at(parts, "release goes with build: debian"));
            }
            Ok(())
        }
        (None, Some(b)) => Err(at(
            parts,
            format!("build: {b:?} is not a source: busybox or debian"),
        )),
        (Some(_), None) => Err(at(parts, "release goes with build: debian, not pull")),
        _ => Err(at(
            parts,
            "give exactly one of pull (a registry reference) and build (busybox or debian)",
        )),
    }
}

fn network(stack: &Stack, n: &str, spec: &NetworkSpec) -> Result<(), Failure> {
    let on_it = |i: &str| {
        stack
            .instances
            .get(i)
            .is_some_and(|s| s.networks.iter().any(|x| x == n))
    };
    for (k, f) in spec.forwards.iter().enumerate() {
        let k = k.to_string();
        if !matches!(f.protocol.as_str(), "tcp" | "udp") {
            return Err(at(&["networks", n, "forwards", &k], "protocol: tcp or udp"));
        }
        if !on_it(&f.instance) {
            return Err(at(
                &["networks", n, "forwards"],
                format!(
                    "instance {:?} is not one of the stack's instances with a NIC on {n}",
                    f.instance
                ),
            ));
        }
        let same = spec.forwards[..k.parse::<usize>().unwrap_or(0)]
            .iter()
            .any(|g| g.protocol == f.protocol && g.listen_port == f.listen_port);
        if same {
            return Err(at(
                &["networks", n, "forwards"],
                format!("{}/{} is forwarded twice", f.protocol, f.listen_port),
            ));
        }
    }
    for (b, lb) in &spec.balancers {
        let parts = ["networks", n, "balancers", b.as_str()];
        if b.is_empty()
            || b.len() > 20
            || !b
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(at(
                &parts,
                "not a balancer name: 1-20 letters, digits, '-' and '_'",
            ));
        }
        if lb.ports.is_empty() || lb.backends.is_empty() {
            return Err(at(&parts, "a balancer needs ports and backends"));
        }
        if let Some(i) = lb.backends.iter().find(|i| !on_it(i)) {
            return Err(at(
                &["networks", n, "balancers", b, "backends"],
                format!("{i:?} is not one of the stack's instances with a NIC on {n}"),
            ));
        }
    }
    Ok(())
}

/// Checks `stack`; the first problem found is the answer.
pub(super) fn check(stack: &Stack) -> Result<(), Failure> {
    name(&["name"], &stack.name, 63)?;
    for (p, spec) in &stack.projects {
        name(&["projects", p], p, 63)?;
        if spec.config.contains_key(OWNER_KEY) {
            return Err(at(
                &["projects", p, "config"],
                format!("{OWNER_KEY} is the stack's own label"),
            ));
        }
    }
    for (p, spec) in &stack.pools {
        name(&["pools", p], p, 63)?;
        size(&["pools", p, "size"], &spec.size)?;
        size(&["pools", p, "chunk_size"], &spec.chunk_size)?;
    }
    for (v, spec) in &stack.volumes {
        name(&["volumes", v], v, 63)?;
        size(&["volumes", v, "size"], &spec.size)?;
    }
    for (n, spec) in &stack.networks {
        name(&["networks", n], n, 12)?;
        network(stack, n, spec)?;
    }
    for (alias, spec) in &stack.images {
        if alias.trim().is_empty() {
            return Err(at(&["images"], "an image alias is empty"));
        }
        image(&["images", alias], spec)?;
    }
    for (i, spec) in &stack.instances {
        name(&["instances", i], i, 63)?;
        if spec.image.trim().is_empty() {
            return Err(at(&["instances", i, "image"], "empty"));
        }
        crate::limits::parse_limits(&spec.limit_args())
            .map_err(|e| at(&["instances", i, "limits"], format!("{e:#}")))?;
        for m in &spec.volumes {
            if m.pool.is_none() && !stack.volumes.contains_key(&m.volume) {
                return Err(at(
                    &["instances", i, "volumes"],
                    format!(
                        "volume {:?} is not one of the stack's: declare it under volumes or \
                         give its pool",
                        m.volume
                    ),
                ));
            }
        }
        if let Some(k) = spec.config.keys().find(|k| {
            k.as_str() == OWNER_KEY
                || !(k.starts_with("user.") || k.starts_with("boot.") || k.starts_with("cluster."))
        }) {
            return Err(at(
                &["instances", i, "config"],
                if k == OWNER_KEY {
                    format!("{OWNER_KEY} is the stack's own label")
                } else {
                    format!(
                        "{k:?}: only boot.*, cluster.* and user.* keys here (limits, \
                         environment and snapshots have their own fields)"
                    )
                },
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::parse;

    fn err(text: &str) -> String {
        format!("{:#}", parse(text, "s.yaml").unwrap_err())
    }

    #[test]
    fn references_between_parts_are_checked() {
        let base = "name: s\nnetworks:\n  lan:\n    subnet: 10.9.0.0/24\n    balancers:\n      front:\n        address: 10.0.0.1\n        ports: [{listen_port: 80, target_port: 80}]\n        backends: [web, ghost]\ninstances:\n  web:\n    image: busybox\n    networks: [lan]\n";
        let e = err(base);
        assert!(
            e.starts_with("s.yaml:9: networks.lan.balancers.front.backends: \"ghost\""),
            "{e}"
        );
        let ok = base.replace(", ghost]", "]");
        parse(&ok, "s.yaml").unwrap();
        let e = err(&ok.replace(
            "    networks: [lan]\n",
            "    networks: [lan]\n    volumes: [{volume: data}]\n",
        ));
        assert!(e.starts_with("s.yaml:14: instances.web.volumes"), "{e}");
        let e = err(&ok
            .replace("subnet:", "vlans: [1]\n    subnet:")
            .replace("lan", "a-very-long-name"));
        assert!(e.contains("networks.a-very-long-name: "), "{e}");
        let e = err("name: s\nimages:\n  x: {pull: a/b, build: busybox}\n");
        assert!(e.starts_with("s.yaml:3: images.x: give exactly one"), "{e}");
        let e = err("name: s\npools:\n  p:\n    driver: raid\n    size: huge\n");
        assert!(e.starts_with("s.yaml:5: pools.p.size"), "{e}");
        let e = err("name: s\ninstances:\n  a:\n    image: busybox\n    config: {user.stack: x}\n");
        assert!(e.contains("the stack's own label"), "{e}");
        let e =
            err("name: s\ninstances:\n  a:\n    image: busybox\n    config: {limits.cpu: '1'}\n");
        assert!(e.contains("only boot.*, cluster.* and user.*"), "{e}");
    }
}
