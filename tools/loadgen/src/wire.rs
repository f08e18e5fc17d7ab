//! Wire: a buffered connection with a small, strict reply reader.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::Res;
use crate::tls;

/// How long one read or write may wait before the run is declared hung.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The socket, plaintext or TLS (the `tls-*` workloads).
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

pub struct Conn {
    pub stream: Stream,
    pub buf: Vec<u8>,
    pub start: usize,
    pub end: usize,
    pub key: Vec<u8>,
}

pub fn show(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(120)];
    format!("{:?}", String::from_utf8_lossy(cut))
}

/// A TCP connection to the server on `port`, with Nagle's delay off.
async fn tcp(port: u16) -> Res<TcpStream> {
    let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(("127.0.0.1", port)))
        .await
        .map_err(|_| format!("connect to 127.0.0.1:{port} timed out"))?
        .map_err(|e| format!("connect to 127.0.0.1:{port}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(stream)
}

impl Conn {
    /// A plaintext connection.
    pub async fn connect(port: u16) -> Res<Conn> {
        Ok(Conn::new(Stream::Plain(tcp(port).await?)))
    }

    fn new(stream: Stream) -> Conn {
        Conn {
            stream,
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
            key: Vec::with_capacity(256),
        }
    }

    /// A connection to a server started with `tls` (see [`crate::server::Server::connect`]):
    /// plaintext without it, else TCP and a TLS handshake.
    pub async fn open(port: u16, tls: Option<&tls::Client>) -> Res<Conn> {
        let Some(tls) = tls else {
            return Conn::connect(port).await;
        };
        let tcp = tcp(port).await?;
        let handshake = tls.connector().connect(tls.name.clone(), tcp);
        let stream = tokio::time::timeout(IO_TIMEOUT, handshake)
            .await
            .map_err(|_| format!("TLS handshake with 127.0.0.1:{port} timed out"))?
            .map_err(|e| format!("TLS handshake with 127.0.0.1:{port}: {e}"))?;
        Ok(Conn::new(Stream::Tls(Box::new(stream))))
    }

    /// Whether this connection's TLS handshake resumed an earlier session.
    pub fn resumed(&self) -> bool {
        match &self.stream {
            Stream::Plain(_) => false,
            Stream::Tls(s) => {
                s.get_ref().1.handshake_kind() == Some(tokio_rustls::rustls::HandshakeKind::Resumed)
            }
        }
    }

    /// Ends the connection as a polite client does: a TLS close_notify, then the FIN.
    pub async fn close(mut self) -> Res<()> {
        let shut = async {
            match &mut self.stream {
                Stream::Plain(s) => s.shutdown().await,
                Stream::Tls(s) => s.shutdown().await,
            }
        };
        tokio::time::timeout(IO_TIMEOUT, shut)
            .await
            .map_err(|_| format!("closing blocked for {IO_TIMEOUT:?}"))?
            .map_err(|e| format!("closing: {e}"))
    }

    pub async fn send(&mut self, data: &[u8]) -> Res<()> {
        let write = async {
            match &mut self.stream {
                Stream::Plain(s) => s.write_all(data).await,
                // Encrypted into rustls' buffer, then written out.
                Stream::Tls(s) => {
                    s.write_all(data).await?;
                    s.flush().await
                }
            }
        };
        tokio::time::timeout(IO_TIMEOUT, write)
            .await
            .map_err(|_| format!("write blocked for {IO_TIMEOUT:?} (server not reading)"))?
            .map_err(|e| format!("write: {e}"))
    }

    /// Reads more bytes into the buffer; compacts or grows it first when needed.
    pub async fn fill(&mut self) -> Res<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.buf.len() - self.end < 16 * 1024 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < 16 * 1024 {
            let len = self.buf.len() * 2;
            self.buf.resize(len, 0);
        }
        let (stream, into) = (&mut self.stream, &mut self.buf[self.end..]);
        let read = async move {
            match stream {
                Stream::Plain(s) => s.read(into).await,
                Stream::Tls(s) => s.read(into).await,
            }
        };
        let n = tokio::time::timeout(IO_TIMEOUT, read)
            .await
            .map_err(|_| {
                format!(
                    "no reply within {IO_TIMEOUT:?}; unparsed bytes so far: {}",
                    show(&self.buf[self.start..self.end])
                )
            })?
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!(
                "server closed the connection; unparsed bytes: {}",
                show(&self.buf[self.start..self.end])
            ));
        }
        self.end += n;
        Ok(())
    }

    /// The next reply line, without its `\r\n`, as a range of `buf` valid until the next read.
    pub async fn line(&mut self) -> Res<(usize, usize)> {
        let mut scanned = 0; // bytes after `start` known to hold no '\n'
        loop {
            let from = self.start + scanned;
            if let Some(i) = memchr::memchr(b'\n', &self.buf[from..self.end]) {
                let nl = from + i;
                if nl == self.start || self.buf[nl - 1] != b'\r' {
                    return Err(format!(
                        "reply line not ended by \\r\\n: {}",
                        show(&self.buf[self.start..=nl])
                    ));
                }
                let range = (self.start, nl - 1);
                self.start = nl + 1;
                return Ok(range);
            }
            scanned = self.end - self.start;
            if scanned > 1 << 20 {
                return Err("reply line longer than 1 MiB".into());
            }
            self.fill().await?;
        }
    }

    /// A data block of `n` bytes and its `\r\n`, as a range valid until the next read.
    pub async fn block(&mut self, n: usize) -> Res<(usize, usize)> {
        while self.end - self.start < n + 2 {
            self.fill().await?;
        }
        let (a, b) = (self.start, self.start + n);
        if &self.buf[b..b + 2] != b"\r\n" {
            return Err(format!(
                "data block of {n} bytes not followed by \\r\\n: {}",
                show(&self.buf[b..(b + 40).min(self.end)])
            ));
        }
        self.start = b + 2;
        Ok((a, b))
    }

    /// The next binary-protocol response: its header and the body's range in `buf`, valid
    /// until the next read.
    pub async fn packet(&mut self) -> Res<Packet> {
        while self.end - self.start < 24 {
            self.fill().await?;
        }
        let h = &self.buf[self.start..self.start + 24];
        if h[0] != 0x81 {
            return Err(format!("not a binary response: {}", show(h)));
        }
        let body = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
        let packet = Packet {
            opcode: h[1],
            key_len: u16::from_be_bytes([h[2], h[3]]) as usize,
            extras_len: h[4] as usize,
            status: u16::from_be_bytes([h[6], h[7]]),
            body: (self.start + 24, self.start + 24 + body),
        };
        if body > 64 << 20 {
            return Err(format!("a binary response of {body} bytes"));
        }
        while self.end - self.start < 24 + body {
            self.fill().await?;
        }
        self.start += 24 + body;
        Ok(packet)
    }

    /// Reads one line and checks it is `want`.
    pub async fn expect(&mut self, want: &[u8]) -> Res<()> {
        let (a, b) = self.line().await?;
        if &self.buf[a..b] != want {
            return Err(format!(
                "expected {}, got {}",
                show(want),
                show(&self.buf[a..b])
            ));
        }
        Ok(())
    }

    /// Reads a `get` reply: `VALUE <key> <flags> <bytes> [<cas>]\r\n<data>\r\n` blocks, then
    /// `END\r\n`. Calls `each(key, data)` per block; returns how many blocks there were.
    pub async fn values(
        &mut self,
        max: usize,
        mut each: impl FnMut(&[u8], &[u8]) -> Res<()>,
    ) -> Res<usize> {
        let mut count = 0;
        while count <= max {
            let (a, b) = self.line().await?;
            let line = &self.buf[a..b];
            if line == b"END" {
                return Ok(count);
            }
            let parsed = line.strip_prefix(b"VALUE ").and_then(|rest| {
                let mut parts = rest.split(|&c| c == b' ');
                let key = parts.next()?;
                let _flags = std::str::from_utf8(parts.next()?)
                    .ok()?
                    .parse::<u32>()
                    .ok()?;
                let bytes = std::str::from_utf8(parts.next()?)
                    .ok()?
                    .parse::<usize>()
                    .ok()?;
                Some((key, bytes))
            });
            let Some((key, bytes)) = parsed else {
                return Err(format!("expected VALUE or END, got {}", show(line)));
            };
            self.key.clear();
            self.key.extend_from_slice(key);
            let (da, db) = self.block(bytes).await?;
            each(&self.key, &self.buf[da..db])?;
            count += 1;
        }
        Err(format!("more than {max} VALUE blocks in one get reply"))
    }

    /// `stats`: every `STAT name value` line up to `END`.
    pub async fn stats(&mut self) -> Res<Vec<(String, String)>> {
        self.send(b"stats\r\n").await?;
        let mut out = Vec::new();
        for _ in 0..1000 {
            let (a, b) = self.line().await?;
            let line = String::from_utf8_lossy(&self.buf[a..b]).into_owned();
            if line == "END" {
                return Ok(out);
            }
            let mut parts = line.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("STAT"), Some(name), Some(value)) => {
                    out.push((name.to_string(), value.to_string()))
                }
                _ => {
                    return Err(format!(
                        "unexpected line in stats reply: {}",
                        show(line.as_bytes())
                    ));
                }
            }
        }
        Err("stats reply longer than 1000 lines".into())
    }
}

pub fn stat_u64(stats: &[(String, String)], name: &str) -> Res<u64> {
    stats
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| format!("no numeric {name} in stats"))
}

/// A binary response's header fields and where its body is in the connection's buffer.
#[derive(Clone, Copy, Debug)]
pub struct Packet {
    pub opcode: u8,
    pub key_len: usize,
    pub extras_len: usize,
    pub status: u16,
    pub body: (usize, usize),
}

impl Packet {
    /// Bytes of the value (the body after extras and key).
    pub fn value_len(&self) -> usize {
        self.body.1 - self.body.0 - self.extras_len - self.key_len
    }
}

/// Appends a binary request: `extras`, `key` and `value` after the 24-byte header.
pub fn push_binary(req: &mut Vec<u8>, opcode: u8, extras: &[u8], key: &[u8], value: &[u8]) {
    req.extend_from_slice(&[0x80, opcode]);
    req.extend_from_slice(&(key.len() as u16).to_be_bytes());
    req.extend_from_slice(&[extras.len() as u8, 0, 0, 0]);
    req.extend_from_slice(&((extras.len() + key.len() + value.len()) as u32).to_be_bytes());
    req.extend_from_slice(&[0; 12]); // opaque, CAS
    req.extend_from_slice(extras);
    req.extend_from_slice(key);
    req.extend_from_slice(value);
}

pub fn push_set(req: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    req.extend_from_slice(b"set ");
    req.extend_from_slice(key);
    req.extend_from_slice(b" 0 0 ");
    req.extend_from_slice(itoa::Buffer::new().format(value.len()).as_bytes());
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(value);
    req.extend_from_slice(b"\r\n");
}
