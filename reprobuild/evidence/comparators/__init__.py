"""Format-aware comparators: one module per format, tried in the order of `COMPARATORS`.

Each module has `recognizes(path, head_bytes) -> bool` and `explain(a, b, ctx) -> list[Cause]`.
The first module that recognizes *both* files explains them; archives recurse into their
differing members through `Context.recurse`, which goes through this same table. `fallback`
recognizes everything, so every differing pair gets at least sizes and differing offsets.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from reprobuild.evidence.comparators import elf, fallback, gzip, oci, pdmodel, tar, text, zip
from reprobuild.evidence.comparators.base import (
    KINDS,
    MAX_EXPLAIN_BYTES,
    TOO_LARGE,
    Cause,
    Comparator,
    Context,
    read_head,
    same_bytes,
)

COMPARATORS: tuple[Comparator, ...] = (
    elf,  # ELF executables and libraries; Go build IDs and build info
    pdmodel,  # Paddle ProgramDesc protobuf (recognized by name: protobuf has no magic)
    oci,  # an OCI image layout's index.json: platforms, config fields, then layer by layer
    zip,  # zip, wheels, jars
    tar,  # tar, and compressed tars tarfile can open itself (.tar.xz, .tar.bz2)
    gzip,  # gzip header, then whatever is inside (a .tar.gz recurses into tar)
    text,  # UTF-8 text and JSON
    fallback,  # anything: sizes and first differing offsets
)

log = logging.getLogger("reprobuild.evidence.compare")

__all__ = ["COMPARATORS", "KINDS", "Cause", "Comparator", "Context", "comparator_for", "explain", "explain_files"]


def comparator_for(a: Path, b: Path) -> Comparator:
    """The first comparator in the table that recognizes both files."""
    head_a, head_b = read_head(a), read_head(b)
    for module in COMPARATORS:
        if module.recognizes(a, head_a) and module.recognizes(b, head_b):
            return module
    return fallback


def explain(a: Path, b: Path, ctx: Context) -> list[Cause]:
    """Why `a` and `b` differ (an empty list when they are byte-identical)."""
    size = max(a.stat().st_size, b.stat().st_size)
    if size > MAX_EXPLAIN_BYTES:  # one streaming pass, which also finds them equal
        raw = fallback.explain(a, b, ctx)
        if fallback.identical(raw):
            return []
        return [Cause("content", f"{TOO_LARGE} by format ({size} bytes > {MAX_EXPLAIN_BYTES >> 20} MiB); "
                                 "raw bytes:"), *raw]
    if same_bytes(a, b):
        return []
    module = comparator_for(a, b)
    try:
        causes = module.explain(a, b, ctx)
    except Exception as exc:  # a malformed file must not hide the other artifacts' explanations
        name = getattr(module, "__name__", "?").rsplit(".", 1)[-1]
        log.debug("comparator %s failed on %s / %s", name, a, b, exc_info=True)
        causes = [Cause("content", f"the {name} comparator could not read these files ({exc!r:.200}); raw bytes:"),
                  *fallback.explain(a, b, ctx)]
    if not causes:
        # A comparator that found nothing format-specific still owes the reader the bytes.
        causes = fallback.explain(a, b, ctx)
    return causes


def explain_files(a: Path, b: Path, *, go: Path | None = None) -> list[Cause]:
    """Explain one pair of files with a private scratch directory (the entry point for one pair)."""
    with tempfile.TemporaryDirectory(prefix="reprobuild-compare-") as scratch:
        return explain(a, b, Context(scratch=Path(scratch), explainer=explain, go=go))
