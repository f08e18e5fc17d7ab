"""Raw memcached text protocol for the fault-test suite: requests as bytes, a buffered
connection that checks replies byte by byte, and many-connection helpers (epoll)."""

import re
import select
import time

KiB = 1024
MiB = 1024 * KiB
CLIENT_TIMEOUT = 10.0  # any single socket operation of a test
MAX_REPLY_LINE = 64 * 1024  # no reply line of these tests is longer
MAX_STATS_LINES = 10_000

# memcached's answers this suite looks for.
OOM_WRITING_GET = b"SERVER_ERROR out of memory writing get response"
OOM_READING = b"SERVER_ERROR out of memory reading request"
TOO_MANY_CONNECTIONS = b"ERROR Too many open connections"


def make_value(key, size):
    """A value that names its key and size, so any slice of it in the wrong place shows."""
    pattern = f"<{key}:{size}>".encode()
    return (pattern * (size // len(pattern) + 1))[:size]


def set_line(key, value, flags=0, noreply=False):
    tail = b" noreply" if noreply else b""
    header = b"set %s %d 0 %d%s\r\n" % (key.encode(), flags, len(value), tail)
    return header + value + b"\r\n"


def get_line(keys, command="get"):
    return (command + " " + " ".join(keys) + "\r\n").encode()


def get_reply(keys, values):
    """The bytes memcached answers ``get keys`` with (flags 0; a key not in ``values``
    misses)."""
    parts = [
        b"VALUE %s 0 %d\r\n%s\r\n" % (k.encode(), len(values[k]), values[k])
        for k in keys
        if k in values
    ]
    return b"".join(parts) + b"END\r\n"


def slow_read(sock, size, chunk, pause, timeout=60.0):
    """Reads exactly ``size`` bytes, at most ``chunk`` bytes a read, ``pause`` s between
    reads: a slow client."""
    data = bytearray()
    deadline = time.monotonic() + timeout
    while len(data) < size:
        assert time.monotonic() < deadline, f"slow read: {len(data)} of {size} in {timeout}s"
        part = sock.recv(min(chunk, size - len(data)))
        if not part:
            raise EOFError(f"closed after {len(data)} of {size} bytes")
        data += part
        time.sleep(pause)
    return bytes(data)


class Conn:
    """A buffered reader/writer over one socket, with memcached's reply shapes."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.pos = 0

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def fill(self, size=1 * MiB):
        if self.pos and self.pos >= len(self.buf) // 2:
            del self.buf[: self.pos]
            self.pos = 0
        chunk = self.sock.recv(size)
        if not chunk:
            raise EOFError("connection closed by the server")
        self.buf += chunk

    def pending(self):
        """Bytes received but not consumed yet."""
        return len(self.buf) - self.pos

    def line(self, limit=MAX_REPLY_LINE):
        """The next line, without its CRLF (at most ``limit`` bytes)."""
        while True:
            end = self.buf.find(b"\r\n", self.pos)
            if end >= 0:
                line = bytes(self.buf[self.pos : end])
                self.pos = end + 2
                return line
            assert self.pending() <= limit, f"no CRLF in {self.pending()} bytes"
            self.fill()

    def exact(self, size):
        while self.pending() < size:
            self.fill(max(size - self.pending(), 64 * KiB))
        data = bytes(self.buf[self.pos : self.pos + size])
        self.pos += size
        return data

    def expect_bytes(self, expected, what):
        """Consumes len(expected) bytes and asserts they are ``expected``."""
        while self.pending() < len(expected):
            self.fill(max(len(expected) - self.pending(), 64 * KiB))
        got = memoryview(self.buf)[self.pos : self.pos + len(expected)]
        equal = got == expected
        got.release()
        if not equal:
            data = bytes(self.buf[self.pos : self.pos + len(expected)])
            at = next(i for i, (a, b) in enumerate(zip(data, expected)) if a != b)
            raise AssertionError(
                f"{what}: bytes differ at offset {at}: got {data[at : at + 40]!r}, "
                f"expected {expected[at : at + 40]!r}"
            )
        self.pos += len(expected)

    def eof_within(self, timeout):
        """True if the server closes the connection within ``timeout`` s (any unread
        bytes before the close are dropped), False if it stays open."""
        deadline = time.monotonic() + timeout
        old = self.sock.gettimeout()
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
                try:
                    if not self.sock.recv(1 * MiB):
                        return True
                except TimeoutError:
                    return False
                except ConnectionResetError:
                    return True
            return False
        finally:
            self.sock.settimeout(old)

    def request(self, line):
        self.send(line)
        return self.line()

    def stats(self, sub=""):
        self.send(b"stats" + (b" " + sub.encode() if sub else b"") + b"\r\n")
        stats = {}
        for _ in range(MAX_STATS_LINES):
            line = self.line()
            if line == b"END":
                return stats
            parts = line.decode().split(" ", 2)
            assert parts[0] == "STAT" and len(parts) == 3, f"bad stats line {line!r}"
            stats[parts[1]] = int(parts[2]) if re.fullmatch(r"-?\d+", parts[2]) else parts[2]
        raise AssertionError(f"no END after {MAX_STATS_LINES} stats lines")

    def store(self, key, value, flags=0):
        reply = self.request(set_line(key, value, flags))
        assert reply == b"STORED", f"set {key}: {reply!r}"

    def expect_get(self, keys, values, allow_oom=False, send=True):
        """Sends ``get keys`` (unless ``send`` is False: already sent) and checks the reply
        against ``values`` (key -> value; a key not in it must miss), byte by byte.

        With ``allow_oom``, the reply may stop (after a correct prefix of values) at
        ``SERVER_ERROR out of memory writing get response``. Returns "ok" or "oom".
        """
        if send:
            self.send(get_line(keys))
        hits = [k for k in keys if k in values]
        for index, key in enumerate(hits):
            header = self.line()
            if allow_oom and header == OOM_WRITING_GET:
                return "oom"
            value = values[key]
            expected = b"VALUE %s 0 %d" % (key.encode(), len(value))
            assert header == expected, f"value {index} of {len(hits)}: {header[:80]!r}"
            self.expect_bytes(value + b"\r\n", f"value {index} ({key})")
        end = self.line()
        if allow_oom and end == OOM_WRITING_GET:
            return "oom"
        assert end == b"END", f"after {len(hits)} values: {end[:80]!r}"
        return "ok"


def load_items(server, count, prefix, size, batch=2000):
    """Stores ``count`` items ``<prefix><n>`` of ``size`` bytes, pipelined: batches of
    ``set ... noreply`` each closed by a ``version`` whose answer paces the loader."""
    conn = Conn(server.connect())
    for start in range(0, count, batch):
        lines = [
            set_line(f"{prefix}{n}", make_value(prefix, size), noreply=True)
            for n in range(start, min(start + batch, count))
        ]
        conn.send(b"".join(lines) + b"version\r\n")
        reply = conn.line()
        assert reply.startswith(b"VERSION"), f"loading at {start}: {reply[:80]!r}"
    conn.close()


def answer_or_close(sock, timeout):
    """What a socket gets within ``timeout`` s: its first bytes, b"" for a close (FIN or
    RST), or None for silence."""
    old = sock.gettimeout()
    sock.settimeout(timeout)
    try:
        return sock.recv(64 * KiB)
    except (TimeoutError, BlockingIOError):
        return None
    except ConnectionResetError:
        return b""
    finally:
        sock.settimeout(old)


def open_many(server, count, batch=500, timeout=CLIENT_TIMEOUT):
    """Opens ``count`` connections and checks each is served: ``version`` is sent on all
    of a batch, then every answer is collected (epoll, so 10,000 sockets are fine).

    Returns (sockets, outcomes) where outcomes counts "version", "too_many", "closed" and
    "silent" answers.
    """
    socks = []
    outcomes = {"version": 0, "too_many": 0, "closed": 0, "silent": 0}
    deadline = time.monotonic() + timeout + count / 100
    for start in range(0, count, batch):
        group = []
        for _ in range(min(batch, count - start)):
            sock = server.connect(timeout=timeout)
            sock.sendall(b"version\r\n")
            sock.setblocking(False)
            group.append(sock)
        socks += group
        for outcome in collect_answers(group, deadline).values():
            outcomes[outcome] += 1
    return socks, outcomes


def collect_answers(socks, deadline):
    """Reads one answer line from each non-blocking socket until ``deadline``."""
    poller = select.epoll()
    received = {}
    by_fd = {}
    for sock in socks:
        poller.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = sock
        received[sock.fileno()] = b""
    outcomes = {}
    try:
        while len(outcomes) < len(socks) and time.monotonic() < deadline:
            for fd, _ in poller.poll(min(0.5, max(deadline - time.monotonic(), 0))):
                try:
                    chunk = by_fd[fd].recv(4096)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    chunk = b""
                received[fd] += chunk
                if not chunk or b"\r\n" in received[fd]:
                    poller.unregister(fd)
                    outcomes[fd] = classify_answer(received[fd])
    finally:
        poller.close()
    for fd in received:
        outcomes.setdefault(fd, "silent")
    return outcomes


def classify_answer(data):
    if data.startswith(b"VERSION "):
        return "version"
    if data.startswith(TOO_MANY_CONNECTIONS):
        return "too_many"
    if data == b"":
        return "closed"
    raise AssertionError(f"unexpected answer to version: {data[:80]!r}")
