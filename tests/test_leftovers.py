"""Issue 15 item 8 and issue 16 item 9: what a build killed outright leaves behind (its containers, its private
directories under the temp dir) is removed by the next build and by `doctor --fix`, and only that: never a live
build's, another host's, a container without reprobuild's owner labels, or an image reprobuild does not own.

Every test looks only at its own containers, images and temp dir (others use the same engine at the same time):
the builds it starts get a TMPDIR of their own, and it names its own containers and images.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from reprobuild.backends import leftovers
from tests.conftest import REPO, command_projects, run_cli


def dead_pid() -> tuple[int, int]:
    """A PID that ran and has exited (with the start time it had)."""
    child = subprocess.Popen(["sleep", "30"])
    started = leftovers.start_time(child.pid)
    child.kill()
    child.wait()
    assert started is not None
    return child.pid, started


# --- who owns a leftover ------------------------------------------------------------------------------

def test_the_owner_is_judged_by_pid_start_time_and_host() -> None:
    me = leftovers.this_process()
    assert me.pid == os.getpid() and me.started == leftovers.start_time(os.getpid()) and me.boot and me.pidns
    assert leftovers.judge(me) == leftovers.ALIVE
    pid, started = dead_pid()
    assert leftovers.judge(dataclasses.replace(me, pid=pid, started=started)) == leftovers.DEAD
    # The PID runs, but it started at another time: a reused PID is not the owner.
    assert leftovers.judge(dataclasses.replace(me, started=me.started - 1)) == leftovers.DEAD
    assert leftovers.judge(dataclasses.replace(me, pid=pid, hostname=me.hostname + "-other")) == leftovers.FOREIGN
    assert leftovers.judge(dataclasses.replace(me, pid=pid, machine="0" * 32)) == leftovers.FOREIGN
    assert leftovers.judge(dataclasses.replace(me, pid=pid, pidns="pid:[1]")) == leftovers.FOREIGN
    earlier_boot = dataclasses.replace(me, boot=str(uuid.uuid4()))  # this machine, before a reboot
    assert leftovers.judge(earlier_boot) == (leftovers.DEAD if me.machine else leftovers.FOREIGN)
    assert leftovers.judge(None) == leftovers.UNKNOWN
    # Labels round-trip; a record missing any part is no owner at all.
    assert leftovers.Owner.from_record(me.labels(), leftovers.PREFIX) == me
    partial = {k: v for k, v in me.labels().items() if not k.endswith(".started")}
    assert leftovers.Owner.from_record(partial, leftovers.PREFIX) is None


def test_only_dead_owners_private_dirs_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # gettempdir() reads TMPDIR again
    mine = leftovers.private_dir("reprobuild-copy-")
    dead = leftovers.private_dir("reprobuild-local-")
    pid, started = dead_pid()
    record = {**dataclasses.replace(leftovers.this_process(), pid=pid, started=started).record(),
              "in_container": False}
    (dead / leftovers.MARKER).write_text(json.dumps(record))
    (dead / "tree" / "sub").mkdir(parents=True)
    (dead / "tree" / "sub" / "f").write_text("x")
    os.chmod(dead / "tree" / "sub", 0o555)
    in_container = leftovers.private_dir("reprobuild-copy-", in_container=True)
    (in_container / leftovers.MARKER).write_text(json.dumps({**record, "in_container": True}))
    foreign = leftovers.private_dir("reprobuild-copy-")
    (foreign / leftovers.MARKER).write_text(json.dumps({**record, "hostname": "elsewhere"}))
    unmarked = tmp_path / "reprobuild-copy-unmarked"
    unmarked.mkdir()
    other_tool = tmp_path / "not-reprobuild"
    other_tool.mkdir()
    (other_tool / leftovers.MARKER).write_text(json.dumps(record))

    removed = leftovers.sweep(None, tmp_path)  # no engine asked: a container's directory waits for one
    assert [r.name for r in removed] == [str(dead)]
    assert not dead.exists()
    assert all(p.is_dir() for p in (mine, in_container, foreign, unmarked, other_tool))


def test_go_scratch_dirs_are_owner_marked_outside_the_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """vendor's module copy and mirror's work dir: the owner record sits above the Go work dir (no file of the
    module), a live build's is kept by a sweep, and the whole private dir goes when the work is done."""
    from reprobuild.kinds.go.goenv import scratch_dir

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    with scratch_dir("reprobuild-vendor-") as work:
        top = work.parent
        assert top.parent == tmp_path and top.name.startswith("reprobuild-vendor-")
        assert (top / leftovers.MARKER).is_file() and not (work / leftovers.MARKER).exists()
        assert leftovers.sweep(None, tmp_path) == [] and work.is_dir()
    assert not top.exists()


def test_a_dead_builds_step_cgroup_goes_and_a_live_ones_stays(tmp_path: Path) -> None:
    """The sandbox's memory cgroups are named by their owner (PID and its start time): the next build removes a
    dead owner's; a live owner's, and a name that is not reprobuild's pattern, stay. (A plain directory tree
    stands in for the cgroup file system: rmdir is what the kernel's removal is.)"""
    from reprobuild.backends.sandbox import remove_dead_cgroups

    groups = tmp_path / "reprobuild-sandbox"
    groups.mkdir()
    pid, started = dead_pid()
    me = leftovers.this_process()
    dead, live, other = (groups / f"{pid}-{started}-aa", groups / f"{me.pid}-{me.started}-bb", groups / "custom")
    for d in (dead, live, other):
        d.mkdir()
    removed = remove_dead_cgroups((tmp_path,))
    assert [(r.kind, r.name, r.state) for r in removed] == [("cgroup", str(dead), leftovers.DEAD)]
    assert not dead.exists() and live.is_dir() and other.is_dir()


def test_doctor_lists_dead_running_and_other_leftovers(tmp_path: Path) -> None:
    from reprobuild import doctor
    from reprobuild.toolchains.cache import ToolchainCache

    me = leftovers.this_process()
    found = (leftovers.Leftover("container", "reprobuild-a", leftovers.DEAD, me, "running"),
             leftovers.Leftover("container", "reprobuild-b", leftovers.ALIVE, me, "running"),
             leftovers.Leftover("container", "reprobuild-c", leftovers.FOREIGN, me, "exited"))
    engine = doctor.EngineFacts(True, "x", leftovers=found)
    facts = doctor.Facts({}, None, None, ToolchainCache(tmp_path), tmp_path, engine,
                         leftover_dirs=(leftovers.Leftover("dir", "/tmp/reprobuild-copy-x", leftovers.DEAD, me),))
    by_id = {f.id: f for f in doctor.diagnose(facts).findings}
    dead = by_id["leftovers.dead"]
    assert dead.severity == "warning" and "doctor --fix" in (dead.hint or "")
    assert "1 container(s) and 1 private director(ies)" in dead.message and "reprobuild-a" in dead.message
    assert by_id["leftovers.running"].severity == by_id["leftovers.other"].severity == "info"
    assert "never removes" in (by_id["leftovers.other"].hint or "")


def test_a_killed_local_build_leaves_its_scratch_root_to_the_next_build(tmp_path: Path) -> None:
    root = command_projects(tmp_path / "p", 1, "k", run="sleep 60; cp input.txt $OUT/out.txt")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp), "REPROBUILD_CACHE": str(tmp_path / "cache")}
    killed = subprocess.Popen([sys.executable, "-m", "reprobuild", "build", "--out", str(root / "out"), "--backend",
                               "local", "--lock", str(REPO / "toolchains.lock")], cwd=root, env={**os.environ, **env},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            scratch = [d for d in tmp.glob("reprobuild-local-*") if (d / leftovers.MARKER).is_file()]
            if scratch or killed.poll() is not None:
                break
            time.sleep(0.05)
        assert scratch, "the build's scratch root, with its owner file"
        time.sleep(0.5)  # the step runs in it
    finally:
        killed.kill()
        killed.wait(timeout=30)
    assert scratch[0].is_dir()
    quick = command_projects(tmp_path / "q", 1, "q")
    done = run_cli("build", "--out", str(quick / "out"), "--backend", "local", "--lock", str(REPO / "toolchains.lock"),
                   cwd=quick, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"removed a leftover of a killed build: dir {scratch[0]} (build " in done.stderr
    assert not scratch[0].exists()
    assert (tmp / "reprobuild-local").is_dir()  # the fixed mount point every build shares stays


# --- real builds, killed ---------------------------------------------------------------------------------

def sdk() -> Any:
    import docker

    return docker.from_env()


def containers_of(pid: int) -> list[Any]:
    client = sdk()
    try:
        return list(client.containers.list(all=True, filters={"label": f"org.reprobuild.pid={pid}"}))
    finally:
        client.close()


def start_build(root: Path, out: str, lock: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "reprobuild", "build", "--out", str(root / out), "--backend",
                             "docker", "--lock", str(lock)], cwd=root, env={**os.environ, **env}, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_running(child: subprocess.Popen[str]) -> Any:
    """The build's container, once it runs."""
    for _ in range(600):
        found = [c for c in containers_of(child.pid) if c.status == "running"]
        if found:
            return found[0]
        assert child.poll() is None, child.communicate()[1]
        time.sleep(0.1)
    raise AssertionError("the build's container never ran")


@pytest.fixture
def strangers(docker_backend: Any) -> Iterator[list[Any]]:
    """Containers reprobuild must never touch, made straight through the engine: one with reprobuild's labels but
    another host's identity (a shared engine), one without reprobuild's run label at all."""
    from reprobuild.backends import ImageRef

    image = docker_backend.ensure_image(ImageRef("debian"))
    client = sdk()
    me = leftovers.this_process()
    pid, started = dead_pid()
    other_host = dataclasses.replace(me, pid=pid, started=started, hostname=f"elsewhere-{os.getpid()}",
                                     machine="f" * 32, boot=str(uuid.uuid4()))
    tag = uuid.uuid4().hex[:8]
    made = [client.containers.create(image, ["true"], name=f"lefttest-{tag}-foreign",
                                     labels={**other_host.labels(), leftovers.LABEL: f"lefttest-{tag}-foreign"}),
            client.containers.create(image, ["true"], name=f"lefttest-{tag}-plain",
                                     labels={"lefttest": tag})]
    try:
        yield made
    finally:
        for c in made:
            c.remove(force=True)
        client.close()


def copies(tmp: Path, pid: int) -> list[Path]:
    found = []
    for d in tmp.glob("reprobuild-copy-*"):
        owner = leftovers.Owner.from_record(json.loads((d / leftovers.MARKER).read_text()))
        if owner is not None and owner.pid == pid:
            found.append(d)
    return found


@pytest.mark.docker
@pytest.mark.parametrize("cleaner", ["doctor --fix", "next build"])
def test_a_killed_builds_container_and_copies_are_removed_and_nothing_else(
        tmp_path: Path, debian_lock: Path, shared_cache_root: Path, strangers: list[Any], cleaner: str) -> None:
    root = command_projects(tmp_path / "p", 1, "k", run="sleep 120; cp input.txt $OUT/out.txt")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp), "REPROBUILD_CACHE": str(shared_cache_root)}
    killed = start_build(root, "out-killed", debian_lock, env)
    live = start_build(root, "out-live", debian_lock, env)
    try:
        container = wait_running(killed)
        live_container = wait_running(live)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
        container.reload()
        assert container.status == "running"  # it outlived its build: left behind for good, unless removed
        assert container.labels["org.reprobuild.boot"] == leftovers.this_process().boot
        assert copies(tmp, killed.pid), "the killed build's private copy of the source"

        if cleaner == "doctor --fix":
            # A lock beside an empty builders/: no image is judged here (the engine's images are everyone's).
            (tmp_path / "fix" / "builders").mkdir(parents=True)
            lock = tmp_path / "fix" / "toolchains.lock"
            lock.write_bytes(debian_lock.read_bytes())
            done = run_cli("doctor", "--fix", "--json", "--lock", str(lock), env=env, timeout=300)
            removed = json.loads(done.stdout)["removed"]
        else:
            quick = command_projects(tmp_path / "q", 1, "q")
            done = run_cli("build", "--out", str(quick / "out"), "--backend", "docker", "--lock", str(debian_lock),
                           cwd=quick, env=env, timeout=300)
            assert done.returncode == 0, done.stderr
            assert f"removed a leftover of a killed build: container {container.name}" in done.stderr
            removed = [{"kind": "container", "name": container.name}] + [
                {"kind": "dir", "name": line.split("dir ", 1)[1].split(" (")[0]}
                for line in done.stderr.splitlines() if "of a killed build: dir " in line]
        assert containers_of(killed.pid) == []
        assert copies(tmp, killed.pid) == []
        assert {(r["kind"], r["name"]) for r in removed if r["kind"] == "container"} == {("container", container.name)}
        assert all(Path(r["name"]).parent == tmp for r in removed if r["kind"] == "dir")
        # Untouched: the live build's container and copy, another host's container, one without the run label.
        live_container.reload()
        assert live_container.status == "running" and copies(tmp, live.pid)
        for stranger in strangers:
            stranger.reload()  # NotFound if it was removed
            assert stranger.status == "created"
    finally:
        for child in (killed, live):
            if child.poll() is None:
                child.send_signal(signal.SIGINT)  # a live build removes its own container
        for child in (killed, live):
            child.wait(timeout=60)
        for c in containers_of(killed.pid):
            c.remove(force=True)
    assert containers_of(live.pid) == []


# --- stale images ------------------------------------------------------------------------------------------

@pytest.mark.docker
def test_doctor_fix_removes_only_reprobuilds_stale_images(tmp_path: Path, docker_engine: str) -> None:
    """Removed: a builder image this cache made that the lock no longer expects. Kept: the expected one, one a
    container uses, one of a name builders/ lacks, one another cache made (another user on a shared engine), one
    another checkout's lock still uses, and any image without reprobuild's label. An image used by a checkout
    that is gone, or whose lock has changed since, is removed."""
    from reprobuild.backends.images import uses
    from reprobuild.backends.images.spec import ImageLock, load_spec
    from reprobuild.backends.images.store import ImageStore
    from reprobuild.fsutil import atomic_write_text

    name = f"lefttest{uuid.uuid4().hex[:8]}"
    (tmp_path / "builders" / name).mkdir(parents=True)
    (tmp_path / "builders" / name / "image.yaml").write_text(
        "version: 1\nbase: debootstrap\nsuite: bookworm\nvariant: minbase\npackages: [tar]\nmirror: apt\n")
    spec = load_spec(tmp_path / "builders", name)
    entry = ImageLock(name, spec.digest(), "bookworm", "minbase", "apt", {"tar": "1.34"})
    lock = tmp_path / "toolchains.lock"
    lock.write_text(yaml.safe_dump({"lock_version": 1, "images": {name: entry.to_data()}}))
    expected_key = ImageStore.debian_key(spec, entry)
    cache = tmp_path / "cache"
    others = {checkout: tmp_path / checkout / "toolchains.lock" for checkout in ("kept", "gone", "changed")}
    for other in others.values():
        other.parent.mkdir()
        other.write_text("lock_version: 1\n")

    client = sdk()
    made: dict[str, str] = {}

    def image(tag: str, labels: dict[str, str], *, here: bool = True) -> str:
        dockerfile = "FROM scratch\n" + "".join(f"LABEL {k}={v}\n" for k, v in labels.items())
        built, _ = client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
        made[tag] = built.id
        if here and labels.get("org.reprobuild.inputs"):  # what a build through this cache records
            atomic_write_text(cache / "images" / "ids" / f"{labels['org.reprobuild.image']}-"
                              f"{labels['org.reprobuild.inputs']}.json", json.dumps({"id": built.id}))
        return str(built.id)

    ours = {"org.reprobuild.image": name}
    image(f"reprobuild-{name}:expected", {**ours, "org.reprobuild.inputs": expected_key})
    image(f"reprobuild-{name}:stale", {**ours, "org.reprobuild.inputs": "1" * 64})
    used = image(f"reprobuild-{name}:stale-in-use", {**ours, "org.reprobuild.inputs": "2" * 64})
    image(f"reprobuild-{name}other:stale", {"org.reprobuild.image": f"{name}other", "org.reprobuild.inputs": "3" * 64})
    image(f"{name}-not-reprobuild:latest", {"lefttest": name})
    image(f"reprobuild-{name}:another-cache", {**ours, "org.reprobuild.inputs": "4" * 64}, here=False)
    for n, checkout in enumerate(others, start=5):
        image(f"reprobuild-{name}:{checkout}-checkout", {**ours, "org.reprobuild.inputs": str(n) * 64})
        uses.record_use(cache, others[checkout], name, str(n) * 64)
    others["gone"].unlink()
    others["changed"].write_text("lock_version: 1\n# updated\n")
    user = client.containers.create(used, ["true"], name=f"{name}-user")
    env = {"TMPDIR": str(tmp_path), "REPROBUILD_CACHE": str(cache)}
    try:
        done = run_cli("doctor", "--fix", "--json", "--lock", str(lock), env=env, timeout=300)
        removed = json.loads(done.stdout)["removed"]
        assert sorted((r["kind"], r["name"]) for r in removed) == [
            ("image", f"reprobuild-{name}:changed-checkout"), ("image", f"reprobuild-{name}:gone-checkout"),
            ("image", f"reprobuild-{name}:stale")]
        left = {t for i in client.images.list(filters={"label": "org.reprobuild.image"}) for t in i.tags
                if name in t} | {t for i in client.images.list(name=f"{name}-not-reprobuild") for t in i.tags}
        assert left == {f"reprobuild-{name}:expected", f"reprobuild-{name}:stale-in-use",
                        f"reprobuild-{name}other:stale", f"{name}-not-reprobuild:latest",
                        f"reprobuild-{name}:another-cache", f"reprobuild-{name}:kept-checkout"}
        text = run_cli("doctor", "--fix", "--lock", str(lock), env=env, timeout=300).stdout
        assert "doctor --fix: removed 0 item(s)" in text
    finally:
        user.remove(force=True)
        for tag in made:
            with contextlib.suppress(Exception):  # the stale ones were removed by the test itself
                client.images.remove(tag, force=True)
        client.close()
