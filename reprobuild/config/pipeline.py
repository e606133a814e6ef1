"""Pipelines (`pipelines/*.yaml`): parsed and validated in one place, into frozen dataclasses.

Every problem is a FileError naming the file and line; unknown keys get a did-you-mean.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from reprobuild.config.image import ArtifactImage, ImageSpec, parse_artifact_images, parse_image
from reprobuild.config.paddle import PIPELINE_KEYS as PADDLE_KEYS
from reprobuild.config.paddle import PaddleSpec, parse_paddle
from reprobuild.config.yamlload import Fields, Node, load_documents
from reprobuild.errors import BadInput, FileError, Location

BUILDERS = ("go", "command", "paddle")
ARCHIVE_FORMATS = ("tar.gz", "zip")
DEFAULT_SOURCE_DATE_EPOCH = 315532800  # 1980-01-01: the earliest time a zip entry can carry

# `go tool dist list` of Go 1.20 (the pinned production Go), which 1.21 extends only with wasip1/wasm.
_DIST_LIST = """
aix/ppc64 android/386 android/amd64 android/arm android/arm64 darwin/amd64 darwin/arm64 dragonfly/amd64
freebsd/386 freebsd/amd64 freebsd/arm freebsd/arm64 freebsd/riscv64 illumos/amd64 ios/amd64 ios/arm64
js/wasm linux/386 linux/amd64 linux/arm linux/arm64 linux/loong64 linux/mips linux/mips64 linux/mips64le
linux/mipsle linux/ppc64 linux/ppc64le linux/riscv64 linux/s390x netbsd/386 netbsd/amd64 netbsd/arm
netbsd/arm64 openbsd/386 openbsd/amd64 openbsd/arm openbsd/arm64 openbsd/mips64 plan9/386 plan9/amd64
plan9/arm solaris/amd64 wasip1/wasm windows/386 windows/amd64 windows/arm windows/arm64
"""
GO_PLATFORMS = frozenset(_DIST_LIST.split())
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_X_RE = re.compile(r"^[A-Za-z0-9_./-]+\.[A-Za-z_][A-Za-z0-9_]*$")
_PLACEHOLDERS = ("{version}", "{source_date_epoch}", "{pipeline}", "{target}")


@dataclass(frozen=True)
class GoTarget:
    name: str
    package: str
    cgo: bool
    platforms: tuple[str, ...]  # GOOS/GOARCH
    ldflags_x: tuple[tuple[str, str], ...] = ()  # -X symbol=value (value may use the placeholders)
    tags: tuple[str, ...] = ()
    archive: str | None = None
    keep_gnu_build_id: bool = False
    line: int = 0
    image: ImageSpec | None = None  # the container image made from the binaries (config/image.py)
    buildmode: str = "exe"  # exe | plugin (a Go plugin, loaded by `host` with plugin.Open)
    host: str | None = None  # for a plugin: the target that loads it, built in lockstep with it
    forbidden_strings: tuple[str, ...] = ()  # also refused in the binary, wherever they occur
    allowed_strings: tuple[str, ...] = ()  # a forbidden path inside a string holding one of these is accepted


@dataclass(frozen=True)
class Pipeline:
    name: str
    builder: str
    source: Path  # absolute
    file: Path
    line: int
    toolchain: str | None = None
    version: str = "0.0.0"
    source_date_epoch: int = DEFAULT_SOURCE_DATE_EPOCH
    targets: tuple[GoTarget, ...] = ()
    run: str | None = None
    artifacts: tuple[str, ...] = ()
    image: str = "debian"
    extra: dict[str, object] = field(default_factory=dict)  # builder-specific keys of later builders
    paddle: PaddleSpec | None = None  # builder: paddle, parsed from `extra` when the pipeline is loaded
    container_images: tuple[ArtifactImage, ...] = ()  # builder: command: images made from its artifacts

    @property
    def where(self) -> Location:
        return Location(self.file, self.line)


def default_pipeline_files(repo_root: Path) -> list[Path]:
    return sorted((repo_root / "pipelines").glob("*.yaml"))


def load_pipelines(paths: list[Path] | None, repo_root: Path) -> list[Pipeline]:
    """Load the given pipelines (default: all of `pipelines/*.yaml`), checking names are unique.

    Each one is a file, or a pipeline's name (`go-service`: the pipeline of that name in `pipelines/*.yaml`)."""
    named = [p for p in paths or [] if not p.exists() and _NAME_RE.match(str(p))]
    files = [p for p in paths or [] if p not in named] or ([] if named else default_pipeline_files(repo_root))
    if not files and not named:
        raise BadInput(f"no pipeline files given and none in {repo_root / 'pipelines'}")
    result = _load_files(files, repo_root)
    if named:
        by_name: dict[str, Node] = {}  # only the named pipelines are parsed: another one's problem is not ours
        for path in default_pipeline_files(repo_root):
            for doc in load_documents(path):
                node = doc.value.get("name") if isinstance(doc.value, dict) else None
                if node is not None and isinstance(node.value, str):
                    by_name.setdefault(node.value, doc)
        for name in (str(n) for n in named):
            if name not in by_name:
                import difflib

                guess = difflib.get_close_matches(name, sorted(by_name), n=1)
                raise BadInput(f"no pipeline file `{name}` and no pipeline named `{name}` in {repo_root / 'pipelines'}",
                               f"did you mean `{guess[0]}`?" if guess else
                               f"pipelines: {', '.join(sorted(by_name)) or 'none'}")
            if all(p.name != name for p in result):
                result.append(parse_pipeline(by_name[name], repo_root))
    return result


def _load_files(files: list[Path], repo_root: Path) -> list[Pipeline]:
    result: list[Pipeline] = []
    seen: dict[str, Pipeline] = {}
    for path in files:
        docs = load_documents(path)
        if not docs:
            raise FileError(Location(path, 1), "no pipeline in this file (it is empty)",
                            "a pipeline has at least version, name, builder and source")
        for doc in docs:
            p = parse_pipeline(doc, repo_root)
            if p.name in seen:
                raise FileError(p.where, f"pipeline name `{p.name}` is used twice (also at {seen[p.name].where})",
                                "names must be unique: they name the output subfolder")
            seen[p.name] = p
            result.append(p)
    return result


def source_date_epoch(pipeline_value: int) -> int:
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env:
        try:
            value = int(env)
        except ValueError:
            raise BadInput(f"SOURCE_DATE_EPOCH={env!r} is not a whole number of seconds") from None
        if not 0 <= value <= MAX_SOURCE_DATE_EPOCH:
            raise BadInput(f"SOURCE_DATE_EPOCH={env!r} is out of range (0 to {MAX_SOURCE_DATE_EPOCH}, "
                           "1970 to 9999)")
        return value
    return pipeline_value


MAX_SOURCE_DATE_EPOCH = 253402300799  # 9999-12-31T23:59:59Z: what tar, zip and datetime can all write
_UNSAFE_FLAG_VALUE = re.compile(r"[\s'\"\\]")
"""Go splits -ldflags on whitespace and quotes: such a value would smuggle in flags of its own."""


def _inside(repo_root: Path, node: Node, what: str) -> Path:
    """repo_root / node's value, resolved; a FileError when it leaves the repository root."""
    rel = node.string(what)
    path = (repo_root / rel).resolve()
    root = repo_root.resolve()
    if path != root and root not in path.parents:
        raise node.error(f"{what} `{rel}` is outside the repository root {root}",
                         "sources are paths inside the repository (symbolic links out are refused too)")
    return path


def check_flag_value(node: Node, what: str, value: str) -> str:
    """`value` unless it holds whitespace, a quote or a backslash (exit 2 at node's line)."""
    if _UNSAFE_FLAG_VALUE.search(value):
        raise node.error(f"{what} {value!r} contains whitespace, a quote or a backslash",
                         "Go would split it into extra linker flags; use a value without them")
    return value


COMMON_KEYS = {"version", "name", "builder", "source", "source_date_epoch"}
GO_KEYS = COMMON_KEYS | {"toolchain", "targets", "module_version"}
COMMAND_KEYS = COMMON_KEYS | {"run", "artifacts", "image", "toolchain", "container_images"}
GO_TARGET_KEYS = {"name", "package", "cgo", "platforms", "ldflags", "tags", "archive", "keep_gnu_build_id", "image",
                  "buildmode", "host", "forbidden_strings", "allowed_strings"}


def parse_pipeline(doc: Node, repo_root: Path) -> Pipeline:
    path = doc.path
    doc.mapping("a pipeline")
    builder_node = doc.value.get("builder")
    if builder_node is None:
        raise doc.error("the pipeline is missing required key `builder`", f"one of: {', '.join(BUILDERS)}")
    builder = builder_node.string("builder")
    if builder not in BUILDERS:
        raise builder_node.error(f"unknown builder `{builder}`", f"one of: {', '.join(BUILDERS)}")
    allowed = {"go": GO_KEYS, "command": COMMAND_KEYS, "paddle": COMMON_KEYS | PADDLE_KEYS}[builder]
    if builder == "command" and "images" in doc.value:
        raise doc.value["images"].error("unknown key `images` in the pipeline",
                                        "container images of the artifacts go under `container_images:`; "
                                        "`image:` names the builder image the command runs in")
    f = Fields(doc, "the pipeline", allowed)
    version = f.required("version")
    if version.integer("version") != 1:
        raise version.error(f"unsupported pipeline version {version.value}; this reprobuild reads version 1")
    name_node = f.required("name")
    name = name_node.string("name")
    if not _NAME_RE.match(name):
        raise name_node.error(f"name `{name}` must be letters, digits, `.`, `_` or `-` (it names a folder)")
    source_node = f.required("source")
    source = _inside(repo_root, source_node, "source")
    if not source.is_dir():
        raise source_node.error(f"source `{source_node.value}` is not a directory (relative to {repo_root})")
    sde_node = f.optional("source_date_epoch")
    sde = sde_node.integer("source_date_epoch") if sde_node else DEFAULT_SOURCE_DATE_EPOCH
    if sde_node is not None and not 0 <= sde <= MAX_SOURCE_DATE_EPOCH:
        raise sde_node.error(f"source_date_epoch {sde} is out of range (0 to {MAX_SOURCE_DATE_EPOCH}, 1970 to 9999)")
    common = {"name": name, "builder": builder, "source": source, "file": path, "line": doc.line,
              "source_date_epoch": sde}
    tc_node = f.optional("toolchain")
    toolchain = tc_node.string("toolchain") if tc_node else None
    if builder == "go":
        if toolchain is None:
            raise doc.error("a go pipeline needs `toolchain` (an entry of toolchains.lock, e.g. `go`)")
        mv = f.optional("module_version")
        targets_node = f.required("targets")
        parsed = [_parse_go_target(t) for t in targets_node.sequence("targets")]
        targets = tuple(t for t, _ in parsed)
        if not targets:
            raise targets_node.error("targets is empty")
        names = [t.name for t in targets]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise targets_node.error(f"target name(s) used twice: {', '.join(sorted(dup))}")
        targets = _lockstep(targets, [keys for _, keys in parsed], targets_node)
        return Pipeline(**common, toolchain=toolchain, targets=targets,
                        version=check_flag_value(mv, "module_version", mv.string("module_version")) if mv
                        else "0.0.0")
    if builder == "command":
        run = f.required("run").string("run")
        arts = f.optional("artifacts")
        artifacts = tuple(arts.strings("artifacts")) if arts else ("*",)
        for pattern, node in zip(artifacts, arts.sequence("artifacts") if arts else [], strict=False):
            if pattern.startswith("/") or ".." in pattern.split("/"):
                raise node.error(f"artifact glob `{pattern}` must stay under $OUT")
        image_node = f.optional("image")
        if image_node is not None and isinstance(image_node.value, dict | list):
            raise image_node.error("in a command pipeline `image` names the builder image the command runs in "
                                   "(a string, e.g. `debian`)",
                                   "a container image made of the artifacts goes under `container_images:` "
                                   "(a list of images, each with `name` and `artifacts`; docs/pipelines.md)")
        image = image_node.string("image") if image_node else "debian"
        ci_node = f.optional("container_images")
        images = parse_artifact_images(ci_node, artifacts) if ci_node is not None else ()
        return Pipeline(**common, toolchain=toolchain, run=run, artifacts=artifacts,
                        image=image, container_images=images)
    extra = {k: v for k, v in f if k not in COMMON_KEYS}
    paddle = parse_paddle(extra, Location(path, doc.line), source)  # refused here, before any work
    return Pipeline(**common, toolchain=toolchain, extra=extra, paddle=paddle)  # type: ignore[arg-type]


def _parse_go_target(node: Node) -> tuple[GoTarget, dict[str, Node]]:
    """The target, and the nodes of the keys a plugin inherits from its host when it leaves them out."""
    f = Fields(node, "a target", GO_TARGET_KEYS)
    name_node = f.required("name")
    name = name_node.string("target name")
    if not _NAME_RE.match(name):
        raise name_node.error(f"target name `{name}` must be letters, digits, `.`, `_` or `-`")
    pkg_node = f.required("package")
    package = pkg_node.string(f"target `{name}`: package")
    if not (package.startswith("./") or package == ".") or ".." in package.split("/") \
            or _UNSAFE_FLAG_VALUE.search(package):
        raise pkg_node.error(f"target `{name}`: package `{package}` must be a path inside the module, like ./cmd/x")
    cgo_node = f.optional("cgo")
    cgo = cgo_node.boolean(f"target `{name}`: cgo") if cgo_node else False
    plat_node = f.optional("platforms")
    platforms = tuple(plat_node.strings(f"target `{name}`: platforms")) if plat_node else ("linux/amd64",)
    for plat, pn in zip(platforms, plat_node.sequence("platforms") if plat_node else [], strict=False):
        if plat not in GO_PLATFORMS:
            import difflib

            guess = difflib.get_close_matches(plat, sorted(GO_PLATFORMS), n=1)
            raise pn.error(f"target `{name}`: Go does not know the platform `{plat}`",
                           f"did you mean `{guess[0]}`?" if guess else "see `go tool dist list`")
    if not platforms:
        raise node.error(f"target `{name}`: platforms is empty")
    ldflags: list[tuple[str, str]] = []
    ld_node = f.optional("ldflags")
    if ld_node is not None:
        for sym, vnode in ld_node.mapping(f"target `{name}`: ldflags (symbol: value, for -X)").items():
            if not _X_RE.match(sym):
                raise vnode.error(f"target `{name}`: `{sym}` is not a Go symbol like main.version (-X only)")
            value = vnode.string(f"target `{name}`: ldflags value")
            for bad in re.findall(r"\{[^}]*\}", value):
                if bad not in _PLACEHOLDERS:
                    raise vnode.error(f"target `{name}`: unknown placeholder {bad} in ldflags",
                                      f"allowed: {', '.join(_PLACEHOLDERS)} (never the wall clock)")
            ldflags.append((sym, check_flag_value(vnode, f"target `{name}`: ldflags value", value)))
    tags_node = f.optional("tags")
    tags = tuple(tags_node.strings(f"target `{name}`: tags")) if tags_node else ()
    arch_node = f.optional("archive")
    archive = arch_node.string(f"target `{name}`: archive") if arch_node else None
    if archive is not None and archive not in ARCHIVE_FORMATS:
        raise arch_node.error(f"target `{name}`: archive `{archive}` is not one of "  # type: ignore[union-attr]
                              f"{', '.join(ARCHIVE_FORMATS)}")
    keep_node = f.optional("keep_gnu_build_id")
    keep = keep_node.boolean("keep_gnu_build_id") if keep_node else False
    image_node = f.optional("image")
    image = parse_image(image_node, name) if image_node is not None else None
    if image is not None and any(not p.startswith("linux/") for p in platforms):
        raise image_node.error(f"target `{name}`: images are made for linux platforms only",  # type: ignore[union-attr]
                               "build the other platforms in a target without `image:`")
    mode_node, host_node = f.optional("buildmode"), f.optional("host")
    mode = mode_node.string(f"target `{name}`: buildmode") if mode_node else "exe"
    if mode_node is not None and mode not in BUILDMODES:
        raise mode_node.error(f"target `{name}`: buildmode `{mode}` is not one of {', '.join(BUILDMODES)}")
    host = host_node.string(f"target `{name}`: host") if host_node else None
    if mode == "plugin" and host is None:
        raise node.error(f"target `{name}`: a plugin needs `host: <target>`, the target that loads it",
                         "host and plugins are built in lockstep, and checked against each other")
    if host is not None and mode != "plugin":
        raise host_node.error(f"target `{name}`: `host` is only for `buildmode: plugin`")  # type: ignore[union-attr]
    if mode == "plugin" and archive is not None:
        raise arch_node.error(f"target `{name}`: a plugin is loaded from its file; no archive")  # type: ignore[union-attr]
    inherited = {k: n for k, n in (("cgo", cgo_node), ("platforms", plat_node), ("tags", tags_node)) if n is not None}
    if mode == "plugin" and image is not None:
        raise image_node.error(f"target `{name}`: a plugin is loaded by its host, not run as an image")  # type: ignore[union-attr]
    target = GoTarget(name, package, cgo, platforms, tuple(ldflags), tags, archive, keep, node.line, image,
                      buildmode=mode, host=host,
                      forbidden_strings=_assertion_strings(f.optional("forbidden_strings"), name, "forbidden_strings"),
                      allowed_strings=_assertion_strings(f.optional("allowed_strings"), name, "allowed_strings"))
    return target, inherited


def _assertion_strings(node: Node | None, target: str, key: str) -> tuple[str, ...]:
    """A target's extra forbidden or allowed strings: a list of distinct strings of 4 characters or more (a
    shorter one would match almost any binary by chance)."""
    if node is None:
        return ()
    found: list[str] = []
    for item in node.sequence(f"target `{target}`: {key}"):
        text = item.string(f"each item of target `{target}`: {key}")
        if len(text) < 4:
            raise item.error(f"target `{target}`: {key} item {text!r} is shorter than 4 characters",
                             "a string that short matches almost any binary by chance")
        if text in found:
            raise item.error(f"target `{target}`: {key} lists {text!r} twice")
        found.append(text)
    return tuple(found)



BUILDMODES = ("exe", "plugin")


def _lockstep(targets: tuple[GoTarget, ...], given: list[dict[str, Node]], where: Node) -> tuple[GoTarget, ...]:
    """Plugins take their host's cgo, platforms and tags (Go's loader refuses anything built otherwise); a key
    a plugin sets must agree with its host's. A host of plugins must be built with cgo (plugin.Open needs it)."""
    import dataclasses

    by_name = {t.name: t for t in targets}
    result = []
    for t, nodes in zip(targets, given, strict=True):
        if t.buildmode != "plugin":
            result.append(t)
            continue
        at = Location(where.path, t.line)
        host = by_name.get(t.host or "")
        if host is None or host.buildmode == "plugin":
            raise FileError(at, f"target `{t.name}`: host `{t.host}` is not an executable target of this pipeline",
                            f"targets: {', '.join(n for n, x in by_name.items() if x.buildmode == 'exe')}")
        if not host.cgo:
            raise FileError(Location(where.path, host.line), f"target `{host.name}` loads plugins, so it must be "
                            "built with `cgo: true` (plugin.Open is implemented with cgo)")
        if any(not p.startswith("linux/") for p in host.platforms):
            raise FileError(at, f"target `{t.name}`: Go plugins are built here for linux only")
        for key, mine, theirs in (("cgo", t.cgo, host.cgo), ("platforms", t.platforms, host.platforms),
                                  ("tags", t.tags, host.tags)):
            node = nodes.get(key)
            if node is not None and mine != theirs:
                raise node.error(f"target `{t.name}`: {key} must be its host `{host.name}`'s "
                                 f"({_show(theirs)}), not {_show(mine)}",
                                 "a plugin is built in lockstep with its host: leave the key out to inherit it")
        result.append(dataclasses.replace(t, cgo=host.cgo, platforms=host.platforms, tags=host.tags))
    return tuple(result)


def _show(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)
