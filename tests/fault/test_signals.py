"""Termination signals (issue 12, case 6, and SIGTERM under load).

SIGTERM or SIGINT stops accepting and drains: replies already being written are
delivered (for up to 10 s), then the process exits 0. A second termination signal during
the drain exits at once with a non-zero status.

memcached has no drain to compare: it exits at the first SIGTERM/SIGINT, dropping
whatever is unsent (its graceful stop is SIGUSR1).
"""

import collections
import random
import signal
import threading
import time

import pytest

from support import DRAIN_TIMEOUT
from wire import Conn, KiB, get_line, get_reply, make_value, set_line, slow_read

NO_DRAIN = "memcached exits at the first SIGTERM/SIGINT without draining"
pytestmark = pytest.mark.memcrab_only(NO_DRAIN)

SECOND_SIGNAL_GRACE = 1.5  # seconds from the second signal to the exit


def store_big_values(server, count, size=512 * KiB):
    values = {f"big{i}": make_value(f"big{i}", size) for i in range(count)}
    for key, value in values.items():
        server.store(key, value)
    return values


SIGNAL_PAIRS = {
    "TERM-INT": (signal.SIGTERM, signal.SIGINT),
    "INT-TERM": (signal.SIGINT, signal.SIGTERM),
    "TERM-TERM": (signal.SIGTERM, signal.SIGTERM),
}


@pytest.mark.parametrize("pair", list(SIGNAL_PAIRS))
def test_second_signal_exits_at_once(kind, start_server, figures, pair):
    """A 50 MiB reply is left unread, so the drain would wait its whole 10 s; a second
    signal 0.5 s after the first ends the process within 1.5 s, non-zero."""
    first, second = SIGNAL_PAIRS[pair]
    server = start_server("-m", 64)
    values = store_big_values(server, 1)
    unread = server.connect()
    unread.sendall(get_line(list(values) * 100))
    time.sleep(0.3)
    server.expect_exit = True
    server.signal(first)
    assert server.wait_exit(0.5) is None, "exited at once with a reply unread: no drain"
    server.signal(second)
    signalled = time.monotonic()
    status = server.wait_exit(SECOND_SIGNAL_GRACE)
    figures("exit after the second signal", (time.monotonic() - signalled) * 1000, "ms")
    assert status is not None, f"still running {SECOND_SIGNAL_GRACE}s after the second signal"
    assert status != 0, "a drain cut short must not exit 0"


def test_single_sigterm_drains_to_a_slow_reader(kind, start_server, figures):
    """SIGTERM while a slow client reads a 4 MiB reply (64 KiB every 50 ms, about 3 s):
    the client still gets every byte, then the close, and the process exits 0."""
    server = start_server("-m", 64)
    values = store_big_values(server, 8)
    expected = get_reply(list(values), values)
    sock = server.connect(rcvbuf=64 * KiB)
    sock.sendall(get_line(list(values)))
    head = slow_read(sock, 64 * KiB, 64 * KiB, 0)
    server.expect_exit = True
    server.signal(signal.SIGTERM)
    signalled = time.monotonic()
    rest = slow_read(sock, len(expected) - len(head), 64 * KiB, 0.05, timeout=DRAIN_TIMEOUT)
    assert head + rest == expected, "the drained reply differs"
    assert Conn(sock).eof_within(2.0), "not closed after the drain"
    status = server.wait_exit(3.0)
    figures("exit after SIGTERM", time.monotonic() - signalled, "s")
    assert status == 0, f"exit status {status} after a drain"


class PipelinedClient:
    """Sends batches of sets and gets (at most ``WINDOW`` unanswered requests, so that
    whatever it has sent fits in the server's socket buffer) and checks every reply in
    order in a second thread."""

    WINDOW = 64
    BATCH = 16
    MAX_REQUESTS = 200_000

    def __init__(self, server, index):
        self.conn = Conn(server.connect(timeout=DRAIN_TIMEOUT + 5))
        self.name = f"p{index}-"
        self.rng = random.Random(index)
        self.values = {}
        self.expected = collections.deque()
        self.window = threading.Semaphore(self.WINDOW)
        self.stop = threading.Event()
        self.sent = 0  # requests whose bytes have all been sent
        self.replied = 0  # complete, correct replies
        self.clean_close = False
        self.error = None
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._send, self._read)]
        for thread in self.threads:
            thread.start()

    def _request(self):
        key = self.name + str(self.rng.randrange(500))
        if key in self.values and self.rng.random() < 0.5:
            return get_line([key]), get_reply([key], self.values)
        value = make_value(key, self.rng.randrange(10, 1000))
        self.values[key] = value
        return set_line(key, value), b"STORED\r\n"

    def _send(self):
        try:
            while not self.stop.is_set() and self.sent < self.MAX_REQUESTS:
                batch = []
                for _ in range(self.BATCH):
                    if not self.window.acquire(timeout=DRAIN_TIMEOUT):
                        raise AssertionError("no reply for a whole drain timeout")
                    request, reply = self._request()
                    self.expected.append(reply)
                    batch.append(request)
                self.conn.send(b"".join(batch))
                self.sent += len(batch)
        except OSError:
            pass  # the server has closed: the reader checks what came back
        except AssertionError as e:
            self.error = e

    def _read(self):
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                while not self.expected:
                    if not self.threads[0].is_alive() and not self.expected:
                        self.conn.fill()  # all answered: only the close may come
                        raise AssertionError(f"bytes after the last reply: {self.conn.buf!r}")
                    time.sleep(0.001)
                self.conn.expect_bytes(self.expected.popleft(), f"reply {self.replied}")
                self.replied += 1
                self.window.release()
            self.error = "still reading replies after 60 s"
        except (EOFError, ConnectionResetError):
            # A reset is a close too: the server closes with requests sent after the
            # signal unread, and its kernel answers those with a reset.
            self.clean_close = self.conn.pending() == 0
        except (AssertionError, OSError) as e:
            self.error = e

    def join(self, timeout):
        for thread in self.threads:
            thread.join(timeout)
        return not any(t.is_alive() for t in self.threads)


def test_sigterm_under_pipelined_load(kind, start_server, figures):
    """Four clients pipeline sets and gets; SIGTERM: every request whose bytes were all
    sent (50 ms) before the signal gets its complete reply, then each connection closes
    at a reply boundary, and the process exits 0."""
    server = start_server("-m", 64)
    clients = [PipelinedClient(server, i) for i in range(4)]
    time.sleep(1.0)
    sent_before = [c.sent for c in clients]
    time.sleep(0.05)  # those bytes have reached the server's socket
    server.expect_exit = True
    server.signal(signal.SIGTERM)
    for client in clients:
        client.stop.set()
    finished = [c.join(DRAIN_TIMEOUT + 5) for c in clients]
    status = server.wait_exit(5.0)
    figures("requests sent before SIGTERM", sum(sent_before))
    figures("replies received", sum(c.replied for c in clients))
    assert all(finished), "a client was still waiting after the drain"
    for client, before in zip(clients, sent_before):
        assert client.error is None, client.error
        assert client.replied >= before, f"{before} requests sent, {client.replied} answered"
        assert client.clean_close, "the connection closed mid-reply"
    assert status == 0, f"exit status {status} after a drain"
