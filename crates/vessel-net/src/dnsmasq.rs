//! DHCP and DNS per network: one dnsmasq (Debian package `dnsmasq-base`) per bridge.
//!
//! The engine renders three files into the network's state directory: `dnsmasq.conf` (what
//! needs a restart to change: bridge, range, domain, upstream), `dhcp-hosts` (one static lease
//! per NIC: MAC, address, name) and `hosts` (instance names). dnsmasq re-reads the last two on
//! SIGHUP, so adding or removing an instance never restarts the server. dnsmasq runs inside the
//! network's namespace (the child `setns`es before exec; no daemon thread moves), detaches
//! itself, writes `dnsmasq.pid` and drops to `nobody`. A pid is only believed when
//! `/proc/PID/cmdline` names dnsmasq with this network's config file, so a stale pid file
//! (dnsmasq crashed, pid reused) is recognised and the server started again.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::ipam::{MacAddr, Subnet};
use crate::link::{validate_ifname, LinkError};
use crate::netns::NetNs;

const CONF: &str = "dnsmasq.conf";
const HOSTS: &str = "hosts";
const DHCP_HOSTS: &str = "dhcp-hosts";
const PID: &str = "dnsmasq.pid";
const LEASES: &str = "leases";
const LOG: &str = "dnsmasq.log";

/// Errors configuring or running a network's dnsmasq.
#[derive(Debug, thiserror::Error)]
pub enum DnsmasqError {
    /// The bridge name is not a valid interface name.
    #[error(transparent)]
    InvalidBridge(#[from] LinkError),
    /// The domain is not a valid DNS name.
    #[error("invalid domain {0:?}: dot-separated labels of a-z, 0-9 and '-'")]
    InvalidDomain(String),
    /// A host name is not a single valid DNS label.
    #[error("invalid host name {0:?}: 1 to 63 characters of a-z, 0-9 and '-', not starting or ending with '-'")]
    InvalidName(String),
    /// An address is outside the subnet, or is its network, gateway or broadcast address.
    #[error("address {addr} cannot be handed out in subnet {subnet}")]
    BadAddress {
        /// The address.
        addr: Ipv4Addr,
        /// The network's subnet.
        subnet: Subnet,
    },
    /// The dynamic range is empty or reversed.
    #[error("dynamic range {0} - {1} is reversed")]
    BadRange(Ipv4Addr, Ipv4Addr),
    /// Two static leases share a MAC, an address or a name.
    #[error("{what} {value} appears in more than one static lease")]
    Duplicate {
        /// "MAC", "address" or "name".
        what: &'static str,
        /// The repeated value.
        value: String,
    },
    /// The lease time is under dnsmasq's minimum of two minutes.
    #[error("lease time {0}s is under the minimum of 120s")]
    LeaseTooShort(u32),
    /// A file in the state directory could not be written or read.
    #[error("cannot write {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The dnsmasq binary could not be started.
    #[error("cannot run dnsmasq; install the Debian package `dnsmasq-base`")]
    Spawn(#[source] std::io::Error),
    /// dnsmasq refused the configuration or could not bind.
    #[error("dnsmasq failed to start: {0}")]
    Failed(String),
}

/// Where the network's DNS forwards names outside its domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// Nowhere: only the network's own names resolve.
    None,
    /// These servers.
    Servers(Vec<Ipv4Addr>),
    /// The host's `/etc/resolv.conf` (only when the network asks for it).
    HostResolvConf,
}

/// One NIC known to the network: a fixed address for its MAC, and a name to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticLease {
    /// The NIC's MAC address.
    pub mac: MacAddr,
    /// The address it always gets.
    pub ip: Ipv4Addr,
    /// Instance name, resolvable as `name` and `name.<domain>`.
    pub name: Option<String>,
    /// Its IPv6 address (the one SLAAC gives it on an IPv6 network), resolvable by name.
    pub ipv6: Option<Ipv6Addr>,
}

/// A lease as dnsmasq recorded it in its lease file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Expiry, seconds since the epoch (0 for infinite).
    pub expires: u64,
    /// The client's MAC.
    pub mac: MacAddr,
    /// The address leased.
    pub ip: Ipv4Addr,
    /// The name the client sent, if any.
    pub hostname: Option<String>,
}

/// What [`DhcpDns::apply`] had to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// No server was running (or only a stale pid file was left): a new one started.
    Started(u32),
    /// The running server re-read its hosts and leases (SIGHUP).
    Reloaded(u32),
    /// The main configuration changed, so the server was replaced.
    Restarted(u32),
}

impl Applied {
    /// The pid of the server now running.
    pub fn pid(self) -> u32 {
        match self {
            Applied::Started(p) | Applied::Reloaded(p) | Applied::Restarted(p) => p,
        }
    }
}

/// DHCP and DNS of one network.
#[derive(Debug, Clone)]
pub struct DhcpDns {
    /// The network's bridge; dnsmasq binds only to it.
    pub bridge: String,
    /// The network's subnet; the bridge holds its gateway address, which is the DNS server.
    pub subnet: Subnet,
    /// Addresses for unknown clients, or `None` to serve only the static leases (the daemon
    /// gives every NIC an address from IPAM, so this is the usual choice).
    pub dynamic_range: Option<(Ipv4Addr, Ipv4Addr)>,
    /// Lease time in seconds (at least 120).
    pub lease_secs: u32,
    /// DNS domain of the network (`vessel.internal`); its names are never forwarded.
    pub domain: String,
    /// One per NIC.
    pub static_leases: Vec<StaticLease>,
    /// Names of NICs served elsewhere (the other hosts of an overlay): answered by DNS, not
    /// leased here.
    pub remote_names: Vec<(Ipv4Addr, String)>,
    /// Where other names go.
    pub upstream: Upstream,
    /// The bridge's IPv6 address on a /64: router advertisements for SLAAC (`ra-only`),
    /// with it as DNS server.
    pub ipv6_gateway: Option<Ipv6Addr>,
    /// Directory for the config, hosts, lease, pid and log files (kept across restarts).
    pub state_dir: PathBuf,
}

/// The files rendered for one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsmasqFiles {
    /// `dnsmasq.conf`.
    pub conf: String,
    /// `dhcp-hosts`: `MAC,IP[,NAME]` lines.
    pub dhcp_hosts: String,
    /// `hosts`: `IP NAME.DOMAIN NAME` lines.
    pub hosts: String,
}

impl DhcpDns {
    /// Checks the configuration and renders the three files.
    pub fn render(&self) -> Result<DnsmasqFiles, DnsmasqError> {
        self.validate()?;
        let dir = self.state_dir.display();
        let net = self.subnet;
        let mask = Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(net.prefix()))
                .unwrap_or(0),
        );
        let mut conf = String::from("# Written by Vessel; changes are overwritten.\n");
        let _ = writeln!(conf, "interface={}", self.bridge);
        // dnsmasq adds the loopback to any `interface=` list unless told not to.
        conf.push_str(
            "except-interface=lo\nbind-interfaces\nno-hosts\ndomain-needed\nbogus-priv\n",
        );
        conf.push_str("dhcp-authoritative\ndhcp-no-override\nuser=nobody\ngroup=nogroup\n");
        match &self.upstream {
            Upstream::None => conf.push_str("no-resolv\n"),
            Upstream::Servers(servers) => {
                conf.push_str("no-resolv\n");
                for s in servers {
                    let _ = writeln!(conf, "server={s}");
                }
            }
            Upstream::HostResolvConf => conf.push_str("resolv-file=/etc/resolv.conf\n"),
        }
        let d = &self.domain;
        let _ = writeln!(conf, "domain={d}\nlocal=/{d}/\nexpand-hosts");
        match self.dynamic_range {
            Some((a, b)) => {
                let _ = writeln!(conf, "dhcp-range={a},{b},{mask},{}", self.lease_secs);
            }
            None => {
                let _ = writeln!(
                    conf,
                    "dhcp-range={},static,{mask},{}",
                    net.network(),
                    self.lease_secs
                );
            }
        }
        let gw = net.gateway();
        let _ = writeln!(
            conf,
            "dhcp-option=option:router,{gw}\ndhcp-option=option:dns-server,{gw}"
        );
        if let Some(gw6) = self.ipv6_gateway {
            let _ = writeln!(
                conf,
                "enable-ra\ndhcp-range=::,constructor:{},ra-only,64,{}\n\
                 dhcp-option=option6:dns-server,[{gw6}]",
                self.bridge, self.lease_secs
            );
        }
        let _ = writeln!(
            conf,
            "addn-hosts={dir}/{HOSTS}\ndhcp-hostsfile={dir}/{DHCP_HOSTS}\n\
             dhcp-leasefile={dir}/{LEASES}\npid-file={dir}/{PID}\nlog-facility={dir}/{LOG}"
        );

        let mut dhcp_hosts = String::new();
        let mut hosts = String::new();
        for l in &self.static_leases {
            match &l.name {
                Some(name) => {
                    let _ = writeln!(dhcp_hosts, "{},{},{name}", l.mac, l.ip);
                    let _ = writeln!(hosts, "{} {name}.{d} {name}", l.ip);
                    if let Some(v6) = l.ipv6 {
                        let _ = writeln!(hosts, "{v6} {name}.{d} {name}");
                    }
                }
                None => {
                    let _ = writeln!(dhcp_hosts, "{},{}", l.mac, l.ip);
                }
            }
        }
        for (ip, name) in &self.remote_names {
            let _ = writeln!(hosts, "{ip} {name}.{d} {name}");
        }
        Ok(DnsmasqFiles {
            conf,
            dhcp_hosts,
            hosts,
        })
    }

    /// Makes the network's dnsmasq match this configuration inside `ns`: starts it, reloads
    /// it (SIGHUP, when only leases or names changed) or replaces it (other changes, or a
    /// server found running in another namespace). Also adopts a server left running by a
    /// previous daemon.
    pub fn apply(&self, ns: &NetNs) -> Result<Applied, DnsmasqError> {
        let files = self.render()?;
        let dir = &self.state_dir;
        std::fs::create_dir_all(dir).map_err(|source| io_err(dir, source))?;
        // dnsmasq re-reads the hosts files after dropping to `nobody`.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|source| io_err(dir, source))?;
        let conf_path = dir.join(CONF);
        let old_conf = std::fs::read_to_string(&conf_path).ok();
        let old_static = std::fs::read_to_string(dir.join(DHCP_HOSTS)).unwrap_or_default();
        // Unchanged files are left alone (one reload reads them all anyway).
        for (name, text) in [
            (DHCP_HOSTS, &files.dhcp_hosts),
            (HOSTS, &files.hosts),
            (CONF, &files.conf),
        ] {
            let path = dir.join(name);
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                write_file(&path, text)?;
            }
        }
        // dnsmasq keeps serving a lease (and resolving its name) after its static entry is
        // gone; such leases are dropped from the lease file, which needs a restart.
        let stale = self.stale_leases(&old_static);

        let running = dnsmasq_pid(dir);
        if let Some(pid) = running {
            let same_ns = process_netns(pid).is_some() && process_netns(pid) == ns_inode(ns);
            if old_conf.as_deref() == Some(files.conf.as_str()) && same_ns && stale.is_empty() {
                signal(pid, libc::SIGHUP);
                tracing::info!(bridge = %self.bridge, pid, "dnsmasq reloaded");
                return Ok(Applied::Reloaded(pid));
            }
            stop_pid(pid);
        }
        if !stale.is_empty() {
            let kept: String = std::fs::read_to_string(dir.join(LEASES))
                .unwrap_or_default()
                .lines()
                .filter(|line| {
                    let mac = line.split_whitespace().nth(1).and_then(|m| m.parse().ok());
                    !mac.is_some_and(|m: MacAddr| stale.contains(&m))
                })
                .map(|line| format!("{line}\n"))
                .collect();
            write_file(&dir.join(LEASES), &kept)?;
        }
        let pid = start(ns, dir)?;
        tracing::info!(bridge = %self.bridge, pid, "dnsmasq started");
        Ok(match running {
            Some(_) => Applied::Restarted(pid),
            None => Applied::Started(pid),
        })
    }

    /// MACs whose recorded lease no longer matches the static leases: the static entry was
    /// removed or moved to another address, or (static-only networks) it never had one.
    fn stale_leases(&self, old_static: &str) -> BTreeSet<MacAddr> {
        let old_macs: BTreeSet<MacAddr> = old_static
            .lines()
            .filter_map(|l| l.split(',').next()?.parse().ok())
            .collect();
        read_leases(&self.state_dir)
            .into_iter()
            .filter(
                |lease| match self.static_leases.iter().find(|s| s.mac == lease.mac) {
                    Some(s) => s.ip != lease.ip,
                    None => self.dynamic_range.is_none() || old_macs.contains(&lease.mac),
                },
            )
            .map(|lease| lease.mac)
            .collect()
    }

    fn validate(&self) -> Result<(), DnsmasqError> {
        validate_ifname(&self.bridge)?;
        if !valid_domain(&self.domain) {
            return Err(DnsmasqError::InvalidDomain(self.domain.clone()));
        }
        if self.lease_secs < 120 {
            return Err(DnsmasqError::LeaseTooShort(self.lease_secs));
        }
        let net = self.subnet;
        let usable = |addr: Ipv4Addr| {
            if net.contains(addr)
                && addr != net.network()
                && addr != net.gateway()
                && addr != net.broadcast()
            {
                Ok(())
            } else {
                Err(DnsmasqError::BadAddress { addr, subnet: net })
            }
        };
        if let Some((a, b)) = self.dynamic_range {
            usable(a)?;
            usable(b)?;
            if u32::from(a) > u32::from(b) {
                return Err(DnsmasqError::BadRange(a, b));
            }
        }
        let (mut macs, mut ips, mut names) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        for l in &self.static_leases {
            usable(l.ip)?;
            let dup = |what, value: String| DnsmasqError::Duplicate { what, value };
            if !macs.insert(l.mac) {
                return Err(dup("MAC", l.mac.to_string()));
            }
            if !ips.insert(l.ip) {
                return Err(dup("address", l.ip.to_string()));
            }
            if let Some(name) = &l.name {
                if !valid_label(name) {
                    return Err(DnsmasqError::InvalidName(name.clone()));
                }
                if !names.insert(name.to_ascii_lowercase()) {
                    return Err(dup("name", name.clone()));
                }
            }
        }
        Ok(())
    }
}

/// The pid of the network's running dnsmasq, if its pid file names a live dnsmasq started
/// with this state directory's config (a stale or reused pid gives `None`).
pub fn dnsmasq_pid(state_dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(state_dir.join(PID))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut args = cmdline.split(|b| *b == 0).map(String::from_utf8_lossy);
    let exe = args.next()?;
    let want = format!("--conf-file={}", state_dir.join(CONF).display());
    (exe.ends_with("dnsmasq") && args.any(|a| a == want)).then_some(pid)
}

/// Stops the network's dnsmasq (SIGTERM, then SIGKILL after 3 s); the lease file stays.
pub fn stop_dnsmasq(state_dir: &Path) {
    if let Some(pid) = dnsmasq_pid(state_dir) {
        stop_pid(pid);
        tracing::info!(pid, dir = %state_dir.display(), "dnsmasq stopped");
    }
    let _ = std::fs::remove_file(state_dir.join(PID));
}

/// The leases dnsmasq recorded for the network (empty when it never handed one out).
pub fn read_leases(state_dir: &Path) -> Vec<Lease> {
    let text = std::fs::read_to_string(state_dir.join(LEASES)).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let expires = f.next()?.parse().ok()?;
            let mac = f.next()?.parse().ok()?;
            let ip = f.next()?.parse().ok()?;
            let hostname = f.next().filter(|h| *h != "*").map(str::to_string);
            Some(Lease {
                expires,
                mac,
                ip,
                hostname,
            })
        })
        .collect()
}

fn start(ns: &NetNs, dir: &Path) -> Result<u32, DnsmasqError> {
    let _ = std::fs::remove_file(dir.join(PID));
    let out = ns
        .command("dnsmasq")
        .arg(format!("--conf-file={}", dir.join(CONF).display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(DnsmasqError::Spawn)?;
    if !out.status.success() {
        return Err(DnsmasqError::Failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    // The launcher exits once the server is set up; the pid file follows at once.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(pid) = dnsmasq_pid(dir) {
            return Ok(pid);
        }
        if Instant::now() > deadline {
            return Err(DnsmasqError::Failed(format!(
                "no live dnsmasq behind {}; see {}",
                dir.join(PID).display(),
                dir.join(LOG).display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, then SIGKILL after 3 s; returns once the process has let go of its sockets (a
/// dnsmasq started after it would find its addresses in use), at most 5 s.
fn stop_pid(pid: u32) {
    signal(pid, libc::SIGTERM);
    let mut deadline = Instant::now() + Duration::from_secs(3);
    let mut killed = false;
    while alive(pid) {
        if Instant::now() > deadline {
            if killed {
                tracing::warn!(pid, "dnsmasq did not exit after SIGKILL");
                break;
            }
            signal(pid, libc::SIGKILL);
            killed = true;
            deadline = Instant::now() + Duration::from_secs(2);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the process still holds its files: anything but a zombie. (A process on its way
/// out has released its memory, so its cmdline already reads empty, while its sockets are
/// still open; they are closed before it becomes a zombie.)
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a pid checked to be our dnsmasq; no memory is involved.
    unsafe { libc::kill(pid, sig) };
}

fn process_netns(pid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

fn ns_inode(ns: &NetNs) -> Option<u64> {
    match ns.fd() {
        Some(fd) => {
            let file = std::fs::File::from(fd.try_clone_to_owned().ok()?);
            file.metadata().ok().map(|m| m.ino())
        }
        None => process_netns(std::process::id()),
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), DnsmasqError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|source| io_err(&tmp, source))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
        .map_err(|source| io_err(&tmp, source))?;
    std::fs::rename(&tmp, path).map_err(|source| io_err(path, source))
}

fn io_err(path: &Path, source: std::io::Error) -> DnsmasqError {
    DnsmasqError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn valid_domain(domain: &str) -> bool {
    domain.len() <= 253 && domain.split('.').all(valid_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DhcpDns {
        DhcpDns {
            bridge: "vbr-web".into(),
            subnet: "10.42.0.0/24".parse().expect("subnet"),
            dynamic_range: None,
            lease_secs: 3600,
            domain: "web.vessel".into(),
            static_leases: vec![
                StaticLease {
                    mac: "0a:76:73:00:00:01".parse().expect("mac"),
                    ip: Ipv4Addr::new(10, 42, 0, 2),
                    name: Some("web1".into()),
                    ipv6: None,
                },
                StaticLease {
                    mac: "0a:76:73:00:00:02".parse().expect("mac"),
                    ip: Ipv4Addr::new(10, 42, 0, 3),
                    name: None,
                    ipv6: None,
                },
            ],
            remote_names: vec![(Ipv4Addr::new(10, 42, 0, 40), "far".into())],
            upstream: Upstream::None,
            ipv6_gateway: None,
            state_dir: "/run/vessel/networks/web".into(),
        }
    }

    #[test]
    fn renders_static_leases_names_and_a_closed_resolver() {
        let f = config().render().expect("render");
        for line in [
            "interface=vbr-web",
            "bind-interfaces",
            "except-interface=lo",
            "no-resolv",
            "no-hosts",
            "domain=web.vessel",
            "local=/web.vessel/",
            "dhcp-range=10.42.0.0,static,255.255.255.0,3600",
            "dhcp-option=option:router,10.42.0.1",
            "dhcp-hostsfile=/run/vessel/networks/web/dhcp-hosts",
            "pid-file=/run/vessel/networks/web/dnsmasq.pid",
        ] {
            assert!(
                f.conf.lines().any(|l| l == line),
                "missing {line}:\n{}",
                f.conf
            );
        }
        assert!(!f.conf.contains("resolv-file"));
        assert_eq!(
            f.dhcp_hosts,
            "0a:76:73:00:00:01,10.42.0.2,web1\n0a:76:73:00:00:02,10.42.0.3\n"
        );
        // A name served on another host of the overlay is answered, not leased.
        assert_eq!(
            f.hosts,
            "10.42.0.2 web1.web.vessel web1\n10.42.0.40 far.web.vessel far\n"
        );

        let mut c = config();
        c.dynamic_range = Some((Ipv4Addr::new(10, 42, 0, 100), Ipv4Addr::new(10, 42, 0, 200)));
        c.upstream = Upstream::Servers(vec![Ipv4Addr::new(192, 0, 2, 53)]);
        let f = c.render().expect("render");
        assert!(f
            .conf
            .contains("dhcp-range=10.42.0.100,10.42.0.200,255.255.255.0,3600\n"));
        assert!(f.conf.contains("no-resolv\nserver=192.0.2.53\n"));
        c.upstream = Upstream::HostResolvConf;
        let f = c.render().expect("render");
        assert!(f.conf.contains("resolv-file=/etc/resolv.conf") && !f.conf.contains("no-resolv"));
    }

    #[test]
    fn an_ipv6_network_gets_router_advertisements_and_aaaa_names() {
        let mut c = config();
        assert!(!c.render().expect("render").conf.contains("enable-ra"));
        c.ipv6_gateway = Some("fd42::1".parse().expect("v6"));
        c.static_leases[0].ipv6 = Some("fd42::856:73ff:fe00:1".parse().expect("v6"));
        let f = c.render().expect("render");
        for line in [
            "enable-ra",
            "dhcp-range=::,constructor:vbr-web,ra-only,64,3600",
            "dhcp-option=option6:dns-server,[fd42::1]",
        ] {
            assert!(
                f.conf.lines().any(|l| l == line),
                "missing {line}:\n{}",
                f.conf
            );
        }
        assert_eq!(
            f.hosts,
            "10.42.0.2 web1.web.vessel web1\nfd42::856:73ff:fe00:1 web1.web.vessel web1\n\
             10.42.0.40 far.web.vessel far\n"
        );
    }

    #[test]
    fn refuses_bad_configurations() {
        let mut c = config();
        c.static_leases[1].ip = Ipv4Addr::new(10, 42, 0, 2);
        assert!(matches!(
            c.render(),
            Err(DnsmasqError::Duplicate {
                what: "address",
                ..
            })
        ));
        let mut c = config();
        c.static_leases[1].mac = c.static_leases[0].mac;
        assert!(matches!(
            c.render(),
            Err(DnsmasqError::Duplicate { what: "MAC", .. })
        ));
        let mut c = config();
        c.static_leases[1].name = Some("WEB1".into());
        assert!(matches!(
            c.render(),
            Err(DnsmasqError::Duplicate { what: "name", .. })
        ));
        let mut c = config();
        c.static_leases[0].ip = Ipv4Addr::new(10, 42, 0, 1);
        assert!(matches!(c.render(), Err(DnsmasqError::BadAddress { .. })));
        let mut c = config();
        c.static_leases[0].name = Some("bad name\nserver=1.2.3.4".into());
        assert!(matches!(c.render(), Err(DnsmasqError::InvalidName(_))));
        let mut c = config();
        c.domain = "evil\nserver=1.2.3.4".into();
        assert!(matches!(c.render(), Err(DnsmasqError::InvalidDomain(_))));
        let mut c = config();
        c.dynamic_range = Some((Ipv4Addr::new(10, 42, 0, 9), Ipv4Addr::new(10, 42, 0, 5)));
        assert!(matches!(c.render(), Err(DnsmasqError::BadRange(..))));
        let mut c = config();
        c.lease_secs = 60;
        assert!(matches!(c.render(), Err(DnsmasqError::LeaseTooShort(60))));
    }

    #[test]
    fn lease_file_lines_are_parsed() {
        let dir = std::env::temp_dir().join(format!("vessel-leases-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join(LEASES),
            "1700000000 0a:76:73:00:00:01 10.42.0.2 web1 01:0a:76:73:00:00:01\n\
             0 0a:76:73:00:00:02 10.42.0.3 * *\ngarbage\n",
        )
        .expect("write");
        let leases = read_leases(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(leases.len(), 2);
        assert_eq!(leases[0].hostname.as_deref(), Some("web1"));
        assert_eq!(leases[1].ip, Ipv4Addr::new(10, 42, 0, 3));
        assert_eq!(leases[1].hostname, None);
        assert!(dnsmasq_pid(&dir).is_none());
    }
}
