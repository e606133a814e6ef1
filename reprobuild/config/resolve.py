"""`reprobuild lock`: resolve `toolchains.yaml` (what you want) into `toolchains.lock` (what you get).

Like pip-compile, resolution is incremental: an entry whose inputs did not change keeps its pins,
so `lock` is cheap and offline-safe for unchanged entries, and `lock --check` needs no network.
Planning (which entries are stale) is pure; resolving touches the network.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reprobuild.config import pylock
from reprobuild.config.lock import SHA256_RE, render_lock, write_lock
from reprobuild.config.model import SOURCE_KINDS, TOOLCHAIN_KINDS, Lock, PinnedFile, PlatformPin, Toolchain
from reprobuild.config.yamlload import Fields, Node, load_one
from reprobuild.errors import BadInput, EnvironmentFailure
from reprobuild.fsutil import sha256_file
from reprobuild.progress import say
from reprobuild.toolchains import download

INPUTS_VERSION = 1


@dataclass(frozen=True)
class ToolchainInput:
    name: str
    kind: str
    version: str
    source: str
    platforms: tuple[str, ...]
    root: str
    url: str | None  # url: a template with {version} and {platform}
    mirrors: tuple[str, ...]
    package: str | None  # wheel
    packages: tuple[str, ...]  # deb: name=version, in extraction order
    published: dict[str, dict[str, Any]]  # url: the publisher's own sha256/size per platform
    line: int

    def digest(self) -> str:
        data = {"kind": self.kind, "version": self.version, "source": self.source,
                "platforms": list(self.platforms), "root": self.root, "url": self.url,
                "mirrors": list(self.mirrors), "package": self.package, "packages": list(self.packages),
                "published": self.published}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def inputs_path_for(lock_path: Path) -> Path:
    return lock_path.with_name("toolchains.yaml")


def load_inputs(path: Path) -> dict[str, ToolchainInput]:
    root = load_one(path)
    top = Fields(root, "toolchains.yaml", {"version", "toolchains"})
    ver = top.required("version")
    if ver.integer("version") != INPUTS_VERSION:
        raise ver.error(f"unsupported version {ver.value}; this reprobuild reads {INPUTS_VERSION}")
    result = {}
    for name, node in top.required("toolchains").mapping("toolchains").items():
        result[name] = _parse_input(name, node)
    return result


def _parse_input(name: str, node: Node) -> ToolchainInput:
    what = f"toolchain `{name}`"
    f = Fields(node, what, {"kind", "version", "source", "platforms", "root", "url", "mirrors", "package",
                            "packages", "published"})
    kind = f.required("kind").string(f"{what}: kind")
    if kind not in TOOLCHAIN_KINDS:
        raise f.required("kind").error(f"{what}: unknown kind `{kind}`",
                                       f"supported kinds: {', '.join(TOOLCHAIN_KINDS)}")
    if kind == "base" and f.required("source").value != "deb":
        raise f.required("source").error(f"{what}: a `base` entry (an image base) is made of pinned .debs",
                                         "set `source: deb` and `packages: [name=version, ...]`")
    source = f.required("source").string(f"{what}: source")
    if source not in SOURCE_KINDS:
        raise f.required("source").error(f"{what}: unknown source `{source}`", f"one of: {', '.join(SOURCE_KINDS)}")
    version = f.required("version").string(f"{what}: version")
    platforms = tuple(f.required("platforms").strings(f"{what}: platforms"))
    root = f.required("root").string(f"{what}: root")
    url = mirrors = package = None
    packages: tuple[str, ...] = ()
    published: dict[str, dict[str, Any]] = {}
    if source == "url":
        url = f.required("url").string(f"{what}: url")
        m = f.optional("mirrors")
        mirrors = tuple(m.strings(f"{what}: mirrors")) if m else ()
        pub = f.optional("published")
        if pub is not None:
            for plat, pnode in pub.mapping(f"{what}: published").items():
                pf = Fields(pnode, f"{what}: published {plat}", {"sha256", "size"})
                sha = pf.required("sha256").string("sha256")
                if not SHA256_RE.match(sha):
                    raise pf.required("sha256").error(f"{what}: published sha256 for {plat} must be 64 hex digits")
                entry: dict[str, Any] = {"sha256": sha}
                size = pf.optional("size")
                if size is not None:
                    entry["size"] = size.integer("size")
                published[plat] = entry
    elif source == "wheel":
        package = f.required("package").string(f"{what}: package")
    else:
        packages = tuple(f.required("packages").strings(f"{what}: packages"))
        for item, pnode in zip(packages, f.required("packages").sequence("packages"), strict=True):
            if "=" not in item:
                raise pnode.error(f"{what}: deb package `{item}` must be pinned as name=version")
    return ToolchainInput(name, kind, version, source, platforms, root, url, mirrors or (), package, packages,
                          published, node.line)


@dataclass(frozen=True)
class Plan:
    keep: tuple[str, ...]
    resolve: tuple[str, ...]
    drop: tuple[str, ...]

    @property
    def stale(self) -> bool:
        return bool(self.resolve or self.drop)


def plan(inputs: dict[str, ToolchainInput], current: Lock | None) -> Plan:
    have = current.toolchains if current else {}
    keep = tuple(n for n, i in inputs.items() if n in have and have[n].inputs == i.digest())
    resolve = tuple(n for n in inputs if n not in keep)
    drop = tuple(n for n in have if n not in inputs)
    return Plan(keep, resolve, drop)


def resolve_entry(inp: ToolchainInput, offline: bool) -> Toolchain:
    pins = []
    for plat in inp.platforms:
        if inp.source == "url":
            pins.append(_resolve_url(inp, plat, offline))
        elif inp.source == "wheel":
            pins.append(_resolve_wheel(inp, plat, offline))
        else:
            pins.append(_resolve_deb(inp, plat, offline))
    return Toolchain(inp.name, inp.kind, inp.version, inp.source, tuple(sorted(pins, key=lambda p: p.platform)),
                     inp.digest())


def _fill(template: str, inp: ToolchainInput, plat: str) -> str:
    return template.format(version=inp.version, platform=plat, os=plat.split("-")[0], arch=plat.split("-")[1])


def _resolve_url(inp: ToolchainInput, plat: str, offline: bool) -> PlatformPin:
    assert inp.url is not None
    url = _fill(inp.url, inp, plat)
    mirrors = tuple(_fill(m, inp, plat) for m in inp.mirrors)
    name = url.rsplit("/", 1)[-1]
    pub = inp.published.get(plat)
    if pub:
        # The publisher's checksum (e.g. Go's download page): trusted as the pin, verified on every fetch.
        return PlatformPin(plat, (PinnedFile(name, pub["sha256"], pub.get("size"), url, mirrors),), inp.root)
    if offline:
        raise EnvironmentFailure(f"{inp.name}: resolving {name} needs the network (offline mode)")
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / name
        _download_unpinned(url, dest)
        return PlatformPin(plat, (PinnedFile(name, sha256_file(dest), dest.stat().st_size, url, mirrors),),
                           inp.root)


def _download_unpinned(url: str, dest: Path) -> None:
    import requests

    say(f"resolving {url}")
    try:
        with requests.get(url, stream=True, timeout=(10, 60)) as resp:
            resp.raise_for_status()
            with open(dest, "wb") as out:
                for chunk in resp.iter_content(1 << 20):
                    out.write(chunk)
    except requests.RequestException as exc:
        raise EnvironmentFailure(f"could not download {url}: {exc}") from None


def _resolve_wheel(inp: ToolchainInput, plat: str, offline: bool) -> PlatformPin:
    assert inp.package is not None
    if offline:
        raise EnvironmentFailure(f"{inp.name}: resolving the {inp.package} wheel needs pip's index (offline mode)")
    tag = download.WHEEL_PLATFORM_TAGS.get(plat)
    if tag is None:
        raise BadInput(f"{inp.name}: no wheel platform tag for {plat}")
    with tempfile.TemporaryDirectory() as tmp:
        say(f"resolving {inp.package}=={inp.version} for {plat}")
        download.pip_download(inp.package, inp.version, tag, Path(tmp))
        files = list(Path(tmp).glob("*.whl"))
        if len(files) != 1:
            raise EnvironmentFailure(f"{inp.name}: pip gave {len(files)} wheels for {plat}")
        wheel = files[0]
        pf = PinnedFile(wheel.name, sha256_file(wheel), wheel.stat().st_size, package=inp.package,
                        version=inp.version)
    return PlatformPin(plat, (pf,), inp.root)


def _resolve_deb(inp: ToolchainInput, plat: str, offline: bool) -> PlatformPin:
    if offline:
        raise EnvironmentFailure(f"{inp.name}: resolving .debs needs apt's sources (offline mode)")
    arch = download.DEB_ARCH.get(plat)
    if arch is None:
        raise BadInput(f"{inp.name}: no Debian architecture for {plat}")
    from reprobuild import proc

    files = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in inp.packages:
            name, version = spec.split("=", 1)
            say(f"resolving {name}={version} ({arch})")
            before = set(Path(tmp).iterdir())
            proc.run(["apt-get", "download", "-q", f"{name}:{arch}={version}"], cwd=Path(tmp))
            (deb,) = set(Path(tmp).iterdir()) - before
            files.append(PinnedFile(deb.name, sha256_file(deb), deb.stat().st_size, package=name, version=version))
    return PlatformPin(plat, tuple(files), inp.root)


def lock(inputs_path: Path, lock_path: Path, current: Lock | None, check: bool, offline: bool) -> tuple[Plan, str]:
    """Plan, and unless checking, resolve and write. Returns the plan and the rendered lock.

    Builder images (`builders/*/image.yaml` next to the lock) are planned alongside the toolchains,
    as `images/<name>` in the plan; see reprobuild.backends.images.store.
    """
    from reprobuild.backends.images import store as images
    from reprobuild.toolchains.cache import default_cache_root

    inputs = load_inputs(inputs_path)
    tp = plan(inputs, current)
    builders_dir = lock_path.parent / "builders"
    ip = images.plan_images(builders_dir if builders_dir.is_dir() else None, current)
    p = Plan(tp.keep + tuple(f"images/{n}" for n in ip.keep), tp.resolve + tuple(f"images/{n}" for n in ip.resolve),
             tp.drop + tuple(f"images/{n}" for n in ip.drop))
    p, pp = _plan_python(p, builders_dir, current)
    if check:
        return p, ""
    entries = {}
    for name, inp in inputs.items():
        if name in p.keep and current is not None:
            entries[name] = current.toolchains[name]
        else:
            entries[name] = resolve_entry(inp, offline)
    sections = dict(current.sections) if current else {}
    image_section = images.lock_section(ip, current, default_cache_root(), offline)
    if image_section:
        sections["images"] = image_section
    else:
        sections.pop("images", None)
    pylock.update_sections(sections, pp, current, offline)
    new = replace(current, toolchains=entries, sections=sections) if current else Lock(
        str(lock_path), entries, sections)
    write_lock(new, lock_path)
    return p, render_lock(new)


def _plan_python(p: Plan, builders_dir: Path, current: Lock | None) -> tuple[Plan, pylock.PyPlan]:
    """Locked Python environments (`builders/*/requirements.in`), planned as `python/<name>` (config.pylock)."""
    pp = pylock.plan(builders_dir if builders_dir.is_dir() else None, current)
    return Plan(p.keep + pp.keep, p.resolve + pp.resolve, p.drop + pp.drop), pp
