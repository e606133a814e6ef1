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

A command pipeline's `container_images:` (its `image:` names the builder image the command runs in) is a
list of the same sections, each with a `name`, the `artifacts` it holds and its `platform`:

    container_images:
      - name: greet                        # OUT/<pipeline>/greet.oci/, greet_linux_amd64.docker.tar
        platform: linux/amd64
        artifacts: {/usr/local/bin/greet: bin/greet}   # image path: artifact path under $OUT
        entrypoint: [/usr/local/bin/greet] # default: the one artifact, when there is one

Validated here, once, into a frozen ImageSpec (and ArtifactImage); every problem names the file and line.
"""

from __future__ import annotations

import dataclasses
import fnmatch
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
    return _parse_spec(Fields(node, what, KEYS), node, what)


def _parse_spec(f: Fields, node: Node, what: str) -> ImageSpec:
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
            _check_dest(src_node, what, "files", dest)
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


ARTIFACT_IMAGE_KEYS = KEYS | {"name", "artifacts", "platform"}
LINUX_ARCHES = ("386", "amd64", "arm", "arm64", "loong64", "mips", "mips64", "mips64le", "mipsle", "ppc64",
                "ppc64le", "riscv64", "s390x")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_GLOB_CHARS = re.compile(r"[*?\[\]]")


@dataclass(frozen=True)
class ArtifactImage:
    """A command pipeline's container image: some of its artifacts on a base, for one linux platform."""

    name: str  # names `<name>.oci/` and `<name>_<os>_<arch>.docker.tar` in OUT/<pipeline>/
    platform: str  # linux/<arch>: what the artifacts run on (reprobuild cannot tell from a file)
    artifacts: tuple[tuple[str, str], ...]  # (path in the image, without the leading /; path under $OUT)
    spec: ImageSpec  # entrypoint always set
    line: int = 0

    def outputs(self) -> tuple[str, ...]:
        """What the image adds to OUT/<pipeline>/ (the command must not write these itself)."""
        os_, _, arch = self.platform.partition("/")
        return f"{self.name}.oci", f"{self.name}_{os_}_{arch}.docker.tar"


def parse_artifact_images(node: Node, globs: tuple[str, ...]) -> tuple[ArtifactImage, ...]:
    """A command pipeline's `container_images:`: each image's artifacts must be files its `artifacts` keep."""
    result: list[ArtifactImage] = []
    for item in node.sequence("container_images (a list of images)"):
        f = Fields(item, "a container image", ARTIFACT_IMAGE_KEYS)
        name_node = f.required("name")
        name = name_node.string("container image name")
        if not _NAME_RE.match(name):
            raise name_node.error(f"container image name `{name}` must be letters, digits, `.`, `_` or `-` "
                                  "(it names the layout)")
        if any(x.name == name for x in result):
            raise name_node.error(f"container image name `{name}` is used twice")
        what = f"container image `{name}`"
        plat_node = f.optional("platform")
        platform = plat_node.string(f"{what}: platform") if plat_node else "linux/amd64"
        os_, _, arch = platform.partition("/")
        if os_ != "linux" or arch not in LINUX_ARCHES:
            raise plat_node.error(f"{what}: platform `{platform}` is not linux/<arch>",  # type: ignore[union-attr]
                                  f"arches: {', '.join(LINUX_ARCHES)}")
        arts_node = f.required("artifacts")
        artifacts: list[tuple[str, str]] = []
        for dest, src_node in arts_node.mapping(f"{what}: artifacts (image path: artifact path)").items():
            src = src_node.string(f"{what}: artifacts {dest}")
            _check_dest(src_node, what, "artifacts", dest)
            if src.startswith("/") or ".." in src.split("/") or posixpath.normpath(src) != src:
                raise src_node.error(f"{what}: artifacts: `{src}` must be a normalized path under $OUT")
            if _GLOB_CHARS.search(src):
                raise src_node.error(f"{what}: artifacts: `{src}` is a glob; name one file under $OUT",
                                     "list each file that goes in the image")
            if not any(fnmatch.fnmatchcase(src, g) for g in globs):
                raise src_node.error(f"{what}: artifact `{src}` is not kept by the pipeline's `artifacts` "
                                     f"{list(globs)}", "add a glob matching it to `artifacts`")
            artifacts.append((dest.lstrip("/"), src))
        if not artifacts:
            raise arts_node.error(f"{what}: artifacts is empty")
        spec = _parse_spec(f, item, what)
        paths = [d for d, _ in artifacts] + [d for d, _ in spec.files]
        for reserved in ("etc/passwd", "etc/group", "tmp"):
            if reserved in paths:
                raise arts_node.error(f"{what}: `/{reserved}` is written by reprobuild (non-root user, /tmp)")
        dup = sorted({p for p in paths if paths.count(p) > 1})
        if dup:
            raise arts_node.error(f"{what}: `/{dup[0]}` is given twice (artifacts and files share the image)")
        if spec.entrypoint is None:
            if len(artifacts) != 1:
                raise item.error(f"{what}: several artifacts go in the image, so it needs an `entrypoint`",
                                 f"e.g. entrypoint: [/{artifacts[0][0]}]")
            spec = dataclasses.replace(spec, entrypoint=(f"/{artifacts[0][0]}",))
        result.append(ArtifactImage(name, platform, tuple(artifacts), spec, item.line))
    if not result:
        raise node.error("container_images is empty")
    return tuple(result)


def _check_dest(node: Node, what: str, key: str, dest: str) -> None:
    if not dest.startswith("/") or posixpath.normpath(dest) != dest or dest == "/":
        raise node.error(f"{what}: {key}: `{dest}` must be a normalized absolute path in the image")


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
