#!/usr/bin/env python3
"""Writes a seed corpus for the fuzz targets from the wire tests: every byte-string literal
in tests/it/*.rs that holds a request (it ends in \\r\\n or \\n) becomes a seed, alone and
with its test's other requests in a row, in each target's input format.

    scripts/fuzz-seeds.py OUT_DIR     writes OUT_DIR/<target>/<n>
"""
import pathlib
import re
import struct
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
LITERAL = re.compile(rb'b"((?:[^"\\]|\\.)*)"', re.S)
ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"0": b"\0", b"\\": b"\\", b'"': b'"', b"'": b"'"}


def unescape(raw):
    out, i = bytearray(), 0
    while i < len(raw):
        if raw[i : i + 1] != b"\\":
            out += raw[i : i + 1]
            i += 1
            continue
        c = raw[i + 1 : i + 2]
        if c == b"x":
            out.append(int(raw[i + 2 : i + 4], 16))
            i += 4
        elif c == b"\n":  # a line continuation: skip the newline and leading spaces
            i += 2
            while raw[i : i + 1] in (b" ", b"\t"):
                i += 1
        else:
            out += ESCAPES.get(c, c)
            i += 2
    return bytes(out)


def binary(op, key=b"", extras=b"", value=b"", cas=0):
    body = len(extras) + len(key) + len(value)
    return struct.pack(">BBHBBHIIQ", 0x80, op, len(key), len(extras), 0, 0, body, 7, cas) + extras + key + value


def binary_requests():
    """Binary-protocol sessions: every opcode with the lengths it takes, quiet pipelines."""
    flags = struct.pack(">II", 5, 0)
    arith = struct.pack(">QQI", 1, 10, 0)
    ops = [
        binary(0x01, b"k", flags, b"value"), binary(0x00, b"k"), binary(0x0C, b"k"),
        binary(0x11, b"q", flags, b"v"), binary(0x0D, b"q"), binary(0x09, b"none"),
        binary(0x02, b"k", flags, b"x"), binary(0x03, b"k", flags, b"y", cas=2),
        binary(0x0E, b"k", value=b">"), binary(0x0F, b"k", value=b"<"),
        binary(0x05, b"c", arith), binary(0x16, b"c", arith), binary(0x04, b"k"),
        binary(0x1C, b"k", struct.pack(">I", 100)), binary(0x23, b"k", struct.pack(">I", 100)),
        binary(0x10), binary(0x10, b"settings"), binary(0x0B), binary(0x08),
        binary(0x21, b"PLAIN", value=b"\0u\0p"), binary(0x20), binary(0x50, b"?"),
        binary(0x0A),
    ]
    yield from ops
    yield b"".join(ops)


def requests():
    for path in sorted((ROOT / "tests" / "it").glob("*.rs")):
        found = [unescape(m.group(1)) for m in LITERAL.finditer(path.read_bytes())]
        found = [r for r in found if r.endswith(b"\n") and len(r) < 4096]
        yield from found
        yield b"".join(found)[:8192]
    yield from binary_requests()


def main():
    out = pathlib.Path(sys.argv[1])
    seeds = list(dict.fromkeys(requests()))
    formats = {
        # parse_text: a split position, then the input.
        "parse_text": lambda r: bytes([len(r) // 2 % 256]) + r,
        # pipeline_bytes: chunks, each a length byte and that many bytes.
        "pipeline_bytes": lambda r: b"".join(
            bytes([len(c)]) + c for c in (r[i : i + 255] for i in range(0, len(r), 255))
        ),
    }
    for target, encode in formats.items():
        folder = out / target
        folder.mkdir(parents=True, exist_ok=True)
        for n, seed in enumerate(seeds):
            (folder / f"wire-{n:04}").write_bytes(encode(seed))
    print(f"{len(seeds)} seeds from tests/it into {out}")


if __name__ == "__main__":
    main()
