"""A Go target's `image:` section: the container image made from its verified binaries.

    image:
      base: scratch              # or a `kind: base` entry of toolchains.lock (pinned Debian packages)
      entrypoint: [/usr/local/bin/hello]   # default: the target's binary
      cmd: [--port, "8080"]
      user: "65532:65532"        # default: non-root; `0`/`root` needs `allow_root: true`
      env: {TZ: UTC}
      ports: [8080, 9090/udp]
      workdir: /
      labels: {org.opencontainers.image.title: hello}
      source: https://example.org/repo     # the org.opencontainers.image.source label
      files: {/etc/hello/config.yaml: config/hello.yaml}   # image path: path in the source
      tag: hello:1.0.0           # the name `docker load` gives it (default: <target>:<module_version>)
      revision: true             # label the git commit (then every commit is a new image, and a rebuild)

Validated here, once, into a frozen ImageSpec; every problem names the file and line.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from reprobuild.config.yamlload import Fields, Node

SCRATCH = "scratch"
BINARY_DIR = "/usr/local/bin"
DEFAULT_USER = "65532:65532"  # distroless' `nonroot`
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
KEYS = {"base", "entrypoint", "cmd", "user", "allow_root", "env", "ports", "workdir", "labels", "source", "files",
        "tag", "revision"}
_PORT_RE = re.compile(r"^([0-9]{1,5})(/(tcp|udp|sctp))?$")
_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TAG_RE = re.compile(r"^[a-z0-9]+([._/-][a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$")
_RESERVED_LABELS = ("org.opencontainers.image.revision", "org.opencontainers.image.version",
                    "org.opencontainers.image.created", "org.opencontainers.image.source")


@dataclass(frozen=True)
class ImageSpec:
    base: str  # `scratch` or a lock entry of kind `base`
    entrypoint: tuple[str, ...] | None  # None: the binary
    cmd: tuple[str, ...] = ()
    user: str = DEFAULT_USER
    env: tuple[tuple[str, str], ...] = ()
    ports: tuple[str, ...] = ()  # `8080/tcp`
    workdir: str = "/"
    labels: tuple[tuple[str, str], ...] = ()
    source: str | None = None
    files: tuple[tuple[str, str], ...] = ()  # (path in the image, relative path in the pipeline's source)
    tag: str | None = None
    line: int = 0
    revision: bool = True  # the org.opencontainers.image.revision label: the repository's git commit


def parse_image(node: Node, target: str) -> ImageSpec:
    what = f"target `{target}`: image"
    f = Fields(node, what, KEYS)
    base_node = f.optional("base")
    base = base_node.string(f"{what}: base") if base_node else SCRATCH
    if base_node is not None and (":" in base or "/" in base or "@" in base):
        raise base_node.error(f"{what}: base `{base}` looks like an image reference; bases are never pulled",
                              "use `scratch` or a `kind: base` entry of toolchains.lock (pinned Debian packages)")
    entrypoint = _argv(f.optional("entrypoint"), f"{what}: entrypoint")
    cmd = _argv(f.optional("cmd"), f"{what}: cmd") or ()
    user_node = f.optional("user")
    user = user_node.string(f"{what}: user") if user_node else DEFAULT_USER
    if user_node is not None and not _USER_RE.match(user):
        raise user_node.error(f"{what}: user `{user}` must be `uid[:gid]` or `name[:group]`")
    root_node = f.optional("allow_root")
    allow_root = root_node.boolean(f"{what}: allow_root") if root_node else False
    if user.split(":")[0] in ("0", "root") and not allow_root:
        raise (user_node or node).error(f"{what}: user `{user}` runs the service as root",
                                        "pick a non-root uid (default 65532:65532), or set `allow_root: true`")
    env: list[tuple[str, str]] = []
    env_node = f.optional("env")
    if env_node is not None:
        for key, value in env_node.mapping(f"{what}: env").items():
            if not _ENV_RE.match(key):
                raise value.error(f"{what}: `{key}` is not an environment variable name")
            env.append((key, _scalar(value, f"{what}: env {key}")))
    ports: list[str] = []
    ports_node = f.optional("ports")
    for item in ports_node.sequence(f"{what}: ports") if ports_node else []:
        text = str(item.value) if isinstance(item.value, int) and not isinstance(item.value, bool) else (
            item.string(f"{what}: each port"))
        m = _PORT_RE.match(text)
        if not m or not 0 < int(m.group(1)) < 65536:
            raise item.error(f"{what}: port `{text}` must be a number 1-65535, optionally /tcp, /udp or /sctp")
        ports.append(f"{int(m.group(1))}/{m.group(3) or 'tcp'}")
    workdir_node = f.optional("workdir")
    workdir = workdir_node.string(f"{what}: workdir") if workdir_node else "/"
    if not workdir.startswith("/"):
        raise workdir_node.error(f"{what}: workdir `{workdir}` must be absolute")  # type: ignore[union-attr]
    labels: list[tuple[str, str]] = []
    labels_node = f.optional("labels")
    if labels_node is not None:
        for key, value in labels_node.mapping(f"{what}: labels").items():
            if key in _RESERVED_LABELS:
                raise value.error(f"{what}: label `{key}` is set by reprobuild",
                                  "`source:` sets ...image.source; revision, version and created come from the "
                                  "build")
            labels.append((key, _scalar(value, f"{what}: label {key}")))
    source_node = f.optional("source")
    source = source_node.string(f"{what}: source") if source_node else None
    files: list[tuple[str, str]] = []
    files_node = f.optional("files")
    if files_node is not None:
        for dest, src_node in files_node.mapping(f"{what}: files (image path: source path)").items():
            src = src_node.string(f"{what}: files {dest}")
            if not dest.startswith("/") or posixpath.normpath(dest) != dest or dest == "/":
                raise src_node.error(f"{what}: files: `{dest}` must be a normalized absolute path in the image")
            if src.startswith("/") or ".." in src.split("/"):
                raise src_node.error(f"{what}: files: `{src}` must be a path inside the pipeline's source")
            files.append((dest.lstrip("/"), src))
    tag_node = f.optional("tag")
    tag = tag_node.string(f"{what}: tag") if tag_node else None
    if tag is not None and not _TAG_RE.match(tag):
        raise tag_node.error(f"{what}: tag `{tag}` is not an image name like hello:1.0.0")  # type: ignore[union-attr]
    rev_node = f.optional("revision")
    revision = rev_node.boolean(f"{what}: revision") if rev_node else True
    return ImageSpec(base, entrypoint, cmd, user, tuple(env), tuple(ports), workdir, tuple(labels), source,
                     tuple(files), tag, node.line, revision)


def _argv(node: Node | None, what: str) -> tuple[str, ...] | None:
    if node is None:
        return None
    if isinstance(node.value, str):
        raise node.error(f"{what} must be a list of arguments (exec form), not a shell string",
                         f"e.g. [{', '.join(node.value.split())}]")
    argv = tuple(node.strings(what))
    if not argv:
        raise node.error(f"{what} is empty")
    return argv


def _scalar(node: Node, what: str) -> str:
    if isinstance(node.value, bool) or not isinstance(node.value, str | int | float):
        raise node.error(f"{what} must be a string")
    return str(node.value)
