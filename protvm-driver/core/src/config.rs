//! Limits and policy ([`Config`], [`Placement`]) and the socket option
//! numbers the driver looks at itself ([`opt`]). Every limit is a field;
//! the host fills them from its command line.

/// Socket option numbers the driver itself looks at (Linux values).
pub mod opt {
    /// `SOL_SOCKET`.
    pub const SOL_SOCKET: i32 = 1;
    /// `SO_REUSEADDR`.
    pub const SO_REUSEADDR: i32 = 2;
    /// `SO_TYPE`.
    pub const SO_TYPE: i32 = 3;
    /// `SO_ERROR`.
    pub const SO_ERROR: i32 = 4;
    /// `SO_LINGER`.
    pub const SO_LINGER: i32 = 13;
    /// `SO_REUSEPORT`.
    pub const SO_REUSEPORT: i32 = 15;
    /// `SO_ACCEPTCONN`.
    pub const SO_ACCEPTCONN: i32 = 30;
    /// `SO_PROTOCOL`.
    pub const SO_PROTOCOL: i32 = 38;
    /// `SO_DOMAIN`.
    pub const SO_DOMAIN: i32 = 39;
    /// `IPPROTO_TCP`.
    pub const IPPROTO_TCP: i32 = 6;
    /// `IPPROTO_UDP`.
    pub const IPPROTO_UDP: i32 = 17;
    /// `IPPROTO_IPV6`.
    pub const IPPROTO_IPV6: i32 = 41;
    /// `IPV6_V6ONLY`.
    pub const IPV6_V6ONLY: i32 = 26;
}

/// How outgoing sockets pick an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Fewest sockets, then lowest instance number.
    LeastBusy,
    /// Live instances in turn.
    RoundRobin,
}

/// Limits and policy; every limit is a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Per-socket receive window the driver grants instances (bytes); must
    /// equal the driver's `Hello.window`.
    pub window: u32,
    /// An instance silent for this long (nanoseconds) is declared dead.
    pub heartbeat_timeout_ns: u64,
    /// Placement policy for sockets that are not listeners.
    pub placement: Placement,
    /// Most sockets in the table (app sockets and accepted connections).
    pub max_sockets: usize,
    /// Most remembered socket options per socket.
    pub max_opts: usize,
    /// Most in-band option records waiting for their marker per socket
    /// (the oldest is dropped beyond).
    pub max_inband: usize,
    /// How long a marker may wait for its record before its socket is
    /// reset (nanoseconds).
    pub inband_stall_ns: u64,
    /// `IPV6_V6ONLY` of an IPv6 socket that did not set it: the instances'
    /// kernel default (`net.ipv6.bindv6only`), which the host reads once.
    pub bindv6only: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            window: 256 << 10,
            heartbeat_timeout_ns: 3_000_000_000,
            placement: Placement::LeastBusy,
            max_sockets: 1 << 20,
            max_opts: 32,
            max_inband: 16,
            inband_stall_ns: 2_000_000_000,
            bindv6only: false,
        }
    }
}
