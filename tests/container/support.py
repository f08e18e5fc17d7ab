"""Docker helpers for the container tests.

Everything a test creates (containers, networks, the image tag) carries the run's unique
prefix, is created here and removed by name at teardown. Clients on the host reach
containers through ports published on 127.0.0.1 only, or through the containers' IPs on a
network the test created (the host can route to a Docker bridge network).
"""

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from pymemcache.client.base import Client

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO_ROOT / "docker"
CONTEXT = Path(
    os.environ.get("MEMCRAB_IMAGE_CONTEXT") or REPO_ROOT / "target/static/context"
)
RUN_ID = f"memcrab-pkgtest-{os.getpid()}-{uuid.uuid4().hex[:6]}"

START_TIMEOUT = 10.0
CLIENT_TIMEOUT = 5.0
DRAIN_TIMEOUT = 10.0  # the server's drain timeout (src/server/mod.rs DRAIN_TIMEOUT)
GRACE_PERIOD = 15  # docker stop -t, as terminationGracePeriodSeconds in k8s/base


def docker_available():
    if shutil.which("docker") is None:
        return False
    try:
        return (
            subprocess.run(
                ["docker", "info"], capture_output=True, timeout=30, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def docker(*args, check=True, timeout=120, input=None):
    """Runs `docker ARGS`; returns stdout (str). Raises with stderr on failure."""
    proc = subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        check=False,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"docker {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
        )
    return proc.stdout.strip()


def make_client(address, **kwargs):
    kwargs.setdefault("connect_timeout", CLIENT_TIMEOUT)
    kwargs.setdefault("timeout", CLIENT_TIMEOUT)
    kwargs.setdefault("no_delay", True)
    return Client(address, **kwargs)


def memcached_version(address, timeout=1.0):
    """The `version` reply over a raw socket, or None (not serving yet)."""
    try:
        with socket.create_connection(address, timeout=timeout) as sock:
            sock.sendall(b"version\r\n")
            data = b""
            while not data.endswith(b"\r\n"):
                chunk = sock.recv(256)
                if not chunk:
                    return None
                data += chunk
            return data.decode()
    except OSError:
        return None


def http_get(url, timeout=2.0):
    """(status, body) of a GET, or (None, error) when there is no answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (OSError, urllib.error.URLError) as e:
        return None, str(e)


class Container:
    """One container of the image, named RUN_ID-<suffix>."""

    def __init__(self, name, image, args, docker_opts, publish=True, network=None):
        self.name = name
        self.image = image
        self.args = list(args)
        self.docker_opts = list(docker_opts)
        self.publish = publish
        self.network = network

    def start(self, wait=True):
        opts = ["run", "-d", "--name", self.name, *self.docker_opts]
        if self.network:
            opts += ["--network", self.network]
        if self.publish:
            opts += ["-p", "127.0.0.1::11211"]
        docker(*opts, self.image, *self.args)
        if wait:
            self.wait_serving()
        return self

    def state(self):
        return docker(
            "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", self.name
        )

    def running(self):
        return self.state().split()[0] == "running"

    def exit_code(self):
        return int(self.state().split()[1])

    def logs(self):
        proc = subprocess.run(
            ["docker", "logs", self.name],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return proc.stdout + proc.stderr

    def host_port(self, port=11211):
        out = docker("port", self.name, f"{port}/tcp")
        # "127.0.0.1:49153" (one line per binding; only 127.0.0.1 is published)
        return int(out.splitlines()[0].rsplit(":", 1)[1])

    @property
    def address(self):
        """The address host clients use: the published port, or the network IP."""
        if self.publish:
            return ("127.0.0.1", self.host_port())
        return (self.ip(), 11211)

    def ip(self, network=None):
        network = network or self.network
        return docker(
            "inspect",
            "-f",
            f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}',
            self.name,
        )

    def wait_serving(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                raise AssertionError(
                    f"{self.name} exited ({self.state()}) with args {self.args}:\n{self.logs()}"
                )
            reply = memcached_version(self.address)
            if reply and reply.startswith("VERSION "):
                return reply
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} does not serve:\n{self.logs()}")
            time.sleep(0.1)

    def remove(self):
        docker("rm", "-f", "-v", self.name, check=False, timeout=60)
