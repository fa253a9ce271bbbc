//! Sending at layer 2 for a GEA: a transparent bridge has no address, so it cannot route the
//! packets it originates (DPRP messages, rejects). It sends them as Ethernet frames on its
//! bridge, to the MAC address it last saw the destination's packets come from (learned from
//! the NFQUEUE messages), and lets the bridge forward them to the right port. AF_PACKET sends
//! bypass netfilter, so the frames are not queued again.

use crate::DaemonError;
use socket2::{Domain, SockAddr, Socket, Type};
use std::collections::HashMap;
use std::net::IpAddr;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

/// The link-layer address of an interface, for `sendto` on an AF_PACKET socket.
#[allow(unsafe_code)]
fn link_addr(ifindex: i32) -> SockAddr {
    // SAFETY: sockaddr_storage is plain data for which all-zero bytes are a valid value, it is
    // large enough and aligned for a sockaddr_ll, and only the sockaddr_ll fields are written.
    // The length given to SockAddr::new is that of the sockaddr_ll written.
    unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        let ll = &mut storage as *mut libc::sockaddr_storage as *mut libc::sockaddr_ll;
        (*ll).sll_family = libc::AF_PACKET as u16;
        (*ll).sll_ifindex = ifindex;
        (*ll).sll_halen = 6;
        SockAddr::new(storage, std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t)
    }
}

fn read_sys(iface: &str, what: &str) -> Result<String, DaemonError> {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/{what}"))
        .map(|s| s.trim().to_owned())
        .map_err(|e| DaemonError::Configuration(format!("bridge {iface:?}: {e} (is it this GEA's bridge?)")))
}

/// One bridge the GEA stands on.
#[derive(Debug)]
struct Bridge {
    ifindex: u32,
    mac: [u8; 6],
    addr: SockAddr,
}

/// Sends IP packets as Ethernet frames on the GEA's bridges.
#[derive(Debug)]
pub struct LinkSender {
    sock: Socket,
    bridges: Vec<Bridge>,
    /// IP address -> the MAC its packets last came from, and the bridge they crossed.
    neighbours: HashMap<IpAddr, ([u8; 6], u32)>,
}

impl LinkSender {
    pub fn new(bridges: &[String]) -> Result<Self, DaemonError> {
        let mut v = Vec::new();
        for name in bridges {
            let ifindex: u32 = read_sys(name, "ifindex")?
                .parse()
                .map_err(|_| DaemonError::Configuration(format!("bridge {name:?}: bad ifindex")))?;
            let text = read_sys(name, "address")?;
            let mut mac = [0u8; 6];
            for (i, part) in text.split(':').enumerate().take(6) {
                mac[i] = u8::from_str_radix(part, 16).unwrap_or(0);
            }
            v.push(Bridge { ifindex, mac, addr: link_addr(ifindex as i32) });
        }
        if v.is_empty() {
            return Err(DaemonError::Configuration("a GEA needs at least one bridge".into()));
        }
        let sock = Socket::new(Domain::PACKET, Type::RAW, None)
            .map_err(|e| DaemonError::Netfilter(format!("packet socket: {e} (needs root or CAP_NET_RAW)")))?;
        Ok(LinkSender { sock, bridges: v, neighbours: HashMap::new() })
    }

    /// Remembers where `src`'s packets come from: their source MAC and the bridge (the
    /// packet's input device) they crossed.
    pub fn learn(&mut self, packet: &[u8], hw: Option<&[u8]>, indev: u32) {
        let (Some(src), Some(hw)) = (src_of(packet), hw) else { return };
        if hw.len() == 6 {
            let mut m = [0u8; 6];
            m.copy_from_slice(hw);
            if self.neighbours.len() > 65_536 {
                self.neighbours.clear();
            }
            self.neighbours.insert(src, (m, indev));
        }
    }

    pub fn send(&self, packet: &[u8]) -> std::io::Result<()> {
        let dst = dst_of(packet).ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not IP"))?;
        let ethertype = if dst.is_ipv4() { ETH_P_IP } else { ETH_P_IPV6 };
        let frame = |dst_mac: &[u8; 6], src_mac: &[u8; 6]| {
            let mut f = Vec::with_capacity(14 + packet.len());
            f.extend_from_slice(dst_mac);
            f.extend_from_slice(src_mac);
            f.extend_from_slice(&ethertype.to_be_bytes());
            f.extend_from_slice(packet);
            f
        };
        match self
            .neighbours
            .get(&dst)
            .and_then(|(mac, ix)| Some((mac, self.bridges.iter().find(|b| b.ifindex == *ix)?)))
        {
            Some((mac, b)) => self.sock.send_to(&frame(mac, &b.mac), &b.addr).map(|_| ()),
            None => {
                // Never seen: broadcast on every bridge (only an on-link host can take it).
                for b in &self.bridges {
                    self.sock.send_to(&frame(&[0xff; 6], &b.mac), &b.addr)?;
                }
                Ok(())
            }
        }
    }
}

fn src_of(p: &[u8]) -> Option<IpAddr> {
    match p.first()? >> 4 {
        4 if p.len() >= 20 => Some(IpAddr::from([p[12], p[13], p[14], p[15]])),
        6 if p.len() >= 40 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&p[8..24]);
            Some(IpAddr::from(a))
        }
        _ => None,
    }
}

pub(crate) fn dst_of(p: &[u8]) -> Option<IpAddr> {
    match p.first()? >> 4 {
        4 if p.len() >= 20 => Some(IpAddr::from([p[16], p[17], p[18], p[19]])),
        6 if p.len() >= 40 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&p[24..40]);
            Some(IpAddr::from(a))
        }
        _ => None,
    }
}
