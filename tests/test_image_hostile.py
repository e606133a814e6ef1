"""Hostile OCI layouts given to `compare` (issue 15, item 3): each ends quickly with a note or a clear refusal,
under the same budget as tar and zip, and nothing is read through a link or a digest that leaves the layout."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from reprobuild.errors import BadInput
from reprobuild.evidence.comparators import explain_files
from reprobuild.evidence.comparators.base import MAX_MEMBER_BYTES, TOO_LARGE
from reprobuild.formats import oci
from tests.conftest import run_cli
from tests.hostile import oci_layout, sparse_file

SECRET = "TOP-SECRET-HOST-CONTENT"


def shown(a: Path, b: Path) -> tuple[str, float]:
    """compare's explanation of two layouts (their index.json files), and the seconds it took."""
    start = time.monotonic()
    causes = explain_files(a / "index.json", b / "index.json")
    return "\n".join(f"{c.kind}: {c.detail}" for c in causes), time.monotonic() - start


@pytest.mark.parametrize(("hostile", "expected"), [
    ({"config_size": 1 << 40}, "more than 4 MiB is not read"),
    ({"nest": 12}, "image indexes nested more than 4 deep"),
    ({"cycle": True}, "(a cycle)"),
    ({"repeat": 5000}, "names 5000 layers, more than 1000"),
    ({"layer_digest": "sha256:../../../../host/secret.txt"}, "is not sha256:<64 hex digits>"),
])
def test_a_hostile_layout_is_refused_with_a_note(tmp_path: Path, hostile: dict[str, object], expected: str) -> None:
    a = oci_layout(tmp_path / "a")
    b = oci_layout(tmp_path / "b", (b"other\n",), **hostile)  # type: ignore[arg-type]
    text, seconds = shown(a, b)
    assert "OCI layout not compared" in text and expected in text, text
    assert seconds < 5
    with pytest.raises(BadInput, match=r"not read|not sha256|a cycle"):
        oci.read_layout(b, check=False)  # `image load`/`push` and the manifest writer read with the same caps


def test_a_layer_blob_linked_out_of_the_layout_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "host" / "secret.tar"
    oci_layout(tmp_path / "donor", (SECRET.encode(),))
    secret.parent.mkdir()
    donor = next(p for p in (tmp_path / "donor" / "blobs" / "sha256").iterdir() if p.read_bytes()[:2] == b"\x1f\x8b")
    secret.write_bytes(donor.read_bytes())  # a real layer, so a reader that follows the link would show its file
    a = oci_layout(tmp_path / "a")
    b = oci_layout(tmp_path / "b", (b"other\n",), layer_link=str(secret))
    text, _ = shown(a, b)
    assert "symbolic link" in text and SECRET not in text, text
    res = run_cli("compare", str(a / "index.json"), str(b / "index.json"), "--json", "-")
    assert res.returncode == 1 and SECRET not in res.stdout + res.stderr


def test_a_layer_declared_huge_is_not_read(tmp_path: Path) -> None:
    a = oci_layout(tmp_path / "a")
    b = oci_layout(tmp_path / "b", (b"other\n",), layer_size=20 << 30)  # 20 GiB declared, a few bytes there
    text, seconds = shown(a, b)
    assert "not compared: B's blob holds" in text and f"declares {20 << 30}" in text, text
    assert seconds < 5


def test_a_layer_that_is_huge_is_not_read(tmp_path: Path) -> None:
    """A 600 MiB (sparse) layer blob of its declared size: past the member size, so only named."""
    a = oci_layout(tmp_path / "a")
    b = oci_layout(tmp_path / "b")
    top = json.loads((b / "index.json").read_text())["manifests"][0]["digest"].removeprefix("sha256:")
    manifest_path = b / "blobs" / "sha256" / top
    manifest = json.loads(manifest_path.read_bytes())
    size = MAX_MEMBER_BYTES + (88 << 20)
    digest = "sha256:" + "e" * 64
    sparse_file(b / "blobs" / "sha256" / ("e" * 64), size, head=b"\x1f\x8b")
    manifest["layers"][0] = {**manifest["layers"][0], "digest": digest, "size": size}
    data = json.dumps(manifest).encode()
    new_name = "d" * 64
    (b / "blobs" / "sha256" / new_name).write_bytes(data)
    index = json.loads((b / "index.json").read_text())
    index["manifests"][0].update(digest=f"sha256:{new_name}", size=len(data))
    (b / "index.json").write_text(json.dumps(index))
    text, seconds = shown(a, b)
    assert f"{TOO_LARGE}: 1 differing layer" in text and "layer 1" in text, text
    assert seconds < 5


def test_many_differing_layers_share_the_budget(tmp_path: Path) -> None:
    """900 layers (under the reader's cap), all differing: counted against the member budget, five explained
    down to their files, the rest named as not compared."""
    a = oci_layout(tmp_path / "a", (b"a\n",), repeat=900)
    b = oci_layout(tmp_path / "b", (b"b\n",), repeat=900)
    text, seconds = shown(a, b)
    assert f"{TOO_LARGE}: 895 differing layers" in text, text[-2000:]
    assert {int(n) for n in re.findall(r"layer (\d+) of 900", text)} == {1, 2, 3, 4, 5}
    assert len(text) < 20_000 and seconds < 20
    assert "layer 1 of 900 (?): f:" in text  # the first ones down to the file inside


def test_nesting_within_the_limit_is_read(tmp_path: Path) -> None:
    a = oci_layout(tmp_path / "a", nest=2)
    b = oci_layout(tmp_path / "b", (b"other\n",), nest=2)
    assert [str(i.platform) for i in oci.read_layout(b, check=False).images] == ["linux/amd64"]
    text, _ = shown(a, b)
    assert "layer 1 of 1" in text, text


def test_a_blob_directory_linked_out_of_the_layout_is_not_followed(tmp_path: Path) -> None:
    a = oci_layout(tmp_path / "a")
    b = oci_layout(tmp_path / "b", (SECRET.encode(),))
    outside = tmp_path / "host" / "blobs"
    outside.parent.mkdir()
    (b / "blobs" / "sha256").rename(outside)
    (b / "blobs" / "sha256").symlink_to(outside)
    text, _ = shown(a, b)
    assert "OCI layout not compared" in text and "symbolic link" in text and SECRET not in text, text
