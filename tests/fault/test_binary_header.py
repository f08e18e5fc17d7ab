"""A binary-protocol request (first byte 0x80) gets an answer or a close, never silence.

memcached answers in the binary protocol; a server without it may answer an error or
close the connection. A client left waiting forever is the failure (issue 12, case 5).
"""

import struct

import pytest

from wire import answer_or_close

ANSWER_TIMEOUT = 2.0


def binary_request(opcode, key=b"", extras=b"", value=b"", opaque=0x12345678):
    header = struct.pack(
        ">BBHBBHIIQ",
        0x80,  # request magic
        opcode,
        len(key),
        len(extras),
        0,  # data type
        0,  # vbucket
        len(extras) + len(key) + len(value),
        opaque,
        0,  # cas
    )
    return header + extras + key + value


PACKETS = {
    "get": binary_request(0x00, key=b"foo"),
    "noop": binary_request(0x0A),
    "version": binary_request(0x0B),
    "getq+noop": binary_request(0x09, key=b"foo") + binary_request(0x0A),
    "set": binary_request(0x01, key=b"foo", extras=struct.pack(">II", 0, 0), value=b"bar"),
    "unknown-opcode": binary_request(0xEE),
}


@pytest.mark.parametrize("packet", list(PACKETS), ids=list(PACKETS))
def test_binary_request_is_answered_or_closed(kind, start_server, packet):
    server = start_server()
    sock = server.connect()
    sock.sendall(PACKETS[packet])
    answer = answer_or_close(sock, ANSWER_TIMEOUT)
    assert answer is not None, f"no answer and no close within {ANSWER_TIMEOUT}s"
    if answer[:1] == b"\x81":  # a binary response: a whole header, our opaque echoed
        assert len(answer) >= 24, answer
        assert answer[12:16] == b"\x12\x34\x56\x78", answer[:24]
    server.check_healthy()


def test_binary_header_then_text_client_is_unaffected(kind, start_server):
    """A binary packet on one connection leaves other (text) clients served."""
    server = start_server()
    hostile = server.connect()
    hostile.sendall(PACKETS["get"])
    server.check_healthy()
    assert answer_or_close(hostile, ANSWER_TIMEOUT) is not None
    server.check_healthy()
