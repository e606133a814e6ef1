"""`reprobuild image load DIR [--platform OS/ARCH]` and `reprobuild image push DIR REF [--insecure]`.

DIR is a built image layout (`OUT/<pipeline>/<target>.oci`). Both check it against the build's
SHA256SUMS first and refuse a layout changed since (exit 1). `push` prints the pushed digest, which
is the built one. Exit 0 ok, 1 tampered or digest mismatch, 2 bad input, 3 engine or registry failure.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from reprobuild.commands import HELP
from reprobuild.commands._common import emit
from reprobuild.errors import EXIT_OK, EnvironmentFailure
from reprobuild.toolchains.cache import offline_requested


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("image", help=HELP["image"], parents=[common],
                       description="Load a built image into the Docker or Podman engine (DOCKER_HOST), or push it "
                                   "to an OCI registry, keeping its digest. The layout is checked against the "
                                   "build's SHA256SUMS first.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    load = actions.add_parser("load", parents=[common], help="load into the engine (one platform)")
    load.add_argument("dir", metavar="DIR", type=Path, help="a built layout, e.g. out/go-service/hello.oci")
    load.add_argument("--platform", metavar="OS/ARCH", help="which platform's image (default: the engine's)")
    load.set_defaults(handler=run_load)
    push = actions.add_parser("push", parents=[common], help="push to a registry (every platform)")
    push.add_argument("dir", metavar="DIR", type=Path, help="a built layout, e.g. out/go-service/hello.oci")
    push.add_argument("ref", metavar="REF", help="REGISTRY[:PORT]/NAME[:TAG], e.g. 127.0.0.1:5000/hello:1.0.0")
    push.add_argument("--insecure", action="store_true",
                      help="plain HTTP (always used for loopback registries)")
    push.set_defaults(handler=run_push)


def run_load(args: argparse.Namespace) -> int:
    from reprobuild.build import publish

    layout = publish.checked_layout(args.dir)
    image_id, tag = publish.load(layout, args.platform)
    emit(args, {"image_id": image_id, "tag": tag, "digest": layout.top.digest}, f"loaded {tag} {image_id}")
    return EXIT_OK


def run_push(args: argparse.Namespace) -> int:
    from reprobuild.build import publish

    ref = publish.Reference.parse(args.ref)
    layout = publish.checked_layout(args.dir)
    if not ref.loopback and offline_requested(bool(args.offline)):
        raise EnvironmentFailure(f"offline mode: pushing to {ref.host} needs the network")
    digest = publish.push(layout, ref, args.insecure)
    emit(args, {"reference": f"{ref.host}/{ref.name}:{ref.tag}", "digest": digest}, digest)
    return EXIT_OK
