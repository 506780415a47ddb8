//! L4 load balancers: nftables DNAT spread with `numgen inc`, and a TCP health checker that
//! re-renders the table with only the healthy backends.
//!
//! Each balancer is its own table `ip vlb-<name>`, replaced atomically like a network's NAT
//! table. A listener `address:port` DNATs new flows round-robin over its healthy backends
//! (`dnat ip to numgen inc mod N map { 0 : a . p, ... }`), both for traffic arriving from
//! elsewhere (prerouting) and from the host itself (output). Whatever is still addressed to the
//! listener after NAT is refused (TCP reset, ICMP port unreachable), so with no healthy
//! backend a client is told at once and nothing reaches a dead backend or a local socket.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::nat::{apply_script, remove_script, NftError, Protocol};
use crate::netns::NetNs;

/// Errors describing or applying a load balancer.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    /// The name cannot be used in a table name.
    #[error(
        "invalid load balancer name {0:?}: 1 to 32 characters from a-z, A-Z, 0-9, '-' and '_'"
    )]
    InvalidName(String),
    /// A port of 0.
    #[error("port 0 is not a valid load balancer port")]
    ZeroPort,
    /// The same protocol and port is listed twice.
    #[error("{protocol:?} port {port} is listed twice")]
    DuplicatePort {
        /// Protocol.
        protocol: Protocol,
        /// Port.
        port: u16,
    },
    /// A UDP listener's backends cannot be probed with TCP on their own port.
    #[error("UDP port {0} needs a TCP health check port (HealthCheck::port)")]
    UdpNeedsCheckPort(u16),
    /// Health check thresholds or timings that cannot work.
    #[error("invalid health check: {0}")]
    InvalidCheck(&'static str),
    /// nft refused the table or could not run.
    #[error(transparent)]
    Nft(#[from] NftError),
    /// The health checker thread could not be started.
    #[error("cannot start the health checker thread")]
    Thread(#[source] std::io::Error),
}

/// One backend of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    /// Backend address.
    pub address: Ipv4Addr,
    /// Backend port.
    pub port: u16,
}

/// A listening port spread over backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbPort {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Port on the balancer's address.
    pub listen_port: u16,
    /// Where flows go.
    pub backends: Vec<Backend>,
}

/// A load balancer: one address, several ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancer {
    /// Name; the table is `vlb-<name>`.
    pub name: String,
    /// The address clients connect to (on the host, or routed to it).
    pub address: Ipv4Addr,
    /// Listening ports.
    pub ports: Vec<LbPort>,
}

/// The nftables table name of a load balancer.
pub fn lb_table_name(name: &str) -> Result<String, LbError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(format!("vlb-{name}"))
    } else {
        Err(LbError::InvalidName(name.to_string()))
    }
}

impl LoadBalancer {
    /// Renders the table with the backends for which `healthy` is true (all of them when
    /// rendering without a health checker).
    pub fn render(&self, healthy: impl Fn(&Backend) -> bool) -> Result<String, LbError> {
        let table = lb_table_name(&self.name)?;
        let mut seen = Vec::new();
        let mut dnat = String::new();
        let mut refuse = String::new();
        for p in &self.ports {
            if p.listen_port == 0 || p.backends.iter().any(|b| b.port == 0) {
                return Err(LbError::ZeroPort);
            }
            if seen.contains(&(p.protocol, p.listen_port)) {
                return Err(LbError::DuplicatePort {
                    protocol: p.protocol,
                    port: p.listen_port,
                });
            }
            seen.push((p.protocol, p.listen_port));
            let matcher = format!(
                "ip daddr {} {} dport {}",
                self.address,
                p.protocol.keyword(),
                p.listen_port
            );
            let up: Vec<&Backend> = p.backends.iter().filter(|b| healthy(b)).collect();
            if !up.is_empty() {
                let map = up
                    .iter()
                    .enumerate()
                    .map(|(i, b)| format!("{i} : {} . {}", b.address, b.port))
                    .collect::<Vec<_>>()
                    .join(", ");
                let _ = writeln!(
                    dnat,
                    "\t\t{matcher} dnat ip to numgen inc mod {} map {{ {map} }}",
                    up.len()
                );
            }
            let reject = match p.protocol {
                Protocol::Tcp => "reject with tcp reset",
                Protocol::Udp => "reject",
            };
            let _ = writeln!(refuse, "\t\t{matcher} {reject}");
        }
        let mut s =
            format!("table ip {table} {{}}\ndelete table ip {table}\ntable ip {table} {{\n");
        for (chain, hook, prio) in [
            ("prerouting", "prerouting", "dstnat"),
            ("output", "output", "-100"),
        ] {
            let _ = write!(
                s,
                "\tchain {chain} {{\n\t\ttype nat hook {hook} priority {prio}; policy accept;\n{dnat}\t}}\n"
            );
        }
        for hook in ["input", "forward", "output"] {
            let _ = write!(
                s,
                "\tchain refuse_{hook} {{\n\t\ttype filter hook {hook} priority filter; policy accept;\n{refuse}\t}}\n"
            );
        }
        s.push_str("}\n");
        Ok(s)
    }

    /// Applies the table with every backend in `ns` (no health checking).
    pub fn apply(&self, ns: &NetNs) -> Result<(), LbError> {
        apply_script(ns, &self.render(|_| true)?)?;
        Ok(())
    }

    /// Removes the balancer's table from `ns`; succeeds when it is already gone.
    pub fn remove(ns: &NetNs, name: &str) -> Result<(), LbError> {
        apply_script(ns, &remove_script(&lb_table_name(name)?))?;
        Ok(())
    }
}

/// How backends are probed: a TCP connect every `interval`, `rise` successes in a row to
/// come back, `fall` failures in a row to drop out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheck {
    /// Time between probes.
    pub interval: Duration,
    /// Connect timeout of one probe.
    pub timeout: Duration,
    /// Consecutive successes that bring a backend back.
    pub rise: u32,
    /// Consecutive failures that take a backend out.
    pub fall: u32,
    /// TCP port to probe instead of the backend's own (required for UDP listeners).
    pub port: Option<u16>,
}

impl HealthCheck {
    fn validate(&self, lb: &LoadBalancer) -> Result<(), LbError> {
        if self.rise == 0 || self.fall == 0 {
            return Err(LbError::InvalidCheck("rise and fall must be at least 1"));
        }
        if self.timeout.is_zero() || self.interval.is_zero() {
            return Err(LbError::InvalidCheck(
                "interval and timeout must be positive",
            ));
        }
        if self.timeout > self.interval {
            return Err(LbError::InvalidCheck(
                "timeout must not exceed the interval",
            ));
        }
        if self.port == Some(0) {
            return Err(LbError::ZeroPort);
        }
        if self.port.is_none() {
            if let Some(p) = lb.ports.iter().find(|p| p.protocol == Protocol::Udp) {
                return Err(LbError::UdpNeedsCheckPort(p.listen_port));
            }
        }
        Ok(())
    }

    fn probe_addr(&self, b: &Backend) -> SocketAddr {
        SocketAddr::from((b.address, self.port.unwrap_or(b.port)))
    }
}

/// The health of one backend, with its run of equal probe results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendHealth {
    /// Whether it receives traffic.
    pub up: bool,
    /// Consecutive probes that disagreed with `up` (towards rise or fall).
    pub streak: u32,
}

impl BackendHealth {
    /// A backend whose first probe gave `ok`: it starts in that state.
    pub fn first(ok: bool) -> Self {
        Self { up: ok, streak: 0 }
    }

    /// Records a probe; returns true when the backend changed state.
    pub fn observe(&mut self, ok: bool, check: &HealthCheck) -> bool {
        if ok == self.up {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        let needed = if ok { check.rise } else { check.fall };
        if self.streak >= needed {
            self.up = ok;
            self.streak = 0;
            return true;
        }
        false
    }
}

struct Shared {
    lb: LoadBalancer,
    health: BTreeMap<Backend, BackendHealth>,
    applied: Option<String>,
    last_error: Option<String>,
}

/// A running health checker for one balancer; dropping it stops the thread and leaves the
/// table as last applied.
pub struct LbHealthChecker {
    ns: Arc<NetNs>,
    shared: Arc<(Mutex<Shared>, Condvar)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LbHealthChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LbHealthChecker").finish_non_exhaustive()
    }
}

impl LbHealthChecker {
    /// Probes every backend once, applies the table with those that answered, and keeps
    /// probing on a thread of its own, re-applying whenever a backend changes state.
    pub fn start(ns: Arc<NetNs>, lb: LoadBalancer, check: HealthCheck) -> Result<Self, LbError> {
        check.validate(&lb)?;
        lb.render(|_| true)?;
        let results = probe_all(&ns, &check, &backends_of(&lb));
        let health = results
            .into_iter()
            .map(|(b, ok)| (b, BackendHealth::first(ok)))
            .collect();
        let mut shared = Shared {
            lb,
            health,
            applied: None,
            last_error: None,
        };
        sync_table(&ns, &mut shared)?;
        let shared = Arc::new((Mutex::new(shared), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (ns, shared, stop) = (ns.clone(), shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name("vessel-lb-health".into())
                .spawn(move || run(&ns, &check, &shared, &stop))
                .map_err(LbError::Thread)?
        };
        Ok(Self {
            ns,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// Each backend's current health.
    pub fn health(&self) -> BTreeMap<Backend, BackendHealth> {
        lock(&self.shared.0).health.clone()
    }

    /// The error of the last failed apply, if the table currently lags behind the health.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.shared.0).last_error.clone()
    }

    /// Replaces the balancer's ports and backends; new backends start healthy until probed
    /// otherwise. Applied at once.
    pub fn update(&self, lb: LoadBalancer) -> Result<(), LbError> {
        lb.render(|_| true)?;
        let mut s = lock(&self.shared.0);
        let wanted = backends_of(&lb);
        s.health.retain(|b, _| wanted.contains(b));
        for b in wanted {
            s.health.entry(b).or_insert(BackendHealth::first(true));
        }
        s.lb = lb;
        sync_table(&self.ns, &mut s)
    }

    /// Stops probing (the table stays as last applied).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.shared.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LbHealthChecker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn backends_of(lb: &LoadBalancer) -> Vec<Backend> {
    let mut all: Vec<Backend> = lb.ports.iter().flat_map(|p| p.backends.clone()).collect();
    all.sort();
    all.dedup();
    all
}

fn run(ns: &NetNs, check: &HealthCheck, shared: &(Mutex<Shared>, Condvar), stop: &AtomicBool) {
    loop {
        {
            let guard = lock(&shared.0);
            let (_guard, _) = shared
                .1
                .wait_timeout_while(guard, check.interval, |_| !stop.load(Ordering::SeqCst))
                .unwrap_or_else(|e| e.into_inner());
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let backends: Vec<Backend> = lock(&shared.0).health.keys().copied().collect();
        let results = probe_all(ns, check, &backends);
        let mut s = lock(&shared.0);
        let s = &mut *s;
        for (b, ok) in results {
            if let Some(h) = s.health.get_mut(&b) {
                if h.observe(ok, check) {
                    tracing::info!(lb = %s.lb.name, backend = %b.address, port = b.port, up = h.up, "backend health changed");
                }
            }
        }
        if let Err(e) = sync_table(ns, s) {
            tracing::warn!(lb = %s.lb.name, error = %e, "cannot apply load balancer table; retrying");
        }
    }
}

/// Applies the table for the current health when it differs from what was applied last.
fn sync_table(ns: &NetNs, s: &mut Shared) -> Result<(), LbError> {
    let health = &s.health;
    let script = s.lb.render(|b| health.get(b).is_none_or(|h| h.up))?;
    if s.applied.as_deref() == Some(script.as_str()) {
        return Ok(());
    }
    match apply_script(ns, &script) {
        Ok(()) => {
            s.applied = Some(script);
            s.last_error = None;
            Ok(())
        }
        Err(e) => {
            s.last_error = Some(e.to_string());
            Err(e.into())
        }
    }
}

/// Probes all backends in parallel from inside `ns`; a failure to enter counts as down.
fn probe_all(ns: &NetNs, check: &HealthCheck, backends: &[Backend]) -> Vec<(Backend, bool)> {
    let probe = || {
        std::thread::scope(|scope| {
            let handles: Vec<_> = backends
                .iter()
                .map(|b| {
                    // Threads spawned here inherit the namespace of the thread that spawns them.
                    scope.spawn(move || {
                        let ok =
                            TcpStream::connect_timeout(&check.probe_addr(b), check.timeout).is_ok();
                        (*b, ok)
                    })
                })
                .collect();
            handles
                .into_iter()
                .zip(backends)
                .map(|(h, b)| h.join().unwrap_or((*b, false)))
                .collect::<Vec<_>>()
        })
    };
    ns.run(probe)
        .unwrap_or_else(|_| backends.iter().map(|b| (*b, false)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lb() -> LoadBalancer {
        let be = |last, port| Backend {
            address: Ipv4Addr::new(10, 0, 0, last),
            port,
        };
        LoadBalancer {
            name: "web".into(),
            address: Ipv4Addr::new(203, 0, 113, 1),
            ports: vec![
                LbPort {
                    protocol: Protocol::Tcp,
                    listen_port: 80,
                    backends: vec![be(2, 8080), be(3, 8080), be(4, 8081)],
                },
                LbPort {
                    protocol: Protocol::Udp,
                    listen_port: 53,
                    backends: vec![be(2, 53)],
                },
            ],
        }
    }

    #[test]
    fn renders_numgen_maps_over_healthy_backends_and_refuses_the_rest() {
        let text = lb()
            .render(|b| b.address != Ipv4Addr::new(10, 0, 0, 3))
            .expect("render");
        assert!(text.starts_with("table ip vlb-web {}\ndelete table ip vlb-web\n"));
        let tcp = "ip daddr 203.0.113.1 tcp dport 80 dnat ip to numgen inc mod 2 map { 0 : 10.0.0.2 . 8080, 1 : 10.0.0.4 . 8081 }";
        assert_eq!(
            text.matches(tcp).count(),
            2,
            "prerouting and output:\n{text}"
        );
        assert!(text.contains("ip daddr 203.0.113.1 udp dport 53 dnat ip to numgen inc mod 1 map { 0 : 10.0.0.2 . 53 }"));
        assert_eq!(
            text.matches("tcp dport 80 reject with tcp reset").count(),
            3
        );

        let none = lb().render(|_| false).expect("render");
        assert!(
            !none.contains("dnat"),
            "no healthy backend, no DNAT:\n{none}"
        );
        assert!(none.contains("udp dport 53 reject"));
    }

    #[test]
    fn bad_balancers_and_checks_are_refused() {
        let mut l = lb();
        l.name = "a b".into();
        assert!(matches!(l.render(|_| true), Err(LbError::InvalidName(_))));
        let mut l = lb();
        l.ports[1].protocol = Protocol::Tcp;
        l.ports[1].listen_port = 80;
        assert!(matches!(
            l.render(|_| true),
            Err(LbError::DuplicatePort { .. })
        ));
        let mut l = lb();
        l.ports[0].backends[0].port = 0;
        assert!(matches!(l.render(|_| true), Err(LbError::ZeroPort)));
        let check = HealthCheck {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(200),
            rise: 2,
            fall: 2,
            port: None,
        };
        assert!(matches!(
            check.validate(&lb()),
            Err(LbError::UdpNeedsCheckPort(53))
        ));
        let mut c = check;
        c.port = Some(80);
        assert!(c.validate(&lb()).is_ok());
        c.rise = 0;
        assert!(matches!(c.validate(&lb()), Err(LbError::InvalidCheck(_))));
        let mut c = check;
        c.port = Some(80);
        c.timeout = Duration::from_secs(2);
        assert!(matches!(c.validate(&lb()), Err(LbError::InvalidCheck(_))));
    }

    #[test]
    fn rise_and_fall_need_consecutive_probes() {
        let check = HealthCheck {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(100),
            rise: 2,
            fall: 3,
            port: None,
        };
        let mut h = BackendHealth::first(true);
        assert!(!h.observe(false, &check));
        assert!(!h.observe(false, &check));
        assert!(!h.observe(true, &check), "a success resets the run");
        assert!(!h.observe(false, &check));
        assert!(!h.observe(false, &check));
        assert!(h.observe(false, &check) && !h.up, "three failures in a row");
        assert!(!h.observe(true, &check));
        assert!(h.observe(true, &check) && h.up, "two successes in a row");
    }
}
