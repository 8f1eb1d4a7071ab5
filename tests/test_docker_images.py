"""harness.images: the content key and the cache-hit path (CI runs the real build)."""

from __future__ import annotations

import io
import tarfile
import time
import uuid

import docker
import pytest

from harness import labels
from harness.images import (
    DEFAULT_IMAGE,
    DEFAULT_RECIPE,
    ImageRecipe,
    build_image,
    build_images,
    find_cached,
)

pytestmark = pytest.mark.docker


def test_content_key_is_stable_and_follows_the_recipe() -> None:
    key = DEFAULT_RECIPE.key()
    assert len(key) == 12
    assert ImageRecipe().key() == key
    reordered = ImageRecipe(packages=tuple(reversed(DEFAULT_RECIPE.packages)))
    assert reordered.key() == key  # the package order does not matter
    assert ImageRecipe(packages=(*DEFAULT_RECIPE.packages, "curl")).key() != key
    assert ImageRecipe(version="2").key() != key
    assert ImageRecipe(suite="trixie").key() != key
    assert ImageRecipe(repository="elsewhere/x").key() == key  # where it goes is not content
    assert DEFAULT_RECIPE.tag == f"harness-local/mqtt-python:{key}"
    assert DEFAULT_IMAGE == "harness-local/mqtt-python:latest"


def tiny_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = b"harness test image\n"
        info = tarfile.TarInfo("README")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_cached_image_makes_build_a_noop_under_a_second(
    docker_client: docker.DockerClient,
) -> None:
    recipe = ImageRecipe(repository=f"harness-test4-{uuid.uuid4().hex[:6]}/img")
    docker_client.api.import_image_from_data(
        tiny_tar(),
        repository=recipe.repository,
        tag=recipe.key(),
        changes=[f"LABEL {labels.IMAGE_KEY}={recipe.key()}"],
    )
    lines: list[str] = []
    try:
        started = time.monotonic()
        result = build_image(recipe, progress=lines.append, client=docker_client)
        elapsed = time.monotonic() - started
        assert result.built is False
        assert elapsed < 1.0
        assert result.image == recipe.tag
        latest = docker_client.images.get(f"{recipe.repository}:latest")
        assert latest.id == docker_client.images.get(recipe.tag).id
        assert lines == [
            f"harness: up to date: {recipe.tag} (= {recipe.repository}:latest)"
            f" in {result.seconds:.1f} s"
        ]
    finally:
        for tag in (f"{recipe.repository}:latest", recipe.tag):
            docker_client.images.remove(tag, force=True)


def test_the_default_image_is_cached_by_its_key(docker_client: docker.DockerClient) -> None:
    if find_cached(docker_client, DEFAULT_RECIPE) is None:
        pytest.skip("harness-local/mqtt-python has no image of this recipe: run `invoke images`")
    started = time.monotonic()
    (result,) = build_images(progress=lambda line: None, client=docker_client)
    assert result.built is False
    assert time.monotonic() - started < 1.0
    image = docker_client.images.get(DEFAULT_IMAGE)
    assert image.labels[labels.IMAGE_KEY] == DEFAULT_RECIPE.key()
