"""What a builder image is made of (`builders/<name>/image.yaml`) and what the lock pins for it.

    ImageSpec / load_spec       the recipe: base (scratch | debootstrap), toolchain placement, env, packages
    ImageLock / parse_image_locks  the lock's `images:` section: every installed Debian version, pinned
    ImageDrift / version_changes   what differs when the mirror now installs other versions (exit 1)

Pure: reading and validating files, no engine, no network.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reprobuild.config.model import Lock
from reprobuild.config.yamlload import Fields, load_one
from reprobuild.errors import BadInput, CheckFailed

# Bump when the way images are written changes: it changes every image ID on purpose.
FORMAT = 3  # 3: /rb/tmp (mode 1777) joined the mount points
SPEC_VERSION = 1
BASES = ("scratch", "debootstrap")
LOCALE_RE = re.compile(r"^[a-z]{2,3}(_[A-Z]{2})?\.UTF-8$")
BUILTIN_LOCALES = ("C", "C.UTF-8", "POSIX")
REPO_BUILDERS = Path(__file__).resolve().parents[3] / "builders"


def inputs_digest(data: Any) -> str:
    """sha256 of canonical JSON: how image inputs, lock entries and cache keys are named."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# --- what an image is made of (builders/<name>/image.yaml) ---------------------------------------

@dataclass(frozen=True)
class ImageSpec:
    name: str
    base: str  # scratch | debootstrap
    toolchain: str  # layered (in the image at /rb/toolchain) | mounted (read-only at run time)
    env: dict[str, str]
    path: Path
    suite: str | None = None
    variant: str | None = None
    packages: tuple[str, ...] = ()
    mirror: str = "apt"  # `apt`: the mirror apt is configured with, read at run time; or a URL
    locales: tuple[str, ...] = ()  # compiled into the image besides the built-in C.UTF-8

    def digest(self) -> str:
        """The inputs of the image, for the lock (`lock --check`) and the caches."""
        data = {"name": self.name, "base": self.base, "toolchain": self.toolchain, "env": self.env,
                "suite": self.suite, "variant": self.variant, "packages": sorted(self.packages),
                "mirror": self.mirror, "locales": sorted(self.locales), "format": FORMAT}
        return inputs_digest(data)


def default_builders_dir(lock_path: Path | None = None) -> Path:
    """`builders/` next to the lock, else the one in the repository reprobuild runs from."""
    if lock_path is not None:
        candidate = lock_path.resolve().parent / "builders"
        if candidate.is_dir():
            return candidate
    return REPO_BUILDERS


def spec_names(builders_dir: Path) -> list[str]:
    return sorted(p.parent.name for p in builders_dir.glob("*/image.yaml"))


def load_spec(builders_dir: Path, name: str) -> ImageSpec:
    path = builders_dir / name / "image.yaml"
    if not path.exists():
        known = ", ".join(spec_names(builders_dir)) or "none"
        raise BadInput(f"no builder image `{name}` ({path} does not exist; images: {known})")
    root = load_one(path)
    what = f"builder image `{name}`"
    f = Fields(root, what, {"version", "base", "toolchain", "env", "suite", "variant", "packages", "mirror",
                            "locales"})
    if f.required("version").integer(f"{what}: version") != SPEC_VERSION:
        raise f.required("version").error(f"{what}: unsupported version; this reprobuild reads {SPEC_VERSION}")
    base_node = f.required("base")
    base = base_node.string(f"{what}: base")
    if base not in BASES:
        raise base_node.error(f"{what}: unknown base `{base}`", f"one of: {', '.join(BASES)}")
    tc_node = f.optional("toolchain")
    toolchain = tc_node.string(f"{what}: toolchain") if tc_node else "mounted"
    if toolchain not in ("layered", "mounted"):
        raise tc_node.error(f"{what}: toolchain must be `layered` or `mounted`")  # type: ignore[union-attr]
    env: dict[str, str] = {}
    env_node = f.optional("env")
    if env_node is not None:
        for key, value in env_node.mapping(f"{what}: env").items():
            env[key] = value.string(f"{what}: env {key}")
    if base == "scratch":
        for key in ("suite", "variant", "packages", "mirror", "locales"):
            if f.optional(key) is not None:
                raise f.required(key).error(f"{what}: `{key}` only applies to base `debootstrap`")
        return ImageSpec(name, base, toolchain, env, path)
    suite = f.required("suite").string(f"{what}: suite")
    variant_node = f.optional("variant")
    variant = variant_node.string(f"{what}: variant") if variant_node else "minbase"
    packages_node = f.required("packages")
    packages = tuple(packages_node.strings(f"{what}: packages"))
    for pkg, pnode in zip(packages, packages_node.sequence("packages"), strict=True):
        if not re.match(r"^[a-z0-9][a-z0-9+.-]+$", pkg):
            raise pnode.error(f"{what}: `{pkg}` is not a Debian package name",
                              "list names only; the versions are pinned by `reprobuild lock`")
    mirror_node = f.optional("mirror")
    mirror = mirror_node.string(f"{what}: mirror") if mirror_node else "apt"
    if mirror != "apt" and not re.match(r"^(https?|file)://", mirror):
        raise mirror_node.error(f"{what}: mirror must be `apt` or an http(s)/file URL",  # type: ignore[union-attr]
                                "e.g. a dated snapshot archive, so the pins never rot")
    locales: tuple[str, ...] = ()
    locales_node = f.optional("locales")
    if locales_node is not None:
        locales = tuple(locales_node.strings(f"{what}: locales"))
        for loc, lnode in zip(locales, locales_node.sequence("locales"), strict=True):
            if not LOCALE_RE.match(loc):
                raise lnode.error(f"{what}: `{loc}` is not a UTF-8 locale name", "e.g. fr_CH.UTF-8")
        if locales and "locales" not in packages:
            raise locales_node.error(f"{what}: compiling locales needs the `locales` package in `packages`")
    return ImageSpec(name, base, toolchain, env, path, suite, variant, packages, mirror, locales)


# --- the lock's `images:` section ----------------------------------------------------------------

@dataclass(frozen=True)
class ImageLock:
    """What `reprobuild lock` pinned for a debootstrap image: its inputs and every installed version."""

    name: str
    inputs: str
    suite: str
    variant: str
    mirror: str
    packages: dict[str, str] = field(default_factory=dict)  # name -> exact version

    def to_data(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "suite": self.suite, "variant": self.variant, "mirror": self.mirror,
                "packages": dict(sorted(self.packages.items()))}

    def key(self) -> str:
        return inputs_digest({"format": FORMAT, **self.to_data()})


def parse_image_locks(lock: Lock) -> dict[str, ImageLock]:
    """Validate the lock's `images:` section (kept verbatim by lockfile.py)."""
    raw = lock.sections.get("images")
    if raw is None:
        return {}
    where = f"{lock.path}: images"
    if not isinstance(raw, dict):
        raise BadInput(f"{where} must be a mapping", "regenerate it with `reprobuild lock`")
    result: dict[str, ImageLock] = {}
    allowed = {"inputs", "suite", "variant", "mirror", "packages"}
    for name, entry in raw.items():
        if not isinstance(entry, dict):
            raise BadInput(f"{where}.{name} must be a mapping", "regenerate it with `reprobuild lock`")
        unknown = set(entry) - allowed
        missing = allowed - set(entry)
        if unknown or missing:
            problems = [f"unknown keys {sorted(unknown)}"] * bool(unknown) + [
                f"missing keys {sorted(missing)}"] * bool(missing)
            raise BadInput(f"{where}.{name}: " + "; ".join(problems), "regenerate it with `reprobuild lock`")
        packages = entry["packages"]
        if not isinstance(packages, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in packages.items()):
            raise BadInput(f"{where}.{name}.packages must map package names to version strings",
                           "quote versions such as `4:12.2.0-3`; or regenerate with `reprobuild lock`")
        for key in ("inputs", "suite", "variant", "mirror"):
            if not isinstance(entry[key], str):
                raise BadInput(f"{where}.{name}.{key} must be a string")
        result[name] = ImageLock(name, entry["inputs"], entry["suite"], entry["variant"], entry["mirror"],
                                 dict(packages))
    return result


class ImageDrift(CheckFailed):
    """The mirror now installs other versions than the lock pins (exit 1)."""

    def __init__(self, name: str, changes: list[str], lock_path: str) -> None:
        shown = "; ".join(changes[:20]) + (f"; and {len(changes) - 20} more" if len(changes) > 20 else "")
        super().__init__(
            f"builder image `{name}`: the installed packages differ from {lock_path}: {shown}",
            f"run `reprobuild lock --lock {lock_path}` to pin what the mirror serves now, or set a dated "
            f"snapshot mirror (`mirror:`) in builders/{name}/image.yaml so the pins never rot")
        self.changes = changes


def version_changes(locked: dict[str, str], actual: dict[str, str]) -> list[str]:
    """Human lines naming every package whose version differs, sorted by package."""
    changes = []
    for pkg in sorted(set(locked) | set(actual)):
        want, have = locked.get(pkg), actual.get(pkg)
        if want == have:
            continue
        if want is None:
            changes.append(f"{pkg} {have} is installed but not in the lock")
        elif have is None:
            changes.append(f"{pkg} (locked {want}) is no longer installed")
        else:
            changes.append(f"{pkg} {have} (locked {want})")
    return changes
