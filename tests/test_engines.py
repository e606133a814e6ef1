"""Which engine a build reaches and what happens when it refuses: API negotiation (a stub engine that behaves like
Docker 29 in front of the real engine), DOCKER_HOST forms that do not answer, Docker contexts, fail-closed choice.

The stub answers `/_ping` and `/version` itself (API 1.52, minimum 1.44, as Docker Engine 29.0 does) and refuses
versions outside that range with Docker 29's words; every other request is carried to the real engine with the
version in its path rewritten to one the real engine serves, so a build through it really runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reprobuild.backends import engine
from reprobuild.errors import EnvironmentFailure
from tests.conftest import REPO, command_projects, run_cli
from tests.relay import pump

DOCKER29 = {"Version": "29.0.0", "ApiVersion": "1.52", "MinAPIVersion": "1.44", "Os": "linux", "Arch": "amd64",
            "Components": [{"Name": "Engine", "Version": "29.0.0", "Details": {"ApiVersion": "1.52"}}]}
TOO_OLD = ("client version {v} is too old. Minimum supported API version is 1.44, please upgrade your client to a "
           "newer version")
TOO_NEW = "client version {v} is too new. Maximum supported API version is 1.52"


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


class Docker29:
    """A unix-socket engine that negotiates like Docker 29 and forwards the work to `real` (a unix socket path)."""

    def __init__(self, path: Path, real: str, real_api: str) -> None:
        self.path, self.real, self.real_api = path, real, real_api
        self.seen: list[str] = []  # request lines, as the client sent them
        self.answers: list[tuple[str, str, int, Any]] = []  # (method, path regex, status, body) answered here
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"unix://{self.path}"

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = client.recv(65536)
            if not chunk:
                client.close()
                return
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        request_line, *headers = head.decode("latin-1").split("\r\n")
        self.seen.append(request_line)
        method, target, proto = request_line.split(" ", 2)
        match = re.match(r"/v(\d+\.\d+)(/.*)", target)
        version, path = (match.group(1), match.group(2)) if match else ("", target)
        bare = path.split("?", 1)[0]
        if version and _key(version) < (1, 44):
            return self._answer(client, 400, {"message": TOO_OLD.format(v=version)})
        if version and _key(version) > (1, 52):
            return self._answer(client, 400, {"message": TOO_NEW.format(v=version)})
        if bare == "/_ping":
            return self._answer(client, 200, "OK")
        if bare == "/version":
            return self._answer(client, 200, DOCKER29)
        for verb, pattern, status, body in self.answers:
            if verb == method and re.fullmatch(pattern, bare):
                return self._answer(client, status, body)
        # Carried to the real engine, one request per connection (so every request line passes through here).
        kept = [h for h in headers if not h.lower().startswith("connection:")]
        upgrade = any(h.lower().startswith("upgrade:") for h in headers)
        kept.append("Connection: Upgrade" if upgrade else "Connection: close")
        forwarded = f"{method} /v{self.real_api}{path} {proto}\r\n" + "\r\n".join(kept) + "\r\n\r\n"
        real = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        real.connect(self.real)
        real.sendall(forwarded.encode("latin-1") + rest)
        threading.Thread(target=pump, args=(client, real), daemon=True).start()
        pump(real, client)

    @staticmethod
    def _answer(client: socket.socket, status: int, body: Any) -> None:
        payload = (json.dumps(body) if not isinstance(body, str) else body).encode()
        kind = "application/json" if not isinstance(body, str) else "text/plain; charset=utf-8"
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}[status]
        client.sendall(f"HTTP/1.1 {status} {reason}\r\nApi-Version: 1.52\r\nServer: Docker/29.0.0 (linux)\r\n"
                       f"Content-Type: {kind}\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
                       .encode() + payload)
        client.close()


@pytest.fixture
def docker29(tmp_path: Path, docker_engine: str) -> Iterator[Docker29]:
    where = engine.configured()
    if where is None or not where.address.startswith("unix://"):
        pytest.skip("the stub engine forwards to an engine on a local socket")
    real = engine.Engine(where)
    try:
        real_api = real.connect().server_api
    finally:
        real.close()
    stub = Docker29(tmp_path / "docker29.sock", where.address.removeprefix("unix://"), real_api)
    yield stub
    stub.close()


def no_engine_env(tmp_path: Path) -> dict[str, str]:
    """Nothing from this machine's engine configuration reaches a CLI run but what a test sets."""
    return {"DOCKER_CONFIG": str(tmp_path / "docker-config"), "DOCKER_CONTEXT": "", "DOCKER_API_VERSION": "",
            "REPROBUILD_BACKEND": "", "REPROBUILD_REQUIRE_DOCKER": "", "DOCKER_TLS_VERIFY": "", "DOCKER_CERT_PATH": ""}


def sums(out: Path) -> str:
    return (out / "SHA256SUMS").read_text()


# --- negotiation ----------------------------------------------------------------------------------

def test_negotiation_picks_the_highest_version_both_speak_or_refuses() -> None:
    assert engine.negotiate("1.52", "1.44", "1.45") == "1.45"  # Docker 29, an SDK that knows up to 1.45
    assert engine.negotiate("1.41", "1.12", "1.45") == "1.41"  # Debian's 20.10
    assert engine.negotiate("1.41", "1.24", "1.45", pinned="1.40") == "1.40"  # DOCKER_API_VERSION wins
    with pytest.raises(engine.EngineError, match=r"serves Engine API 1\.46 to 1\.52"):
        engine.negotiate("1.52", "1.46", "1.45")


@pytest.mark.docker
def test_the_real_engine_is_spoken_to_at_the_version_negotiation_picks(docker_engine: str) -> None:
    """Whatever engine the runner has: the highest version both sides speak, and the engine accepts it."""
    from docker.constants import DEFAULT_DOCKER_API_VERSION

    client = engine.Engine()
    try:
        facts = client.connect()
        expected = min(facts.server_api, DEFAULT_DOCKER_API_VERSION, key=_key)
        assert facts.api_version == expected
        assert client.info()["ID"]  # a versioned call, accepted
    finally:
        client.close()


@pytest.mark.docker
def test_docker29_stub_negotiates_and_refuses_old_clients_with_its_words(docker29: Docker29,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from docker.constants import DEFAULT_DOCKER_API_VERSION

    monkeypatch.setenv("DOCKER_HOST", docker29.address)
    monkeypatch.delenv("DOCKER_API_VERSION", raising=False)
    client = engine.Engine()
    facts = client.connect()
    assert (facts.product, facts.version, facts.server_api, facts.server_min_api) == ("Docker", "29.0.0", "1.52",
                                                                                      "1.44")
    assert facts.api_version == min("1.52", DEFAULT_DOCKER_API_VERSION, key=_key)
    assert client.containers("org.reprobuild.test-none") == []  # carried to the real engine
    client.close()
    monkeypatch.setenv("DOCKER_API_VERSION", "1.41")  # what reprobuild's own client pinned before
    with pytest.raises(engine.EngineError) as refused:
        engine.Engine().connect()
    assert refused.value.status == 400
    assert "client version 1.41 is too old. Minimum supported API version is 1.44" in str(refused.value)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("how", ["--backend docker", "default"])
def test_build_through_docker29_runs_in_containers(docker29: Docker29, debian_lock: Path, shared_cache_root: Path,
                                                   tmp_path: Path, how: str) -> None:
    root = command_projects(tmp_path / "project", 1, "neg")
    env = {**no_engine_env(tmp_path), "DOCKER_HOST": docker29.address, "REPROBUILD_CACHE": str(shared_cache_root)}
    args = ["build", "--lock", str(debian_lock), "--no-cache", "--out", str(tmp_path / "out")]
    if how != "default":
        args += ["--backend", "docker"]
    done = run_cli(*args, env=env, cwd=root)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (manifest["backend"], manifest["hermetic"]) == ("docker", True)
    assert "no container engine is configured" not in done.stderr
    assert any("/containers/create" in line for line in docker29.seen)  # the step ran in a container, via the stub
    assert sums(tmp_path / "out").endswith("  neg01/out.txt\n")


@pytest.mark.docker
@pytest.mark.parametrize("how", ["--backend docker", "default"])
def test_build_refused_by_docker29_is_exit_3_with_its_words_never_local(docker29: Docker29, tmp_path: Path,
                                                                        how: str) -> None:
    root = command_projects(tmp_path / "project", 1, "ref")
    env = {**no_engine_env(tmp_path), "DOCKER_HOST": docker29.address, "DOCKER_API_VERSION": "1.41"}
    args = ["build", "--lock", str(REPO / "toolchains.lock"), "--no-cache", "--out", str(tmp_path / "out")]
    args += ["--backend", "docker"] if how != "default" else []
    done = run_cli(*args, env=env, cwd=root)
    assert done.returncode == 3, done.stderr
    assert "client version 1.41 is too old. Minimum supported API version is 1.44" in done.stderr
    assert "Docker 29.0.0" in done.stderr and docker29.address in done.stderr
    assert "DOCKER_API_VERSION" in done.stderr  # what to change
    assert not (tmp_path / "out").exists()


@pytest.mark.docker
@pytest.mark.go
def test_an_image_load_the_engine_refuses_is_exit_3_naming_the_engine(docker29: Docker29, go_registry: Any,
                                                                      shared_cache_root: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from reprobuild.backends import ImageRef
    from reprobuild.backends.docker import DockerBackend
    from reprobuild.config.lock import load_lock

    full = "write /var/lib/docker/tmp: no space left on device"
    docker29.answers += [("GET", r"/images/.*/json", 404, {"message": "No such image"}),
                         ("POST", r"/images/load", 500, {"message": full})]
    monkeypatch.setenv("DOCKER_HOST", docker29.address)
    monkeypatch.delenv("DOCKER_API_VERSION", raising=False)
    backend = DockerBackend(lock=load_lock(REPO / "toolchains.lock"), cache_root=shared_cache_root,
                            builders_dir=REPO / "builders")
    with pytest.raises(EnvironmentFailure) as err:
        backend.ensure_image(ImageRef("go", go_registry.tree))
    text = str(err.value)
    assert err.value.exit_code == 3 and f"the Docker engine at {docker29.address}" in text
    assert "could not provide the `go` builder image" in text and "no space left on device" in text


# --- addresses that do not answer: exit 3 naming them ------------------------------------------------

@pytest.mark.parametrize("address", ["ssh://builder@rb-unreachable.invalid", "tcp://127.0.0.1:{port}"])
def test_unreachable_docker_host_is_exit_3_naming_it(tmp_path: Path, address: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: nothing listens there
    address = address.format(port=port)
    root = command_projects(tmp_path / "project", 1, "dead")
    done = run_cli("build", "--lock", str(REPO / "toolchains.lock"), "--no-cache", "--out", str(tmp_path / "out"),
                   env={**no_engine_env(tmp_path), "DOCKER_HOST": address, "HOME": str(tmp_path)}, cwd=root,
                   timeout=120)
    assert done.returncode == 3, done.stderr
    assert address in done.stderr and "no container engine answers" in done.stderr
    assert not (tmp_path / "out").exists()


# --- Docker contexts ---------------------------------------------------------------------------------

def write_context(config_dir: Path, name: str, host: str, current: bool = True) -> None:
    meta = config_dir / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest() / "meta.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"Name": name, "Metadata": {}, "Endpoints": {"docker": {"Host": host,
                                                                                       "SkipTLSVerify": False}}}))
    if current:
        (config_dir / "config.json").write_text(json.dumps({"currentContext": name}))


@pytest.mark.docker
def test_the_current_docker_context_of_the_cli_config_is_used(docker29: Docker29, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "docker-config"
    write_context(config, "stubby", docker29.address)
    for name in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_API_VERSION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    where = engine.configured()
    assert where == engine.Endpoint(docker29.address, "Docker context `stubby`", "stubby")
    client = engine.Engine()
    assert client.connect().version == "29.0.0"  # the context's engine answered, not the default socket's
    client.close()
    # DOCKER_CONTEXT overrides the config's choice; DOCKER_HOST overrides both (as for the docker CLI).
    write_context(config, "other", "unix:///nonexistent/other.sock", current=False)
    monkeypatch.setenv("DOCKER_CONTEXT", "other")
    assert engine.configured() == engine.Endpoint("unix:///nonexistent/other.sock", "Docker context `other`", "other")
    monkeypatch.setenv("DOCKER_HOST", docker29.address)
    assert engine.configured() == engine.Endpoint(docker29.address, "DOCKER_HOST")


def test_a_missing_docker_context_is_exit_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reprobuild.backends import select_backend

    for name in ("DOCKER_HOST", "REPROBUILD_BACKEND", "REPROBUILD_REQUIRE_DOCKER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.setenv("DOCKER_CONTEXT", "gone")
    with pytest.raises(EnvironmentFailure) as err:
        select_backend(None, lambda msg: None)
    assert err.value.exit_code == 3 and "Docker context `gone`" in str(err.value)


def test_engine_module_is_the_only_importer_of_the_sdk_and_a_local_build_never_imports_it() -> None:
    repo = Path(__file__).resolve().parent.parent / "reprobuild"
    importers = sorted(str(p.relative_to(repo)) for p in repo.rglob("*.py")
                       if re.search(r"^\s*(import docker|from docker)\b", p.read_text(), re.M))
    assert importers == ["backends/engine.py"]
    done = run_cli("doctor", "--help")
    assert done.returncode == 0
    probe = ("import sys; from reprobuild import cli; from reprobuild.backends import select_backend; "
             "select_backend('local', print); print('docker' in sys.modules)")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**os.environ, "DOCKER_HOST": "unix:///nonexistent.sock"})
    assert out.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.docker
def test_the_sdk_leaves_its_ssh_transport_unimported_unless_the_engine_is_reached_over_ssh(docker_engine: str) -> None:
    """paramiko costs 0.09 s of every start: only an ssh:// engine pays for it."""
    import subprocess
    import sys

    probe = ("import sys; from reprobuild.backends import engine; c = engine.Engine(); c.connect(); c.close(); "
             "import docker; print('paramiko' in sys.modules, hasattr(docker.transport, 'SSHHTTPAdapter'))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.docker
def test_doctor_names_the_engine_its_version_and_the_negotiated_api(docker29: Docker29, tmp_path: Path) -> None:
    from docker.constants import DEFAULT_DOCKER_API_VERSION

    r = run_cli("doctor", "--json", "--lock", str(REPO / "toolchains.lock"),
                env={**no_engine_env(tmp_path), "DOCKER_HOST": docker29.address,
                     "REPROBUILD_CACHE": str(tmp_path / "cache"), "REPROBUILD_OFFLINE": "1"})
    found = {f["id"]: f for f in json.loads(r.stdout)["findings"]}["engine.reachable"]
    api = min("1.52", DEFAULT_DOCKER_API_VERSION, key=_key)
    assert found["message"] == f"Docker engine 29.0.0 at {docker29.address} (Engine API {api})"
    assert {k: found["data"][k] for k in ("engine", "version", "api", "server_api", "server_min_api")} == {
        "engine": "Docker", "version": "29.0.0", "api": api, "server_api": "1.52", "server_min_api": "1.44"}


# --- forbidden paths: whole paths the build saw, per-target strings, offsets ------------------------

MAIN_GO = """package main

import (
\t"fmt"
\t"os"
)

var procRoot = "/proc/%d/root/%s"

func main() {
\tfmt.Printf(procRoot+"\\n", os.Getpid(), "x")
EXTRA}
"""


def go_project(root: Path, embed: str = "") -> Path:
    module = root / "src" / "probe"
    module.mkdir(parents=True)
    (module / "go.mod").write_text("module example.com/probe\n\ngo 1.21\n")
    extra = f'\tfmt.Println("data at {embed}/data.txt", len(os.Args))\n' if embed else ""
    (module / "main.go").write_text(MAIN_GO.replace("EXTRA", extra))
    (root / "pipelines").mkdir()
    (root / "pipelines" / "probe.yaml").write_text(
        "version: 1\nname: probe\nbuilder: go\ntoolchain: go-registry\nsource: src/probe\ntargets:\n"
        "  - name: probe\n    package: .\n    platforms: [linux/amd64]\n")
    return module


@pytest.mark.go
def test_as_root_with_home_root_a_longer_string_holding_root_passes_the_build_root_fails(
        go_registry: Any, shared_cache_root: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the case of a root user (HOME=/root)")
    env = {"HOME": "/root", "REPROBUILD_CACHE": str(shared_cache_root)}
    lock = ("--lock", str(REPO / "toolchains.lock"))
    ok_root = tmp_path / "ok"
    go_project(ok_root)
    done = run_cli("build", *lock, "--backend", "local", "--no-cache", "--out", str(tmp_path / "ok-out"), env=env,
                   cwd=ok_root)
    assert done.returncode == 0, done.stderr  # `/proc/%d/root/%s` is not the home /root
    bad_root = tmp_path / "bad"
    module = go_project(bad_root, embed=str(bad_root / "src" / "probe"))
    done = run_cli("build", *lock, "--backend", "local", "--no-cache", "--out", str(tmp_path / "bad-out"), env=env,
                   cwd=bad_root)
    assert done.returncode == 1, done.stderr
    assert re.search(rf"embeds the path {re.escape(str(module))} \(\.rodata at offset 0x[0-9a-f]+: "
                     rf"\"[^\"]*data at {re.escape(str(module))}/data\.txt", done.stderr), done.stderr


@pytest.mark.go
def test_forbidden_paths_match_whole_paths_and_targets_add_strings(go_registry: Any, tmp_path: Path) -> None:
    import subprocess

    from reprobuild.errors import CheckFailed
    from reprobuild.kinds.go import assertions as goassert

    module = go_project(tmp_path, embed="/root/.cache/probe")
    binary = tmp_path / "probe"
    env = {"PATH": f"{go_registry.root}/bin:/usr/bin:/bin", "HOME": str(tmp_path), "GOROOT": str(go_registry.root),
           "GOTOOLCHAIN": "local", "GOFLAGS": "", "GOPROXY": "off", "GOCACHE": str(tmp_path / "gocache"),
           "CGO_ENABLED": "0"}
    subprocess.run([str(go_registry.go), "build", "-trimpath", "-buildvcs=false", "-ldflags=-buildid=", "-o",
                    str(binary), "."], cwd=module, env=env, check=True, capture_output=True)

    def problems(**kw: Any) -> list[str]:
        exp = goassert.Expectation("probe", "1.21.13", False, {}, **{"forbidden_paths": (), **kw})
        return goassert.binary_problems(binary, goassert.read_buildinfo(go_registry.go, binary), exp)

    assert problems(forbidden_paths=("/root/", "/proc/1", "/rootfs")) == [
        'embeds the path /root (.rodata at offset ' + problems(forbidden_paths=("/root",))[0].split("offset ")[1]]
    found = problems(forbidden_paths=("/root",))[0]
    # one hit (Go packs its strings without separators: the context runs into the neighbours)
    assert "data at /root/.cache/probe/data.txt" in found and found.count(" at offset ") == 1
    assert problems(forbidden_paths=("/root",), allowed_strings=("data at /root/.cache",)) == []
    extra = problems(forbidden_strings=("/proc/%d/root",))
    assert len(extra) == 1 and extra[0].startswith("embeds the forbidden string '/proc/%d/root' (.rodata at offset")
    with pytest.raises(CheckFailed, match="embeds the path /root"):
        goassert.check_binary(binary, go_registry.go, goassert.Expectation("probe", "1.21.13", False, {}, ("/root",)))


@pytest.mark.parametrize(("value", "message"), [
    ("[ab]", "shorter than 4 characters"),
    ("[/proc/x, /proc/x]", "lists '/proc/x' twice"),
    ("/proc/x", "must be a list"),
])
def test_target_assertion_strings_are_validated_with_file_and_line(tmp_path: Path, value: str, message: str) -> None:
    from reprobuild.config.pipeline import load_pipelines
    from reprobuild.errors import FileError

    go_project(tmp_path)
    path = tmp_path / "pipelines" / "probe.yaml"
    path.write_text(path.read_text() + f"    allowed_strings: {value}\n")
    with pytest.raises(FileError) as err:
        load_pipelines([path], tmp_path)
    assert f"{path}:" in str(err.value) and message in str(err.value)
    path.write_text(path.read_text().replace(f"allowed_strings: {value}", "forbidden_strings: [/opt/secret]"))
    (target,) = load_pipelines([path], tmp_path)[0].targets
    assert target.forbidden_strings == ("/opt/secret",) and target.allowed_strings == ()
