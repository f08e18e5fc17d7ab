"""TLS (-Z, issue 16) with real clients: pymemcache over an ssl.SSLContext that verifies
the server (and presents a client certificate for ssl_verify_mode 2/3), `openssl s_client`
handshakes for ssl_min_version and ssl_ciphers, and certificate rotation through a
Kubernetes-style symlink swap (new connections get the new certificate, established ones
keep working; a corrupt new certificate leaves the old one serving).

Certificates are made here with the openssl command: a throwaway CA, a server
certificate, a second server certificate (the rotated one) and a client certificate.
"""

import os
import socket
import ssl
import subprocess
import time

import pytest

from support import client_options, is_memcached
from pymemcache.client.base import Client

pytestmark = pytest.mark.skipif(
    subprocess.run(["openssl", "version"], capture_output=True).returncode != 0,
    reason="needs the openssl command",
)

# memcrab looks at the files every 2 s; a few turns of it.
WATCH_WAIT = 10.0


def openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    openssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
            "-out", "ca.pem", "-days", "2", "-subj", "/CN=memcrab test CA")
    for name, cn in (("server", "localhost"), ("rotated", "localhost"), ("client", "client1")):
        (d / f"{name}.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        openssl(d, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "1",
                "-extfile", f"{name}.ext")
        os.chmod(d / f"{name}.key", 0o644)  # memcached drops to nobody
    return d


def der(pem_path):
    return ssl.PEM_cert_to_DER_cert(pem_path.read_text())


def tls_opts(cert, key, extra=""):
    o = f"ssl_chain_cert={cert},ssl_key={key}"
    return ["-Z", "-o", o + ("," + extra if extra else "")]


def context(certs, client_cert=False):
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if client_cert:
        ctx.load_cert_chain(str(certs / "client.pem"), str(certs / "client.key"))
    return ctx


def tls_client(server, ctx):
    return Client(server.address, **client_options(tls_context=ctx))


def served_cert(server, certs):
    """The DER certificate a new handshake is given."""
    ctx = context(certs)
    with socket.create_connection(server.address, timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return s.getpeercert(binary_form=True)


def stat(server, certs, name):
    c = tls_client(server, context(certs))
    try:
        return c.stats().get(name.encode())
    finally:
        c.close()


def test_pymemcache_verifies_the_server_and_round_trips(start_server, certs):
    server = start_server(*tls_opts(certs / "server.pem", certs / "server.key"))
    c = tls_client(server, context(certs))
    c.set("k", b"v" * 100_000, noreply=False)
    assert c.get("k") == b"v" * 100_000
    assert c.get_many(["k", "missing"]) == {"k": b"v" * 100_000}
    assert c.incr("n", 1) is None
    c.close()
    # A client that trusts another CA refuses the server.
    other = ssl.create_default_context(cafile=str(certs / "server.pem"))
    with pytest.raises(ssl.SSLError):
        tls_client(server, other).get("k")


@pytest.mark.parametrize("mode", ["2", "3"])
def test_client_certificates_are_required_in_modes_2_and_3(start_server, certs, mode):
    server = start_server(*tls_opts(
        certs / "server.pem", certs / "server.key",
        f"ssl_verify_mode={mode},ssl_ca_cert={certs / 'ca.pem'}"))
    c = tls_client(server, context(certs, client_cert=True))
    c.set("k", b"v", noreply=False)
    assert c.get("k") == b"v"
    c.close()
    anonymous = tls_client(server, context(certs))
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        anonymous.set("k", b"w", noreply=False)
        anonymous.get("k")


def test_mode_1_requests_but_does_not_require_a_certificate(start_server, certs):
    server = start_server(*tls_opts(
        certs / "server.pem", certs / "server.key",
        f"ssl_verify_mode=1,ssl_ca_cert={certs / 'ca.pem'}"))
    for with_cert in (True, False):
        c = tls_client(server, context(certs, client_cert=with_cert))
        c.set("k", b"v", noreply=False)
        assert c.get("k") == b"v"
        c.close()


def s_client(server, *args):
    """Whether `openssl s_client` completes a handshake with these options."""
    host, port = server.address
    r = subprocess.run(
        ["openssl", "s_client", "-connect", f"{host}:{port}", "-servername", "localhost",
         "-ign_eof", *args],
        input=b"version\r\nquit\r\n", capture_output=True, timeout=20)
    return b"VERSION " in r.stdout


def test_s_client_honours_min_version(start_server, certs):
    server = start_server(*tls_opts(certs / "server.pem", certs / "server.key",
                                    "ssl_min_version=3"))
    assert s_client(server, "-tls1_3")
    assert not s_client(server, "-tls1_2")
    default = start_server(*tls_opts(certs / "server.pem", certs / "server.key"))
    assert s_client(default, "-tls1_2")
    assert s_client(default, "-tls1_3")
    assert not s_client(default, "-tls1_1")


def test_s_client_honours_the_cipher_list(start_server, certs):
    server = start_server(*tls_opts(certs / "server.pem", certs / "server.key",
                                    "ssl_ciphers=ECDHE-RSA-AES256-GCM-SHA384"))
    assert s_client(server, "-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384")
    assert not s_client(server, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
    # The list governs TLS 1.2; TLS 1.3's suites stay (OpenSSL's rule too).
    assert s_client(server, "-tls1_3")


def secret_volume(root, certs, name, version):
    """Lays out files as a Kubernetes Secret volume does: tls.crt -> ..data/tls.crt,
    ..data -> ..<version>/, and swaps ..data atomically (rename over the link)."""
    target = root / f"..{version}"
    target.mkdir()
    crt = (certs / f"{name}.pem").read_bytes() if name else b"-----BEGIN CERTIFICATE-----\nMIIB\n"
    (target / "tls.crt").write_bytes(crt)
    (target / "tls.key").write_bytes((certs / f"{name or 'server'}.key").read_bytes())
    tmp = root / "..data_tmp"
    os.symlink(target.name, tmp)
    os.replace(tmp, root / "..data")
    for f in ("tls.crt", "tls.key"):
        if not (root / f).is_symlink():
            os.symlink(f"..data/{f}", root / f)


@pytest.mark.skipif("is_memcached(os.environ.get('MEMCRAB_BIN', 'memcrab'))",
                    reason="automatic reload is memcrab's own")
def test_rotation_through_a_symlink_swap(start_server, certs, tmp_path):
    vol = tmp_path / "secret"
    vol.mkdir()
    secret_volume(vol, certs, "server", 1)
    server = start_server(*tls_opts(vol / "tls.crt", vol / "tls.key"))
    assert served_cert(server, certs) == der(certs / "server.pem")
    old = tls_client(server, context(certs))
    old.set("k", b"before", noreply=False)

    secret_volume(vol, certs, "rotated", 2)
    deadline = time.monotonic() + WATCH_WAIT
    while served_cert(server, certs) != der(certs / "rotated.pem"):
        assert time.monotonic() < deadline, "the new certificate was not picked up"
        time.sleep(0.2)
    # The connection from before the rotation keeps working.
    assert old.get("k") == b"before"
    old.set("k", b"after", noreply=False)
    new = tls_client(server, context(certs))
    assert new.get("k") == b"after"
    assert int(stat(server, certs, "time_since_server_cert_refresh")) < WATCH_WAIT

    # A corrupt certificate: logged, counted, and the rotated one keeps serving.
    secret_volume(vol, certs, None, 3)
    deadline = time.monotonic() + WATCH_WAIT
    while int(stat(server, certs, "ssl_cert_refresh_errors")) != 1:
        assert time.monotonic() < deadline, "the corrupt certificate was not noticed"
        time.sleep(0.2)
    assert served_cert(server, certs) == der(certs / "rotated.pem")
    assert old.get("k") == b"after"
    assert "could not be loaded" in server.log_tail()
    old.close()
    new.close()
