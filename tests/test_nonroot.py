"""reprobuild run by a user who is not root, for real: a test user (made here when absent) runs the CLI with a
fresh HOME and cache under umask 077 against the engine socket the suite uses.

- Not admitted by the socket (not in its group): the engine refuses the connection (EACCES), and a build that
  asked for the engine, or had one named or required, is exit 3 naming the socket, what it said and the fixes,
  never a local build.
- In the socket's group (given to the process with `setpriv --groups`, as a login would from /etc/group; the
  host's groups are not changed): the Docker backend builds go-service's `hello` with the bytes of root's build,
  and so does the default backend (sandbox, else local) as that user.

Root is needed to switch users; the suite runs as root in CI.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import HELLO_ONLY, REPO, command_projects, docker_required

pytestmark = pytest.mark.docker

TEST_USER = "rbengine"
SOLO_USER = "rbsolo"  # given no subordinate ids: its rootless Podman maps only the user itself (a single mapping)


@dataclass(frozen=True)
class Done:
    pid: int
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    python: tuple[str, ...]  # an interpreter this user can run, with this checkout and its packages importable
    pythonpath: str
    base: Path  # a directory of the user's own (their HOME is base/home)

    def run(self, *args: str, groups: tuple[int, ...] = (), env: dict[str, str] | None = None, cwd: Path,
            umask: int = 0o077, timeout: float = 900) -> Done:
        """`reprobuild ARGS` as this user (only its own group, plus `groups`), with nothing of root's environment;
        the pid is the reprobuild process's (setpriv execs it: the labels on its containers carry it)."""
        switch = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}",
                  f"--groups={','.join(str(g) for g in groups)}" if groups else "--clear-groups"]
        environ = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                   "HOME": str(self.base / "home"), "PYTHONPATH": self.pythonpath, **(env or {})}
        child = subprocess.Popen([*switch, *self.python, "-m", "reprobuild", *args], env=environ, cwd=cwd,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, umask=umask)
        try:
            stdout, stderr = child.communicate(timeout=timeout)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        return Done(child.pid, child.returncode, stdout, stderr)


def engine_socket() -> Path:
    """The engine socket this suite uses (a unix socket on this host), which the test user is to be refused by."""
    from reprobuild.backends import engine

    where = engine.configured()
    if where is None or not where.address.startswith("unix://"):
        if docker_required():
            pytest.fail(f"REPROBUILD_REQUIRE_DOCKER=1 but no engine socket on this host ({where})")
        pytest.skip(f"needs an engine on a local unix socket ({where})")
    return Path(where.address.removeprefix("unix://"))


@pytest.fixture(scope="session")
def code_for_others() -> Iterator[tuple[tuple[str, ...], str]]:
    """How another user runs this checkout: (interpreter, PYTHONPATH). This interpreter when others can run it, else
    the system's Python of the same version (a pyenv interpreter under /root is root's alone); this checkout and this
    environment's packages where others can read them, else a copy of the package and of the distributions it needs
    (a checkout under /root), made once and removed at the end of the session."""
    real = Path(sys.executable).resolve()
    python = real if _others_can_enter(real.parent) and real.stat().st_mode & stat.S_IXOTH \
        else Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    packages = Path(sysconfig.get_paths()["purelib"])
    if _others_can_enter(REPO / "reprobuild") and _others_can_enter(packages):
        yield (str(python),), os.pathsep.join([str(REPO), str(packages)])
        return
    staged = Path(tempfile.mkdtemp(prefix="rb-nonroot-code-"))
    try:
        shutil.copytree(REPO / "reprobuild", staged / "reprobuild", ignore=shutil.ignore_patterns("__pycache__"))
        for path in _runtime_files():
            dest = staged / path.relative_to(packages)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
        for dirpath, _, filenames in os.walk(staged):
            os.chmod(dirpath, 0o755)
            for name in filenames:
                os.chmod(os.path.join(dirpath, name), 0o644)
        yield (str(python),), str(staged)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _others_can_enter(directory: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in [directory, *directory.parents]) \
        and bool(directory.stat().st_mode & stat.S_IROTH)


def _runtime_files() -> list[Path]:
    """The installed files of every distribution reprobuild needs at run time (its requirements, transitively)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: list[Path] = []
    seen: set[str] = set()
    todo: list[tuple[str, frozenset[str]]] = [("reprobuild", frozenset())]
    while todo:
        name, extras = todo.pop()
        if canonicalize_name(name) in seen:
            continue
        seen.add(canonicalize_name(name))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if canonicalize_name(name) != "reprobuild":
            found += [Path(str(dist.locate_file(f))) for f in dist.files or [] if not f.parts[0].startswith("..")]
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras or {""}):
                todo.append((req.name, frozenset(req.extras)))
    return [f for f in found if f.is_file() and "__pycache__" not in f.parts]


@pytest.fixture
def user(request: pytest.FixtureRequest, code_for_others: tuple[tuple[str, ...], str]) -> Iterator[User]:
    """TEST_USER, or the user named by an indirect parameter; made (a system user, no home) when absent."""
    if os.geteuid() != 0:
        pytest.skip("switching to a test user needs root (this run is unprivileged already)")
    name = getattr(request, "param", TEST_USER)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                       check=True, capture_output=True)
        entry = pwd.getpwnam(name)
    base = Path(tempfile.mkdtemp(prefix="rb-nonroot-"))
    os.chmod(base, 0o755)
    (base / "home").mkdir(mode=0o700)
    os.chown(base / "home", entry.pw_uid, entry.pw_gid)
    python, pythonpath = code_for_others
    found = User(name, entry.pw_uid, entry.pw_gid, python, pythonpath, base)
    can = subprocess.run(["setpriv", f"--reuid={found.uid}", f"--regid={found.gid}", "--clear-groups", *python,
                          "-c", "import reprobuild.cli, docker, yaml"], env={"PYTHONPATH": pythonpath,
                                                                           "HOME": str(base / "home")},
                         capture_output=True, text=True)
    if can.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"the test user cannot run this checkout with {python}: {can.stderr.strip()[-500:]}")
    yield found
    shutil.rmtree(base, ignore_errors=True)


def owned_copy(src_root: Path, user: User) -> Path:
    """A repository of the user's own, as a umask-077 checkout is (0700 directories, 0600 files)."""
    for dirpath, _, filenames in os.walk(src_root):
        os.chown(dirpath, user.uid, user.gid)
        os.chmod(dirpath, 0o700)
        for name in filenames:
            path = os.path.join(dirpath, name)
            os.chown(path, user.uid, user.gid)
            os.chmod(path, 0o600)
    return src_root


# --- refused by the engine's socket ----------------------------------------------------------------------

@pytest.mark.parametrize(("args", "env"), [
    (("--backend", "docker"), {}),
    ((), {"REPROBUILD_BACKEND": "docker"}),
    ((), {"DOCKER_HOST": "SOCKET"}),
    ((), {"REPROBUILD_REQUIRE_DOCKER": "1"}),
], ids=["--backend-docker", "REPROBUILD_BACKEND", "DOCKER_HOST", "REPROBUILD_REQUIRE_DOCKER"])
def test_a_user_the_socket_refuses_gets_exit_3_naming_it_never_a_local_build(
        user: User, args: tuple[str, ...], env: dict[str, str]) -> None:
    sock = engine_socket()
    st = sock.stat()
    if st.st_mode & 0o006:
        pytest.skip(f"{sock} admits every user (mode {stat.S_IMODE(st.st_mode):04o}): nothing to refuse")
    assert user.gid != st.st_gid
    root = owned_copy(command_projects(user.base / "repo", 1, "cmd"), user)
    env = {k: (f"unix://{sock}" if v == "SOCKET" else v) for k, v in env.items()}
    out = user.base / "home" / "out"
    done = user.run("build", *args, "--lock", str(REPO / "toolchains.lock"), "--out", str(out), env=env, cwd=root,
                    timeout=120)
    assert done.returncode == 3, done.stderr
    error = done.stderr[done.stderr.index("reprobuild: error:"):]
    assert f"unix://{sock}" in error and "refused this user" in error
    assert "Permission denied" in error  # what the engine's socket said
    group = _group_name(st.st_gid)
    assert f"`{group}` group" in error and f"usermod -aG {group} {user.name}" in error  # the fixes
    assert "rootless" in error and "DOCKER_HOST=" in error
    assert "local backend" not in done.stderr.lower().replace("`--backend local`", "")
    assert not out.exists()


def _group_name(gid: int) -> str:
    import grp

    return grp.getgrgid(gid).gr_name


# --- a member of the engine's group --------------------------------------------------------------------

@pytest.mark.go
@pytest.mark.slow
def test_a_member_of_the_engines_group_builds_roots_bytes_under_umask_077(
        user: User, docker_engine: str, go_wheel: Path, go_registry: Any, shared_cache_root: Path,
        tmp_path: Path) -> None:
    """Docker backend and the default backend, as a non-root user with umask 077, a fresh HOME and a fresh cache:
    the SHA256SUMS of root's Docker build, the files the user's own, no container left behind."""
    from reprobuild.backends import engine
    from tests.conftest import run_cli

    sock = engine_socket()
    root_repo = tmp_path / "repo"
    shutil.copytree(REPO / "examples" / "go-service", root_repo / "examples" / "go-service")
    (root_repo / "pipelines").mkdir()
    (root_repo / "pipelines" / "go-service.yaml").write_text(HELLO_ONLY)
    lock = ("--lock", str(REPO / "toolchains.lock"))
    as_root = run_cli("build", *lock, "--toolchain", "go=go-registry", "--backend", "docker", "--no-cache", "--out",
                      str(tmp_path / "root-out"), cwd=root_repo, env={"REPROBUILD_CACHE": str(shared_cache_root)})
    assert as_root.returncode == 0, as_root.stderr[-3000:]
    expected = (tmp_path / "root-out" / "SHA256SUMS").read_text()

    repo = user.base / "repo"
    shutil.copytree(root_repo / "examples", repo / "examples")
    shutil.copytree(root_repo / "pipelines", repo / "pipelines")
    owned_copy(repo, user)
    wheel = user.base / go_wheel.name  # the wheel where the user can read it (the test data cache is root's)
    shutil.copyfile(go_wheel, wheel)
    os.chmod(wheel, 0o644)
    imported = user.run("toolchain", "import", *lock, str(wheel), cwd=repo)
    assert imported.returncode == 0, imported.stderr
    home = user.base / "home"
    assert str(home / ".cache" / "reprobuild") in imported.stderr + imported.stdout  # a fresh cache of their own

    group = sock.stat().st_gid
    for backend, args, env in (("docker", ("--backend", "docker"), {"DOCKER_HOST": f"unix://{sock}"}),
                               ("default", (), {})):
        out = home / f"out-{backend}"
        done = user.run("build", *lock, "--toolchain", "go=go-registry", *args, "--no-cache", "--out", str(out),
                        groups=(group,), env=env, cwd=repo)
        assert done.returncode == 0, f"{backend}: {done.stderr[-3000:]}"
        assert (out / "SHA256SUMS").read_text() == expected, backend
        manifest = json.loads((out / "manifest.json").read_text())
        if backend == "docker":
            assert (manifest["backend"], manifest["hermetic"]) == ("docker", True)
        else:
            assert manifest["backend"] in ("sandbox", "local"), manifest["backend"]
            assert manifest["hermetic"] == (manifest["backend"] == "sandbox")
        for dirpath, dirnames, filenames in os.walk(out):
            for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                assert os.lstat(name).st_uid == user.uid, name  # the user can move and delete all of it
        assert (out / "go-service" / "hello_linux_amd64").stat().st_mode & 0o777 == 0o755
        client = engine.Engine(engine.Endpoint(f"unix://{sock}", "test"))
        try:
            assert client.containers(f"org.reprobuild.pid={done.pid}") == []
        finally:
            client.close()


# --- rootless Podman ----------------------------------------------------------------------------------

SUBIDS = (1_000_000, 65536)  # subordinate ids given to TEST_USER when it has none


@dataclass(frozen=True)
class Podman:
    address: str  # unix://... socket of the user's `podman system service`
    uid_map: str  # /proc/self/uid_map of its user namespace: one line when it maps only the user (no subids)


def _subids_of(name: str, path: str) -> bool:
    try:
        return any(line.split(":", 1)[0] == name for line in Path(path).read_text().splitlines())
    except OSError:
        return False


@pytest.fixture
def rootless_podman(user: User) -> Iterator[Podman]:
    """`podman system service` run by the test user (rootless: its containers' ids are the user's and its
    subordinate ids), on a socket in the user's own XDG_RUNTIME_DIR; stopped, with its pause process, at the end.
    TEST_USER is given subordinate ids when it has none; SOLO_USER must have none."""
    if shutil.which("podman") is None or shutil.which("newuidmap") is None:
        pytest.fail("rootless Podman needs Debian's podman and uidmap: apt-get install podman uidmap")
    given = [_subids_of(user.name, "/etc/subuid"), _subids_of(user.name, "/etc/subgid")]
    if user.name == SOLO_USER and any(given):
        pytest.fail(f"{SOLO_USER} is to have no subordinate ids, but /etc/subuid or /etc/subgid gives it some")
    if user.name != SOLO_USER and not all(given):
        first, count = SUBIDS
        subprocess.run(["usermod", "--add-subuids", f"{first}-{first + count - 1}", "--add-subgids",
                        f"{first}-{first + count - 1}", user.name], check=True, capture_output=True)
    run_dir = user.base / "run"
    run_dir.mkdir(mode=0o700)
    os.chown(run_dir, user.uid, user.gid)
    sock = run_dir / "podman.sock"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(user.base / "home"), "XDG_RUNTIME_DIR": str(run_dir)}
    switch = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups"]
    log = open(user.base / "podman.log", "wb")  # noqa: SIM115 (closed at teardown)
    service = subprocess.Popen([*switch, "podman", "system", "service", "--time=0", f"unix://{sock}"], env=env,
                               cwd=user.base, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        import time

        deadline = time.monotonic() + 60
        while not sock.exists():
            if time.monotonic() > deadline or service.poll() is not None:
                pytest.fail(f"rootless podman system service did not come up: {(user.base / 'podman.log').read_text()}")
            time.sleep(0.2)
        mapped = subprocess.run([*switch, "podman", "unshare", "cat", "/proc/self/uid_map"], env=env, cwd=user.base,
                                capture_output=True, text=True, timeout=60)
        assert mapped.returncode == 0, mapped.stderr
        yield Podman(f"unix://{sock}", mapped.stdout)
    finally:
        _end_group(service, pause=run_dir / "libpod" / "tmp" / "pause.pid")
        log.close()


def _end_group(service: subprocess.Popen[bytes], pause: Path) -> None:
    """Stop the service: it re-executes itself inside its user namespace (a child in its process group) and keeps
    a pause process holding that namespace (its pid in `pause`); all of them are ended, by their ids."""
    import signal
    import time

    keeper = None
    with contextlib.suppress(OSError, ValueError):
        keeper = int(pause.read_text().strip())
    with contextlib.suppress(ProcessLookupError):
        os.killpg(service.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _group_alive(service.pid):
        service.poll()
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(service.pid, signal.SIGKILL)
    service.wait()
    if keeper is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(keeper, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat_fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat_fields[2]) == pgid and stat_fields[0] != "Z":
                    return True
    return False


@pytest.mark.go
@pytest.mark.slow
@pytest.mark.parametrize("user", [TEST_USER, SOLO_USER], indirect=True, ids=["subordinate-ids", "single-mapping"])
def test_rootless_podman_builds_dockers_bytes_for_a_command_pipeline_and_go_service(
        user: User, rootless_podman: Podman, debian_lock: Path, go_wheel: Path, go_registry: Any,
        shared_cache_root: Path, tmp_path: Path) -> None:
    """A user's own Podman (no root, no group): a command pipeline (the debian image) and go-service's `hello` give
    the SHA256SUMS of root's Docker build; the files are the user's, no container is left behind.

    Making the debian image's rootfs takes debootstrap, which needs root: the user's cache gets the layer root made
    for the same lock entry (what a shared or restored cache would hold); the image itself is built and loaded
    through the rootless socket. With subordinate ids or without (Podman then maps only the user, and refuses
    `keep-id`): the step runs as the container's root, which is the user."""
    from reprobuild.backends.images.spec import load_spec
    from reprobuild.backends.images.store import ImageStore
    from reprobuild.config.lock import load_lock
    from tests.conftest import run_cli

    root_repo = command_projects(tmp_path / "repo", 1, "cmd")
    shutil.copytree(REPO / "examples" / "go-service", root_repo / "examples" / "go-service")
    (root_repo / "pipelines" / "go-service.yaml").write_text(HELLO_ONLY)
    for name in ("toolchains.lock", "toolchains.yaml"):
        shutil.copy(debian_lock.parent / name, root_repo / name)
    shutil.copytree(debian_lock.parent / "builders", root_repo / "builders")
    args = ("--lock", "toolchains.lock", "--toolchain", "go=go-registry", "--no-cache")
    as_root = run_cli("build", *args, "--backend", "docker", "--out", str(tmp_path / "root-out"), cwd=root_repo,
                      env={"REPROBUILD_CACHE": str(shared_cache_root)})
    assert as_root.returncode == 0, as_root.stderr[-3000:]
    expected = (tmp_path / "root-out" / "SHA256SUMS").read_text()
    assert "cmd01/out.txt" in expected and "go-service/hello_linux_amd64" in expected

    repo = user.base / "repo"
    shutil.copytree(root_repo, repo)
    owned_copy(repo, user)
    home = user.base / "home"
    lock = load_lock(debian_lock)
    spec = load_spec(debian_lock.parent / "builders", "debian")
    entry = ImageStore.locked_entry(spec, lock)
    theirs = ImageStore(None, home / ".cache" / "reprobuild")  # type: ignore[arg-type]  # paths only
    for made, seeded in zip(ImageStore(None, shared_cache_root).rootfs_cache(entry),  # type: ignore[arg-type]
                            theirs.rootfs_cache(entry), strict=True):
        seeded.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(made, seeded)
    for dirpath, _, filenames in os.walk(home):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in filenames)]:
            os.chown(name, user.uid, user.gid)
    wheel = user.base / go_wheel.name
    shutil.copyfile(go_wheel, wheel)
    os.chmod(wheel, 0o644)
    imported = user.run("toolchain", "import", "--lock", "toolchains.lock", str(wheel), cwd=repo)
    assert imported.returncode == 0, imported.stderr

    if user.name == SOLO_USER:
        assert len(rootless_podman.uid_map.splitlines()) == 1, rootless_podman.uid_map
    out = home / "out"
    engine_env = {"DOCKER_HOST": rootless_podman.address, "XDG_RUNTIME_DIR": str(user.base / "run")}
    done = user.run("build", *args, "--out", str(out), cwd=repo, env=engine_env)
    assert done.returncode == 0, f"Podman's uid_map: {rootless_podman.uid_map}\n{done.stderr[-3000:]}"
    assert (out / "SHA256SUMS").read_text() == expected
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["backend"], manifest["hermetic"]) == ("docker", True)
    for dirpath, dirnames, filenames in os.walk(out):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            assert os.lstat(name).st_uid == user.uid, name
    probe = user.run("doctor", "--json", "--lock", "toolchains.lock", cwd=repo, env=engine_env)
    found = {f["id"]: f for f in json.loads(probe.stdout)["findings"]}["engine.reachable"]
    assert found["message"].startswith("Podman engine ") and rootless_podman.address in found["message"]
    assert found["message"].endswith(", rootless)"), found["message"]
    left = subprocess.run(["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", "podman",
                           "ps", "-a", "--filter", f"label=org.reprobuild.pid={done.pid}", "--format", "{{.Names}}"],
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home),
                               "XDG_RUNTIME_DIR": str(user.base / "run")}, capture_output=True, text=True, cwd=repo)
    assert left.returncode == 0 and left.stdout.strip() == "", left.stdout + left.stderr
