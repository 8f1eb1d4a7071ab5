"""Local Docker images for the tests and CI, built without any registry.

``build_images()`` (``invoke images``) bootstraps a minimal Debian with debootstrap, imports it
with ``docker import`` as ``harness-local/mqtt-python:<key>`` and tags it ``:latest``
(:data:`DEFAULT_IMAGE`). ``<key>`` is a hash of the recipe (suite, mirror, packages, recipe
version); it is also stored as the image label ``dev.harness.image-key``, so a second call finds
the image and returns in well under a second. ``force=True`` rebuilds. Needs root, debootstrap and
network access to the Debian mirror; takes about a minute.

The image has mosquitto, python3 and python3-paho-mqtt (1.6.1), no ENTRYPOINT and ``CMD
/bin/sh``. mosquitto 2 listens only on localhost without a config, so start it with one::

    containers.run(DEFAULT_IMAGE, service="broker", ports=[1883], ready=MqttReady(1883),
                   command=["sh", "-c", "printf 'listener 1883\\nallow_anonymous true\\n'"
                            " > /tmp/m.conf && exec mosquitto -c /tmp/m.conf"])

With a registry: ``docker pull eclipse-mosquitto:2`` and use that image for the broker instead
(same command, or mount a config with ``listener 1883`` and ``allow_anonymous true`` into
``/mosquitto/config/mosquitto.conf``); it has no python3/paho, so services under test that need
Python keep their own image. Nothing in harness requires this image unless a test asks for it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness import labels
from harness.errors import HarnessError

if TYPE_CHECKING:
    import docker as docker_sdk

REPOSITORY = "harness-local/mqtt-python"
DEFAULT_IMAGE = f"{REPOSITORY}:latest"
RECIPE_VERSION = "1"
CHUNK = 1 << 20
DEBOOTSTRAP_TIMEOUT_S = 900


@dataclass(frozen=True)
class ImageRecipe:
    repository: str = REPOSITORY
    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    packages: tuple[str, ...] = ("mosquitto", "python3", "python3-paho-mqtt")
    version: str = RECIPE_VERSION

    def key(self) -> str:
        """Content key: the same recipe gives the same key; any change gives another."""
        data = {
            "suite": self.suite,
            "mirror": self.mirror,
            "packages": sorted(self.packages),
            "version": self.version,
            "variant": "minbase",
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def tag(self) -> str:
        return f"{self.repository}:{self.key()}"


DEFAULT_RECIPE = ImageRecipe()


@dataclass(frozen=True)
class BuildResult:
    image: str
    key: str
    built: bool  # False: the cached image was used
    seconds: float


def find_cached(client: docker_sdk.DockerClient, recipe: ImageRecipe) -> str | None:
    """The id of an image of this recipe's repository carrying its key label, if any."""
    found = client.images.list(
        name=recipe.repository, filters={"label": f"{labels.IMAGE_KEY}={recipe.key()}"}
    )
    return str(found[0].id) if found else None


def _bootstrap(recipe: ImageRecipe, root: str, progress: Callable[[str], None]) -> None:
    if shutil.which("debootstrap") is None:
        raise HarnessError(
            "harness: debootstrap is not installed; `apt-get install debootstrap`, or with a"
            " registry use eclipse-mosquitto:2 (see harness.images)"
        )
    command = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(recipe.packages)}",
        recipe.suite,
        root,
        recipe.mirror,
    ]
    progress(f"harness: {' '.join(command)}")
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=DEBOOTSTRAP_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise HarnessError(
            f"harness: debootstrap failed with exit code {done.returncode} (needs root and the"
            f" mirror {recipe.mirror}):\n{tail}"
        )


def _import(client: docker_sdk.DockerClient, recipe: ImageRecipe, root: str) -> None:
    tar = subprocess.Popen(
        ["tar", "--numeric-owner", "-C", root, "-c", "."], stdout=subprocess.PIPE
    )
    assert tar.stdout is not None
    stdout = tar.stdout

    def chunks() -> Iterator[bytes]:
        while data := stdout.read(CHUNK):
            yield data

    try:
        client.api.import_image(
            src=chunks(),
            repository=recipe.repository,
            tag=recipe.key(),
            changes=[f"LABEL {labels.IMAGE_KEY}={recipe.key()}", 'CMD ["/bin/sh"]'],
            stream_src=True,
        )
    finally:
        stdout.close()
        tar.wait()
    if tar.returncode != 0:
        raise HarnessError(f"harness: tar of {root} failed with exit code {tar.returncode}")


def build_image(
    recipe: ImageRecipe = DEFAULT_RECIPE,
    force: bool = False,
    progress: Callable[[str], None] = print,
    client: docker_sdk.DockerClient | None = None,
) -> BuildResult:
    started = time.monotonic()
    own = client is None
    if client is None:
        from harness.docker import make_client

        client = make_client()
    try:
        cached = None if force else find_cached(client, recipe)
        if cached is None:
            root = tempfile.mkdtemp(prefix="harness-image-")
            try:
                _bootstrap(recipe, root, progress)
                progress(f"harness: importing {recipe.tag}")
                _import(client, recipe, root)
            finally:
                shutil.rmtree(root, ignore_errors=True)
        image = client.images.get(recipe.tag)
        image.tag(recipe.repository, "latest")
        seconds = time.monotonic() - started
        verb = "built" if cached is None else "up to date:"
        progress(f"harness: {verb} {recipe.tag} (= {recipe.repository}:latest) in {seconds:.1f} s")
        return BuildResult(recipe.tag, recipe.key(), cached is None, seconds)
    finally:
        if own:
            client.close()


def build_images(
    force: bool = False,
    progress: Callable[[str], None] = print,
    recipes: tuple[ImageRecipe, ...] = (DEFAULT_RECIPE,),
    client: docker_sdk.DockerClient | None = None,
) -> list[BuildResult]:
    """Build every image the tests and CI need (cached by content key; ``force`` rebuilds)."""
    return [build_image(recipe, force, progress, client) for recipe in recipes]


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.images [--force]``; exit code 0 built or cached, 1 failed."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m harness.images", description="Build harness's local Docker images."
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    args = parser.parse_args(argv)
    try:
        build_images(force=args.force)
    except HarnessError as exc:
        print(exc, file=sys.stderr)
        return 1
    except Exception as exc:  # the daemon: unreachable, refused the import, ...
        print(
            f"harness: building the images failed: {type(exc).__name__}: {exc}; check"
            " `docker info`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
