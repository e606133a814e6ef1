"""Provenance: an in-toto Statement v1 with a SLSA Provenance v1 predicate, written by every build, and
a second statement from `verify` naming the same subjects with its evidence.

Both are deterministic for the same inputs: no wall-clock time, no host paths, no random IDs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from reprobuild import __version__, proc
from reprobuild.build.manifest import Artifact
from reprobuild.build.treedigest import TreeDigests
from reprobuild.fsutil import atomic_write_text, sha256_file

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:reprobuild:build-type:pipeline:v1"
VERIFY_TYPE = "urn:reprobuild:predicate:verification:v1"
FILE = "provenance.json"


def subjects(artifacts: list[Artifact] | tuple[Artifact, ...],
             images: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every artifact, and every container image by its digest (`manifest.json`'s `oci_images`)."""
    result = [{"name": a.path, "digest": {"sha256": a.sha256}} for a in artifacts]
    for path, image in (images or {}).items():
        result.append({"name": path, "digest": {"sha256": str(image["digest"]).removeprefix("sha256:")},
                       "annotations": {"mediaType": image["media_type"]}})
    return sorted(result, key=lambda s: str(s["name"]))


def link_plugins(subject: list[dict[str, Any]], plugin_sets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each Go plugin's subject names the host it was built in lockstep with, and checked against."""
    digests = {item["name"]: item["digest"] for item in subject}
    hosts = {plugin: s["host"] for s in plugin_sets for plugin in s["plugins"]}
    for item in subject:
        host = hosts.get(item["name"])
        if host in digests:
            item.setdefault("annotations", {})["pluginHost"] = {"name": host, "digest": dict(digests[host])}
    return subject


def git_commit(root: Path) -> str | None:
    if not (root / ".git").exists():
        return None
    try:
        done = proc.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=False,
                        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent",
                             "GIT_CONFIG_NOSYSTEM": "1"})
    except Exception:
        return None
    sha = done.stdout.strip()
    return sha if done.returncode == 0 and len(sha) == 40 else None


def build_statement(artifacts: list[Artifact] | tuple[Artifact, ...], manifest: dict[str, Any],
                    pipelines: list[dict[str, Any]], lock_path: Path, repo_root: Path,
                    sources: dict[str, Path], trees: TreeDigests | None = None) -> dict[str, Any]:
    """The build's provenance; `trees` holds the source digests the build already computed (the action
    cache's keys), so no tree is hashed twice."""
    trees = trees or TreeDigests()
    deps: list[dict[str, Any]] = [{"name": "toolchains.lock", "digest": {"sha256": sha256_file(lock_path)}}]
    for wanted, tc in sorted(manifest.get("toolchains", {}).items()):
        for f in tc.get("files", []):
            deps.append({"name": f"toolchain:{tc['entry']}:{f['name']}", "digest": {"sha256": f["sha256"]},
                         "annotations": {"requestedAs": wanted, "version": tc["version"], "platform": tc["platform"]}})
    for image, image_id in sorted(manifest.get("images", {}).items()):
        if image_id.startswith("sha256:") or len(image_id) == 64:
            deps.append({"name": f"image:{image}", "digest": {"sha256": image_id.removeprefix("sha256:")}})
        else:
            deps.append({"name": f"image:{image}", "uri": f"urn:reprobuild:image:{image_id}"})
    commit = git_commit(repo_root)
    for name, src in sorted(sources.items()):
        dep: dict[str, Any] = {"name": f"source:{name}", "digest": {"sha256": trees.digest(src)}}
        if (src / "vendor").is_dir():
            deps.append({"name": f"vendor:{name}", "digest": {"sha256": trees.digest(src / "vendor", ())}})
        if commit:
            dep["digest"]["gitCommit"] = commit
        deps.append(dep)
    for extra in manifest.get("dependencies", []):
        deps.append(extra)  # e.g. a Paddle wheelhouse hash, added by its builder
    return {
        "_type": STATEMENT_TYPE,
        "subject": link_plugins(subjects(artifacts, manifest.get("oci_images")), manifest.get("plugin_sets", [])),
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"pipelines": pipelines,
                                       "toolchainSubstitutions": manifest.get("substitutions", {})},
                "internalParameters": {"backend": manifest["backend"], "hermetic": manifest["hermetic"]},
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {"id": f"urn:reprobuild:builder:{manifest['backend']}",
                            "version": {"reprobuild": __version__}},
                "metadata": {"invocationId": invocation_id(artifacts, deps)},
            },
        },
    }


def invocation_id(artifacts: list[Artifact] | tuple[Artifact, ...], deps: list[dict[str, Any]]) -> str:
    """Derived from inputs and outputs, so two builds of the same inputs carry the same ID."""
    blob = json.dumps({"a": [a.sha256 for a in artifacts], "d": deps}, sort_keys=True).encode()
    return "urn:reprobuild:invocation:" + hashlib.sha256(blob).hexdigest()[:32]


def verification_statement(digests: dict[str, str], report: dict[str, Any]) -> dict[str, Any]:
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": p, "digest": {"sha256": d}} for p, d in sorted(digests.items())],
        "predicateType": VERIFY_TYPE,
        "predicate": {
            "verifier": {"id": "urn:reprobuild:verify", "version": {"reprobuild": __version__}},
            "reproducible": report["reproducible"], "runs": report["runs"],
            "variations": report["variations"], "culprits": report["culprits"],
            "backend": report["backend"], "hermetic": report["hermetic"],
            "matchingDigests": report["reproducible"],
        },
    }


def write_statement(path: Path, statement: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(statement, indent=2, sort_keys=True) + "\n")
