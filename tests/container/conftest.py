"""Fixtures for the packaging tests: the image (built from docker/Dockerfile.prebuilt around
the static binaries scripts/build-static.sh staged), containers and networks.

Set MEMCRAB_IMAGE to test an image that already exists (it is then neither built nor
removed). Tests that need Docker are skipped with a notice when `docker info` fails;
test_k8s.py needs no Docker.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from support import CONTEXT, DOCKER_DIR, RUN_ID, Container, docker, docker_available

_DOCKER = None


def has_docker():
    global _DOCKER
    if _DOCKER is None:
        _DOCKER = docker_available()
        if not _DOCKER and os.environ.get("MEMCRAB_REQUIRE_DOCKER") == "1":
            pytest.fail(
                "Docker is required (MEMCRAB_REQUIRE_DOCKER=1) but `docker info` fails",
                pytrace=False,
            )
    return _DOCKER


@pytest.fixture(scope="session")
def image():
    if not has_docker():
        pytest.skip("Docker is not available (docker info failed)")
    given = os.environ.get("MEMCRAB_IMAGE")
    if given:
        yield given
        return
    rootfs = CONTEXT / "rootfs" / "usr" / "local" / "bin" / "memcrab"
    if not rootfs.is_file():
        pytest.fail(
            f"{rootfs} is missing: run scripts/build-static.sh first", pytrace=False
        )
    # Lower case, as image names must be.
    tag = f"memcrab-memcached:{RUN_ID}"
    docker(
        "build",
        "-q",
        "-f",
        str(DOCKER_DIR / "Dockerfile.prebuilt"),
        "-t",
        tag,
        str(CONTEXT),
        timeout=300,
    )
    try:
        yield tag
    finally:
        docker("rmi", "-f", tag, check=False)


@pytest.fixture
def containers(image, network, volume, request):
    """Factory: containers(*args, docker_opts=(), publish=True, network=None, wait=True).

    Depends on `network` and `volume` so that networks and volumes are removed after the
    containers that use them.
    """
    made = []
    test = request.node.name.split("[")[0].replace("_", "-")[-20:].strip("-")

    def start(*args, docker_opts=(), publish=True, network=None, wait=True, name=None):
        name = f"{RUN_ID}-{name or test}-{len(made)}"
        c = Container(name, image, args, docker_opts, publish=publish, network=network)
        made.append(c)
        return c.start(wait=wait)

    yield start
    for c in made:
        c.remove()


@pytest.fixture
def network(request):
    """Factory: network(*options) creates a private bridge network (`docker network create
    --driver bridge OPTIONS NAME`, e.g. `--subnet`), removed at teardown."""
    if not has_docker():
        pytest.skip("Docker is not available (docker info failed)")
    made = []

    def create(*options):
        name = f"{RUN_ID}-net{len(made)}"
        made.append(name)
        docker("network", "create", "--driver", "bridge", *options, name)
        return name

    yield create
    for name in made:
        docker("network", "rm", name, check=False)


@pytest.fixture
def volume(request):
    """Factory: volume() creates a named Docker volume, removed at teardown."""
    if not has_docker():
        pytest.skip("Docker is not available (docker info failed)")
    made = []

    def create():
        name = f"{RUN_ID}-vol{len(made)}"
        made.append(name)
        docker("volume", "create", name)
        return name

    yield create
    for name in made:
        docker("volume", "rm", "-f", name, check=False)
