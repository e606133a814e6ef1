"""Container images of built Go targets: the same digest from any checkout, loaded and run by the real
engine, pushed to a real registry and pulled back by digest, refused when tampered, explained by compare."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from reprobuild.config.pipeline import load_pipelines
from reprobuild.errors import FileError
from reprobuild.formats import oci
from tests.conftest import REPO, run_cli

MINI = REPO / "tests" / "data" / "go-mini"
SDE = 1700000000
PIPELINE = """\
version: 1
name: mini
builder: go
toolchain: go
source: src
module_version: 2.0.0
source_date_epoch: {sde}
targets:
  - name: hi
    package: ./cmd/hi
    platforms: [linux/amd64, linux/arm64]
    ldflags: {{main.version: "{{version}}"}}
    image:
      base: {base}
  - name: hi1
    package: ./cmd/hi
    platforms: [linux/amd64]
    image:
      user: "1000:1000"
      env: {{GREETING: hello}}
      ports: [8080, 9090/udp]
      workdir: /srv
      labels: {{org.opencontainers.image.title: hi}}
      source: https://example.org/mini
      files: {{/etc/hi/motd: motd.txt}}
      tag: mini/hi:2.0.0
"""


def checkout(root: Path, base: str = "scratch") -> Path:
    """A user's checkout: the mini module, its pipeline, the repository's lock."""
    shutil.copytree(MINI, root / "src")
    (root / "src" / "motd.txt").write_text("be kind\n")
    (root / "pipelines").mkdir()
    (root / "pipelines" / "mini.yaml").write_text(PIPELINE.format(sde=SDE, base=base))
    for name in ("toolchains.lock", "toolchains.yaml"):
        shutil.copy(REPO / name, root / name)
    return root


def build(root: Path, cache: Path, out: str = "out", env: dict[str, str] | None = None,
          umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    old = os.umask(umask)
    try:
        return run_cli("build", "--out", out, "--backend", "local", "--toolchain", "go=go-registry", "--no-cache",
                       env={"REPROBUILD_CACHE": str(cache), **(env or {})}, cwd=root)
    finally:
        os.umask(old)


def manifest(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return data


# --- the pipeline section (no Go, no engine) -----------------------------------------------------

def pipeline_error(tmp_path: Path, image_yaml: str) -> FileError:
    (tmp_path / "src").mkdir(exist_ok=True)
    text = ("version: 1\nname: p\nbuilder: go\ntoolchain: go\nsource: src\ntargets:\n"
            "  - name: t\n    package: ./cmd/t\n    image:\n" + image_yaml)
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(FileError) as info:
        load_pipelines([path], tmp_path)
    return info.value


def test_image_section_is_validated_with_file_and_line(tmp_path: Path) -> None:
    err = pipeline_error(tmp_path, "      base: scratch\n      entrpoint: [/x]\n")
    assert str(err.where) == f"{tmp_path / 'p.yaml'}:11"
    assert "unknown key `entrpoint`" in str(err) and "did you mean `entrypoint`?" in str(err)
    err = pipeline_error(tmp_path, "      base: debian:bookworm\n")
    assert "never pulled" in str(err) and str(err.where).endswith(":10")
    err = pipeline_error(tmp_path, "      user: root\n")
    assert "as root" in str(err) and "allow_root" in str(err)
    err = pipeline_error(tmp_path, "      entrypoint: /usr/local/bin/t --flag\n")
    assert "exec form" in str(err)
    err = pipeline_error(tmp_path, "      ports: [80000]\n")
    assert "1-65535" in str(err)
    err = pipeline_error(tmp_path, "      labels: {org.opencontainers.image.created: now}\n")
    assert "set by reprobuild" in str(err)
    err = pipeline_error(tmp_path, "      revision: no-thanks\n")
    assert "revision must be true or false" in str(err)


def test_revision_label_is_the_commit_unless_turned_off(tmp_path: Path) -> None:
    from reprobuild.build.image import key_inputs
    from reprobuild.config.image import parse_image
    from reprobuild.config.lock import load_lock
    from reprobuild.config.yamlload import load_one

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f").write_text("x")
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.email=t@t", "-c", "user.name=t", "add", "f"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "c"],
                   check=True)
    lock = load_lock(REPO / "toolchains.lock")
    for text, labelled in (("base: scratch\n", True), ("revision: false\n", False)):
        (tmp_path / "i.yaml").write_text(text)
        spec = parse_image(load_one(tmp_path / "i.yaml"), "t")
        revision = key_inputs(spec, lock, {}, tmp_path)["revision"]
        assert (revision is not None and len(revision) == 40) is labelled


def test_cli_exits_2_naming_the_line(tmp_path: Path) -> None:
    root = checkout(tmp_path / "c")
    text = (root / "pipelines" / "mini.yaml").read_text().replace("      user: \"1000:1000\"", "      usr: x")
    (root / "pipelines" / "mini.yaml").write_text(text)
    res = run_cli("build", "--out", "out", "--backend", "local", cwd=root)
    assert res.returncode == 2
    line = text.splitlines().index("      usr: x") + 1
    assert f"pipelines/mini.yaml:{line}" in res.stderr and "did you mean `user`?" in res.stderr


# --- assembly and compare, on small stand-in binaries (no Go, no engine) ------------------------------

def stand_in_job(tmp: Path, content: bytes = b"#!/bin/sh\necho hi\n", env: tuple[tuple[str, str], ...] = (),
                 platforms: tuple[str, ...] = ("linux/amd64", "linux/arm64")) -> Any:
    from reprobuild.build.image import Base, ImageJob
    from reprobuild.config.image import ImageSpec

    binaries = []
    for plat in platforms:
        path = tmp / f"x_{plat.replace('/', '_')}"
        path.write_bytes(content + plat.encode())
        path.chmod(0o700)
        binaries.append((plat, path))
    return ImageJob("x", ImageSpec("scratch", None, env=env), tuple(binaries), (),
                    tuple((p, Base("scratch", None)) for p in platforms), "1.0.0", SDE, None, "x:1.0.0")


def layout_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_assembly_is_the_same_under_another_umask_and_path(tmp_path: Path) -> None:
    from reprobuild.build.image import assemble

    outs = []
    for name, umask in (("a", 0o022), ("a-much-longer-directory-name/b", 0o077)):
        work = tmp_path / name
        work.mkdir(parents=True)
        old = os.umask(umask)
        try:
            assemble(stand_in_job(work), work)
        finally:
            os.umask(old)
        outs.append(work)
    assert layout_files(outs[0] / "x.oci") == layout_files(outs[1] / "x.oci")
    for arch in ("amd64", "arm64"):
        assert (outs[0] / f"x_linux_{arch}.docker.tar").read_bytes() == (
            outs[1] / f"x_linux_{arch}.docker.tar").read_bytes()


def test_the_layer_cache_gives_the_same_bytes_and_ignores_a_damaged_entry(tmp_path: Path) -> None:
    from reprobuild.build.image import assemble

    outs = {name: tmp_path / name for name in ("plain", "cold", "warm", "damaged")}
    for out in outs.values():
        out.mkdir()
    cache = tmp_path / "layers"
    assemble(stand_in_job(tmp_path), outs["plain"])
    assemble(stand_in_job(tmp_path), outs["cold"], cache)
    assert len(list(cache.glob("*.gz"))) == 2
    assemble(stand_in_job(tmp_path), outs["warm"], cache)
    for entry in cache.glob("*.gz"):
        entry.write_bytes(b"not the layer")
    assemble(stand_in_job(tmp_path), outs["damaged"], cache)
    expected = layout_files(outs["plain"] / "x.oci")
    for name in ("cold", "warm", "damaged"):
        assert layout_files(outs[name] / "x.oci") == expected, name
    oci.read_layout(outs["damaged"] / "x.oci", check=True)


def test_compare_names_the_layer_file_and_config_field(tmp_path: Path) -> None:
    from reprobuild.build.image import assemble
    from reprobuild.evidence.comparators import explain_files

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assemble(stand_in_job(tmp_path / "a"), tmp_path / "a")
    assemble(stand_in_job(tmp_path / "b", content=b"#!/bin/sh\necho HI\n", env=(("MODE", "b"),)), tmp_path / "b")
    causes = explain_files(tmp_path / "a" / "x.oci" / "index.json", tmp_path / "b" / "x.oci" / "index.json")
    details = [c.detail for c in causes]
    assert causes[0].kind == "content" and details[0].startswith("image digest sha256:")
    assert any(c.kind == "image-config" and c.detail.startswith("linux/amd64: config field config.Env: ")
               for c in causes), details
    assert any(d.startswith("linux/arm64/v8: layer 1 of 1 (reprobuild x 1.0.0 (linux/arm64))") for d in details)
    assert any("usr/local/bin/x" in d for d in details), details  # down to the file inside the layer
    assert explain_files(tmp_path / "a" / "x.oci" / "index.json", tmp_path / "a" / "x.oci" / "index.json") == []


def test_push_and_load_refuse_layouts_outside_a_build(tmp_path: Path) -> None:
    from reprobuild.build.image import assemble
    from reprobuild.build.publish import Reference

    out = tmp_path / "out"
    (out / "p").mkdir(parents=True)
    assemble(stand_in_job(tmp_path, platforms=("linux/amd64",)), out / "p")
    res = run_cli("image", "push", str(out / "p" / "x.oci"), "127.0.0.1:9/x:1")
    assert res.returncode == 2 and "no SHA256SUMS" in res.stderr
    (out / "SHA256SUMS").write_text("")
    res = run_cli("image", "load", str(out / "p" / "x.oci"))
    assert res.returncode == 2 and "does not list p/x.oci/index.json" in res.stderr
    res = run_cli("image", "push", str(out / "p"), "127.0.0.1:9/x:1")
    assert res.returncode == 2 and "not an OCI image layout" in res.stderr
    from reprobuild.build.manifest import hash_artifacts, render_sums

    (out / "SHA256SUMS").write_text(render_sums(hash_artifacts(out)))
    res = run_cli("image", "push", str(out / "p" / "x.oci"), "registry.example:5000/x:1",
                  env={"REPROBUILD_OFFLINE": "1"})
    assert res.returncode == 3 and "offline mode" in res.stderr
    for bad in ("x:1", "hello", "127.0.0.1:5000/UPPER:1"):
        with pytest.raises(Exception, match="registry reference"):
            Reference.parse(bad)
    assert Reference.parse("127.0.0.1:5000/a/b").tag == "latest"
    assert Reference.parse("127.0.0.1:5000/a/b:v1").base_url(False) == "http://127.0.0.1:5000/v2/a/b"
    assert Reference.parse("registry.example:5000/a:v1").base_url(False).startswith("https://")


# --- two checkouts, one digest -------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_builds(tmp_path_factory: pytest.TempPathFactory, go_registry: Any,
               shared_cache_root: Path) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("images")
    a = checkout(base / "a")
    b = checkout(base / "a-checkout-with-a-much-longer-path" / "b")
    res = build(a, shared_cache_root, env={"TZ": "UTC", "LC_ALL": "C.UTF-8"}, umask=0o022)
    assert res.returncode == 0, res.stderr
    res = build(b, shared_cache_root, env={"TZ": "Asia/Kathmandu", "LC_ALL": "C"}, umask=0o077)
    assert res.returncode == 0, res.stderr
    return a / "out", b / "out"


@pytest.mark.go
@pytest.mark.slow
def test_same_image_digests_from_two_checkouts(two_builds: tuple[Path, Path]) -> None:
    a, b = two_builds
    assert (a / "SHA256SUMS").read_text() == (b / "SHA256SUMS").read_text()
    images = manifest(a)["oci_images"]
    assert images == manifest(b)["oci_images"]
    multi, single = images["mini/hi.oci"], images["mini/hi1.oci"]
    assert multi["media_type"] == oci.INDEX and sorted(multi["platforms"]) == ["linux/amd64", "linux/arm64"]
    assert single["media_type"] == oci.MANIFEST and list(single["platforms"]) == ["linux/amd64"]
    sums = {path: digest for digest, path in (line.split("  ") for line in (a / "SHA256SUMS").read_text().splitlines())}
    for path, image in images.items():
        digest = image["digest"].removeprefix("sha256:")
        assert sums[f"{path}/blobs/sha256/{digest}"] == digest  # the image digest is in SHA256SUMS
        subjects = json.loads((a / "provenance.json").read_text())["subject"]
        assert {"name": path, "digest": {"sha256": digest}, "annotations": {"mediaType": image["media_type"]}} \
            in subjects
    # The docker-archives are artifacts too, one per platform.
    assert {"mini/hi_linux_amd64.docker.tar", "mini/hi_linux_arm64.docker.tar", "mini/hi1_linux_amd64.docker.tar"} \
        <= set(sums)


@pytest.mark.go
@pytest.mark.slow
def test_layers_and_config_are_normalized(two_builds: tuple[Path, Path]) -> None:
    layout = oci.read_layout(two_builds[0] / "mini" / "hi1.oci")
    assert layout.name == "mini/hi:2.0.0" and layout.ref == "2.0.0"
    (image,) = layout.images
    raw = layout.blob_path(image.layers[0].digest).read_bytes()
    assert raw[:4] == b"\x1f\x8b\x08\x00" and raw[4:8] == b"\0\0\0\0"  # gzip: no name flag, mtime 0
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(raw))) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert {"etc/hi/motd", "etc/passwd", "tmp", "srv", "usr/local/bin/hi1"} <= set(names)
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" for m in members)
    modes = {m.name: m.mode for m in members}
    assert (modes["usr/local/bin/hi1"], modes["etc/hi/motd"], modes["tmp"], modes["srv"]) == (0o755, 0o644, 0o1777,
                                                                                               0o755)
    assert image.config_data["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(gzip.decompress(raw)).hexdigest()]
    cfg = image.config_data
    assert cfg["created"] == "2023-11-14T22:13:20Z"
    assert cfg["config"]["User"] == "1000:1000"
    assert cfg["config"]["Entrypoint"] == ["/usr/local/bin/hi1"]
    assert cfg["config"]["ExposedPorts"] == {"8080/tcp": {}, "9090/udp": {}}
    assert cfg["config"]["WorkingDir"] == "/srv"
    assert "GREETING=hello" in cfg["config"]["Env"]
    assert cfg["config"]["Labels"] == {"org.opencontainers.image.created": "2023-11-14T22:13:20Z",
                                       "org.opencontainers.image.source": "https://example.org/mini",
                                       "org.opencontainers.image.title": "hi",
                                       "org.opencontainers.image.version": "2.0.0"}
    multi = oci.read_layout(two_builds[0] / "mini" / "hi.oci")
    assert multi.images[0].config_data["config"]["User"] == "65532:65532"  # non-root by default
    assert [str(i.platform) for i in multi.images] == ["linux/amd64", "linux/arm64/v8"]


@pytest.mark.go
@pytest.mark.slow
def test_shards_merge_into_the_same_images(two_builds: tuple[Path, Path], tmp_path: Path,
                                           shared_cache_root: Path) -> None:
    root = checkout(tmp_path / "c")
    for i in (1, 2):
        res = run_cli("build", "--out", f"s{i}", "--shard", f"{i}/2", "--backend", "local", "--toolchain",
                      "go=go-registry", env={"REPROBUILD_CACHE": str(shared_cache_root)}, cwd=root)
        assert res.returncode == 0, res.stderr
    assert all(len(manifest(root / f"s{i}").get("oci_images", {})) == 1 for i in (1, 2))  # one image per shard
    res = run_cli("merge", "s1", "s2", "--out", "merged", cwd=root)
    assert res.returncode == 0, res.stderr
    whole = two_builds[0]
    assert (root / "merged" / "SHA256SUMS").read_text() == (whole / "SHA256SUMS").read_text()
    assert manifest(root / "merged")["oci_images"] == manifest(whole)["oci_images"]
    subjects = json.loads((root / "merged" / "provenance.json").read_text())["subject"]
    assert subjects == json.loads((whole / "provenance.json").read_text())["subject"]


# --- the engine -----------------------------------------------------------------------------------

def _docker_client() -> Any:
    import docker

    return docker.from_env(version="auto")


@pytest.mark.go
@pytest.mark.docker
@pytest.mark.slow
def test_loads_into_the_engine_and_runs(two_builds: tuple[Path, Path], docker_engine: str) -> None:
    layout = oci.read_layout(two_builds[0] / "mini" / "hi.oci")
    amd64 = layout.image_for("linux/amd64")
    assert amd64 is not None
    res = run_cli("image", "load", str(two_builds[1] / "mini" / "hi.oci"), "--platform", "linux/amd64", "--json")
    assert res.returncode == 0, res.stderr
    loaded = json.loads(res.stdout)
    assert loaded["image_id"] == amd64.config.digest  # the engine's image ID is the config digest
    client = _docker_client()
    try:
        assert client.images.get(loaded["tag"]).id == amd64.config.digest
        out = client.containers.run(amd64.config.digest, network_mode="none", remove=True)
        assert out == b"hi 2.0.0\n"
    finally:
        client.images.remove(loaded["tag"], noprune=True)


@pytest.mark.go
@pytest.mark.slow
def test_loads_into_podman_with_the_same_image_id(two_builds: tuple[Path, Path], tmp_path: Path) -> None:
    """Podman's Docker-compatible API on a socket of this test's own (`podman system service`)."""
    podman = shutil.which("podman")
    if podman is None:
        pytest.skip("podman is not installed")
    sock = tmp_path / "podman.sock"
    with open(tmp_path / "podman.log", "wb") as log:
        service = subprocess.Popen([podman, "system", "service", "--time=0", f"unix://{sock}"], stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.1)
        layout = oci.read_layout(two_builds[0] / "mini" / "hi1.oci")
        res = run_cli("image", "load", str(two_builds[0] / "mini" / "hi1.oci"), "--json",
                      env={"DOCKER_HOST": f"unix://{sock}"})
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["image_id"] == layout.images[0].config.digest
        subprocess.run([podman, "rmi", json.loads(res.stdout)["tag"]], capture_output=True)
    finally:
        service.terminate()
        service.wait(10)


# --- a real registry on 127.0.0.1 ----------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def start_registry(tmp_path: Path, htpasswd: str | None = None) -> Iterator[tuple[str, Path]]:
    """Debian's docker-registry (distribution) on a free loopback port, storing under tmp_path."""
    binary = shutil.which("docker-registry")
    if binary is None:
        if os.environ.get("REPROBUILD_REQUIRE_DOCKER", "") not in ("", "0"):
            pytest.fail("docker-registry is not installed (apt-get install docker-registry)")
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    port = _free_port()
    storage = tmp_path / "registry"
    config: dict[str, Any] = {"version": 0.1, "log": {"level": "warn"},
                              "storage": {"filesystem": {"rootdirectory": str(storage)}},
                              "http": {"addr": f"127.0.0.1:{port}"}}
    if htpasswd is not None:
        (tmp_path / "htpasswd").write_text(htpasswd)
        config["auth"] = {"htpasswd": {"realm": "test", "path": str(tmp_path / "htpasswd")}}
    (tmp_path / "registry.yml").write_text(yaml.safe_dump(config))
    with open(tmp_path / "registry.log", "wb") as log:
        proc = subprocess.Popen([binary, "serve", str(tmp_path / "registry.yml")], stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        import requests

        for _ in range(100):
            try:
                if requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code in (200, 401):
                    break
            except requests.RequestException:
                time.sleep(0.1)
        else:
            pytest.fail("docker-registry did not come up: " + (tmp_path / "registry.log").read_text()[-2000:])
        yield f"127.0.0.1:{port}", storage
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with start_registry(tmp_path) as running:
        yield running


@pytest.mark.go
@pytest.mark.docker
@pytest.mark.slow
def test_push_then_pull_by_digest(two_builds: tuple[Path, Path], registry: tuple[str, Path],
                                  docker_engine: str) -> None:
    host, _ = registry
    layout = oci.read_layout(two_builds[0] / "mini" / "hi.oci")
    res = run_cli("image", "push", str(two_builds[0] / "mini" / "hi.oci"), f"{host}/mini/hi:2.0.0")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == layout.top.digest  # printed digest == built digest
    client = _docker_client()
    ref = f"{host}/mini/hi@{layout.top.digest}"
    pulled = client.images.pull(ref)  # the engine allows plain HTTP to 127.0.0.0/8
    try:
        assert ref in pulled.attrs["RepoDigests"]
        amd64 = layout.image_for("linux/amd64")
        assert amd64 is not None and pulled.id == amd64.config.digest
    finally:
        client.images.remove(ref, noprune=True)


@pytest.mark.go
@pytest.mark.slow
def test_tampered_layout_is_refused_before_pushing(two_builds: tuple[Path, Path], registry: tuple[str, Path],
                                                   tmp_path: Path) -> None:
    host, storage = registry
    out = tmp_path / "out"
    shutil.copytree(two_builds[0], out)
    layout = oci.read_layout(out / "mini" / "hi1.oci")
    layer = layout.blob_path(layout.images[0].layers[0].digest)
    data = bytearray(layer.read_bytes())
    data[-100] ^= 1
    layer.write_bytes(bytes(data))
    res = run_cli("image", "push", str(out / "mini" / "hi1.oci"), f"{host}/mini/tampered:1")
    assert res.returncode == 1
    assert "changed since the build" in res.stderr and layer.name in res.stderr
    assert not (storage / "docker" / "registry" / "v2" / "repositories" / "mini" / "tampered").exists()
    assert not list(storage.rglob("data"))  # not one blob reached the registry
    # A consistent rewrite (new index.json for new blobs) is refused too: SHA256SUMS holds the built files.
    shutil.rmtree(out)
    shutil.copytree(two_builds[0], out)
    (out / "mini" / "hi1.oci" / "index.json").write_text(
        (out / "mini" / "hi1.oci" / "index.json").read_text().replace("2.0.0", "6.6.6"))
    res = run_cli("image", "push", str(out / "mini" / "hi1.oci"), f"{host}/mini/tampered:1")
    assert res.returncode == 1 and "index.json" in res.stderr
    # A blob swapped for a link to a copy outside the output (same bytes): refused without reading through it.
    shutil.rmtree(out)
    shutil.copytree(two_builds[0], out)
    assert layer.is_relative_to(out)  # the same blob's path in the fresh copy
    outside = tmp_path / "outside-blob"
    outside.write_bytes(layer.read_bytes())
    layer.unlink()
    layer.symlink_to(outside)
    res = run_cli("image", "push", str(out / "mini" / "hi1.oci"), f"{host}/mini/tampered:1")
    assert res.returncode == 1 and "symbolic link" in res.stderr and layer.name in res.stderr
    assert not list(storage.rglob("data"))


# --- the base: pinned Debian packages --------------------------------------------------------------
# ca-certificates and tzdata: architecture-independent. tzdata's zoneinfo/localtime -> /etc/localtime is an
# absolute link, made relative when a base is unpacked (a toolchain's would be refused).

def test_a_base_tree_keeps_absolute_links_inside_itself(tmp_path: Path) -> None:
    from reprobuild.errors import UnsafeArchive
    from reprobuild.toolchains.extract import extract_tar
    from tests.conftest import tar_bytes

    def link(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = tarfile.SYMTYPE, target
        return info, None

    data = tar_bytes([link("usr/share/zoneinfo/localtime", "/etc/localtime"), link("bin/sh", "/../../bin/dash")])
    with pytest.raises(UnsafeArchive, match="absolute path"):
        extract_tar(io.BytesIO(data), tmp_path / "toolchain", 1 << 20)
    extract_tar(io.BytesIO(data), tmp_path / "base", 1 << 20, rootfs=True)
    assert os.readlink(tmp_path / "base" / "usr/share/zoneinfo/localtime") == "../../../etc/localtime"
    assert os.readlink(tmp_path / "base" / "bin/sh") == "dash"  # `/..` is `/`: still inside the tree


def _versions(package: str) -> list[str]:
    try:
        done = subprocess.run(["apt-cache", "madison", package], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return []
    return sorted({line.split("|")[1].strip() for line in done.stdout.splitlines() if "|" in line})


def _with_base(root: Path, version: str, tzdata: str) -> None:
    inputs = yaml.safe_load((root / "toolchains.yaml").read_text())
    inputs["toolchains"]["cabase"] = {"kind": "base", "version": "1", "source": "deb", "root": ".",
                                      "packages": [f"ca-certificates={version}", f"tzdata={tzdata}"],
                                      "platforms": ["linux-amd64"]}
    (root / "toolchains.yaml").write_text(yaml.safe_dump(inputs, sort_keys=False))


@pytest.mark.go
@pytest.mark.slow
def test_changing_the_base_package_changes_only_the_base_layer(tmp_path: Path, go_registry: Any,
                                                                shared_cache_root: Path) -> None:
    versions, tzdata = _versions("ca-certificates"), _versions("tzdata")
    if len(versions) < 2 or not tzdata:
        pytest.skip(f"apt offers {len(versions)} version(s) of ca-certificates and {len(tzdata)} of tzdata")
    outs = []
    for i, version in enumerate(versions[:2]):
        root = checkout(tmp_path / f"c{i}", base="cabase")
        _with_base(root, version, tzdata[-1])
        shutil.copytree(REPO / "builders", root / "builders")  # `lock` keeps the images/python sections from it
        env = {"REPROBUILD_CACHE": str(shared_cache_root)}
        res = run_cli("lock", cwd=root, env=env)  # resolves only the new entry: `apt-get download`, pinned by sha256
        assert res.returncode == 0, res.stderr
        assert "cabase" in yaml.safe_load((root / "toolchains.lock").read_text())["toolchains"]
        res = build(root, shared_cache_root)
        assert res.returncode == 0, res.stderr
        outs.append(root / "out")
    a, b = (manifest(o)["oci_images"]["mini/hi.oci"] for o in outs)
    assert a["digest"] != b["digest"]
    for plat in ("linux/amd64", "linux/arm64"):  # arm64 is served by the architecture-free pins
        base_a, app_a = a["platforms"][plat]["layers"]
        base_b, app_b = b["platforms"][plat]["layers"]
        assert base_a != base_b and app_a == app_b
    assert manifest(outs[0])["oci_images"]["mini/hi1.oci"] == manifest(outs[1])["oci_images"]["mini/hi1.oci"]
    layout = oci.read_layout(outs[0] / "mini" / "hi.oci")
    with tarfile.open(layout.blob_path(layout.images[0].layers[0].digest)) as tf:
        base = {m.name: m for m in tf.getmembers()}
    assert base["usr/share/zoneinfo/localtime"].linkname == "../../../etc/localtime"
    bundle = base["etc/ssl/certs/ca-certificates.crt"]  # what update-ca-certificates would have made
    assert bundle.size > 100_000 and bundle.mode == 0o644
    res = run_cli("compare", str(outs[0]), str(outs[1]), "--json")
    assert res.returncode == 1
    report = json.loads(res.stdout)
    diffs = {d["artifact"]: d for d in report["differences"]}
    assert "mini/hi_linux_amd64" not in diffs  # the binaries are the same
    details = [c["detail"] for c in diffs["mini/hi.oci/index.json"]["causes"]]
    assert any("layer 1 of 2 (reprobuild base cabase: ca-certificates=" in d for d in details), details
    assert not any("layer 2 of 2" in d for d in details), details
    assert any("usr/share/ca-certificates/" in d for d in details), details  # which files of the base layer
    assert any(d.startswith("linux/amd64: config field history.0.created_by") for d in details), details
    prov = json.loads((outs[0] / "provenance.json").read_text())
    deps = [d["name"] for d in prov["predicate"]["buildDefinition"]["resolvedDependencies"]]
    assert any(d.startswith("toolchain:cabase:ca-certificates_") for d in deps)


@pytest.mark.go
@pytest.mark.slow
def test_push_with_credentials_from_the_docker_config(two_builds: tuple[Path, Path], tmp_path: Path) -> None:
    import base64
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        crypt = pytest.importorskip("crypt")  # glibc's bcrypt, for the registry's htpasswd file
    line = "alice:" + crypt.crypt("s3cret", crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 4)) + "\n"
    layout = two_builds[0] / "mini" / "hi1.oci"
    with start_registry(tmp_path, htpasswd=line) as (host, _):
        res = run_cli("image", "push", str(layout), f"{host}/mini/hi1:2.0.0",
                      env={"DOCKER_CONFIG": str(tmp_path / "no-config")})
        assert res.returncode == 3 and f"docker login {host}" in res.stderr
        config = tmp_path / "docker"
        config.mkdir()
        (config / "config.json").write_text(json.dumps(
            {"auths": {host: {"auth": base64.b64encode(b"alice:wrong").decode()}}}))
        res = run_cli("image", "push", str(layout), f"{host}/mini/hi1:2.0.0", env={"DOCKER_CONFIG": str(config)})
        assert res.returncode == 3 and "refused the credentials" in res.stderr
        (config / "config.json").write_text(json.dumps(
            {"auths": {host: {"auth": base64.b64encode(b"alice:s3cret").decode()}}}))
        res = run_cli("image", "push", str(layout), f"{host}/mini/hi1:2.0.0", env={"DOCKER_CONFIG": str(config)})
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == oci.read_layout(layout).top.digest
