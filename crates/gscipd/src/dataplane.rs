//! The Linux data plane: packets from an NFQUEUE into the engine and back, and the engine's
//! own packets out through raw sockets.
//!
//! A held packet stays queued in the kernel (no verdict yet) until the engine releases it; its
//! packet id is found again by the tag passed to `handle_packet_tagged`. Dropping and
//! re-injecting it instead would fail an application's `sendto` on OUTPUT with EPERM.
//!
//! The daemon's own packets (DPRP messages, ICMP rejects) go out through raw sockets
//! (`IPPROTO_RAW`: the IP header is ours, whatever the source address) marked with
//! [`OWN_MARK`], which the daemon's rules let pass.
//!
//! Two queues: the per-packet queue (UDP, ICMP, and TCP of flows cut into segments) and, with
//! `gso` (the default), the GSO queue, which takes TCP packets whole as the sending host's TCP
//! wrote them or GRO merged them (up to 64 KiB; NFQUEUE's GSO flag): the engine seals each as
//! one unit, which the kernel cuts into segments after the verdict (docs/pccom.md, "Units").
//! When the engine asks for a flow to be cut into segments ([`Verdict::Segment`]), its packet
//! goes back through the hook with [`SEGMENT_MARK`]; the rules save the bit in the connection
//! and send the flow's packets to the per-packet queue from then on.
//!
//! Each turn of the loop takes up to [`crate::nfqueue::BATCH`] packets from each queue in one
//! receive, hands them to the engine one by one (into one reused buffer), and sends their
//! verdicts in one datagram per queue. Work that can wait comes after the verdicts: the end
//! GE's CDN is signed and sent then, not while the flow's first packet waits behind the MPIT
//! in the same turn. A turn that leaves such work (a CDN to sign and send, log lines to write)
//! looks at the queues once more first: a verdict often provokes a packet
//! at once (a SYN delivered to this host answers with its SYN-ACK within the verdict's system
//! call; a SYN waits behind the MPIT it follows), and that packet goes first. When nothing is
//! queued the loop blocks in `poll()` on the queues' sockets, the control socket and the GMS
//! link's wake-up socket until the engine's next timer.

use crate::link::LinkSender;
use crate::nfqueue::{Queue, Verdict as NfVerdict};
use crate::{fast_bits, DaemonError, FAST_DROP, FAST_MASK, FAST_PASS, OWN_MARK, SEGMENT_MARK, UNITS_MARK};
use gscip_core::engine::FastPath;
use gscip_core::engine::{Event, PacketContext, TransmitKind, Verdict};
use gscip_core::policy::FlowAction;
use gscip_core::{Engine, Timestamp};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Which of the engine's transmits [`Dataplane::transmit`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Urgent {
    /// Only what must not wait (while a batch is handled and its verdicts given).
    Only,
    /// Everything, the work that could wait included (after the verdicts).
    AndTheRest,
}

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
#[allow(missing_debug_implementations)] // the engine has no Debug
pub struct Dataplane {
    pub engine: Engine,
    /// The per-packet queue ([`PACKET_QUEUE`]) and, with GSO, the GSO queue ([`GSO_QUEUE`]).
    queues: Vec<Queue>,
    raw: Injector,
    /// Packets the engine holds: tag -> the queue, the kernel's packet id (the packet stays
    /// queued) and its mark.
    held: HashMap<u64, (usize, u32, u32)>,
    /// The packet being handled (reused: no allocation per packet).
    buf: Vec<u8>,
    next_tag: u64,
    /// The events file (one JSON line per decision) and the buffer a line is formatted in.
    events: Option<(std::fs::File, Vec<u8>)>,
    /// The last write to the events file failed (and was logged).
    events_failing: bool,
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
    /// The engine's packets that may wait until this turn's verdicts are out (CDNs).
    deferred: Vec<Vec<u8>>,
    /// The kernel's list of destinations whose DDEs pass unseen (`/proc/net/xt_recent/…`).
    dde_pass_list: Option<std::fs::File>,
    /// Copies of the MPITs the kernel lets pass (`kernel_mpit_pass`; docs/dprp.md section 15).
    passed_copies: Option<crate::nflog::LogGroup>,
    /// How the loop stayed awake for new flows (for `gscip status`).
    awake: crate::control::StayAwakeStats,
}

/// One line of the events file: a flow's decision at this GE (docs/gscipd.md).
#[derive(serde::Serialize)]
struct DecisionEvent<'a> {
    ge: &'a str,
    proto: &'a str,
    src: std::net::IpAddr,
    src_port: u16,
    dst: std::net::IpAddr,
    dst_port: u16,
    action: &'a str,
    group: Option<u16>,
    encrypted_by: Option<&'a str>,
    decrypted_by: Option<&'a str>,
    path: &'a [String],
}

/// Queues a verdict on `queue` (sent with the turn's others); a field-level function, so that a
/// payload borrowed from the daemon's buffer can go with it.
fn give_verdict(
    queue: &mut Queue,
    id: u32,
    v: NfVerdict,
    mark: Option<u32>,
    payload: Option<&[u8]>,
) -> Result<(), DaemonError> {
    queue.verdict(id, v, mark, payload).map_err(|e| DaemonError::Netfilter(format!("verdict: {e}")))
}

/// Index of the per-packet queue in [`Dataplane`]'s queues.
const PACKET_QUEUE: usize = 0;
/// Index of the GSO queue.
const GSO_QUEUE: usize = 1;

/// At most this many discards are logged one by one per second; the rest are summed up.
const DISCARD_LOGS_PER_SECOND: u32 = 10;
/// The longest wait for a packet: `stop` is noticed within it.
const IDLE_WAIT_US: u64 = 250_000;
/// How often the control socket (`gscip status`) is checked while packets keep the loop busy.
const CONTROL_CHECK_US: u64 = 20_000;

impl Dataplane {
    /// Binds the queues (before the rules that feed them are installed): `queue_num`, and
    /// `gso_queue` with NFQUEUE's GSO flag if given.
    pub fn new(engine: Engine, queue_num: u16, gso_queue: Option<u16>, raw: Injector) -> Result<Self, DaemonError> {
        let mut queues = vec![open_queue(queue_num, false)?];
        if let Some(g) = gso_queue {
            queues.push(open_queue(g, true)?);
        }
        Ok(Dataplane {
            engine,
            queues,
            raw,
            held: HashMap::new(),
            buf: Vec::with_capacity(65_536),
            next_tag: 1,
            events: None,
            events_failing: false,
            control: None,
            discard_log: (0, Timestamp(0)),
            control_checked: Timestamp(0),
            updates: None,
            generation: 0,
            deferred: Vec::new(),
            dde_pass_list: None,
            passed_copies: None,
            awake: Default::default(),
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
        self.events =
            Some((std::fs::OpenOptions::new().create(true).append(true).open(path)?, Vec::with_capacity(512)));
        Ok(())
    }

    /// Keeps the kernel's list of destinations whose DDEs pass unseen (the `xt_recent` file the
    /// rules match on, [`crate::rules::dde_pass_list_path`]) as the engine says.
    pub fn pass_ddes_via(&mut self, path: &std::path::Path) -> Result<(), DaemonError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| DaemonError::Netfilter(format!("{}: {e} (is the GSCIP chain installed?)", path.display())))?;
        self.dde_pass_list = Some(file);
        Ok(())
    }

    /// Takes part in the MPITs the kernel lets pass from their copies in `group` (bound before
    /// the rules that log to it are installed).
    pub fn take_copies_from(&mut self, group: crate::nflog::LogGroup) {
        self.passed_copies = Some(group);
    }

    /// Hands the engine the copies waiting, before the queues' packets: a flow's first packet,
    /// released right behind its MPIT, then finds the entry the copy made. Says whether there
    /// were any.
    fn receive_copies(&mut self) -> Result<bool, DaemonError> {
        let Some(group) = self.passed_copies.as_mut() else { return Ok(false) };
        let n = match group.recv_all() {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                // The MPITs passed; this GE meets the flows' packets without an entry and
                // negotiates anew for them (docs/dprp.md section 15).
                tracing::warn!("the NFLOG socket overflowed: the kernel dropped copies of MPITs");
                return Ok(true);
            }
            Err(e) => return Err(DaemonError::Netfilter(format!("receiving from NFLOG: {e}"))),
        };
        for k in 0..n {
            self.buf.clear();
            if let Some(group) = &self.passed_copies {
                self.buf.extend_from_slice(group.copy(k));
            }
            self.engine.handle_passed_copy(now(), &mut self.buf);
            self.transmit(Urgent::Only)?;
        }
        Ok(n > 0)
    }

    /// Hands the engine's changes of DDE passes to the kernel: one `+ADDR` or `-ADDR` per write,
    /// each at offset 0 (xt_recent refuses any other, and `pwrite` on its file). A change the
    /// kernel refuses leaves the DDE coming to the engine (or, after a refused removal,
    /// answered by the engine from the host's "port unreachable"; docs/dprp.md §13).
    fn update_dde_passes(&mut self) {
        use std::io::{Seek, Write};
        while let Some(change) = self.engine.poll_dde_pass() {
            let Some(f) = self.dde_pass_list.as_mut() else { continue };
            let line = format!("{}{}\n", if change.pass { '+' } else { '-' }, change.addr);
            if let Err(e) = f.rewind().and_then(|()| f.write_all(line.as_bytes())) {
                tracing::warn!(error = %e, addr = %change.addr, pass = change.pass, "updating the kernel's DDE pass list");
            }
        }
    }

    /// Runs until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), DaemonError> {
        let queue_fds: Vec<i32> = self.queues.iter().map(|q| q.raw_fd()).collect();
        let mut budget = AwakeBudget::new(now());
        while !stop.load(Ordering::Relaxed) {
            let turn = now();
            let mut busy = self.receive_pass()?;
            let t = now();
            if self.engine.poll_timeout().is_some_and(|at| at <= t) {
                self.engine.handle_timeout(t);
                busy = true;
            }
            self.apply_updates();
            // What the engine sends and the verdicts first, the log after: a held packet's
            // release does not wait for a log line.
            self.send_verdicts(Urgent::Only)?;
            if busy && (!self.deferred.is_empty() || self.engine.has_due_cdns() || self.engine.has_events()) {
                // A verdict may have provoked a packet at once (the SYN-ACK of a SYN just
                // delivered to this host, a SYN queued behind the MPIT it waited for): it goes
                // before the work that can wait (a CDN, the log lines), one pass more.
                if self.receive_pass()? {
                    self.send_verdicts(Urgent::Only)?;
                }
            }
            // The CDNs owed, signed now that the verdicts are out.
            self.send_verdicts(Urgent::AndTheRest)?;
            let mut deferred = std::mem::take(&mut self.deferred);
            for packet in deferred.drain(..) {
                self.send_own(&packet);
            }
            self.deferred = deferred; // kept with its capacity
            self.report();
            self.update_dde_passes();
            if busy {
                // Work that is due soon is done even when busy, one piece each per turn: an
                // agreement for an MPIT on its way (docs/dprp.md section 12), and a path key,
                // which spares the signature checks of every later negotiation with that GE (a
                // burst of new flows would otherwise never leave an idle moment for either).
                self.engine.agree_ahead();
                self.engine.make_path_key();
                self.look_for_status_requests(t);
                continue;
            }
            // Idle: work ahead of need (an ephemeral key for a coming negotiation), one step at
            // a time, looking at the queue between steps; while a new flow's steps are under
            // way, only what a flow in flight needs soon (docs/dprp.md section 16).
            let t = now();
            let awake = self.engine.stay_awake_until(t).is_some();
            let worked = if awake { self.engine.prepare_soon() } else { self.engine.prepare() };
            if worked {
                continue;
            }
            // A new flow's next packet is due within microseconds: look again rather than sleep
            // (a sleeping daemon takes tens of them to wake), yielding the CPU to whoever has
            // work, within the budget.
            if awake && budget.allows(t) {
                let took = budget.yield_cpu(turn);
                self.awake.looks += 1;
                self.awake.us += took;
                self.look_for_status_requests(t);
                continue;
            }
            // Sleep until a packet, a status request, new credentials, the next timer, or (to
            // notice `stop`) a quarter of a second. Only what poll() found ready is served: an
            // accept() that finds nobody still costs the kernel a socket's allocation.
            let until = self.engine.poll_timeout().map(|at| at.0.saturating_sub(now().0));
            let us = until.unwrap_or(IDLE_WAIT_US).min(IDLE_WAIT_US);
            let control = self.control.as_ref().map_or(-1, |c| c.raw_fd());
            let wake = self.updates.as_ref().map_or(-1, |(u, _)| u.wake_fd());
            let gso = queue_fds.get(GSO_QUEUE).copied().unwrap_or(-1);
            let copies = self.passed_copies.as_ref().map_or(-1, |g| g.raw_fd());
            let [_, _, _, control_ready, wake_ready] =
                readable(&[queue_fds[PACKET_QUEUE], gso, copies, control, wake], us);
            if control_ready {
                if let Some(c) = &self.control {
                    c.serve(&self.engine, &self.awake);
                }
            }
            if wake_ready {
                if let Some((u, _)) = &mut self.updates {
                    u.drain_wake();
                }
            }
        }
        // Whatever is still held goes out as dropped rather than stuck in the kernel queue.
        for (_, (qi, id, _)) in self.held.drain() {
            let _ = self.queues[qi].verdict(id, NfVerdict::Drop, None, None);
        }
        for q in &mut self.queues {
            let _ = q.flush();
        }
        Ok(())
    }

    /// While the loop does not sleep (packets keep coming, or it stays awake for a new flow), a
    /// status request is looked for now and then.
    fn look_for_status_requests(&mut self, t: Timestamp) {
        if let Some(c) = &self.control {
            if t.0.saturating_sub(self.control_checked.0) >= CONTROL_CHECK_US {
                if readable(&[c.raw_fd()], 0)[0] {
                    c.serve(&self.engine, &self.awake);
                }
                self.control_checked = t;
            }
        }
    }

    /// Takes what each queue holds (up to a batch) and hands it to the engine; says whether
    /// there was anything.
    fn receive_pass(&mut self) -> Result<bool, DaemonError> {
        let mut busy = self.receive_copies()?;
        for qi in 0..self.queues.len() {
            match self.queues[qi].recv_batch() {
                Ok(_) => {
                    busy = true;
                    for k in 0..self.queues[qi].packets().len() {
                        let p = self.queues[qi].packets()[k];
                        self.handle(qi, &p)?;
                        // In the engine's order: a held packet released by this packet
                        // (behind the MPIT it sends) goes out before the packets after it.
                        self.transmit(Urgent::Only)?;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    tracing::warn!("the NFQUEUE socket overflowed: the kernel dropped packets (fail-closed)");
                }
                Err(e) => return Err(DaemonError::Netfilter(format!("receiving from NFQUEUE: {e}"))),
            }
        }
        Ok(busy)
    }

    /// Sends what the engine wants sent and the verdicts given so far.
    fn send_verdicts(&mut self, urgent: Urgent) -> Result<(), DaemonError> {
        self.transmit(urgent)?;
        let mut refused = 0;
        for q in &mut self.queues {
            q.flush().map_err(|e| DaemonError::Netfilter(format!("verdicts: {e}")))?;
            refused += q.take_errors();
        }
        if refused > 0 {
            tracing::warn!(refused, "the kernel refused verdicts");
        }
        Ok(())
    }

    fn handle(&mut self, qi: usize, p: &crate::nfqueue::Packet) -> Result<(), DaemonError> {
        let original = self.queues[qi].payload(p);
        if let Injector::Link(l) = &mut self.raw {
            l.learn(original, p.hw_addr(), p.indev);
        }
        if p.cap_len.is_some() {
            // Longer than the kernel copies up (BIG TCP): never given back with a payload. From
            // the GSO queue it comes back in segments; anything else cannot be handled.
            return if qi == GSO_QUEUE {
                self.verdict(qi, p.id, NfVerdict::Repeat, Some(p.mark | SEGMENT_MARK), None)
            } else {
                self.verdict(qi, p.id, NfVerdict::Drop, None, None)
            };
        }
        self.buf.clear();
        self.buf.extend_from_slice(original);
        let len_before = self.buf.len();
        let tag = self.next_tag;
        self.next_tag += 1;
        let ctx = PacketContext { tag, gso: p.is_gso(), can_segment: qi == GSO_QUEUE };
        let verdict = self.engine.handle_packet_in(now(), &mut self.buf, ctx);
        let discarded = verdict == Verdict::Drop(gscip_core::DropReason::Discarded);
        if discarded {
            self.log_discard(qi, p);
        }
        // Decided without cryptography: hand the rest of the flow to the kernel (the packet
        // goes through the hook again with the fast-path bits, which the rules save). A sealed
        // or opened packet changed length and never qualifies: skip the lookup for it.
        let unchanged = self.buf.len() == len_before;
        if (verdict == Verdict::Accept && unchanged) || discarded {
            let packet = if verdict == Verdict::Accept { self.buf.as_slice() } else { self.queues[qi].payload(p) };
            if let Some(fast) = self.engine.fast_path(packet) {
                let mark = self.fast_path_mark(fast, p.mark);
                return self.verdict(qi, p.id, NfVerdict::Repeat, Some(mark), None);
            }
        }
        match verdict {
            Verdict::Accept => {
                let changed = self.buf.len() != len_before || self.buf.as_slice() != self.queues[qi].payload(p);
                let payload = changed.then_some(self.buf.as_slice());
                give_verdict(&mut self.queues[qi], p.id, NfVerdict::Accept, None, payload)
            }
            Verdict::Held => {
                self.held.insert(tag, (qi, p.id, p.mark));
                Ok(())
            }
            // Back through the hook, to the per-packet queue: the kernel cuts it into segments.
            Verdict::Segment => self.verdict(qi, p.id, NfVerdict::Repeat, Some(p.mark | SEGMENT_MARK), None),
            // Sealed, back through the hook once more: the rules clear the flow's segment bit
            // and let the packet pass.
            Verdict::Unsegment => {
                let mark = (p.mark & !SEGMENT_MARK) | UNITS_MARK;
                give_verdict(&mut self.queues[qi], p.id, NfVerdict::Repeat, Some(mark), Some(&self.buf))
            }
            Verdict::Drop(_) | Verdict::Consumed => self.verdict(qi, p.id, NfVerdict::Drop, None, None),
        }
    }

    /// The mark that hands the rest of a packet's flow to the kernel: the packet's `mark` with
    /// the fast-path bits of `fast` in this generation.
    fn fast_path_mark(&self, fast: FastPath, mark: u32) -> u32 {
        let bits = fast_bits(if fast == FastPath::Pass { FAST_PASS } else { FAST_DROP }, self.generation);
        (mark & !FAST_MASK) | bits
    }

    /// Every discard is counted by the engine; the log shows them one by one up to
    /// [`DISCARD_LOGS_PER_SECOND`], then how many were not shown.
    fn log_discard(&mut self, qi: usize, p: &crate::nfqueue::Packet) {
        if self.discard_log_slot() {
            let packet = self.queues[qi].payload(p);
            let flow = gscip_wire::ip::Datagram::parse(packet).map(|d| d.cid.to_string()).unwrap_or_default();
            tracing::warn!(ge = self.engine.name(), %flow, "discarded");
        }
    }

    /// Whether one more discard may be logged this second (rate limit shared by discarded
    /// packets and flows decided to be discarded); says how many were not, once a second.
    fn discard_log_slot(&mut self) -> bool {
        let t = now();
        let (n, since) = self.discard_log;
        if t.0.saturating_sub(since.0) >= 1_000_000 {
            if n > DISCARD_LOGS_PER_SECOND {
                tracing::warn!(ge = self.engine.name(), suppressed = n - DISCARD_LOGS_PER_SECOND, "more discards");
            }
            self.discard_log = (0, t);
        }
        self.discard_log.0 += 1;
        self.discard_log.0 <= DISCARD_LOGS_PER_SECOND
    }

    fn verdict(
        &mut self,
        qi: usize,
        id: u32,
        v: NfVerdict,
        mark: Option<u32>,
        payload: Option<&[u8]>,
    ) -> Result<(), DaemonError> {
        give_verdict(&mut self.queues[qi], id, v, mark, payload)
    }

    /// Sends what the engine wants sent: its own packets, and the verdicts of packets it held.
    /// `Urgent::Only` leaves what can wait (the end GE's CDN, still to be signed) in the engine,
    /// for after the verdicts.
    fn transmit(&mut self, urgent: Urgent) -> Result<(), DaemonError> {
        loop {
            let next = match urgent {
                Urgent::Only => self.engine.poll_urgent_transmit(),
                Urgent::AndTheRest => self.engine.poll_transmit(),
            };
            let Some(t) = next else { break };
            match t.kind {
                TransmitKind::Released => {
                    if let Some((qi, id, mark)) = self.held.remove(&t.tag) {
                        // A flow the kernel may carry from now on (a relaying GEN that held the
                        // flow's first packet until the MPIT or its copy came) is handed over
                        // with that packet, so that its answer does not come here to be marked.
                        match t.fast_path {
                            Some(fast) => {
                                let mark = self.fast_path_mark(fast, mark);
                                self.verdict(qi, id, NfVerdict::Repeat, Some(mark), Some(&t.packet))?
                            }
                            None => self.verdict(qi, id, NfVerdict::Accept, None, Some(&t.packet))?,
                        }
                    }
                    self.engine.recycle(t.packet);
                }
                TransmitKind::Dropped => {
                    if let Some((qi, id, _)) = self.held.remove(&t.tag) {
                        self.verdict(qi, id, NfVerdict::Drop, None, None)?;
                    }
                }
                TransmitKind::Control if t.deferrable => self.deferred.push(t.packet),
                TransmitKind::Control | TransmitKind::Reject => self.send_own(&t.packet),
            }
        }
        Ok(())
    }

    /// Sends one of the engine's own packets (raw socket, or the GEA's bridge).
    fn send_own(&self, packet: &[u8]) {
        let sent = match &self.raw {
            Injector::Ip(r) => r.send(packet),
            Injector::Link(l) => l.send(packet),
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "sending the daemon's own packet failed");
        }
    }

    /// Logs what happened (and appends it to the events file).
    fn report(&mut self) {
        while let Some(ev) = self.engine.poll_event() {
            match ev {
                Event::FlowDecided { cid, action, summary, provisional } => {
                    // A line per flow at every GE is `debug` (it cost a new flow about 25 µs
                    // per GE at `info`: docs/gscipd.md "Logs"); a flow decided to be discarded
                    // is a discard, logged at `info` within the discards' rate limit.
                    macro_rules! decided {
                        ($level:expr) => {
                            tracing::event!(
                                $level,
                                ge = self.engine.name(),
                                flow = %cid,
                                action = action.as_str(),
                                group = ?summary.group.map(|g| g.0),
                                path = ?summary.path,
                                provisional,
                                "decided"
                            )
                        };
                    }
                    if action == FlowAction::Discard && self.discard_log_slot() {
                        decided!(tracing::Level::INFO);
                    } else {
                        decided!(tracing::Level::DEBUG);
                    }
                    if let Some((f, line)) = self.events.as_mut() {
                        use std::io::Write;
                        let event = DecisionEvent {
                            ge: self.engine.name(),
                            proto: cid.proto.as_str(),
                            src: cid.src,
                            src_port: cid.src_port,
                            dst: cid.dst,
                            dst_port: cid.dst_port,
                            action: action.as_str(),
                            group: summary.group.map(|g| g.0),
                            encrypted_by: summary.encrypted_by.as_deref(),
                            decrypted_by: summary.decrypted_by.as_deref(),
                            path: &summary.path,
                        };
                        // Formatted into a reused buffer, written with one system call.
                        line.clear();
                        if serde_json::to_writer(&mut *line, &event).is_ok() {
                            line.push(b'\n');
                            // Said once until a write succeeds again (a full disk fails them all).
                            match f.write_all(line) {
                                Ok(()) => self.events_failing = false,
                                Err(e) if !self.events_failing => {
                                    self.events_failing = true;
                                    tracing::warn!(error = %e, "writing the events file failed; decisions go unrecorded until it works again");
                                }
                                Err(_) => {}
                            }
                        }
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
    }
}

/// Waits until one of `fds` is readable or `timeout_us` passes (0: only looks), and says which
/// are. A negative descriptor is never ready. The timeout is kept to the microsecond (`ppoll`):
/// rounded down to poll(2)'s milliseconds, a timer less than 1 ms away would turn the wait into
/// a busy loop that takes the CPU from the packets.
#[allow(unsafe_code)]
fn readable<const N: usize>(fds: &[i32; N], timeout_us: u64) -> [bool; N] {
    let mut polled = fds.map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
    let timeout = libc::timespec {
        tv_sec: (timeout_us / 1_000_000) as libc::time_t,
        tv_nsec: ((timeout_us % 1_000_000) * 1000) as libc::c_long,
    };
    // SAFETY: `polled` is a valid array of N pollfd for the duration of the call and its length
    // is passed with it; a negative fd is ignored by ppoll(2). `timeout` is a valid timespec
    // that outlives the call; a null signal mask leaves the mask as it is. The descriptors
    // belong to this process (the queue's socket, the control listener, the GMS link's wake
    // socket) and stay open during the call.
    let n = unsafe { libc::ppoll(polled.as_mut_ptr(), N as libc::nfds_t, &timeout, std::ptr::null()) };
    polled.map(|p| n > 0 && p.revents != 0)
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
fn open_queue(queue_num: u16, gso: bool) -> Result<Queue, DaemonError> {
    Queue::open(queue_num, QUEUE_MAX_LEN, QUEUE_RCVBUF_BYTES, gso)
        .map_err(|e| DaemonError::Netfilter(format!("NFQUEUE {queue_num}: {e}")))
}

/// The benchmark's floor: the same queue, rules and loop shape with no engine; every packet
/// is accepted unchanged. With `gso`, the queue asks for GSO packets whole (the GSO floor). As
/// the daemon stays awake for a new flow's first steps, the floor stays awake for
/// `stay_awake_us` after a packet that opens a TCP connection (SYN set), within the same
/// budget: what DPRP adds is then measured against a loop that waits the same way.
pub fn run_accept_only(queue_num: u16, gso: bool, stay_awake_us: u64, stop: &AtomicBool) -> Result<(), DaemonError> {
    let nf = |e: std::io::Error| DaemonError::Netfilter(format!("NFQUEUE {queue_num}: {e}"));
    let mut queue = open_queue(queue_num, gso)?;
    let mut budget = AwakeBudget::new(now());
    let mut awake_until = Timestamp(0);
    while !stop.load(Ordering::Relaxed) {
        let turn = now();
        match queue.recv_batch() {
            Ok(_) => {
                for k in 0..queue.packets().len() {
                    let p = queue.packets()[k];
                    if stay_awake_us > 0 && opens_tcp_connection(queue.payload(&p)) {
                        awake_until = awake_until.max(Timestamp(turn.0 + stay_awake_us));
                    }
                    queue.verdict(p.id, NfVerdict::Accept, None, None).map_err(nf)?;
                }
                queue.flush().map_err(nf)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let t = now();
                if t < awake_until && budget.allows(t) {
                    budget.yield_cpu(turn);
                    continue;
                }
                readable(&[queue.raw_fd()], IDLE_WAIT_US);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
            Err(e) => return Err(nf(e)),
        }
    }
    Ok(())
}

/// Whether an IP packet is a TCP segment with SYN set (a connection's first or second packet).
fn opens_tcp_connection(packet: &[u8]) -> bool {
    use gscip_wire::ip::{tcp_flags, Datagram};
    Datagram::parse(packet).is_ok_and(|d| d.cid.proto == gscip_wire::L4Proto::Tcp && d.tcp_flags & tcp_flags::SYN != 0)
}

/// How much of its time a loop may spend looking for packets it expects soon instead of
/// sleeping (docs/dprp.md section 16): credit accrues at 1/[`AwakeBudget::SHARE`] of the time
/// passed, up to [`AwakeBudget::MAX_CREDIT_US`], and each look spends what it took (a look
/// that overdraws leaves a debt). A daemon kept awake by a stream of new flows so spends at
/// most a twentieth of a CPU on it.
#[derive(Debug)]
struct AwakeBudget {
    credit_us: i64,
    /// Up to when the credit was counted.
    counted: Timestamp,
}

impl AwakeBudget {
    const SHARE: u64 = 20;
    const MAX_CREDIT_US: u64 = 50_000;

    fn new(now: Timestamp) -> Self {
        AwakeBudget { credit_us: Self::MAX_CREDIT_US as i64, counted: now }
    }

    /// Whether credit is left at `now`.
    fn allows(&mut self, now: Timestamp) -> bool {
        let earned = now.0.saturating_sub(self.counted.0) / Self::SHARE;
        // The remainder of the division stays to be counted next time.
        self.counted = Timestamp(self.counted.0 + earned * Self::SHARE);
        let earned = i64::try_from(earned).unwrap_or(i64::MAX);
        self.credit_us = self.credit_us.saturating_add(earned).min(Self::MAX_CREDIT_US as i64);
        self.credit_us > 0
    }

    fn spend(&mut self, us: u64) {
        self.credit_us = self.credit_us.saturating_sub(i64::try_from(us).unwrap_or(i64::MAX));
    }

    /// One look while awake: yields the CPU to whoever has work, and spends the time since
    /// `turn` began (the empty turn and the yield). Returns that time.
    fn yield_cpu(&mut self, turn: Timestamp) -> u64 {
        std::thread::yield_now();
        let took = now().0.saturating_sub(turn.0);
        self.spend(took);
        took
    }
}

#[cfg(test)]
mod tests {
    use super::{opens_tcp_connection, readable, AwakeBudget};
    use gscip_core::Timestamp;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn readable_says_which_descriptors_have_data() {
        let (a, b) = UnixDatagram::pair().unwrap();
        let (c, d) = UnixDatagram::pair().unwrap();
        assert_eq!(readable(&[b.as_raw_fd(), d.as_raw_fd(), -1], 0), [false, false, false]);
        c.send(b"x").unwrap();
        assert_eq!(readable(&[b.as_raw_fd(), d.as_raw_fd(), -1], 0), [false, true, false]);
        a.send(b"y").unwrap();
        // A timeout under a millisecond is still a wait, and data ends it.
        assert_eq!(readable(&[b.as_raw_fd(), d.as_raw_fd()], 500), [true, true]);
        assert_eq!(readable(&[-1], 0), [false]);
    }

    #[test]
    fn staying_awake_spends_at_most_a_twentieth_of_the_time() {
        let mut b = AwakeBudget::new(Timestamp(0));
        // A loop that looks every 10 µs for 10 s: it spends the 50 ms it starts with, then
        // what it earns, 1/20 of the time, counted a microsecond at a time.
        let (mut t, mut spent) = (0u64, 0u64);
        while t < 10_000_000 {
            if b.allows(Timestamp(t)) {
                b.spend(10);
                spent += 10;
            }
            t += 10;
        }
        assert!((549_990..=550_010).contains(&spent), "{spent} µs spent in 10 s");
        // After two quiet seconds it has its whole credit again, no more.
        let later = Timestamp(t + 2_000_000);
        assert!(b.allows(later));
        b.spend(49_999);
        assert!(b.allows(later));
        b.spend(1);
        assert!(!b.allows(later));
    }

    #[test]
    fn the_floor_knows_a_connection_s_opening_packets() {
        let v4 = |proto: u8, frag: [u8; 2], flags: u8| {
            let mut p = vec![0x45, 0, 0, 40, 0, 0, frag[0], frag[1], 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
            p.extend_from_slice(&[0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, flags, 0, 0, 0, 0, 0, 0]);
            p
        };
        assert!(opens_tcp_connection(&v4(6, [0x40, 0], 0x02)), "SYN");
        assert!(opens_tcp_connection(&v4(6, [0, 0], 0x12)), "SYN-ACK");
        assert!(!opens_tcp_connection(&v4(6, [0, 0], 0x10)), "ACK");
        assert!(!opens_tcp_connection(&v4(17, [0, 0], 0x02)), "UDP");
        assert!(!opens_tcp_connection(&v4(6, [0, 9], 0x02)), "a later fragment");
        assert!(!opens_tcp_connection(&v4(6, [0, 0], 0x02)[..30]), "cut short");
        let mut v6 = vec![0x60, 0, 0, 0, 0, 20, 6, 64];
        v6.extend_from_slice(&[0; 32]);
        v6.extend_from_slice(&[0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0, 0, 0, 0, 0, 0]);
        assert!(opens_tcp_connection(&v6));
        assert!(!opens_tcp_connection(&[]));
    }
}
