//! What clients may cost the process serving them: connections (in all and per client
//! address), buffered record bytes (in all and per client), and how long a connection may
//! stay idle or take to send one record. The server usually runs inside a daemon with other
//! work to do, so its share of file descriptors is kept well below the process's limit.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// File descriptors one connection may hold at once: its socket, the clone kept to shut it
/// down, and the objects one request opens.
pub const FDS_PER_CONNECTION: u64 = 6;

/// Bounds on what clients may cost the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Most connections at once; fewer when the process's descriptor limit demands it (see
    /// [`ServerLimits::effective_max_connections`]).
    pub max_connections: usize,
    /// Most connections from one client address.
    pub max_per_client: usize,
    /// A connection with no record for this long is closed (clients reconnect as needed).
    pub idle_timeout: Duration,
    /// A record must arrive whole within this long of its first byte.
    pub record_timeout: Duration,
    /// A reply the client does not read within this long closes the connection.
    pub write_timeout: Duration,
    /// Most record bytes buffered for all clients together (32 MiB: thirty 1 MiB WRITEs in
    /// flight at once).
    pub max_buffered: usize,
    /// Most record bytes buffered for one client address.
    pub max_buffered_per_client: usize,
    /// Share of the process's open-file limit the server may use (1/4 by default).
    pub fd_share: u64,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_per_client: 32,
            idle_timeout: Duration::from_secs(60),
            record_timeout: Duration::from_secs(15),
            write_timeout: Duration::from_secs(30),
            max_buffered: 32 << 20,
            max_buffered_per_client: 8 << 20,
            fd_share: 4,
        }
    }
}

impl ServerLimits {
    /// `max_connections`, lowered so that connections use at most `1/fd_share` of the
    /// process's soft open-file limit.
    pub fn effective_max_connections(&self) -> usize {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(1024);
        self.connections_for_fd_limit(soft)
    }

    /// The connection cap for a process whose soft open-file limit is `soft`.
    pub fn connections_for_fd_limit(&self, soft: u64) -> usize {
        let budget = soft / self.fd_share.max(1) / FDS_PER_CONNECTION;
        self.max_connections
            .min(usize::try_from(budget).unwrap_or(usize::MAX))
            .max(1)
    }
}

/// What one client address costs now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Open connections.
    pub connections: usize,
    /// Record bytes buffered.
    pub buffered: usize,
}

/// What the server's clients cost now, and how many were turned away.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Open connections.
    pub connections: usize,
    /// The cap on connections in force.
    pub max_connections: usize,
    /// Record bytes buffered.
    pub buffered: usize,
    /// Per client address.
    pub clients: BTreeMap<IpAddr, ClientStats>,
    /// Connections closed at once because a cap was reached.
    pub refused: u64,
    /// Connections closed for being idle or too slow with a record.
    pub timed_out: u64,
    /// Records abandoned because buffering them would pass a memory budget.
    pub over_budget: u64,
}

/// The live accounting, shared by the accept loops and connection threads.
#[derive(Debug)]
pub(crate) struct Accounts {
    limits: ServerLimits,
    max_connections: usize,
    state: Mutex<ServerStats>,
}

impl Accounts {
    pub fn new(limits: ServerLimits) -> Self {
        let max_connections = limits.effective_max_connections();
        Self {
            limits,
            max_connections,
            state: Mutex::new(ServerStats {
                max_connections,
                ..Default::default()
            }),
        }
    }

    pub fn limits(&self) -> &ServerLimits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ServerStats> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a new connection from `ip`, or says no when a cap is reached.
    pub fn open(&self, ip: IpAddr) -> bool {
        let mut s = self.lock();
        let per = s.clients.get(&ip).map_or(0, |c| c.connections);
        if s.connections >= self.max_connections || per >= self.limits.max_per_client {
            s.refused += 1;
            return false;
        }
        s.connections += 1;
        s.clients.entry(ip).or_default().connections += 1;
        true
    }

    /// Forgets a connection from `ip` and the `buffered` bytes it still held.
    pub fn close(&self, ip: IpAddr, buffered: usize) {
        let mut s = self.lock();
        s.connections = s.connections.saturating_sub(1);
        s.buffered = s.buffered.saturating_sub(buffered);
        if let Some(c) = s.clients.get_mut(&ip) {
            c.connections = c.connections.saturating_sub(1);
            c.buffered = c.buffered.saturating_sub(buffered);
            if c.connections == 0 {
                s.clients.remove(&ip);
            }
        }
    }

    /// Takes `n` bytes of the budgets for `ip`, or says no (and counts it).
    pub fn reserve(&self, ip: IpAddr, n: usize) -> bool {
        let mut s = self.lock();
        let per = s.clients.get(&ip).map_or(0, |c| c.buffered);
        if s.buffered + n > self.limits.max_buffered
            || per + n > self.limits.max_buffered_per_client
        {
            s.over_budget += 1;
            return false;
        }
        s.buffered += n;
        s.clients.entry(ip).or_default().buffered += n;
        true
    }

    /// Gives back `n` bytes `ip` reserved.
    pub fn release(&self, ip: IpAddr, n: usize) {
        let mut s = self.lock();
        s.buffered = s.buffered.saturating_sub(n);
        if let Some(c) = s.clients.get_mut(&ip) {
            c.buffered = c.buffered.saturating_sub(n);
        }
    }

    pub fn timed_out(&self) {
        self.lock().timed_out += 1;
    }

    pub fn stats(&self) -> ServerStats {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_cap_follows_the_descriptor_limit() {
        let l = ServerLimits::default();
        assert_eq!(l.connections_for_fd_limit(1024), 42);
        assert_eq!(l.connections_for_fd_limit(1 << 20), 256);
        assert_eq!(l.connections_for_fd_limit(3), 1);
    }

    #[test]
    fn caps_are_per_client_and_in_all() {
        let a = Accounts {
            limits: ServerLimits {
                max_per_client: 2,
                max_buffered: 100,
                max_buffered_per_client: 60,
                ..Default::default()
            },
            max_connections: 3,
            state: Mutex::default(),
        };
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(a.open(x) && a.open(x));
        assert!(!a.open(x), "third from one client");
        assert!(a.open(y));
        assert!(!a.open(y), "fourth in all");
        assert!(a.reserve(x, 60));
        assert!(!a.reserve(x, 1), "per client");
        assert!(a.reserve(y, 40));
        assert!(!a.reserve(y, 1), "in all");
        a.release(x, 60);
        assert!(a.reserve(y, 1));
        a.close(x, 0);
        a.close(x, 0);
        let s = a.stats();
        assert_eq!(s.connections, 1);
        assert!(!s.clients.contains_key(&x));
        assert_eq!((s.refused, s.over_budget), (2, 2));
    }
}
