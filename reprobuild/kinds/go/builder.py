"""`builder: go`: byte-reproducible Go binaries with the locked toolchain, then assertions and packaging."""

from __future__ import annotations

import os
from pathlib import Path

from reprobuild.backends import CACHE, OUT, TOOLCHAIN, UID, ImageRef, Mount, RunSpec
from reprobuild.build.parallel import map_ordered
from reprobuild.config.model import host_platform
from reprobuild.config.pipeline import GoTarget, Pipeline, source_date_epoch
from reprobuild.errors import BadInput, CheckFailed, FileError, Location
from reprobuild.formats.archives import write_tar_gz, write_zip
from reprobuild.kinds import BuildContext
from reprobuild.kinds.go import assertions as goassert
from reprobuild.kinds.go.gomod import vendored_versions
from reprobuild.progress import say

# Pinned microarchitecture levels: the defaults, written down so a host setting can't change them.
ARCH_LEVELS = {"GOAMD64": "v1", "GOARM64": "v8.0", "GOARM": "7", "GO386": "sse2", "GOMIPS": "hardfloat",
               "GOMIPS64": "hardfloat", "GOPPC64": "power8"}


def binary_name(target: GoTarget, platform: str) -> str:
    goos, goarch = platform.split("/")
    suffix = ".so" if target.buildmode == "plugin" else ".exe" if goos == "windows" else ""
    return f"{target.name}_{goos}_{goarch}{suffix}"


def ldflags(target: GoTarget, pipeline: Pipeline, sde: int) -> str:
    flags = ["-buildid="]
    for sym, value in target.ldflags_x:
        value = value.format(version=pipeline.version, source_date_epoch=sde, pipeline=pipeline.name,
                             target=target.name)
        flags.append(f"-X={sym}={value}")
    if target.cgo and not target.keep_gnu_build_id:
        flags.append("-extldflags=-Wl,--build-id=none")
    return " ".join(flags)


def go_env(goroot: str, platform: str, cgo: bool) -> dict[str, str]:
    goos, goarch = platform.split("/")
    env = {
        "PATH": f"{goroot}/bin:/usr/local/bin:/usr/bin:/bin",
        "GOROOT": goroot, "GOTOOLCHAIN": "local", "GOFLAGS": "", "GOPROXY": "off", "GOSUMDB": "off",
        "GONOSUMDB": "", "GOPRIVATE": "", "GOWORK": "off", "GOENV": "off", "GOTELEMETRY": "off",
        "GOPATH": "/rb/home/go", "GOMODCACHE": "/rb/home/go/pkg/mod", "GOCACHE": f"{CACHE}/go-build",
        "GOOS": goos, "GOARCH": goarch, "CGO_ENABLED": "1" if cgo else "0", **ARCH_LEVELS,
    }
    if cgo:
        env.update({"CC": "gcc", "CXX": "g++", "CGO_CFLAGS": "-O2 -g", "CGO_LDFLAGS": "-O2 -g"})
    return env


def build(pipeline: Pipeline, ctx: BuildContext) -> None:
    _, tc = ctx.entry_for(pipeline)
    # go.mod directives newer than the pinned Go were refused by the policy gate before anything ran.
    if not (pipeline.source / "go.mod").is_file():
        raise BadInput(f"{pipeline.source}: no go.mod (a go pipeline's source must be a Go module)")
    host = host_platform().replace("-", "/")
    for target in pipeline.targets:
        if target.cgo and any(p != host for p in target.platforms):
            raise FileError(Location(pipeline.file, target.line),
                            f"target `{target.name}`: cgo targets are built only for the build machine's platform "
                            f"({host}): no cross C toolchain is pinned", "set `platforms: [" + host + "]`")
    tc, inst = ctx.toolchain_for(pipeline)
    sde = source_date_epoch(pipeline.source_date_epoch)
    out = ctx.staging / pipeline.name
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o777)  # the build runs as an unprivileged user; the backend hands files back
    if ctx.cold_cache is not None:  # verify's `cache` variation: one empty cache for the whole build
        gocache = ctx.cold_cache / f"go-{inst.key[:16]}"
    else:
        # One persistent cache per backend, toolchain and build user: verify's user_group run and its control
        # run at once, and a cache the Docker backend hands to one user must not be taken from the other
        # mid-build (that was "open .../go-build/...: permission denied").
        user = "" if ctx.perturb.uid == UID else f"-uid{ctx.perturb.uid}"
        gocache = ctx.cache.root / "gocache" / f"{ctx.backend.name}-{inst.key[:16]}{user}"
    gocache.mkdir(parents=True, exist_ok=True)
    os.chmod(gocache, 0o777)
    pin_root = inst.root.relative_to(inst.tree).as_posix()
    goroot = f"{TOOLCHAIN}/{pin_root}".rstrip("/")
    vendored = vendored_versions(pipeline.source)
    forbidden = goassert.visible_paths(pipeline.source, ctx.staging, inst.tree, ctx.cache.root, ctx.backend)
    for target in pipeline.targets:
        image = ImageRef("debian" if target.cgo else "go", inst.tree)
        ctx.ensure_image(image)

        def build_for(platform: str, target: GoTarget = target, image: ImageRef = image) -> None:
            name = binary_name(target, platform)
            say(f"{pipeline.name}: building {target.name} for {platform} ({ctx.backend.name} backend)")
            argv = [f"{goroot}/bin/go", "build", "-trimpath", "-buildvcs=false", "-mod=vendor"]
            if target.buildmode != "exe":
                argv.append(f"-buildmode={target.buildmode}")
            if target.tags:
                argv += ["-tags", ",".join(target.tags)]
            argv += ["-ldflags", ldflags(target, pipeline, sde), "-o", f"{OUT}/{name}", target.package]
            src = ctx.perturb.src
            spec = RunSpec(argv=tuple(argv), image=image, env=ctx.step_env(sde, go_env(goroot, platform, target.cgo)),
                           mounts=(Mount(pipeline.source, src), Mount(out, OUT, read_only=False),
                                   Mount(gocache, CACHE, read_only=False)),
                           workdir=src, label=f"{pipeline.name}/{target.name} {platform}", perturb=ctx.perturb)
            # On a cold cache, builds for one platform take turns: at once, each would compile the same standard
            # library (Go does not share work in progress between processes). Measured on go-service: cold,
            # 17.1 s all at once vs 14.1 s in turns; warm, turns cost 1.27 s -> 1.48 s, so they end once the
            # cache has built the platform (a marker beside Go's cache; a pruned cache is only slower).
            warm = gocache / f"warm-{platform.replace('/', '-')}"
            if warm.exists():
                result = ctx.run(spec)
            else:
                with ctx.serial.hold(f"go build {platform} {gocache}"):
                    result = ctx.run(spec)
                if result.returncode == 0:
                    warm.touch()
            if result.returncode != 0:
                raise CheckFailed(f"{pipeline.name}: `go build` of target `{target.name}` for {platform} failed "
                                  f"(exit {result.returncode}):\n" + _indent(result.output))
            binary = out / name
            goassert.check_binary(binary, inst.go, goassert.Expectation(
                target=target.name, go_version=tc.version, cgo=target.cgo, vendored=vendored,
                forbidden_paths=forbidden, keep_gnu_build_id=target.keep_gnu_build_id, buildmode=target.buildmode,
                forbidden_strings=target.forbidden_strings, allowed_strings=target.allowed_strings))
            os.chmod(binary, 0o755)
            _package(target, binary, platform, sde)

        # A target's platforms are independent builds (one output file each, one shared Go build cache,
        # which Go keeps safe for concurrent use): they run at once, up to the job count.
        map_ordered(build_for, target.platforms, ctx.jobs, ctx.backend.cancel)
        if target.image is not None:
            _image(pipeline, target, ctx, out, sde)


def _package(target: GoTarget, binary: Path, platform: str, sde: int) -> None:
    if target.archive is None:
        return
    inner = target.name + (".exe" if platform.startswith("windows/") else "")
    stem = binary.name.removesuffix(".exe")
    if target.archive == "tar.gz":
        write_tar_gz([(inner, binary)], binary.with_name(stem + ".tar.gz"), sde)
    else:
        write_zip([(inner, binary)], binary.with_name(stem + ".zip"), sde)


def _image(pipeline: Pipeline, target: GoTarget, ctx: BuildContext, out: Path, sde: int) -> None:
    """The target's container image from the binaries just checked (no engine involved)."""
    from reprobuild.build import image

    assert target.image is not None
    where = Location(pipeline.file, target.line)
    bases = image.bases_for(target.image, target.platforms, ctx, where)
    binaries = [(p, out / binary_name(target, p)) for p in target.platforms]
    job = image.plan_job(target.name, target.image, binaries, pipeline.source, bases, pipeline.version, sde,
                         image.git_revision(ctx.repo_root) if target.image.revision else None, where)
    say(f"{pipeline.name}: image {target.name} for {', '.join(target.platforms)}")
    # Compressed layers are cached like Go's build cache: verify's `cache` variation starts from an empty one.
    layers = (ctx.cold_cache or ctx.cache.root) / "layers"
    layout = image.assemble(job, out, layers)
    say(f"{pipeline.name}: image {target.name} {layout.top.digest}")


def _indent(text: str, limit: int = 40) -> str:
    lines = text.strip().splitlines()[-limit:]
    return "\n".join("    " + line for line in lines)
