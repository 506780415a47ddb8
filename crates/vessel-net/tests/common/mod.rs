//! Test sandbox: throw-away network namespaces, removed on drop (also when a test fails).

#![allow(dead_code)]

use std::process::{Command, Output};

use vessel_net::NetNs;

/// Fails the test with the Debian package to install when a tool is missing.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(tool).is_file());
    assert!(
        found,
        "`{tool}` not found: install the Debian package `{package}`"
    );
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    out
}

/// Names of the namespaces that currently exist (`ip netns list`).
pub fn netns_list() -> Vec<String> {
    require_tool("ip", "iproute2");
    let out = run(Command::new("ip").args(["netns", "list"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// A network namespace created for one test; deleted on drop.
pub struct TestNs {
    pub name: String,
    pub ns: NetNs,
}

impl TestNs {
    /// Creates `vt-<tag>-<pid>`.
    pub fn new(tag: &str) -> Self {
        require_tool("ip", "iproute2");
        let name = format!("vt-{tag}-{}", std::process::id());
        let out = run(Command::new("ip").args(["netns", "add", &name]));
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ns = NetNs::named(&name).unwrap_or_else(|e| panic!("open {name}: {e}"));
        Self { name, ns }
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Output {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args))
    }

    /// One ping to `addr` from inside the namespace; true if it was answered.
    pub fn ping(&self, addr: &str) -> bool {
        require_tool("busybox", "busybox-static");
        self.exec(&["busybox", "ping", "-c", "1", "-W", "1", addr])
            .status
            .success()
    }

    /// Whether `addr` answers one of up to three pings, one after the other: for what must
    /// reach (a first packet may wait for ARP, or be lost on a loaded machine). What must
    /// not reach is shown with one [`Self::ping`].
    pub fn reaches(&self, addr: &str) -> bool {
        (0..3).any(|_| self.ping(addr))
    }

    /// Whether a link of that name exists inside the namespace.
    pub fn has_link(&self, name: &str) -> bool {
        self.exec(&["ip", "link", "show", name]).status.success()
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        let out = self.exec(&["sysctl", "-qw", &format!("{key}={value}")]);
        assert!(
            out.status.success(),
            "sysctl {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Whether a link of that name exists in the test process's own namespace (read only).
pub fn current_ns_has_link(name: &str) -> bool {
    run(Command::new("ip").args(["link", "show", name]))
        .status
        .success()
}
