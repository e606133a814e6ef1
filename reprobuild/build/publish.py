"""Built images leave the output dir: `load` into the engine, `push` to an OCI registry.

Both start from a layout checked against the build's proof: every file of the layout must be listed in
the output dir's SHA256SUMS with its digest, and every blob must hash to its name. A layout changed
after the build is refused before anything is sent (its digest would no longer be the built one).

    check (SHA256SUMS, blobs) → load: one platform's docker-archive → the engine (backends/engine.py)
                              → push: blobs (HEAD, else POST+PUT) → manifests by digest → the tag
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprobuild.backends.leftovers import private_dir
from reprobuild.build.manifest import SUMS
from reprobuild.errors import BadInput, CheckFailed, EnvironmentFailure
from reprobuild.formats import oci
from reprobuild.fsutil import remove_tree, sha256_under

_REF_RE = re.compile(r"^(?P<host>[^/]+)/(?P<name>[a-z0-9]+(?:[._/-][a-z0-9]+)*)"
                     r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?$")
_LOOPBACK = ("127.", "localhost", "[::1]")


def checked_layout(path: Path) -> oci.Layout:
    """The layout at `path`, after checking it against the SHA256SUMS of the output dir holding it."""
    path = path.resolve()
    if not oci.is_layout(path):
        raise BadInput(f"{path}: not an OCI image layout (no oci-layout and index.json)",
                       "give the `<target>.oci` directory of a build, e.g. out/go-service/hello.oci")
    root = next((p for p in path.parents if (p / SUMS).is_file()), None)
    if root is None:
        raise BadInput(f"{path}: no {SUMS} in any directory above it, so nothing proves this is the built image",
                       "load or push the layout from the output directory of `reprobuild build`")
    prefix = path.relative_to(root).as_posix() + "/"
    listed: dict[str, str] = {}
    for line in (root / SUMS).read_text().splitlines():
        digest, _, rel = line.partition("  ")
        if rel.startswith(prefix):
            listed[rel.removeprefix(prefix)] = digest
    if "index.json" not in listed:
        raise BadInput(f"{root / SUMS} does not list {prefix}index.json: this layout is not an artifact of that build")
    present = set()
    for top, dirs, files in os.walk(path):  # never follows a link: one in the layout is refused below
        for name in [*dirs, *files]:
            rel = Path(top, name).relative_to(path).as_posix()
            if os.path.islink(Path(top, name)):
                raise CheckFailed(f"{path}: {rel} is a symbolic link; a built layout holds none, so this is not the "
                                  "built image and nothing is read through it", "rebuild it with `reprobuild build`")
            if name in files:
                present.add(rel)
    changed = sorted(rel for rel in present | set(listed)
                     if rel not in listed or rel not in present or sha256_under(path, rel) != listed[rel])
    if changed:
        raise CheckFailed(f"{path}: changed since the build ({len(changed)} file(s) differ from {root / SUMS}, "
                          f"e.g. {changed[0]}); refusing: its digest would not be the built one",
                          "rebuild it with `reprobuild build`")
    return oci.read_layout(path, check=True)


# --- load ---------------------------------------------------------------------------------------

def load(layout: oci.Layout, platform: str | None = None) -> tuple[str, str]:
    """Load one platform's image (default: the engine's) into the Docker or Podman engine that
    DOCKER_HOST (or the Docker context) names; returns (image ID, tag). The ID is the config's digest, checked."""
    from reprobuild.backends.engine import Engine, EngineError

    try:
        client = Engine()
        facts = client.connect()
    except EngineError as exc:
        raise EnvironmentFailure(f"no Docker or Podman engine answers: {exc}",
                                 "start the engine, or point DOCKER_HOST at it") from None
    try:
        platform = platform or facts.platform
        image = layout.image_for(platform)
        if image is None:
            have = ", ".join(str(i.platform) for i in layout.images)
            raise BadInput(f"{layout.root}: no image for {platform} (the layout has {have})", "pass --platform")
        tag = layout.name or f"{layout.root.name.removesuffix('.oci')}:{layout.ref or 'latest'}"
        tmp = private_dir("reprobuild-load-")  # owner-marked: a killed load leaves nothing for good
        try:
            archive = tmp / "image.tar"
            oci.write_docker_archive(layout, image, archive, tag)
            try:
                with open(archive, "rb") as fh:
                    client.load(fh)
                loaded = str(client.image(tag)["Id"])
            except EngineError as exc:
                raise EnvironmentFailure(f"the {facts.product} engine at {facts.address} did not load "
                                         f"{layout.root}: {exc}") from None
        finally:
            remove_tree(tmp)
    finally:
        client.close()
    if loaded != image.config.digest:
        raise CheckFailed(f"the engine gave {tag} the ID {loaded}, not the config digest {image.config.digest}")
    return loaded, tag


# --- push ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reference:
    host: str
    name: str
    tag: str

    @classmethod
    def parse(cls, text: str) -> Reference:
        m = _REF_RE.match(text)
        if not m or not ("." in m["host"] or ":" in m["host"] or m["host"] == "localhost"):
            raise BadInput(f"`{text}` is not a registry reference like REGISTRY[:PORT]/NAME[:TAG]",
                           "e.g. 127.0.0.1:5000/hello:1.0.0")
        return cls(m["host"], m["name"], m["tag"] or "latest")

    @property
    def loopback(self) -> bool:
        return self.host.startswith(_LOOPBACK)

    def base_url(self, insecure: bool) -> str:
        plain = insecure or self.loopback
        return f"{'http' if plain else 'https'}://{self.host}/v2/{self.name}"


class _Registry:
    """The distribution API's few calls a push needs, with basic or token auth from the Docker config."""

    def __init__(self, ref: Reference, insecure: bool) -> None:
        import requests

        self.ref = ref
        self.base = ref.base_url(insecure)
        self.http = requests.Session()
        self.auth = docker_auth(ref.host)
        self.token: str | None = None

    def call(self, method: str, url: str, body: Path | bytes | None = None,
             headers: dict[str, str] | None = None) -> Any:
        """One request; on 401, authenticate as the challenge says and send it again (a file body is reopened)."""
        import requests

        for attempt in range(2):
            sent = dict(headers or {})
            if self.token:
                sent["Authorization"] = f"Bearer {self.token}"
            elif self.auth:
                sent["Authorization"] = f"Basic {self.auth}"
            try:
                with open(body, "rb") if isinstance(body, Path) else contextlib.nullcontext(body) as data:
                    resp = self.http.request(method, url, headers=sent, data=data, timeout=(10, 300))
            except requests.RequestException as exc:
                raise EnvironmentFailure(f"registry {self.ref.host} did not answer: {exc}") from None
            if resp.status_code != 401 or attempt == 1:
                break
            self._authenticate(resp.headers.get("WWW-Authenticate", ""))
        if resp.status_code == 401:
            raise EnvironmentFailure(f"registry {self.ref.host} refused the credentials of your Docker config",
                                     f"`docker login {self.ref.host}`")
        return resp

    def _authenticate(self, challenge: str) -> None:
        """Basic: the Docker config's credentials (already sent, if any). Bearer: a token for the challenge's scope."""
        if not challenge.lower().startswith("bearer "):
            if self.auth is None:
                raise EnvironmentFailure(f"registry {self.ref.host} wants credentials",
                                         f"`docker login {self.ref.host}`")
            return
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        headers = {"Authorization": f"Basic {self.auth}"} if self.auth else {}
        resp = self.http.get(params.get("realm", ""), headers=headers, timeout=(10, 60),
                             params={k: v for k, v in params.items() if k in ("service", "scope")})
        if resp.status_code != 200:
            raise EnvironmentFailure(f"registry {self.ref.host}: token request failed ({resp.status_code})",
                                     f"`docker login {self.ref.host}`")
        body = resp.json()
        self.token = body.get("token") or body.get("access_token")

    def has_blob(self, digest: str) -> bool:
        return bool(self.call("HEAD", f"{self.base}/blobs/{digest}").status_code == 200)

    def put_blob(self, blob: oci.Blob, path: Path) -> None:
        start = self.call("POST", f"{self.base}/blobs/uploads/")
        _expect(start, 202, f"starting the upload of {blob.digest}")
        location = start.headers["Location"]
        if location.startswith("/"):
            location = self.base.split("/v2/")[0] + location
        sep = "&" if "?" in location else "?"
        done = self.call("PUT", f"{location}{sep}digest={blob.digest}", path,
                         {"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)})
        _expect(done, 201, f"uploading {blob.digest}")

    def put_manifest(self, blob: oci.Blob, path: Path, reference: str) -> str:
        resp = self.call("PUT", f"{self.base}/manifests/{reference}", path.read_bytes(),
                         {"Content-Type": blob.media_type})
        _expect(resp, 201, f"putting manifest {blob.digest} as {reference}")
        return str(resp.headers.get("Docker-Content-Digest", blob.digest))


def _expect(resp: Any, status: int, what: str) -> None:
    if resp.status_code != status:
        raise EnvironmentFailure(f"registry refused {what}: HTTP {resp.status_code} {resp.text[:300]}")


def docker_auth(host: str) -> str | None:
    """`auths.<host>.auth` (base64 user:password) of the user's Docker config ($DOCKER_CONFIG/config.json)."""
    config = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"
    try:
        auths = json.loads(config.read_text()).get("auths", {})
    except (OSError, ValueError):
        return None
    for key in (host, f"https://{host}", f"http://{host}", f"https://{host}/v1/"):
        entry = auths.get(key)
        if isinstance(entry, dict):
            if entry.get("auth"):
                return str(entry["auth"])
            if entry.get("username") and entry.get("password"):
                return base64.b64encode(f"{entry['username']}:{entry['password']}".encode()).decode()
    return None


def push(layout: oci.Layout, ref: Reference, insecure: bool = False) -> str:
    """Push every blob, then each platform's manifest by digest, then the image under the tag.

    Returns the digest the registry reports, refusing it if it is not the built one."""
    reg = _Registry(ref, insecure)
    for image in layout.images:
        for blob in (*image.layers, image.config):
            if not reg.has_blob(blob.digest):
                reg.put_blob(blob, layout.blob_path(blob.digest))
        if image.manifest.digest != layout.top.digest:
            reg.put_manifest(image.manifest, layout.blob_path(image.manifest.digest), image.manifest.digest)
    digest = reg.put_manifest(layout.top, layout.blob_path(layout.top.digest), ref.tag)
    if digest != layout.top.digest:
        raise CheckFailed(f"the registry stored {ref.host}/{ref.name}:{ref.tag} as {digest}, "
                          f"not as the built {layout.top.digest}")
    return digest
