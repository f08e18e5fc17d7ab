//! A connection's TLS layer (`-Z`): a `rustls::ServerConnection` between the socket and the
//! connection's buffers, driven by the worker's event loop like a plaintext socket (no
//! thread, no task per connection).
//!
//! Reading: `read_tls` takes what the socket has (rustls asks for 4 KiB at a time), then
//! `process_new_packets` decrypts it, and the plaintext is copied into the connection's
//! read buffer, where requests are parsed as over plaintext. Writing: replies go from the
//! connection's reply buffer through `writer()` (encrypted into rustls' output queue) and
//! `write_tls` (one `sendmsg` of every queued record). rustls bounds both sides: at most one
//! record (16 KiB) of ciphertext and of plaintext waits inside it on the way in, and its
//! output queue holds at most `ssl_wbuf_size` bytes: past that `writer()` takes nothing
//! until the socket has drained it, so the reply buffer accounting of `connection.rs` holds.
//!
//! The `ServerConnection` (rustls' 4 KiB read buffer and the handshake state, about 6 KiB)
//! is made when the client's first bytes arrive, with the certificates in effect then: a
//! connection that never sends its hello costs what an idle plaintext one does. One whose
//! handshake stalls later holds that state and nothing else; both are closed by
//! `-o idle_timeout` like an idle plaintext connection.

use std::io::{self, BufRead, Write};
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use rustls::ServerConnection;

use std::sync::Arc;

use crate::tls::{Counters, Tls};

/// What a read brought.
pub(super) enum Read {
    /// This many plaintext bytes were appended to the read buffer.
    Data(usize),
    /// The peer closed (a close_notify, or the end of the stream).
    Eof,
    /// Nothing more for now: wait for the poller.
    Empty,
}

pub(super) struct Secure {
    /// The TLS setup (certificates, session cache) a connection starts from.
    tls: Arc<Tls>,
    /// Made at the client's first bytes.
    conn: Option<Box<ServerConnection>>,
}

impl Secure {
    pub(super) fn new(tls: Arc<Tls>) -> Self {
        Self { tls, conn: None }
    }

    /// The server side, made now if the client has not spoken before.
    fn started(&mut self) -> io::Result<&mut ServerConnection> {
        if self.conn.is_none() {
            let conn = self
                .tls
                .accept()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            self.conn = Some(Box::new(conn));
        }
        Ok(self.conn.as_mut().expect("just made"))
    }

    pub(super) fn handshaking(&self) -> bool {
        self.conn.as_ref().is_none_or(|c| c.is_handshaking())
    }

    /// Encrypted bytes waiting for the socket.
    pub(super) fn wants_write(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.wants_write())
    }

    /// Appends up to `room` bytes of plaintext to `rbuf`, reading and decrypting what the
    /// socket has as needed; answers the handshake on the way. `more` is the connection's
    /// "read again before waiting" flag; `peer_closed`: the poller reported the FIN, so
    /// read on to the end of the stream.
    pub(super) fn read(
        &mut self,
        fd: RawFd,
        rbuf: &mut BytesMut,
        room: usize,
        more: &mut bool,
        peer_closed: bool,
        counters: &Counters,
    ) -> io::Result<Read> {
        if self.conn.is_none() && !peer_closed && !has_bytes(fd)? {
            // Woken before the client said anything (the registration's first event):
            // nothing to set up yet.
            *more = false;
            return Ok(Read::Empty);
        }
        let conn = self.started()?;
        // Whether the socket may have more: a read since the last short one.
        let mut socket_more = true;
        let mut eof = false;
        loop {
            // Decrypts what is buffered, answers the handshake; errors surface here.
            process(conn, fd, counters)?;
            match conn.reader().fill_buf() {
                // A close_notify once all data has been read.
                Ok([]) => return Ok(Read::Eof),
                Ok(plain) => {
                    let n = plain.len().min(room);
                    rbuf.extend_from_slice(&plain[..n]);
                    conn.reader().consume(n);
                    // Plaintext left inside rustls (or an error to surface) means more to
                    // read without waiting for the socket.
                    let left = conn
                        .process_new_packets()
                        .map_or(true, |s| s.plaintext_bytes_to_read() > 0);
                    *more = left || socket_more;
                    return Ok(Read::Data(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && eof => return Ok(Read::Eof),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The end of the stream without a close_notify.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Read::Eof),
                Err(e) => return Err(e),
            }
            if !socket_more {
                // A short read brought no plaintext (a handshake flight, part of a record):
                // the next bytes raise a new event.
                *more = false;
                return Ok(Read::Empty);
            }
            let mut socket = Socket { fd, short: false };
            match conn.read_tls(&mut socket) {
                // The end of the stream: the loop's top hands out what is left, then Eof.
                Ok(0) => eof = true,
                Ok(_) => socket_more = !socket.short || peer_closed,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => socket_more = false,
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends `data` (plaintext): `Ok(n)` bytes of it were taken, `n < data.len()` when the
    /// socket is full and `ssl_wbuf_size` bytes wait for it.
    pub(super) fn write(&mut self, fd: RawFd, data: &[u8]) -> io::Result<usize> {
        let conn = self.started()?;
        let mut taken = 0;
        loop {
            if !flush(conn, fd)? {
                return Ok(taken);
            }
            if taken == data.len() {
                return Ok(taken);
            }
            let n = conn.writer().write(&data[taken..])?;
            taken += n;
        }
    }

    /// The best-effort goodbye: a close_notify, as memcached's `SSL_shutdown`.
    pub(super) fn close(&mut self, fd: RawFd) {
        if let Some(conn) = self.conn.as_deref_mut()
            && !conn.is_handshaking()
        {
            conn.send_close_notify();
            let _ = flush(conn, fd);
        }
    }
}

/// Decrypts what was read and sends what the handshake answers. A TLS error is counted
/// (memcached's `ssl_handshake_errors`, or `ssl_proto_errors` after the handshake), the
/// alert rustls queued for it is sent, and the connection is to close.
fn process(conn: &mut ServerConnection, fd: RawFd, counters: &Counters) -> io::Result<()> {
    if let Err(e) = conn.process_new_packets() {
        let counter = if conn.is_handshaking() {
            &counters.handshake_errors
        } else {
            &counters.proto_errors
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let _ = flush(conn, fd);
        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
    }
    if conn.wants_write() {
        flush(conn, fd)?;
    }
    Ok(())
}

/// Whether the socket has bytes to read (a one-byte peek, which takes nothing).
fn has_bytes(fd: RawFd) -> io::Result<bool> {
    let mut byte = 0u8;
    // SAFETY: recv writes at most one byte into `byte`, which outlives the call.
    let n = unsafe {
        libc::recv(
            fd,
            (&raw mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n >= 0 {
        // 0: the end of the stream, which the read that follows reports.
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::WouldBlock => Ok(false),
        _ => Err(e),
    }
}

/// Sends queued records. `Ok(false)`: the socket is full, the rest waits.
fn flush(conn: &mut ServerConnection, fd: RawFd) -> io::Result<bool> {
    let mut socket = Socket { fd, short: false };
    while conn.wants_write() {
        match conn.write_tls(&mut socket) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The socket as rustls reads and writes it: plain syscalls on the descriptor, noting a
/// short read (the socket is empty: no second `read` for its `EAGAIN`).
struct Socket {
    fd: RawFd,
    short: bool,
}

impl io::Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is writable memory of `buf.len()` bytes; the descriptor is open
            // while the connection lives.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                self.short = (n as usize) < buf.len();
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

impl io::Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: a zeroed msghdr is valid (no name, no control data).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        // IoSlice is ABI-compatible with iovec on Unix; sendmsg only reads them.
        msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
        // SAFETY: `msg` points at `bufs`, valid for the call. MSG_NOSIGNAL: a peer that
        // went away is an EPIPE error, not a signal.
        let n = unsafe { libc::sendmsg(self.fd, &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
