//! The connection identifier (CID): protocol, source address and port, destination address
//! and port, as one GE sees a flow. The PIT is keyed by it.

use std::fmt;
use std::net::IpAddr;

/// The transport protocols GSCIP protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4Proto {
    Tcp,
    Udp,
}

impl L4Proto {
    pub const fn number(self) -> u8 {
        match self {
            L4Proto::Tcp => 6,
            L4Proto::Udp => 17,
        }
    }
    pub const fn from_number(n: u8) -> Option<Self> {
        match n {
            6 => Some(L4Proto::Tcp),
            17 => Some(L4Proto::Udp),
            _ => None,
        }
    }
    pub const fn as_str(self) -> &'static str {
        match self {
            L4Proto::Tcp => "tcp",
            L4Proto::Udp => "udp",
        }
    }
}

/// A flow's identity in one direction. Addresses are always of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cid {
    pub proto: L4Proto,
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
}

impl Cid {
    /// The same flow seen in the other direction.
    pub fn reversed(&self) -> Cid {
        Cid { proto: self.proto, src: self.dst, src_port: self.dst_port, dst: self.src, dst_port: self.src_port }
    }

    /// The orientation of the two directions that sorts first: both directions of a flow map
    /// to the same canonical CID.
    pub fn canonical(&self) -> Cid {
        let r = self.reversed();
        if r < *self {
            r
        } else {
            *self
        }
    }

    pub fn is_ipv6(&self) -> bool {
        self.src.is_ipv6()
    }
}

impl fmt::Display for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sock = |a: &IpAddr, p: u16| match a {
            IpAddr::V4(a) => format!("{a}:{p}"),
            IpAddr::V6(a) => format!("[{a}]:{p}"),
        };
        write!(f, "{} {} -> {}", self.proto.as_str(), sock(&self.src, self.src_port), sock(&self.dst, self.dst_port))
    }
}
