//! Copies of packets the kernel lets pass, from an NFLOG group (`nfnetlink_log`), over the
//! daemon's own netlink socket.
//!
//! A GEN's rules let the MPITs toward destinations it is not the end GE for pass at once
//! (docs/dprp.md section 15) and log a copy of each to the daemon's group (`-j NFLOG
//! --nflog-group`); the engine takes part in the negotiation from the copy
//! (`Engine::handle_passed_copy`). The group is set up to copy whole packets and to send each
//! at once (a queue threshold of one), not batched for a second as by default.
//!
//! The message formats are those of `linux/netfilter/nfnetlink_log.h`; parsing is safe code
//! over byte slices ([`parse_log_message`], fuzzed by the `nflog_message` target). The socket's
//! system calls are those of [`crate::nfqueue`].

use crate::nfqueue::{
    attribute, begin_nfnl_message, finish_message, open_netfilter_socket, parse_nfnl, recv_on, request, split_messages,
    Nfnl, ParseError, NLM_F_ACK, NLM_F_REQUEST,
};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;

const NFULA_PAYLOAD: u16 = 9;

const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_NLBUFSIZ: u16 = 3;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;

/// The longest copy the kernel is asked for (a whole DPRP message).
const COPY_RANGE: u32 = 0xffff;
/// One receive buffer: a whole copy and its attributes.
const RECV_BUF: usize = 65_535 + 4_096;
/// Datagrams taken per [`LogGroup::recv_all`] at most, so that a flood of copies cannot keep
/// the daemon from its queues.
const RECV_MAX: usize = 32;

/// A netlink message from the log group's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogMessage {
    /// A copy; `start..end` is the packet within the message.
    Copy { start: usize, end: usize },
    /// An error (or acknowledgement, 0) for a message we sent, with its sequence number.
    Error { errno: i32, seq: u32 },
    /// Anything else (ignored).
    Other,
}

/// Parses one netlink message (header included) from the log group's socket.
pub fn parse_log_message(msg: &[u8]) -> Result<LogMessage, ParseError> {
    let mut payload = None;
    let parsed = parse_nfnl(msg, NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_PACKET, |atype, start, end| {
        if atype == NFULA_PAYLOAD {
            payload = Some((start, end));
        }
        Ok(())
    })?;
    match (parsed, payload) {
        (Nfnl::Error { errno, seq }, _) => Ok(LogMessage::Error { errno, seq }),
        (Nfnl::Other, _) => Ok(LogMessage::Other),
        (Nfnl::Attributes, Some((start, end))) => Ok(LogMessage::Copy { start, end }),
        (Nfnl::Attributes, None) => Err(ParseError::Incomplete),
    }
}

/// Appends a copy message as the kernel builds it (for tests and fuzz seeds).
pub fn encode_log_copy(buf: &mut Vec<u8>, group: u16, packet: &[u8]) {
    let start = begin_nfnl_message(buf, NFNL_SUBSYS_ULOG, NFULNL_MSG_PACKET, 0, 0, group);
    // struct nfulnl_msg_packet_hdr { __be16 hw_protocol; __u8 hook; __u8 _pad; }
    attribute(buf, 1, &[0x08, 0x00, 2, 0]);
    attribute(buf, NFULA_PAYLOAD, packet);
    finish_message(buf, start);
}

/// One bound log group.
pub struct LogGroup {
    fd: OwnedFd,
    group: u16,
    /// Receive buffers, one per datagram of a [`LogGroup::recv_all`] (grown as needed, kept).
    bufs: Vec<Vec<u8>>,
    /// The copies of the last [`LogGroup::recv_all`]: buffer, start, end.
    copies: Vec<(usize, usize, usize)>,
    seq: u32,
}

impl std::fmt::Debug for LogGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogGroup").field("group", &self.group).finish_non_exhaustive()
    }
}

impl LogGroup {
    /// Opens a netfilter netlink socket and binds log group `group`: whole packets, each sent
    /// at once; `rcvbuf` bytes of socket buffer.
    pub fn open(group: u16, rcvbuf: i32) -> io::Result<LogGroup> {
        let fd = open_netfilter_socket(rcvbuf, &format!("NFLOG {group}"))?;
        let mut g =
            LogGroup { fd, group, bufs: vec![vec![0u8; RECV_BUF]], copies: Vec::with_capacity(RECV_MAX), seq: 0 };
        g.configure(NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND])?;
        let mut mode = [0u8; 6];
        mode[..4].copy_from_slice(&COPY_RANGE.to_be_bytes());
        mode[4] = NFULNL_COPY_PACKET;
        g.configure(NFULA_CFG_MODE, &mode)?;
        g.configure(NFULA_CFG_QTHRESH, &1u32.to_be_bytes())?;
        g.configure(NFULA_CFG_NLBUFSIZ, &(RECV_BUF as u32).to_be_bytes())?;
        Ok(g)
    }

    /// Sends one configuration attribute and waits for the kernel's acknowledgement.
    fn configure(&mut self, kind: u16, value: &[u8]) -> io::Result<()> {
        self.seq += 1;
        let seq = self.seq;
        let mut msg = Vec::with_capacity(64);
        let start = begin_nfnl_message(
            &mut msg,
            NFNL_SUBSYS_ULOG,
            NFULNL_MSG_CONFIG,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            self.group,
        );
        attribute(&mut msg, kind, value);
        finish_message(&mut msg, start);
        request(&self.fd, &mut self.bufs[0], &msg, seq, "nfnetlink_log", |_, _| {})
    }

    /// The socket, for `poll(2)`.
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Receives the copies waiting (up to 32 datagrams) without blocking; they are
    /// then [`LogGroup::copy`] `0..n`. ENOBUFS when the kernel dropped copies because the
    /// socket was full (the packets themselves passed).
    pub fn recv_all(&mut self) -> io::Result<usize> {
        self.copies.clear();
        for used in 0..RECV_MAX {
            if self.bufs.len() <= used {
                self.bufs.push(vec![0u8; RECV_BUF]);
            }
            let n = match recv_on(&self.fd, &mut self.bufs[used]) {
                Ok(n) => n.min(RECV_BUF),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            let buf = &self.bufs[used][..n];
            for (at, len) in split_messages(buf).flatten() {
                if let Ok(LogMessage::Copy { start, end }) = parse_log_message(&buf[at..at + len]) {
                    self.copies.push((used, at + start, at + end));
                }
            }
        }
        Ok(self.copies.len())
    }

    /// Copy `k` of the last [`LogGroup::recv_all`].
    pub fn copy(&self, k: usize) -> &[u8] {
        let (b, start, end) = self.copies[k];
        &self.bufs[b][start..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nfqueue::NLMSG_HDRLEN;

    #[test]
    fn a_copy_parses_to_its_packet_and_bad_messages_are_refused() {
        let packet = b"\x45\x00\x00\x14an ip packet";
        let mut buf = Vec::new();
        encode_log_copy(&mut buf, 7, packet);
        encode_log_copy(&mut buf, 7, b"second");
        let msgs: Vec<_> = split_messages(&buf).map(|r| r.unwrap()).collect();
        assert_eq!(msgs.len(), 2);
        let (at, len) = msgs[0];
        match parse_log_message(&buf[at..at + len]) {
            Ok(LogMessage::Copy { start, end }) => assert_eq!(&buf[at + start..at + end], packet),
            other => panic!("{other:?}"),
        }
        // Cut short, or without its payload.
        assert_eq!(parse_log_message(&buf[..len - 1]), Err(ParseError::Truncated));
        let mut no_payload = Vec::new();
        let start = begin_nfnl_message(&mut no_payload, NFNL_SUBSYS_ULOG, NFULNL_MSG_PACKET, 0, 0, 7);
        attribute(&mut no_payload, 1, &[0x08, 0x00, 2, 0]);
        finish_message(&mut no_payload, start);
        assert_eq!(parse_log_message(&no_payload), Err(ParseError::Incomplete));
        // A queue's packet message is not a copy.
        let mut queued = Vec::new();
        crate::nfqueue::encode_packet(&mut queued, 7, &crate::nfqueue::PacketMeta::new(1, 0, 0, None), packet);
        assert_eq!(parse_log_message(&queued), Ok(LogMessage::Other));
    }

    #[test]
    fn error_reports_carry_the_sequence_number() {
        let mut msg = vec![0u8; NLMSG_HDRLEN + 4 + NLMSG_HDRLEN];
        let len = msg.len() as u32;
        msg[..4].copy_from_slice(&len.to_ne_bytes());
        msg[4..6].copy_from_slice(&crate::nfqueue::NLMSG_ERROR.to_ne_bytes());
        msg[NLMSG_HDRLEN..NLMSG_HDRLEN + 4].copy_from_slice(&(-16i32).to_ne_bytes());
        msg[NLMSG_HDRLEN + 4 + 8..NLMSG_HDRLEN + 4 + 12].copy_from_slice(&9u32.to_ne_bytes());
        assert_eq!(parse_log_message(&msg), Ok(LogMessage::Error { errno: 16, seq: 9 }));
    }
}
