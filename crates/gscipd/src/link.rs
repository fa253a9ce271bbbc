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

/// Sends IP packets as Ethernet frames on a bridge.
#[derive(Debug)]
pub struct LinkSender {
    sock: Socket,
    addr: SockAddr,
    own_mac: [u8; 6],
    /// IP address -> the MAC its packets last came from.
    neighbours: HashMap<IpAddr, [u8; 6]>,
}

impl LinkSender {
    pub fn new(bridge: &str) -> Result<Self, DaemonError> {
        let ifindex: i32 = read_sys(bridge, "ifindex")?
            .parse()
            .map_err(|_| DaemonError::Configuration(format!("bridge {bridge:?}: bad ifindex")))?;
        let mac = read_sys(bridge, "address")?;
        let mut own_mac = [0u8; 6];
        for (i, part) in mac.split(':').enumerate().take(6) {
            own_mac[i] = u8::from_str_radix(part, 16).unwrap_or(0);
        }
        let sock = Socket::new(Domain::PACKET, Type::RAW, None)
            .map_err(|e| DaemonError::Netfilter(format!("packet socket: {e} (needs root or CAP_NET_RAW)")))?;
        Ok(LinkSender { sock, addr: link_addr(ifindex), own_mac, neighbours: HashMap::new() })
    }

    /// Remembers where `src`'s packets come from.
    pub fn learn(&mut self, packet: &[u8], hw: Option<&[u8]>) {
        let (Some(src), Some(hw)) = (src_of(packet), hw) else { return };
        if hw.len() == 6 {
            let mut m = [0u8; 6];
            m.copy_from_slice(hw);
            if self.neighbours.len() > 65_536 {
                self.neighbours.clear();
            }
            self.neighbours.insert(src, m);
        }
    }

    pub fn send(&self, packet: &[u8]) -> std::io::Result<()> {
        let dst = dst_of(packet).ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not IP"))?;
        let mac = self.neighbours.get(&dst).copied().unwrap_or([0xff; 6]);
        let mut frame = Vec::with_capacity(14 + packet.len());
        frame.extend_from_slice(&mac);
        frame.extend_from_slice(&self.own_mac);
        frame.extend_from_slice(&(if dst.is_ipv4() { ETH_P_IP } else { ETH_P_IPV6 }).to_be_bytes());
        frame.extend_from_slice(packet);
        self.sock.send_to(&frame, &self.addr).map(|_| ())
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
