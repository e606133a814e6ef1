"""`reprobuild doctor`: what is wrong with this machine for reproducible builds, as a list of findings.

The checks are one ordered, declarative table (`RULES`): each `Rule` has an id, a title and a
function from the gathered `Facts` to findings. Gathering (engine, lock, cache, environment) happens
once, before any rule runs, so rules are pure and cheap to test. Policy rules (Go/Paddle ABI matrix,
go.mod directives) are added to the same table.

Severities: `ok`, `info`, `warning`, `error`. Any `error` makes `doctor` exit 1.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reprobuild.backends import Availability, leftovers
from reprobuild.config.hostenv import leaking_variables
from reprobuild.config.model import Lock, host_platform
from reprobuild.config.policy import Finding as PolicyFinding
from reprobuild.toolchains.cache import ToolchainCache
from reprobuild.toolchains.hints import judge_missing
from reprobuild.toolchains.probe import SourceCheck, check_missing

SEVERITIES = ("ok", "info", "warning", "error")


@dataclass(frozen=True)
class Finding:
    id: str  # stable, dotted: `engine.reachable`, `env.leak.GOFLAGS`, `image.debian.missing`
    severity: str  # one of SEVERITIES
    message: str
    hint: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "severity": self.severity, "message": self.message, "hint": self.hint,
                "data": dict(self.data)}


@dataclass(frozen=True)
class EngineFacts:
    reachable: bool
    detail: str  # the version line, or why it does not answer
    info: Mapping[str, Any] = field(default_factory=dict)
    image_states: Mapping[str, str] = field(default_factory=dict)  # image label -> present | missing | stale
    leftovers: tuple[leftovers.Leftover, ...] = ()  # containers carrying reprobuild's label, their owners judged
    configured: bool = True  # DOCKER_HOST, a Docker context or a local socket names one (builds then fail closed)


@dataclass(frozen=True)
class Facts:
    """Everything the rules look at, gathered once."""

    environ: Mapping[str, str]
    lock: Lock | None
    lock_error: str | None
    cache: ToolchainCache
    builders_dir: Path
    engine: EngineFacts
    docker_required: bool = False
    rootfs_cache: tuple[tuple[str, int], ...] = ()  # cached image rootfs layers: (file name, bytes)
    # The policy gate's findings for this lock, the pipelines and `--toolchain` substitutions (what
    # `build` would refuse), or why they could not be judged.
    policy: tuple[PolicyFinding, ...] = ()
    policy_error: str | None = None
    backends: tuple[Availability, ...] = ()  # every backend, most hermetic first, and whether it runs here
    # For each toolchain missing from the cache (not imported), what asking its sources found (none offline).
    sources: Mapping[str, SourceCheck] = field(default_factory=dict)
    leftover_dirs: tuple[leftovers.Leftover, ...] = ()  # private directories under the temp dir, owners judged


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    check: Callable[[Facts], Iterable[Finding]]


# --- host variables that would leak into a build if reprobuild did not filter the environment ------

# --- the rules -------------------------------------------------------------------------------------

def check_engine(facts: Facts) -> Iterable[Finding]:
    e = facts.engine
    if e.reachable:
        yield Finding("engine.reachable", "ok", e.detail, data=dict(e.info))
        return
    chosen = next((b.name for b in facts.backends if b.available), "local")
    then = ("builds that would use it stop with exit 3 (never a silent local build)" if e.configured
            else f"builds use the {chosen} backend" + (" (not hermetic)" if chosen == "local" else ""))
    yield Finding("engine.unreachable", "error" if facts.docker_required else "warning",
                  f"no container engine answers ({e.detail}); {then}",
                  "start one (`dockerd --bridge=none --iptables=false &` as root, after `apt-get install "
                  "docker.io`, or `podman system service --time=0 &`), point DOCKER_HOST at a running engine, "
                  "or build with `--backend local`")


def check_backends(facts: Facts) -> Iterable[Finding]:
    """Which backend builds use by default here, and why each more hermetic one is not available."""
    for found in facts.backends:
        if found.available:
            severity = "warning" if found.name == "local" else "ok"
            yield Finding("backend.default", severity,
                          f"builds use the {found.name} backend by default: {found.detail}",
                          "make a more hermetic backend available (see the findings above)" if found.name == "local"
                          else None, {"backend": found.name})
            return
        yield Finding(f"backend.{found.name}.unavailable", "info" if found.name == "docker" else "warning",
                      f"the {found.name} backend is not available: {found.detail}", found.fix or None,
                      {"backend": found.name})


def check_lock(facts: Facts) -> Iterable[Finding]:
    if facts.lock_error is not None:
        yield Finding("lock.invalid", "error", facts.lock_error, "regenerate it with `reprobuild lock`")
    elif facts.lock is not None:
        yield Finding("lock.valid", "ok", f"{facts.lock.path}: {len(facts.lock.toolchains)} toolchains pinned")


def check_toolchains(facts: Facts) -> Iterable[Finding]:
    if facts.lock is None:
        return
    plat = host_platform()
    yield Finding("cache.root", "info", f"cache at {facts.cache.root}", data={"root": str(facts.cache.root)})
    if facts.rootfs_cache:
        total = sum(size for _, size in facts.rootfs_cache)
        yield Finding("cache.rootfs", "info", f"{len(facts.rootfs_cache)} image rootfs layer(s) cached "
                      f"({total / 1e6:.0f} MB); each is reused while its lock entry stands",
                      "delete <cache>/images/rootfs to reclaim the space; the next build debootstraps again",
                      {"files": [name for name, _ in facts.rootfs_cache], "bytes": total})
    for name, tc in sorted(facts.lock.toolchains.items()):
        pin = tc.pin(plat)
        if pin is None:
            yield Finding(f"toolchain.{name}.unavailable", "info", f"toolchain `{name}` has no pin for {plat}")
            continue
        state = facts.cache.state(tc, pin)
        what = f"Go {tc.version}" if tc.kind == "go" else f"{tc.kind} {tc.version}"
        if state == "missing":  # judged by what its sources said when doctor asked them (gather)
            judged, said, todo = judge_missing(facts.cache, facts.lock, name, plat, facts.sources)
            source = facts.sources.get(name)
            yield Finding(f"toolchain.{name}.missing", judged, f"toolchain `{name}` ({what}): missing; {said}", todo,
                          {"state": state, "platform": plat, **({"source": source.to_json()} if source else {})})
            continue
        severity = {"installed": "ok", "corrupt": "error"}[state]
        hint = f"`reprobuild toolchain verify {name}`; it is reinstalled on next use" if state == "corrupt" else None
        yield Finding(f"toolchain.{name}.{state}", severity, f"toolchain `{name}` ({what}): {state}", hint,
                      {"state": state, "platform": plat})


def check_images(facts: Facts) -> Iterable[Finding]:
    from reprobuild.backends.images import spec as images

    for name in images.spec_names(facts.builders_dir):
        try:
            spec = images.load_spec(facts.builders_dir, name)
        except Exception as exc:  # a broken spec is itself the finding
            yield Finding(f"image.{name}.invalid", "error", str(exc))
            continue
        if spec.base == "debootstrap" and facts.lock is not None:
            entry = images.parse_image_locks(facts.lock).get(name) if facts.lock_error is None else None
            if entry is None:
                yield Finding(f"image.{name}.unpinned", "error", f"builder image `{name}` has no entry in the lock",
                              "run `reprobuild lock`")
                continue
            if entry.inputs != spec.digest():
                yield Finding(f"image.{name}.lock-stale", "error",
                              f"builder image `{name}`: {spec.path} changed since the lock was written",
                              "run `reprobuild lock`")
    for label, state in sorted(facts.engine.image_states.items()):
        severity = {"present": "ok", "missing": "info", "stale": "warning"}.get(state, "info")
        hint = {"missing": "built on first use", "stale": "an older image of this name is here (the expected one is "
                "built on first use): `reprobuild doctor --fix` removes reprobuild's images that the lock and "
                "builders/ no longer expect and no container uses (no other image)"}.get(state)
        yield Finding(f"image.{label}.{state}", severity, f"builder image `{label}`: {state}", hint)


def masked(value: str) -> str:
    """A host value as doctor shows it: `0`/`1`/empty as they are, anything else only by its length
    (GOFLAGS and CGO_* values carry tokens, paths and user names; text and --json go into CI logs)."""
    if value in ("", "0", "1"):
        return repr(value)
    return f"<masked, {len(value)} characters>"


def check_environment(facts: Facts) -> Iterable[Finding]:
    for name, leak in leaking_variables(facts.environ):
        shown = "" if leak.secret else f"={masked(facts.environ[name])}"
        yield Finding(f"env.leak.{name}", "info" if leak.secret else leak.severity,
                      f"{name}{shown} is set on this host: {leak.why}; reprobuild builds never see it "
                      "(the environment is an allowlist), but a plain build here would",
                      data={"variable": name, "secret": leak.secret})


def check_policy(facts: Facts) -> Iterable[Finding]:
    """The policy table (Go/Paddle ABI, end of life, go.mod directives, host Go variables), as `build` judges it."""
    if facts.policy_error:
        yield Finding("policy.unjudged", "error", facts.policy_error)
    for f in facts.policy:
        where = f"{f.where}: " if f.where else ""
        yield Finding(f"policy.{f.rule}", f.severity, where + f.message,
                      "; or ".join(f.remedies) if f.remedies else None, {"policy": f.to_json()})


def check_leftovers(facts: Facts) -> Iterable[Finding]:
    """Containers and private directories of builds: of dead ones (removable), running ones, and others (another
    host's or PID namespace's on a shared engine, or with no owner record: never touched)."""
    found = [*facts.engine.leftovers, *facts.leftover_dirs]
    groups = (("dead", (leftovers.DEAD,), "warning", "left behind by build(s) killed outright (owner dead on this "
               "host)", "`reprobuild doctor --fix` removes them; so does the next build"),
              ("running", (leftovers.ALIVE,), "info", "of build(s) running now", None),
              ("other", (leftovers.FOREIGN, leftovers.UNKNOWN), "info", "of other hosts or PID namespaces, or with "
               "no owner record (an older reprobuild's)", "reprobuild never removes these; their owners do"))
    for key, states, severity, what, hint in groups:
        items = [f for f in found if f.state in states]
        if items:
            kinds = sum(f.kind == "container" for f in items), sum(f.kind == "dir" for f in items)
            yield Finding(f"leftovers.{key}", severity, f"{kinds[0]} container(s) and {kinds[1]} private "
                          f"director(ies) {what}: " + ", ".join(f"{f.kind} {f.name}" for f in items[:10]), hint,
                          {"leftovers": [f.to_json() for f in items]})


RULES: tuple[Rule, ...] = (
    Rule("engine", "Docker engine reachable", check_engine),
    Rule("backends", "the most hermetic backend this host offers", check_backends),
    Rule("lock", "the lock is valid", check_lock),
    Rule("toolchains", "pinned toolchains in the cache", check_toolchains),
    Rule("images", "builder images pinned and present", check_images),
    Rule("environment", "host variables a build would otherwise see", check_environment),
    Rule("policy", "the Go/Paddle policy gate", check_policy),
    Rule("leftovers", "containers and directories builds left behind", check_leftovers),
)


@dataclass(frozen=True)
class Report:
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "findings": [f.to_json() for f in self.findings]}


def diagnose(facts: Facts, rules: Iterable[Rule] = RULES) -> Report:
    """Run every rule over the facts; a rule that crashes becomes an error finding, not a traceback."""
    findings: list[Finding] = []
    for rule in rules:
        try:
            findings.extend(rule.check(facts))
        except Exception as exc:
            findings.append(Finding(f"{rule.id}.failed", "error", f"check `{rule.title}` failed: {exc}"))
    return Report(tuple(findings))


# --- gathering -------------------------------------------------------------------------------------

def gather(lock_path: Path, cache: ToolchainCache, environ: Mapping[str, str] | None = None,
           builders_dir: Path | None = None, root: Path | None = None,
           overrides: Mapping[str, str] | None = None) -> Facts:
    """Look at the machine once: the lock, the cache, the engine and its images, the environment, and the
    policy gate over the lock and the pipelines under `root` (when it has a `pipelines/` folder)."""
    from reprobuild.backends.images.spec import default_builders_dir
    from reprobuild.config.lock import load_lock
    from reprobuild.errors import ReprobuildError

    environ = dict(os.environ if environ is None else environ)
    lock: Lock | None = None
    lock_error = None
    if lock_path.exists():
        try:
            lock = load_lock(lock_path)
        except ReprobuildError as exc:
            lock_error = str(exc)
    builders = builders_dir or default_builders_dir(lock_path)
    rootfs = tuple(sorted((p.name, p.stat().st_size) for p in (cache.root / "images" / "rootfs").glob("*.tar")))
    judged, policy_error = _policy_facts(lock, root, dict(overrides or {}), environ)
    engine = _engine_facts(lock, cache, builders)
    return Facts(environ, lock, lock_error, cache, builders, engine,
                 docker_required=environ.get("REPROBUILD_REQUIRE_DOCKER", "") not in ("", "0"), rootfs_cache=rootfs,
                 policy=judged, policy_error=policy_error, backends=_backend_facts(cache, engine),
                 sources=check_missing(lock, cache) if lock is not None else {},
                 leftover_dirs=tuple(leftovers.find_dirs()))


def _backend_facts(cache: ToolchainCache, engine: EngineFacts) -> tuple[Availability, ...]:
    """The backends in select_backend's order; Docker's answer is the one the engine facts already hold."""
    from reprobuild.backends import PROBES

    found = []
    for name, check in PROBES:
        if name == "docker":  # the engine was asked once already
            detail = engine.detail if engine.reachable else f"no Docker engine answers ({engine.detail})"
            found.append(Availability(name, engine.reachable, detail, "start one, or point DOCKER_HOST at one"))
        else:
            found.append(check(cache.root))
    return tuple(found)


def _policy_facts(lock: Lock | None, root: Path | None, overrides: dict[str, str],
                  environ: Mapping[str, str]) -> tuple[tuple[PolicyFinding, ...], str | None]:
    from reprobuild.build.orchestrate import check_overrides
    from reprobuild.config import policy
    from reprobuild.config.pipeline import load_pipelines
    from reprobuild.errors import ReprobuildError

    if lock is None:
        return (), None  # check_lock says why
    try:
        check_overrides(lock, overrides)
        pipelines = load_pipelines(None, root) if root is not None and (root / "pipelines").is_dir() else []
        # Host variables doctor's own leak check reports (env.leak.*, with why each matters) are not
        # reported a second time by the table's host-env rules: one finding per variable.
        reported = {name for name, _ in leaking_variables(environ)}
        unreported = {k: v for k, v in environ.items() if k not in reported}
        return tuple(policy.evaluate(lock, overrides, pipelines, unreported)), None
    except ReprobuildError as exc:
        return (), f"the policy gate could not judge this repository: {exc}"


def _engine_facts(lock: Lock | None, cache: ToolchainCache, builders: Path) -> EngineFacts:
    from reprobuild.backends import docker as docker_backend
    from reprobuild.backends import engine
    from reprobuild.backends.images.spec import load_spec, spec_names
    from reprobuild.backends.images.store import ImageStore
    from reprobuild.toolchains.cache import entry_key

    try:
        configured = engine.configured() is not None
    except engine.EngineError:
        configured = True  # a Docker context that does not exist: named, and broken
    reachable, detail = docker_backend.probe()
    if not reachable:
        return EngineFacts(False, detail, configured=configured)
    info = docker_backend.engine_info()
    images = docker_backend.engine()
    store = ImageStore(images, cache.root, builders)
    states: dict[str, str] = {}
    plat = host_platform()
    for name in spec_names(builders):
        try:
            spec = load_spec(builders, name)
            if spec.base == "scratch" and lock is not None:
                for tc_name, tc in sorted(lock.toolchains.items()):
                    pin = tc.pin(plat)
                    if tc.kind != "go" or pin is None or cache.state(tc, pin) != "installed":
                        continue
                    tree = cache.entry_dir(entry_key(pin)) / "tree"  # what the go kind layers
                    states[f"{name}+{tc_name}"] = store.state(spec, store.go_key(spec, tree))
            elif spec.base == "debootstrap" and lock is not None:
                entry = ImageStore.locked_entry(spec, lock)
                states[name] = store.state(spec, store.debian_key(spec, entry))
        except Exception:  # reported by check_images from the spec and the lock
            continue
    return EngineFacts(True, detail, info, states, tuple(leftovers.find_containers(images.client)))
