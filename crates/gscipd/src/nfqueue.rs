//! NFQUEUE over the daemon's own netlink socket, written for the data plane's loop:
//!
//! * **batched receive**: one `recvmmsg(2)` takes up to [`BATCH`] queued packets;
//! * **batched verdicts**: verdicts are appended to one buffer and leave in one `send(2)` (the
//!   kernel's netfilter netlink handler processes every message of a datagram in order);
//! * **no allocation per packet**: receive buffers, the packet descriptors and the verdict
//!   buffer are allocated once and reused;
//! * a packet kept without a verdict (held by the engine) costs its 32-bit id, not a buffer.
//!
//! Why not the `nfq` crate (used before): it receives one packet per system call and sends one
//! verdict per system call, allocates a fresh 64 KiB buffer whenever a message is still alive
//! (every held packet), and turns an error report from the kernel into a receive error.
//!
//! The message formats are those of `linux/netfilter/nfnetlink_queue.h`; parsing is safe code
//! over byte slices ([`parse_message`], fuzzed by the `nfqueue_message` target). The system
//! calls are the module's only `unsafe` code.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The longest packet a verdict can carry (a netlink attribute's length is 16 bits, header
/// included) and the kernel copies up at most.
pub const MAX_PAYLOAD: usize = 65_535 - 4;
/// Packets taken per receive at most.
pub const BATCH: usize = 32;
/// One receive buffer: a whole packet (copy range 65,535) and its attributes.
const RECV_BUF: usize = 65_535 + 4_096;
/// Verdicts are sent when the buffer passes this many bytes (and at the end of every batch).
const SEND_FLUSH: usize = 192 * 1024;

const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLM_F_REQUEST: u16 = 1;
pub(crate) const NLM_F_ACK: u16 = 4;

const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_MARK: u16 = 3;
const NFQA_IFINDEX_INDEV: u16 = 5;
const NFQA_HWADDR: u16 = 9;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CAP_LEN: u16 = 13;
const NFQA_SKB_INFO: u16 = 14;

const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_PACKET: u8 = 2;
const NFQA_CFG_F_FAIL_OPEN: u32 = 1;
/// Packets the kernel would segment (GSO, merged by GRO) come up whole, up to 64 KiB.
const NFQA_CFG_F_GSO: u32 = 1 << 2;

/// Bits of `NFQA_SKB_INFO`: what the kernel says of a packet's buffer.
pub mod skb_info {
    /// The TCP/UDP checksum is partial (left to the device): only the pseudo-header is summed.
    pub const CSUM_NOT_READY: u32 = 1 << 0;
    /// A GSO packet (a sender's TCP segments not cut yet, or segments GRO merged).
    pub const GSO: u32 = 1 << 1;
    /// The checksum was not verified on receipt.
    pub const CSUM_NOT_VERIFIED: u32 = 1 << 2;
}

pub(crate) const NLMSG_HDRLEN: usize = 16;
pub(crate) const NFGENMSG_LEN: usize = 4;

/// What to do with a queued packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Drop,
    Accept,
    /// Through the same hook again (with a new mark, for the kernel fast path).
    Repeat,
}

impl Verdict {
    fn code(self) -> u32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
            Verdict::Repeat => 4,
        }
    }
}

/// What the kernel says of a queued packet, besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketMeta {
    pub id: u32,
    pub mark: u32,
    pub indev: u32,
    /// [`skb_info`] bits.
    pub skb_info: u32,
    /// The packet's length when the kernel passed up less of it (`NFQA_CAP_LEN`): such a
    /// packet must never be given back with a payload (it would be cut short).
    pub cap_len: Option<u32>,
    hw_addr: [u8; 8],
    hw_len: u8,
}

impl PacketMeta {
    /// A packet's description with the given link-layer source address (at most 8 bytes kept).
    pub fn new(id: u32, mark: u32, indev: u32, hw: Option<&[u8]>) -> Self {
        let mut m = PacketMeta { id, mark, indev, ..PacketMeta::default() };
        if let Some(hw) = hw {
            let n = hw.len().min(8);
            m.hw_addr[..n].copy_from_slice(&hw[..n]);
            m.hw_len = n as u8;
        }
        m
    }

    /// The same with these [`skb_info`] bits and capture length.
    pub fn with_info(self, skb_info: u32, cap_len: Option<u32>) -> Self {
        PacketMeta { skb_info, cap_len, ..self }
    }

    /// The link-layer source address the kernel saw, if any.
    pub fn hw_addr(&self) -> Option<&[u8]> {
        (self.hw_len > 0).then(|| &self.hw_addr[..usize::from(self.hw_len)])
    }

    /// A GSO packet: longer than one segment, to be cut by the kernel after the verdict.
    pub fn is_gso(&self) -> bool {
        self.skb_info & skb_info::GSO != 0
    }

    /// Its TCP/UDP checksum is partial (only the pseudo-header summed): not to be checked.
    pub fn checksum_not_ready(&self) -> bool {
        self.skb_info & skb_info::CSUM_NOT_READY != 0
    }
}

/// A queued packet; its bytes stay in the receive buffer until the next receive
/// ([`Queue::payload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub meta: PacketMeta,
    buffer: u16,
    start: u32,
    end: u32,
}

impl std::ops::Deref for Packet {
    type Target = PacketMeta;
    fn deref(&self) -> &PacketMeta {
        &self.meta
    }
}

/// A netlink message from the queue's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// A packet; `start..end` is its payload within the message.
    Packet { meta: PacketMeta, start: usize, end: usize },
    /// An error (or acknowledgement, 0) the kernel reports for a message we sent, with the
    /// sequence number of that message.
    Error { errno: i32, seq: u32 },
    /// Anything else (ignored).
    Other,
}

/// Why bytes from the socket are not a netlink message we understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than its header says, or than a header.
    Truncated,
    /// A packet message without its packet header or payload.
    Incomplete,
}

pub(crate) fn u16_ne(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|x| u16::from_ne_bytes([x[0], x[1]]))
}
pub(crate) fn u32_ne(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4).map(|x| u32::from_ne_bytes([x[0], x[1], x[2], x[3]]))
}
pub(crate) fn u32_be(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4).map(|x| u32::from_be_bytes([x[0], x[1], x[2], x[3]]))
}

pub(crate) const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Splits a datagram from the socket into its netlink messages: `(offset, length)` of each.
pub fn split_messages(datagram: &[u8]) -> impl Iterator<Item = Result<(usize, usize), ParseError>> + '_ {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at + NLMSG_HDRLEN > datagram.len() {
            return None;
        }
        let len = u32_ne(datagram, at).map_or(0, |l| l as usize);
        if len < NLMSG_HDRLEN || at + len > datagram.len() {
            at = datagram.len();
            return Some(Err(ParseError::Truncated));
        }
        let item = (at, len);
        at += align4(len);
        Some(Ok(item))
    })
}

/// An error report (or acknowledgement, errno 0) of one netlink message `msg` (its header's
/// length already checked): `(errno, the sequence number of the message it answers)`; `None`
/// for any other message.
pub(crate) fn netlink_error(msg: &[u8]) -> Option<Result<(i32, u32), ParseError>> {
    if u16_ne(msg, 4)? != NLMSG_ERROR {
        return None;
    }
    let Some(errno) = u32_ne(msg, NLMSG_HDRLEN) else { return Some(Err(ParseError::Truncated)) };
    // The original message's header follows the error code.
    let seq = u32_ne(msg, NLMSG_HDRLEN + 4 + 8).unwrap_or(0);
    // The kernel sends a negative errno; anything can arrive in a fuzzed or corrupt buffer.
    Some(Ok(((errno as i32).saturating_neg(), seq)))
}

/// Sends a request with sequence number `seq` on `fd` and waits (2 s at most) for the kernel's
/// answer; each other message received meanwhile goes to `other`, which may answer it.
pub(crate) fn request(
    fd: &OwnedFd,
    buf: &mut [u8],
    msg: &[u8],
    seq: u32,
    what: &str,
    mut other: impl FnMut(&[u8], &mut Vec<u8>),
) -> io::Result<()> {
    send_on(fd, msg)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut answers = Vec::new();
    loop {
        let n = match recv_on(fd, buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() > deadline {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no answer from {what}")));
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut result = None;
        answers.clear();
        for (at, len) in split_messages(&buf[..n]).flatten() {
            let m = &buf[at..at + len];
            match netlink_error(m) {
                Some(Ok((errno, s))) if s == seq => result = Some(errno),
                Some(_) => {}
                None => other(m, &mut answers),
            }
        }
        if !answers.is_empty() {
            send_on(fd, &answers)?;
        }
        if let Some(errno) = result {
            return if errno == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(errno)) };
        }
    }
}

/// What [`parse_nfnl`] found in one netlink message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nfnl {
    /// A message of the kind asked for; its attributes went to the callback.
    Attributes,
    /// An error report (or acknowledgement, errno 0) with the sequence number it answers.
    Error { errno: i32, seq: u32 },
    /// Anything else.
    Other,
}

/// Parses one netlink message (header included) of a netfilter subsystem: an error report, or
/// a message of type `kind` (subsystem and message type), each of whose attributes goes to
/// `attr` as (type, start, end) within `msg`; the message's own header length is checked.
pub(crate) fn parse_nfnl(
    msg: &[u8],
    kind: u16,
    mut attr: impl FnMut(u16, usize, usize) -> Result<(), ParseError>,
) -> Result<Nfnl, ParseError> {
    let len = u32_ne(msg, 0).ok_or(ParseError::Truncated)? as usize;
    if len < NLMSG_HDRLEN || len > msg.len() {
        return Err(ParseError::Truncated);
    }
    let msg = &msg[..len];
    if let Some(error) = netlink_error(msg) {
        let (errno, seq) = error?;
        return Ok(Nfnl::Error { errno, seq });
    }
    if u16_ne(msg, 4).ok_or(ParseError::Truncated)? != kind {
        return Ok(Nfnl::Other);
    }
    let mut at = NLMSG_HDRLEN + NFGENMSG_LEN;
    if at > msg.len() {
        return Err(ParseError::Truncated);
    }
    while at + 4 <= msg.len() {
        let alen = usize::from(u16_ne(msg, at).ok_or(ParseError::Truncated)?);
        let atype = u16_ne(msg, at + 2).ok_or(ParseError::Truncated)? & 0x3fff;
        if alen < 4 || at + alen > msg.len() {
            return Err(ParseError::Truncated);
        }
        attr(atype, at + 4, at + alen)?;
        at += align4(alen);
    }
    Ok(Nfnl::Attributes)
}

/// Parses one netlink message (header included) from the queue's socket.
pub fn parse_message(msg: &[u8]) -> Result<Message, ParseError> {
    let (mut id, mut meta, mut payload) = (None, PacketMeta::default(), None);
    let parsed = parse_nfnl(msg, NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET, |atype, start, end| {
        let value = &msg[start..end];
        match atype {
            NFQA_PACKET_HDR => id = Some(u32_be(value, 0).ok_or(ParseError::Truncated)?),
            NFQA_MARK => meta.mark = u32_be(value, 0).ok_or(ParseError::Truncated)?,
            NFQA_IFINDEX_INDEV => meta.indev = u32_be(value, 0).ok_or(ParseError::Truncated)?,
            NFQA_HWADDR => {
                // struct nfqnl_msg_packet_hw { __be16 hw_addrlen; __u16 _pad; __u8 hw_addr[8]; }
                let n = value.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or(ParseError::Truncated)?;
                let n = usize::from(n).min(8);
                let addr = value.get(4..4 + n).ok_or(ParseError::Truncated)?;
                // A later address attribute replaces an earlier one whole.
                meta.hw_addr = [0; 8];
                meta.hw_addr[..n].copy_from_slice(addr);
                meta.hw_len = n as u8;
            }
            NFQA_PAYLOAD => payload = Some((start, end)),
            NFQA_SKB_INFO => meta.skb_info = u32_be(value, 0).ok_or(ParseError::Truncated)?,
            NFQA_CAP_LEN => meta.cap_len = Some(u32_be(value, 0).ok_or(ParseError::Truncated)?),
            _ => {}
        }
        Ok(())
    })?;
    match parsed {
        Nfnl::Error { errno, seq } => return Ok(Message::Error { errno, seq }),
        Nfnl::Other => return Ok(Message::Other),
        Nfnl::Attributes => {}
    }
    match (id, payload) {
        (Some(id), Some((start, end))) => Ok(Message::Packet { meta: PacketMeta { id, ..meta }, start, end }),
        _ => Err(ParseError::Incomplete),
    }
}

/// Appends a netlink message header (length filled in by [`finish_message`]) and nfgenmsg.
fn begin_message(buf: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, queue_num: u16) -> usize {
    begin_nfnl_message(buf, NFNL_SUBSYS_QUEUE, kind, flags, seq, queue_num)
}

/// The same for any netfilter subsystem; `res_id` is the queue or log group.
pub(crate) fn begin_nfnl_message(
    buf: &mut Vec<u8>,
    subsys: u16,
    kind: u16,
    flags: u16,
    seq: u32,
    res_id: u16,
) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&(subsys << 8 | kind).to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&[0 /* AF_UNSPEC */, 0 /* NFNETLINK_V0 */]);
    buf.extend_from_slice(&res_id.to_be_bytes());
    start
}

pub(crate) fn attribute(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len() + (align4(len) - len), 0);
}

pub(crate) fn finish_message(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

/// Appends a verdict message for packet `id`.
pub fn encode_verdict(
    buf: &mut Vec<u8>,
    queue_num: u16,
    id: u32,
    verdict: Verdict,
    mark: Option<u32>,
    payload: Option<&[u8]>,
) {
    let start = begin_message(buf, NFQNL_MSG_VERDICT, NLM_F_REQUEST, 0, queue_num);
    let mut hdr = [0u8; 8];
    hdr[..4].copy_from_slice(&verdict.code().to_be_bytes());
    hdr[4..].copy_from_slice(&id.to_be_bytes());
    attribute(buf, NFQA_VERDICT_HDR, &hdr);
    if let Some(m) = mark {
        attribute(buf, NFQA_MARK, &m.to_be_bytes());
    }
    if let (Some(p), false) = (payload, verdict == Verdict::Drop) {
        attribute(buf, NFQA_PAYLOAD, p);
    }
    finish_message(buf, start);
}

/// Appends a packet message as the kernel builds it (for tests and fuzz seeds).
pub fn encode_packet(buf: &mut Vec<u8>, queue_num: u16, meta: &PacketMeta, payload: &[u8]) {
    let start = begin_message(buf, NFQNL_MSG_PACKET, 0, 0, queue_num);
    let mut hdr = [0u8; 7];
    hdr[..4].copy_from_slice(&meta.id.to_be_bytes());
    hdr[4..6].copy_from_slice(&0x0800u16.to_be_bytes());
    attribute(buf, NFQA_PACKET_HDR, &hdr);
    attribute(buf, NFQA_MARK, &meta.mark.to_be_bytes());
    attribute(buf, NFQA_IFINDEX_INDEV, &meta.indev.to_be_bytes());
    if let Some(hw) = meta.hw_addr() {
        let mut v = [0u8; 12];
        v[..2].copy_from_slice(&(hw.len() as u16).to_be_bytes());
        v[4..4 + hw.len()].copy_from_slice(hw);
        attribute(buf, NFQA_HWADDR, &v);
    }
    if meta.skb_info != 0 {
        attribute(buf, NFQA_SKB_INFO, &meta.skb_info.to_be_bytes());
    }
    if let Some(len) = meta.cap_len {
        attribute(buf, NFQA_CAP_LEN, &len.to_be_bytes());
    }
    attribute(buf, NFQA_PAYLOAD, payload);
    finish_message(buf, start);
}

/// A non-blocking netfilter netlink socket, bound (the kernel assigns the port id), with
/// `rcvbuf` bytes of receive buffer (`SO_RCVBUFFORCE`: root may exceed `net.core.rmem_max`);
/// `what` names it in warnings.
#[allow(unsafe_code)]
pub(crate) fn open_netfilter_socket(rcvbuf: i32, what: &str) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the returned descriptor is owned by the OwnedFd at once.
    let raw = check(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::NETLINK_NETFILTER,
        )
    })?;
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: an all-zero sockaddr_nl is valid (port id 0: the kernel assigns one).
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `addr` is a live sockaddr_nl and its size is passed with it.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    })?;
    for (opt, value) in [(libc::SO_RCVBUFFORCE, rcvbuf), (libc::SO_SNDBUFFORCE, 4 << 20)] {
        // SAFETY: the option value is a live i32 whose size is passed with it.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&value as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            tracing::warn!("{what}: socket buffer option {opt}: {}", io::Error::last_os_error());
        }
    }
    Ok(fd)
}

/// Receives one datagram into `buf` without blocking (the socket is non-blocking).
#[allow(unsafe_code)]
pub(crate) fn recv_on(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a live, writable buffer of the length passed.
    let n = check(unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) } as libc::c_int)?;
    Ok(n as usize)
}

/// Sends `data` as one datagram.
#[allow(unsafe_code)]
pub(crate) fn send_on(fd: &OwnedFd, data: &[u8]) -> io::Result<()> {
    // SAFETY: `data` is a live buffer of the length passed.
    let n = unsafe { libc::send(fd.as_raw_fd(), data.as_ptr().cast(), data.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One bound queue.
pub struct Queue {
    fd: OwnedFd,
    queue_num: u16,
    bufs: Vec<Vec<u8>>,
    packets: Vec<Packet>,
    send: Vec<u8>,
    seq: u32,
    /// Error reports from the kernel seen since the last [`Queue::take_errors`].
    errors: u64,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("queue_num", &self.queue_num).finish_non_exhaustive()
    }
}

pub(crate) fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

impl Queue {
    /// Opens a netfilter netlink socket and binds queue `queue_num`: whole packets,
    /// fail-closed (a full queue drops), at most `max_len` packets queued, `rcvbuf` bytes of
    /// socket buffer (`SO_RCVBUFFORCE`: root may exceed `net.core.rmem_max`). With `gso`, the
    /// kernel hands up GSO packets unsegmented, up to [`MAX_PAYLOAD`] bytes (NFQUEUE's GSO
    /// flag: the daemon's TCP queue, and the benchmark's GSO floor), with their checksums as
    /// they are (a partial one is not completed: [`PacketMeta::checksum_not_ready`]).
    #[allow(unsafe_code)]
    pub fn open(queue_num: u16, max_len: u32, rcvbuf: i32, gso: bool) -> io::Result<Queue> {
        let fd = open_netfilter_socket(rcvbuf, &format!("NFQUEUE {queue_num}"))?;
        let mut q = Queue {
            fd,
            queue_num,
            bufs: (0..BATCH).map(|_| vec![0u8; RECV_BUF]).collect(),
            packets: Vec::with_capacity(BATCH),
            send: Vec::with_capacity(SEND_FLUSH + RECV_BUF),
            seq: 0,
            errors: 0,
        };
        q.configure(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0])?;
        let mut params = [0u8; 5];
        params[..4].copy_from_slice(&(MAX_PAYLOAD as u32).to_be_bytes());
        params[4] = NFQNL_COPY_PACKET;
        q.configure(NFQA_CFG_PARAMS, &params)?;
        q.configure(NFQA_CFG_QUEUE_MAXLEN, &max_len.to_be_bytes())?;
        // Fail-closed: clear the fail-open flag; the GSO flag as asked.
        let mut flags = Vec::with_capacity(16);
        let set = if gso { NFQA_CFG_F_GSO } else { 0 };
        attribute(&mut flags, NFQA_CFG_MASK, &(NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO).to_be_bytes());
        attribute(&mut flags, NFQA_CFG_FLAGS, &set.to_be_bytes());
        q.configure_raw(&flags)?;
        Ok(q)
    }

    fn configure(&mut self, kind: u16, value: &[u8]) -> io::Result<()> {
        let mut attrs = Vec::with_capacity(16);
        attribute(&mut attrs, kind, value);
        self.configure_raw(&attrs)
    }

    /// Sends a configuration message with these attributes and waits for its acknowledgement.
    fn configure_raw(&mut self, attrs: &[u8]) -> io::Result<()> {
        self.seq += 1;
        let seq = self.seq;
        let mut msg = Vec::with_capacity(64);
        let start = begin_message(&mut msg, NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, self.queue_num);
        msg.extend_from_slice(attrs);
        finish_message(&mut msg, start);
        let queue_num = self.queue_num;
        request(&self.fd, &mut self.bufs[0], &msg, seq, "nfnetlink_queue", |m, answers| {
            // The rules of a previous run may queue packets before the queue is set up (they
            // stay when a daemon dies, so that the boundary stays closed): drop them
            // (fail-closed) rather than leave them without a verdict.
            if let Ok(Message::Packet { meta, .. }) = parse_message(m) {
                encode_verdict(answers, queue_num, meta.id, Verdict::Drop, None, None);
            }
        })
    }

    fn send_all(&self, data: &[u8]) -> io::Result<()> {
        send_on(&self.fd, data)
    }

    /// The socket, for `poll(2)`.
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Receives what is queued, up to [`BATCH`] packets, without blocking; the packets are
    /// then [`Queue::packets`] (until the next call). `WouldBlock` when nothing is queued;
    /// ENOBUFS when the kernel had to drop messages (fail-closed) because the socket was full.
    #[allow(unsafe_code)]
    pub fn recv_batch(&mut self) -> io::Result<usize> {
        self.packets.clear();
        let mut iov: [libc::iovec; BATCH] =
            std::array::from_fn(|_| libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 });
        for (v, b) in iov.iter_mut().zip(self.bufs.iter_mut()) {
            v.iov_base = b.as_mut_ptr().cast();
            v.iov_len = b.len();
        }
        // SAFETY: an all-zero mmsghdr is valid; each gets one iovec below.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs` holds BATCH headers, each pointing at one live iovec that points at a
        // live buffer of the stated length; all outlive the call.
        let n = check(unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        })? as usize;
        for (slot, m) in msgs.iter().enumerate().take(n) {
            let len = (m.msg_len as usize).min(RECV_BUF);
            let buf = &self.bufs[slot][..len];
            for (at, mlen) in split_messages(buf).flatten() {
                match parse_message(&buf[at..at + mlen]) {
                    Ok(Message::Packet { meta, start, end }) => self.packets.push(Packet {
                        meta,
                        buffer: slot as u16,
                        start: (at + start) as u32,
                        end: (at + end) as u32,
                    }),
                    Ok(Message::Error { errno, .. }) if errno != 0 => {
                        self.errors += 1;
                        tracing::debug!("NFQUEUE {}: the kernel refused a verdict: errno {errno}", self.queue_num);
                    }
                    _ => {}
                }
            }
        }
        Ok(n)
    }

    /// The packets of the last [`Queue::recv_batch`].
    pub fn packets(&self) -> &[Packet] {
        &self.packets
    }

    /// A packet's bytes (valid until the next receive).
    pub fn payload(&self, p: &Packet) -> &[u8] {
        &self.bufs[usize::from(p.buffer)][p.start as usize..p.end as usize]
    }

    /// Queues a verdict (sent by [`Queue::flush`], or at once when the buffer is full).
    pub fn verdict(&mut self, id: u32, verdict: Verdict, mark: Option<u32>, payload: Option<&[u8]>) -> io::Result<()> {
        encode_verdict(&mut self.send, self.queue_num, id, verdict, mark, payload);
        if self.send.len() >= SEND_FLUSH {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends the verdicts queued so far, in one datagram.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.send.is_empty() {
            return Ok(());
        }
        let r = self.send_all(&self.send);
        self.send.clear();
        r
    }

    /// Error reports (refused verdicts) seen since the last call.
    pub fn take_errors(&mut self) -> u64 {
        std::mem::take(&mut self.errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet_message(id: u32, mark: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        let meta = PacketMeta {
            skb_info: skb_info::GSO,
            cap_len: Some(70_000),
            ..PacketMeta::new(id, mark, 3, Some(&[2, 0, 0, 0, 0, 9]))
        };
        encode_packet(&mut m, 7, &meta, payload);
        m
    }

    #[test]
    fn packet_messages_parse_and_bad_ones_are_refused() {
        let m = packet_message(42, 0x100000, b"\x45hello");
        let Ok(Message::Packet { meta, start, end }) = parse_message(&m) else { panic!("{:?}", parse_message(&m)) };
        assert_eq!((meta.id, meta.mark, meta.indev), (42, 0x100000, 3));
        assert_eq!(meta.hw_addr(), Some(&[2, 0, 0, 0, 0, 9][..]));
        assert!(meta.is_gso() && !meta.checksum_not_ready());
        assert_eq!(meta.cap_len, Some(70_000));
        assert_eq!(&m[start..end], b"\x45hello");
        for cut in 0..m.len() {
            assert!(parse_message(&m[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = m.clone();
        bad[NLMSG_HDRLEN + NFGENMSG_LEN] = 200; // an attribute longer than the message
        assert_eq!(parse_message(&bad), Err(ParseError::Truncated));
    }

    #[test]
    fn a_second_address_attribute_replaces_the_first_whole() {
        // Found by the fuzzer: a 6-byte address, then an empty one.
        let mut m = Vec::new();
        let start = begin_message(&mut m, NFQNL_MSG_PACKET, 0, 0, 0);
        attribute(&mut m, NFQA_PACKET_HDR, &[0, 0, 0, 1, 8, 0, 0]);
        attribute(&mut m, NFQA_HWADDR, &[0, 6, 0, 0, 2, 0, 0, 0, 0, 7, 0, 0]);
        attribute(&mut m, NFQA_HWADDR, &[0, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9]);
        attribute(&mut m, NFQA_PAYLOAD, b"x");
        finish_message(&mut m, start);
        let Ok(Message::Packet { meta, .. }) = parse_message(&m) else { panic!() };
        assert_eq!(meta, PacketMeta::new(1, 0, 0, None));
    }

    #[test]
    fn several_messages_in_one_datagram_split() {
        let mut d = packet_message(1, 0, b"abc");
        d.extend(packet_message(2, 0, b"defgh"));
        let ids: Vec<u32> = split_messages(&d)
            .map(|r| match parse_message(&d[r.unwrap().0..]) {
                Ok(Message::Packet { meta, .. }) => meta.id,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(split_messages(&d[..d.len() - 1]).last(), Some(Err(ParseError::Truncated)));
    }

    #[test]
    fn verdicts_encode_as_the_kernel_expects() {
        let mut b = Vec::new();
        encode_verdict(&mut b, 7, 42, Verdict::Accept, Some(0x200000), Some(b"xyz"));
        assert_eq!(u32_ne(&b, 0), Some(b.len() as u32));
        assert_eq!(u16_ne(&b, 4), Some(3 << 8 | 1));
        assert_eq!(&b[18..20], &7u16.to_be_bytes());
        // Verdict header: code 1, id 42, big-endian.
        assert_eq!(&b[24..32], &[0, 0, 0, 1, 0, 0, 0, 42]);
        assert_eq!(u32_be(&b, 36), Some(0x200000));
        assert_eq!(&b[44..47], b"xyz");
        assert_eq!(b.len() % 4, 0);
        // A drop carries no payload.
        let mut d = Vec::new();
        encode_verdict(&mut d, 7, 1, Verdict::Drop, None, Some(b"ignored"));
        assert_eq!(d.len(), NLMSG_HDRLEN + NFGENMSG_LEN + 12);
    }

    #[test]
    fn error_reports_carry_the_sequence_number() {
        let mut m = Vec::new();
        m.extend_from_slice(&36u32.to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&(-2i32).to_ne_bytes());
        // The original header: len, type, flags, seq 77, pid.
        m.extend_from_slice(&20u32.to_ne_bytes());
        m.extend_from_slice(&[0; 4]);
        m.extend_from_slice(&77u32.to_ne_bytes());
        m.extend_from_slice(&[0; 4]);
        assert_eq!(parse_message(&m), Ok(Message::Error { errno: 2, seq: 77 }));
        // Found by the fuzzer: the most negative error code.
        m[16..20].copy_from_slice(&i32::MIN.to_ne_bytes());
        assert_eq!(parse_message(&m), Ok(Message::Error { errno: i32::MAX, seq: 77 }));
    }
}
