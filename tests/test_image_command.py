"""Container images of a command pipeline's artifacts (`container_images:`): validated with file and line, the same
digest from any checkout, recorded like a Go target's image, loaded and run by the real engine."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from reprobuild.config.pipeline import load_pipelines
from reprobuild.errors import FileError
from reprobuild.formats import oci
from tests.conftest import REPO, run_cli

MINI = REPO / "tests" / "data" / "go-mini"
SDE = 1700000000
# A command that builds a static Go binary with the pipeline's toolchain (as a Makefile would), and an image of it.
PIPELINE = """\
version: 1
name: greet
builder: command
toolchain: go
source: src
source_date_epoch: {sde}
image: debian
run: CGO_ENABLED=0 /rb/toolchain/go/bin/go build -trimpath -buildvcs=false -ldflags="-buildid= -X main.version=cmd" \
-o $OUT/bin/hi ./cmd/hi && cp motd.txt $OUT/motd.txt
artifacts: ["bin/*", "*.txt"]
container_images:
  - name: hi
    artifacts: {{/usr/local/bin/hi: bin/hi}}
  - name: hi-files
    platform: linux/amd64
    artifacts: {{/app/hi: bin/hi, /app/motd.txt: motd.txt}}
    entrypoint: [/app/hi]
    user: "1000:1000"
    workdir: /app
    tag: greet/hi:1.0
"""


def checkout(root: Path, pipeline: str = PIPELINE) -> Path:
    shutil.copytree(MINI, root / "src")
    (root / "src" / "motd.txt").write_text("be kind\n")
    (root / "pipelines").mkdir()
    (root / "pipelines" / "greet.yaml").write_text(pipeline.format(sde=SDE))
    for name in ("toolchains.lock", "toolchains.yaml"):
        shutil.copy(REPO / name, root / name)
    return root


# --- the pipeline key (no Go, no engine) -----------------------------------------------------------

HEAD = "version: 1\nname: p\nbuilder: command\nsource: src\nrun: 'true'\nartifacts: ['bin/*']\n"


def pipeline_error(tmp_path: Path, tail: str) -> FileError:
    (tmp_path / "src").mkdir(exist_ok=True)
    path = tmp_path / "p.yaml"
    path.write_text(HEAD + tail)
    with pytest.raises(FileError) as info:
        load_pipelines([path], tmp_path)
    return info.value


def line_of(tmp_path: Path, tail: str, text: str) -> str:
    """file:line of the first line of `tail` holding `text`."""
    first = len(HEAD.splitlines()) + 1
    return f"{tmp_path / 'p.yaml'}:{next(i for i, x in enumerate(tail.splitlines(), first) if text in x)}"


@pytest.mark.parametrize(("tail", "at", "message"), [
    ("image: {base: scratch}\n", "image:", "names the builder image"),
    ("images: [{name: x, artifacts: {/x: bin/x}}]\n", "images:", "container_images:"),
    ("container_images: {name: x}\n", "container_images:", "must be a list"),
    ("container_images: []\n", "container_images:", "container_images is empty"),
    ("container_images:\n  - name: x\n    artifact: {/x: bin/x}\n", "artifact:", "did you mean `artifacts`?"),
    ("container_images:\n  - name: x\n", "- name: x", "missing required key `artifacts`"),
    ("container_images:\n  - name: x\n    artifacts: {/x: 'bin/*'}\n", "artifacts:", "is a glob"),
    ("container_images:\n  - name: x\n    artifacts: {/x: lib/x}\n", "artifacts:", "not kept by the pipeline's"),
    ("container_images:\n  - name: x\n    artifacts: {/x: ../x}\n", "artifacts:", "normalized path under $OUT"),
    ("container_images:\n  - name: x\n    artifacts: {x: bin/x}\n", "artifacts:", "normalized absolute path"),
    ("container_images:\n  - name: x\n    artifacts: {/a: bin/a, /b: bin/b}\n", "- name: x",
     "needs an `entrypoint`"),
    ("container_images:\n  - name: x\n    artifacts: {/etc/passwd: bin/x}\n", "artifacts:", "written by reprobuild"),
    ("container_images:\n  - name: x\n    platform: linux/amd64\n    artifacts: {/x: bin/x}\n"
     "  - name: x\n    artifacts: {/x: bin/x}\n", "  - name: x\n    artifacts", "used twice"),
    ("container_images:\n  - name: x\n    platform: darwin/arm64\n    artifacts: {/x: bin/x}\n", "platform:",
     "is not linux/<arch>"),
    ("container_images:\n  - name: x\n    artifacts: {/x: bin/x}\n    user: root\n", "user:", "as root"),
    ("container_images:\n  - name: x\n    artifacts: {/x: bin/x}\n    base: debian:12\n", "base:", "never pulled"),
])
def test_container_images_are_validated_with_file_and_line(tmp_path: Path, tail: str, at: str,
                                                           message: str) -> None:
    err = pipeline_error(tmp_path, tail)
    assert message in str(err), str(err)
    if "\n" in at:  # the second of two items
        lines = (HEAD + tail).splitlines()
        first = next(i for i, x in enumerate(lines, 1) if x == "  - name: x")
        assert str(err.where) == f"{tmp_path / 'p.yaml'}:{first + 3}", str(err)
    else:
        assert str(err.where) == line_of(tmp_path, tail, at), str(err)


def test_a_valid_section_and_its_defaults(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "p.yaml").write_text(HEAD + "container_images:\n  - name: x\n    artifacts: {/usr/bin/x: bin/x}\n")
    (p,) = load_pipelines([tmp_path / "p.yaml"], tmp_path)
    (image,) = p.container_images
    assert (image.name, image.platform, image.artifacts) == ("x", "linux/amd64", (("usr/bin/x", "bin/x"),))
    assert image.spec.entrypoint == ("/usr/bin/x",) and image.spec.user == "65532:65532"
    assert image.outputs() == ("x.oci", "x_linux_amd64.docker.tar")
    assert p.image == "debian"  # the builder image is still the builder image


def test_cli_exits_2_naming_the_line(tmp_path: Path) -> None:
    root = checkout(tmp_path / "c")
    text = (root / "pipelines" / "greet.yaml").read_text().replace("    entrypoint: [/app/hi]\n", "")
    (root / "pipelines" / "greet.yaml").write_text(text)
    res = run_cli("build", "--out", "out", "--backend", "local", cwd=root)
    assert res.returncode == 2, res.stderr
    line = text.splitlines().index("  - name: hi-files") + 1
    assert f"pipelines/greet.yaml:{line}" in res.stderr and "needs an `entrypoint`" in res.stderr


def test_the_action_cache_key_follows_the_image_section(tmp_path: Path) -> None:
    from reprobuild.build.actioncache import KeyInputs, unit_key
    from reprobuild.build.shard import Unit
    from reprobuild.config.lock import load_lock

    (tmp_path / "src").mkdir()
    lock = load_lock(REPO / "toolchains.lock")
    keys = []
    for tail in ("", "container_images:\n  - name: x\n    artifacts: {/x: bin/x}\n",
                 "container_images:\n  - name: x\n    artifacts: {/x: bin/x}\n    user: '1000'\n"):
        (tmp_path / "p.yaml").write_text(HEAD + tail)
        (p,) = load_pipelines([tmp_path / "p.yaml"], tmp_path)
        keys.append(unit_key(Unit(p), KeyInputs(lock, {}, "local", False, tmp_path)))
    assert len(set(keys)) == 3


# --- assembly from artifacts (no Go, no engine) ------------------------------------------------------

def test_a_linked_artifact_is_refused(tmp_path: Path) -> None:
    from reprobuild.build.image import Base, plan_artifact_job
    from reprobuild.config.image import ArtifactImage, ImageSpec
    from reprobuild.errors import Location

    out = tmp_path / "out"
    (out / "bin").mkdir(parents=True)
    (tmp_path / "host-secret").write_text("secret\n")
    (out / "bin" / "x").symlink_to(tmp_path / "host-secret")
    image = ArtifactImage("x", "linux/amd64", (("x", "bin/x"),), ImageSpec("scratch", ("/x",)))
    with pytest.raises(FileError, match="symbolic link"):
        plan_artifact_job(image, out, tmp_path, {"linux/amd64": Base("scratch", None)}, "0.0.0", SDE, None,
                          Location(tmp_path / "p.yaml", 3))


def test_artifact_images_are_the_same_under_another_umask_and_path(tmp_path: Path) -> None:
    from reprobuild.build.image import Base, assemble, plan_artifact_job
    from reprobuild.config.image import ArtifactImage, ImageSpec
    from reprobuild.errors import Location

    image = ArtifactImage("x", "linux/arm64", (("app/x", "bin/x"), ("app/data.txt", "data.txt")),
                          ImageSpec("scratch", ("/app/x",)))
    digests = []
    for name, umask in (("a", 0o022), ("a-much-longer-directory-name/b", 0o077)):
        old = os.umask(umask)
        try:
            out = tmp_path / name / "out"
            (out / "bin").mkdir(parents=True)
            (out / "bin" / "x").write_bytes(b"#!/bin/sh\necho x\n")
            (out / "bin" / "x").chmod(0o700)
            (out / "data.txt").write_text("data\n")
            job = plan_artifact_job(image, out, tmp_path, {"linux/arm64": Base("scratch", None)}, "0.0.0", SDE, None,
                                    Location(tmp_path / "p.yaml", 3))
            layout = assemble(job, out)
        finally:
            os.umask(old)
        digests.append((layout.top.digest, (out / "x_linux_arm64.docker.tar").read_bytes()))
        (img,) = layout.images
        assert str(img.platform) == "linux/arm64/v8" and img.config_data["config"]["Entrypoint"] == ["/app/x"]
    assert digests[0] == digests[1]


# --- built from two checkouts, loaded and run --------------------------------------------------------

@pytest.fixture(scope="module")
def two_builds(tmp_path_factory: pytest.TempPathFactory, go_registry: Any,
               shared_cache_root: Path) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("command-images")
    outs = []
    for root, umask, tz in ((base / "a", 0o022, "UTC"), (base / "a-checkout-at-a-longer-path" / "b", 0o077,
                                                         "Asia/Kathmandu")):
        checkout(root)
        old = os.umask(umask)
        try:
            res = run_cli("build", "--out", "out", "--backend", "local", "--toolchain", "go=go-registry",
                          "--no-cache", env={"REPROBUILD_CACHE": str(shared_cache_root), "TZ": tz}, cwd=root)
        finally:
            os.umask(old)
        assert res.returncode == 0, res.stderr
        outs.append(root / "out")
    return outs[0], outs[1]


@pytest.mark.go
@pytest.mark.slow
def test_same_image_digests_from_two_checkouts(two_builds: tuple[Path, Path]) -> None:
    a, b = two_builds
    assert (a / "SHA256SUMS").read_text() == (b / "SHA256SUMS").read_text()
    images = json.loads((a / "manifest.json").read_text())["oci_images"]
    assert images == json.loads((b / "manifest.json").read_text())["oci_images"]
    assert sorted(images) == ["greet/hi-files.oci", "greet/hi.oci"]
    sums = {path: digest for digest, path in (line.split("  ") for line in (a / "SHA256SUMS").read_text().splitlines())}
    subjects = json.loads((a / "provenance.json").read_text())["subject"]
    for path, image in images.items():
        digest = image["digest"].removeprefix("sha256:")
        assert sums[f"{path}/blobs/sha256/{digest}"] == digest  # the image digest is in SHA256SUMS
        assert {"name": path, "digest": {"sha256": digest}, "annotations": {"mediaType": oci.MANIFEST}} in subjects
    assert {"greet/bin/hi", "greet/motd.txt", "greet/hi_linux_amd64.docker.tar",
            "greet/hi-files_linux_amd64.docker.tar"} <= set(sums)
    layout = oci.read_layout(a / "greet" / "hi-files.oci")
    (image,) = layout.images
    assert layout.name == "greet/hi:1.0"
    assert image.config_data["config"]["User"] == "1000:1000" and image.config_data["config"]["WorkingDir"] == "/app"


@pytest.mark.go
@pytest.mark.docker
@pytest.mark.slow
def test_loads_into_the_engine_and_runs_with_no_network(two_builds: tuple[Path, Path], docker_engine: str) -> None:
    import docker

    for name, tag in (("hi", "hi:0.0.0"), ("hi-files", "greet/hi:1.0")):
        layout = oci.read_layout(two_builds[1] / "greet" / f"{name}.oci")
        config = layout.images[0].config.digest
        res = run_cli("image", "load", str(two_builds[1] / "greet" / f"{name}.oci"), "--json")
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["image_id"] == config
        client = docker.from_env(version="auto")
        try:
            assert client.images.get(tag).id == config  # the engine's image ID is the config digest
            out = client.containers.run(config, network_mode="none", remove=True)
            assert out == b"hi cmd\n"
        finally:
            client.images.remove(tag, noprune=True)
            client.close()


def test_a_command_output_where_the_image_goes_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "c"
    (root / "src").mkdir(parents=True)
    (root / "pipelines").mkdir()
    shutil.copy(REPO / "toolchains.lock", root / "toolchains.lock")
    (root / "pipelines" / "p.yaml").write_text(
        "version: 1\nname: p\nbuilder: command\nsource: src\n"
        "run: mkdir -p $OUT/x.oci && echo a > $OUT/x.oci/index.json && echo b > $OUT/x\n"
        "container_images:\n  - name: x\n    artifacts: {/x: x}\n")
    res = run_cli("build", "--out", "out", "--backend", "local", "--no-cache", cwd=root)
    assert res.returncode == 2, res.stderr
    assert "pipelines/p.yaml:7" in res.stderr and "wrote `x.oci/index.json`" in res.stderr
    assert not (root / "out").exists()
