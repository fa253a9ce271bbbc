//! The Linux data plane: packets from an NFQUEUE into the engine and back, and the engine's
//! own packets out through raw sockets.
//!
//! A held packet stays queued in the kernel (no verdict yet) until the engine releases it; its
//! NFQUEUE message is found again by the tag passed to `handle_packet_tagged`. Dropping and
//! re-injecting it instead would fail an application's `sendto` on OUTPUT with EPERM.
//!
//! The daemon's own packets (DPRP messages, ICMP rejects) go out through raw sockets
//! (`IPPROTO_RAW`: the IP header is ours, whatever the source address) marked with
//! [`OWN_MARK`], which the daemon's rules let pass.
//!
//! The loop blocks in `poll()` on the queue's netlink socket and the control socket until
//! the engine's next timer. The `nfq` crate does not expose its socket, so the daemon finds
//! it: the process's one NETLINK_NETFILTER socket, matched by inode between `/proc/self/fd`
//! and `/proc/self/net/netlink`. If that ever fails, the loop falls back to sleeping 100 µs
//! when idle.

use crate::link::LinkSender;
use crate::{fast_bits, DaemonError, FAST_DROP, FAST_MASK, FAST_PASS, OWN_MARK};
use gscip_core::engine::FastPath;
use gscip_core::engine::{Event, TransmitKind, Verdict};
use gscip_core::{Engine, Timestamp};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The caller's clock, as the core wants it: microseconds since the Unix epoch.
pub fn now() -> Timestamp {
    Timestamp(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0))
}

/// Sends IP packets as they are (header included), with the daemon's mark.
#[derive(Debug)]
pub struct RawSender {
    v4: Socket,
    v6: Socket,
}

impl RawSender {
    pub fn new() -> Result<Self, DaemonError> {
        let open = |d: Domain| -> Result<Socket, DaemonError> {
            let s = Socket::new(d, Type::RAW, Some(Protocol::from(255)))
                .map_err(|e| DaemonError::Netfilter(format!("raw socket: {e} (needs root or CAP_NET_RAW)")))?;
            s.set_mark(OWN_MARK)?;
            Ok(s)
        };
        Ok(RawSender { v4: open(Domain::IPV4)?, v6: open(Domain::IPV6)? })
    }

    pub fn send(&self, packet: &[u8]) -> std::io::Result<()> {
        let dst = crate::link::dst_of(packet)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an IP packet"))?;
        let sock = if dst.is_ipv4() { &self.v4 } else { &self.v6 };
        sock.send_to(packet, &SockAddr::from(SocketAddr::new(dst, 0))).map(|_| ())
    }
}

/// How the daemon sends the packets it originates.
#[derive(Debug)]
pub enum Injector {
    /// Routed, through raw IP sockets (GES, GEN).
    Ip(RawSender),
    /// As frames on a bridge (GEA).
    Link(LinkSender),
}

/// The daemon's loop state.
#[allow(missing_debug_implementations)] // nfq's types have no Debug
pub struct Dataplane {
    pub engine: Engine,
    queue: nfq::Queue,
    raw: Injector,
    held: HashMap<u64, nfq::Message>,
    next_tag: u64,
    events: Option<std::fs::File>,
    control: Option<crate::control::ControlSocket>,
    /// Discards logged in the current second, and when that second began (rate limit).
    discard_log: (u32, Timestamp),
    /// When the control socket was last looked at: while packets keep coming it is checked
    /// every [`CONTROL_CHECK_US`] rather than with a system call per packet.
    control_checked: Timestamp,
    /// New credentials from the GMS, and the configuration to refresh the rules with.
    updates: Option<(crate::gms::KeyUpdates, crate::config::Config)>,
    /// The fast-path generation: marks of older generations no longer count.
    generation: u8,
}

/// At most this many discards are logged one by one per second; the rest are summed up.
const DISCARD_LOGS_PER_SECOND: u32 = 10;
/// How often the control socket (`gscip status`) is checked while packets keep the loop busy.
const CONTROL_CHECK_US: u64 = 20_000;

impl Dataplane {
    /// Binds the NFQUEUE (before the rules that feed it are installed).
    pub fn new(engine: Engine, queue_num: u16, raw: Injector) -> Result<Self, DaemonError> {
        let queue = open_queue(queue_num)?;
        Ok(Dataplane {
            engine,
            queue,
            raw,
            held: HashMap::new(),
            next_tag: 1,
            events: None,
            control: None,
            discard_log: (0, Timestamp(0)),
            control_checked: Timestamp(0),
            updates: None,
            generation: 0,
        })
    }

    /// Takes new credentials from the GMS link as they come; each change of keys or
    /// certificate also starts a new fast-path generation (rules refreshed from `config`).
    pub fn follow_gms(&mut self, updates: crate::gms::KeyUpdates, config: crate::config::Config) {
        self.updates = Some((updates, config));
    }

    fn apply_updates(&mut self) {
        let Some((updates, config)) = &mut self.updates else { return };
        let Some(c) = updates.take() else { return };
        if let Err(e) = self.engine.set_identity(c.identity) {
            tracing::error!("new certificate refused: {e}");
            return;
        }
        self.engine.set_group_keys(c.keys);
        self.generation = self.generation.wrapping_add(1);
        if let Err(e) = crate::rules::new_generation(config, self.generation) {
            tracing::error!("refreshing the fast-path rules: {e}");
        }
        tracing::info!(generation = self.generation, "credentials updated; flows renegotiate as needed");
    }

    /// Serves `gscip status` on this socket.
    pub fn serve_control(&mut self, socket: crate::control::ControlSocket) {
        self.control = Some(socket);
    }

    /// Appends every decision to `path` as a JSON line.
    pub fn log_events_to(&mut self, path: &std::path::Path) -> Result<(), DaemonError> {
        self.events = Some(std::fs::OpenOptions::new().create(true).append(true).open(path)?);
        Ok(())
    }

    /// Runs until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), DaemonError> {
        let queue_fd = netfilter_netlink_fd();
        if queue_fd.is_none() {
            tracing::warn!("cannot find the NFQUEUE socket; polling every 100 µs instead");
        }
        while !stop.load(Ordering::Relaxed) {
            let mut busy = false;
            match self.queue.recv() {
                Ok(msg) => {
                    busy = true;
                    self.handle(msg)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.raw_os_error() == Some(105) => {} // ENOBUFS: the kernel dropped some
                Err(e) => return Err(DaemonError::Netfilter(format!("receiving from NFQUEUE: {e}"))),
            }
            let t = now();
            if self.engine.poll_timeout().is_some_and(|at| at <= t) {
                self.engine.handle_timeout(t);
                busy = true;
            }
            self.apply_updates();
            self.flush()?;
            if let Some(c) = &self.control {
                if !busy || t.0.saturating_sub(self.control_checked.0) >= CONTROL_CHECK_US {
                    c.serve(&self.engine);
                    self.control_checked = t;
                }
            }
            if !busy {
                match queue_fd {
                    Some(fd) => {
                        // Sleep until a packet, a status request, the next timer, or (to notice
                        // `stop`) a quarter of a second.
                        let until = self.engine.poll_timeout().map(|at| at.0.saturating_sub(now().0) / 1000);
                        let ms = until.unwrap_or(250).clamp(0, 250) as i32;
                        let control = self.control.as_ref().map(|c| c.raw_fd());
                        let wake = self.updates.as_ref().map(|(u, _)| u.wake_fd());
                        wait_readable(fd, control, wake, ms);
                        if let Some((u, _)) = &mut self.updates {
                            u.drain_wake();
                        }
                    }
                    None => std::thread::sleep(Duration::from_micros(100)),
                }
            }
        }
        // Whatever is still held goes out as dropped rather than stuck in the kernel queue.
        for (_, mut msg) in self.held.drain() {
            msg.set_verdict(nfq::Verdict::Drop);
            let _ = self.queue.verdict(msg);
        }
        Ok(())
    }

    fn handle(&mut self, mut msg: nfq::Message) -> Result<(), DaemonError> {
        if let Injector::Link(l) = &mut self.raw {
            l.learn(msg.get_payload(), msg.get_hw_addr(), msg.get_indev());
        }
        let mut buf = msg.get_payload().to_vec();
        let len_before = buf.len();
        let tag = self.next_tag;
        self.next_tag += 1;
        let verdict = self.engine.handle_packet_tagged(now(), &mut buf, tag);
        if verdict == Verdict::Drop(gscip_core::DropReason::Discarded) {
            self.log_discard(msg.get_payload());
        }
        // Decided without cryptography: hand the rest of the flow to the kernel (the packet
        // goes through the hook again with the fast-path bits, which the rules save). A sealed
        // or opened packet changed length and never qualifies: skip the lookup for it.
        let unchanged = buf.len() == len_before;
        if (verdict == Verdict::Accept && unchanged) || verdict == Verdict::Drop(gscip_core::DropReason::Discarded) {
            let packet = if verdict == Verdict::Accept { buf.as_slice() } else { msg.get_payload() };
            if let Some(fast) = self.engine.fast_path(packet) {
                let bits = fast_bits(if fast == FastPath::Pass { FAST_PASS } else { FAST_DROP }, self.generation);
                let mark = (msg.get_nfmark() & !FAST_MASK) | bits;
                msg.set_nfmark(mark);
                msg.set_verdict(nfq::Verdict::Repeat);
                return self.verdict(msg);
            }
        }
        match verdict {
            Verdict::Accept => {
                if buf.len() != len_before || buf.as_slice() != msg.get_payload() {
                    msg.set_payload(buf);
                }
                msg.set_verdict(nfq::Verdict::Accept);
                self.verdict(msg)
            }
            Verdict::Held => {
                self.held.insert(tag, msg);
                Ok(())
            }
            Verdict::Drop(_) | Verdict::Consumed => {
                msg.set_verdict(nfq::Verdict::Drop);
                self.verdict(msg)
            }
        }
    }

    /// Every discard is counted by the engine; the log shows them one by one up to
    /// [`DISCARD_LOGS_PER_SECOND`], then how many were not shown.
    fn log_discard(&mut self, packet: &[u8]) {
        let t = now();
        let (n, since) = self.discard_log;
        if t.0.saturating_sub(since.0) >= 1_000_000 {
            if n > DISCARD_LOGS_PER_SECOND {
                tracing::warn!(ge = self.engine.name(), suppressed = n - DISCARD_LOGS_PER_SECOND, "more discards");
            }
            self.discard_log = (0, t);
        }
        self.discard_log.0 += 1;
        if self.discard_log.0 <= DISCARD_LOGS_PER_SECOND {
            let flow = gscip_wire::ip::Datagram::parse(packet).map(|d| d.cid.to_string()).unwrap_or_default();
            tracing::warn!(ge = self.engine.name(), %flow, "discarded");
        }
    }

    fn verdict(&mut self, msg: nfq::Message) -> Result<(), DaemonError> {
        self.queue.verdict(msg).map_err(|e| DaemonError::Netfilter(format!("verdict: {e}")))
    }

    /// Sends what the engine wants sent and logs what happened.
    fn flush(&mut self) -> Result<(), DaemonError> {
        while let Some(t) = self.engine.poll_transmit() {
            match t.kind {
                TransmitKind::Released => {
                    if let Some(mut msg) = self.held.remove(&t.tag) {
                        msg.set_payload(t.packet);
                        msg.set_verdict(nfq::Verdict::Accept);
                        self.verdict(msg)?;
                    }
                }
                TransmitKind::Dropped => {
                    if let Some(mut msg) = self.held.remove(&t.tag) {
                        msg.set_verdict(nfq::Verdict::Drop);
                        self.verdict(msg)?;
                    }
                }
                TransmitKind::Control | TransmitKind::Reject => {
                    let sent = match &self.raw {
                        Injector::Ip(r) => r.send(&t.packet),
                        Injector::Link(l) => l.send(&t.packet),
                    };
                    if let Err(e) = sent {
                        tracing::warn!(kind = ?t.kind, error = %e, "sending failed");
                    }
                }
            }
        }
        while let Some(ev) = self.engine.poll_event() {
            match ev {
                Event::FlowDecided { cid, action, summary, provisional } => {
                    tracing::info!(
                        ge = self.engine.name(),
                        flow = %cid,
                        action = action.as_str(),
                        group = ?summary.group.map(|g| g.0),
                        path = ?summary.path,
                        provisional,
                        "decided"
                    );
                    if let Some(f) = self.events.as_mut() {
                        use std::io::Write;
                        let line = serde_json::json!({
                            "ge": self.engine.name(),
                            "proto": cid.proto.as_str(),
                            "src": cid.src.to_string(), "src_port": cid.src_port,
                            "dst": cid.dst.to_string(), "dst_port": cid.dst_port,
                            "action": action.as_str(),
                            "group": summary.group.map(|g| g.0),
                            "encrypted_by": summary.encrypted_by,
                            "decrypted_by": summary.decrypted_by,
                            "path": summary.path,
                        });
                        let _ = writeln!(f, "{line}");
                    }
                }
                Event::NegotiationFailed { cid, reason } => {
                    tracing::warn!(ge = self.engine.name(), flow = %cid, %reason, "negotiation failed")
                }
                Event::PeerMisbehaved { cid, error } => {
                    let flow = cid.map(|c| c.to_string()).unwrap_or_default();
                    tracing::warn!(ge = self.engine.name(), %flow, %error, "peer misbehaved")
                }
                Event::FlowRemoved { cid, reason } => {
                    tracing::debug!(ge = self.engine.name(), flow = %cid, reason = ?reason, "entry removed")
                }
            }
        }
        Ok(())
    }
}

/// The process's NETLINK_NETFILTER socket (the NFQUEUE's): its inode from
/// `/proc/self/net/netlink` (protocol 12), matched against the links in `/proc/self/fd`.
fn netfilter_netlink_fd() -> Option<i32> {
    let table = std::fs::read_to_string("/proc/self/net/netlink").ok()?;
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&"12")).then(|| f.get(9).map(|s| s.to_string())).flatten()
        })
        .collect();
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else { continue };
        let t = target.to_string_lossy();
        if let Some(inode) = t.strip_prefix("socket:[").and_then(|x| x.strip_suffix(']')) {
            if inodes.iter().any(|i| i == inode) {
                return entry.file_name().to_str()?.parse().ok();
            }
        }
    }
    None
}

/// Waits until `fd` (or `other`, or `third`) is readable, or `timeout_ms` passes.
#[allow(unsafe_code)]
fn wait_readable(fd: i32, other: Option<i32>, third: Option<i32>, timeout_ms: i32) {
    let mut fds = [
        libc::pollfd { fd, events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: other.unwrap_or(-1), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: third.unwrap_or(-1), events: libc::POLLIN, revents: 0 },
    ];
    // SAFETY: `fds` is a valid array of three pollfd for the duration of the call and its
    // length is passed with it; a negative fd is ignored by poll(2). The descriptors belong to
    // this process (the queue's socket, the control listener, the GMS link's wake socket) and
    // stay open during the call.
    unsafe {
        libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms);
    }
}

/// Packets the kernel keeps queued for the daemon at most: the engine's whole hold queue
/// (`GeConfig::hold_total`, 16,384) plus packets on their way. Beyond it the kernel drops
/// (fail-closed).
const QUEUE_MAX_LEN: u32 = 16_384 + 8_192;

/// The queue socket's receive buffer: a burst of new flows (10,000 first packets at once)
/// must fit while the daemon works through it; a packet that does not fit is dropped by the
/// kernel (fail-closed), never passed.
const QUEUE_RCVBUF_BYTES: i32 = 64 << 20;

/// Binds an NFQUEUE the daemon's way: fail-closed, [`QUEUE_MAX_LEN`] packets deep, whole
/// packets, a [`QUEUE_RCVBUF_BYTES`] receive buffer, without blocking.
fn open_queue(queue_num: u16) -> Result<nfq::Queue, DaemonError> {
    let nf = |e: std::io::Error| DaemonError::Netfilter(format!("NFQUEUE {queue_num}: {e}"));
    let mut queue = nfq::Queue::open().map_err(nf)?;
    queue.bind(queue_num).map_err(nf)?;
    queue.set_fail_open(queue_num, false).map_err(nf)?;
    queue.set_queue_max_len(queue_num, QUEUE_MAX_LEN).map_err(nf)?;
    queue.set_copy_range(queue_num, 0xffff).map_err(nf)?;
    queue.set_nonblocking(true);
    match netfilter_netlink_fd() {
        Some(fd) => {
            if let Err(e) = set_receive_buffer(fd, QUEUE_RCVBUF_BYTES) {
                tracing::warn!("NFQUEUE {queue_num}: cannot enlarge the receive buffer: {e}");
            }
        }
        None => tracing::warn!("NFQUEUE {queue_num}: cannot find the queue's socket to enlarge its buffer"),
    }
    Ok(queue)
}

/// `SO_RCVBUFFORCE` (root may exceed `net.core.rmem_max`).
#[allow(unsafe_code)]
fn set_receive_buffer(fd: i32, bytes: i32) -> std::io::Result<()> {
    // SAFETY: `fd` is this process's open NFQUEUE socket; the option value is a live i32 whose
    // size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The benchmark's floor: the same queue, rules and loop shape with no engine; every packet
/// is accepted unchanged.
pub fn run_accept_only(queue_num: u16, stop: &AtomicBool) -> Result<(), DaemonError> {
    let nf = |e: std::io::Error| DaemonError::Netfilter(format!("NFQUEUE {queue_num}: {e}"));
    let mut queue = open_queue(queue_num)?;
    let fd = netfilter_netlink_fd();
    while !stop.load(Ordering::Relaxed) {
        match queue.recv() {
            Ok(mut msg) => {
                msg.set_verdict(nfq::Verdict::Accept);
                queue.verdict(msg).map_err(nf)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => match fd {
                Some(fd) => wait_readable(fd, None, None, 250),
                None => std::thread::sleep(Duration::from_micros(100)),
            },
            Err(e) if e.raw_os_error() == Some(105) => {}
            Err(e) => return Err(nf(e)),
        }
    }
    Ok(())
}
