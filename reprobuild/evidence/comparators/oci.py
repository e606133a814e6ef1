"""OCI image layouts: which platform, which config field, which layer and, inside it, which file.

Recognized by a layout's `index.json` (an `oci-layout` file beside it). Both layouts are read whole;
each platform's image is paired with the other side's, its config compared field by field (`created`
and the `...created` label as `timestamp`, anything else as `image-config`), then its layers in order:
a layer whose uncompressed tar is the same but whose gzip differs is a compression difference; any
other differing layer recurses through the gzip and tar comparators down to the differing files.

Under the compare's shared budget, like tar and zip: the reader refuses hostile layouts (links, digests that
leave the layout, huge or deeply nested documents, index cycles, too many images or layers) with a note
instead of causes; every layer counts against the member budget; a layer is recursed into only when its blob
holds the size its descriptor declares and that size is within MAX_MEMBER_BYTES and the byte budget; the first
MAX_RECURSE_MEMBERS differing layers are explained one by one, the rest counted. Anything left out is named
"not compared: too large".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reprobuild.errors import ReprobuildError
from reprobuild.evidence.comparators.base import (
    MAX_MEMBER_BYTES,
    MAX_RECURSE_MEMBERS,
    TOO_LARGE,
    Cause,
    Context,
    clip,
    examples,
    plural,
    short,
)
from reprobuild.formats import oci

_TIME_FIELDS = ("created", "config.Labels.org.opencontainers.image.created")


def recognizes(path: Path, head: bytes) -> bool:
    return path.name == "index.json" and oci.is_layout(path.parent)


def explain(a: Path, b: Path, ctx: Context) -> list[Cause]:
    try:
        la, lb = oci.read_layout(a.parent, check=False), oci.read_layout(b.parent, check=False)
    except ReprobuildError as exc:
        return [Cause("content", clip(f"OCI layout not compared: {exc}"))]
    causes: list[Cause] = []
    if la.top.digest == lb.top.digest:
        if la.ref != lb.ref:
            causes.append(Cause("image-config", f"same image, named differently in index.json: "
                                                f"{short(la.ref)} vs {short(lb.ref)}"))
        return causes
    causes.append(Cause("content", f"image digest {la.top.digest} vs {lb.top.digest}"))
    members = sum(len(i.layers) + 1 for i in (*la.images, *lb.images))
    if members > ctx.budget.members:
        ctx.budget.exhausted = True
        return [*causes, Cause("content", f"OCI layout: {TOO_LARGE}: {members} images and layers exceed the "
                                          "compare's member budget")]
    ctx.budget.members -= members
    by_a = {str(i.platform): i for i in la.images}
    by_b = {str(i.platform): i for i in lb.images}
    for plat in sorted(set(by_a) - set(by_b)):
        causes.append(Cause("missing", f"platform {plat} only in A"))
    for plat in sorted(set(by_b) - set(by_a)):
        causes.append(Cause("missing", f"platform {plat} only in B"))
    for plat in sorted(set(by_a) & set(by_b)):
        ia, ib = by_a[plat], by_b[plat]
        if ia.manifest.digest == ib.manifest.digest:
            continue
        label = plat if len(by_a) > 1 or len(by_b) > 1 else ""
        found = _config(ia, ib) + _layers(la, lb, ia, ib, ctx)
        if not found:
            found = [Cause("content", f"manifest {ia.manifest.digest} vs {ib.manifest.digest} "
                                      "(same config and layers: the manifest's own fields differ)")]
        causes += [c.within(label) if label else c for c in found]
    return causes


def _config(ia: oci.Image, ib: oci.Image) -> list[Cause]:
    if ia.config.digest == ib.config.digest:
        return []
    fa, fb = _flatten(_without_layers(ia.config_data)), _flatten(_without_layers(ib.config_data))
    differing = [k for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
    causes = []
    for key in differing[:6]:
        kind = "timestamp" if key in _TIME_FIELDS or (key.startswith("history.") and key.endswith(".created")) else (
            "image-config")
        causes.append(Cause(kind, f"config field {key}: {_value(fa, key)} vs {_value(fb, key)}"))
    if len(differing) > 6:
        causes.append(Cause("image-config", f"and {plural(len(differing) - 6, 'more config field')}: "
                                            f"{examples(differing[6:])}"))
    return causes


def _layers(la: oci.Layout, lb: oci.Layout, ia: oci.Image, ib: oci.Image, ctx: Context) -> list[Cause]:
    causes: list[Cause] = []
    diff_a, diff_b = _diff_ids(ia), _diff_ids(ib)
    n = max(len(ia.layers), len(ib.layers))
    if len(ia.layers) != len(ib.layers):
        causes.append(Cause("content", f"{plural(len(ia.layers), 'layer')} vs {len(ib.layers)}"))
    skipped: list[str] = []
    recursed = 0
    for i, (xa, xb) in enumerate(zip(ia.layers, ib.layers, strict=False)):
        if xa.digest == xb.digest:
            continue
        if recursed >= MAX_RECURSE_MEMBERS:  # explained one by one up to here; the rest are counted
            skipped.append(f"layer {i + 1}")
            continue
        recursed += 1
        name = f"layer {i + 1} of {n} ({_role(ia, i)})"
        if i < len(diff_a) and i < len(diff_b) and diff_a[i] == diff_b[i]:
            causes.append(Cause("content", f"{name}: the same files ({diff_a[i]}), compressed differently: "
                                           f"{xa.digest} vs {xb.digest} (another gzip/zlib?)"))
            continue
        causes.append(Cause("content", f"{name}: {xa.digest} vs {xb.digest}"))
        pa, pb = la.blob_path(xa.digest), lb.blob_path(xb.digest)
        wrong = [f"{side}'s blob holds {p.lstat().st_size} bytes, its descriptor declares {x.size}"
                 for side, p, x in (("A", pa, xa), ("B", pb, xb)) if p.lstat().st_size != x.size]
        if wrong:
            causes.append(Cause("content", f"{name}: not compared: {'; '.join(wrong)}"))
        elif max(xa.size, xb.size) > MAX_MEMBER_BYTES or not ctx.budget.take_bytes(xa.size + xb.size):
            skipped.append(f"layer {i + 1}")
        else:
            causes += ctx.recurse(pa, pb, name)
    if skipped:
        causes.append(Cause("content", clip(f"{TOO_LARGE}: {plural(len(skipped), 'differing layer')} past the "
                                            f"compare's size budget or its first {MAX_RECURSE_MEMBERS}: "
                                            f"{examples(skipped)}")))
    return causes


def _diff_ids(image: oci.Image) -> list[Any]:
    rootfs = image.config_data.get("rootfs")
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    return ids if isinstance(ids, list) else []


def _role(image: oci.Image, index: int) -> str:
    raw = image.config_data.get("history")
    history = [h for h in raw if isinstance(h, dict) and not h.get("empty_layer")] if isinstance(raw, list) else []
    if index < len(history):
        return clip(str(history[index].get("created_by", "?")), 80)
    return "?"


def _without_layers(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "rootfs"}


def _flatten(value: Any, prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """`{"a.b.0.c": leaf}`; below 16 levels a value is kept whole (a hostile config may nest deeper)."""
    if depth >= 16:
        return {prefix: value}
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k), depth + 1))
        return out or {prefix: {}}
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}.{i}", depth + 1))
        return out
    return {prefix: value}


def _value(flat: dict[str, Any], key: str) -> str:
    return short(flat[key], 60) if key in flat else "(absent)"
