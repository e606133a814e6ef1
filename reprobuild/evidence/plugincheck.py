"""`plugin-check`: predict, from the files alone, what `plugin.Open` in a host does with each plugin.

The prediction follows the loader step by step (runtime/plugin.go and plugin/plugin_dlopen.go): the host
must link package plugin with cgo on; a plugin must be a Go plugin for the host's architecture; a second
plugin with the same plugin path is "already loaded"; and every package of the plugin must hash the same as
the definition the process resolves for it: the host's, else that of a plugin opened earlier (plugins are
opened RTLD_GLOBAL and never closed, even when the Go loader then refuses them), else the plugin's own.
Plugins are taken in the order given, as one host process would open them (v1, then v2).

A refusal names the package the loader will name, with both hashes, and explains it: a different Go
release, build settings and module versions that differ between the two files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reprobuild.errors import BadInput
from reprobuild.formats.elf import ElfError
from reprobuild.formats.goplugin import GoLinkInfo, read_link_info

IGNORED_SETTINGS = ("-buildmode",)  # differs by design between a host and its plugins


@dataclass(frozen=True)
class Difference:
    kind: str  # go-version | package | setting | module | pluginpath | host | plugin
    name: str
    host: str
    plugin: str
    against: str = ""  # for a package resolved from an earlier plugin: that plugin's file

    def text(self) -> str:
        if self.kind == "go-version":
            return f"Go version: host {self.host}, plugin {self.plugin}"
        if self.kind in ("host", "plugin"):
            return f"{self.kind}: {self.host if self.kind == 'host' else self.plugin}"
        if self.kind == "pluginpath":
            return f"plugin path {self.name}: already loaded from {self.host}"
        other = f"plugin loaded earlier ({self.against})" if self.against else "host"
        label = {"package": "package", "setting": "build setting", "module": "module"}.get(self.kind, self.kind)
        return f"{label} {self.name}: {other} {self.host or '(none)'}, plugin {self.plugin or '(none)'}"

    def to_json(self) -> dict[str, str]:
        data = {"kind": self.kind, "name": self.name, "host": self.host, "plugin": self.plugin}
        if self.against:
            data["against"] = self.against
        return data


@dataclass(frozen=True)
class Verdict:
    plugin: Path
    loads: bool
    error: str = ""  # what the loader will say ("" when it loads)
    mismatch: Difference | None = None  # what makes it fail
    causes: tuple[Difference, ...] = ()  # Go version, settings, modules that differ (notes when it loads)
    packages: int = 0  # packages compared
    shared: int = 0  # of which the process already had (host or earlier plugins)

    def to_json(self) -> dict[str, Any]:
        return {"plugin": str(self.plugin), "loads": self.loads, "error": self.error,
                "mismatch": self.mismatch.to_json() if self.mismatch else None,
                "causes": [c.to_json() for c in self.causes], "packages": self.packages, "shared": self.shared}


@dataclass(frozen=True)
class PluginCheck:
    host: GoLinkInfo
    verdicts: tuple[Verdict, ...]

    @property
    def ok(self) -> bool:
        return all(v.loads for v in self.verdicts)

    def to_json(self) -> dict[str, Any]:
        h = self.host
        return {"ok": self.ok, "host": {"path": str(h.path), "go_version": h.go_version,
                                        "build_mode": h.build_mode, "cgo": h.build.settings.get("CGO_ENABLED", ""),
                                        "packages": len(h.exported), "can_load_plugins": h.imports_plugin},
                "plugins": [v.to_json() for v in self.verdicts]}

    def render_text(self) -> str:
        h = self.host
        lines = [f"host {h.path}: {h.go_version}, -buildmode={h.build_mode}, "
                 f"CGO_ENABLED={h.build.settings.get('CGO_ENABLED', '?')}, {len(h.exported)} packages exported"]
        for v in self.verdicts:
            if v.loads:
                lines.append(f"ok    {v.plugin}: loads ({v.packages} packages, {v.shared} shared with the process)")
                lines += [f"      note: {c.text()} (the loader does not compare it)" for c in v.causes]
                continue
            lines.append(f"FAIL  {v.plugin}: plugin.Open would fail: {v.error}")
            if v.mismatch is not None:
                lines.append(f"      first difference: {v.mismatch.text()}")
            lines += [f"      because: {c.text()}" for c in v.causes if c != v.mismatch]
        verdict = "all plugins load" if self.ok else "some plugins would not load"
        lines.append(f"{verdict} ({sum(v.loads for v in self.verdicts)}/{len(self.verdicts)})")
        return "\n".join(lines)


def check(host_path: Path, plugin_paths: list[Path]) -> PluginCheck:
    """Read the host and the plugins (in the order one process opens them) and predict each `plugin.Open`."""
    host = _read(host_path, "host")
    if host.build_mode == "plugin":
        raise BadInput(f"plugin-check: host {host_path} is a Go plugin, not the executable that loads plugins",
                       "reprobuild plugin-check HOST PLUGIN...")
    scope: dict[str, tuple[bytes, str]] = {pkg: (fp, "") for pkg, fp in host.exported.items()}
    loaded_paths: dict[str, Path] = {}  # pluginpath -> file, of plugins the Go loader accepted
    seen: dict[str, Verdict] = {}  # realpath -> verdict: plugin.Open of the same file returns the same result
    verdicts: list[Verdict] = []
    for path in plugin_paths:
        real = os.path.realpath(path)
        if real in seen:
            verdicts.append(replace(seen[real], plugin=path))
            continue
        plugin = _read(path, "plugin")
        verdict, opened = _predict(host, plugin, scope, loaded_paths)
        if opened:  # dlopen succeeded: its symbols are in the process now, whatever Go's loader then said
            for pkg, fp in plugin.exported.items():
                scope.setdefault(pkg, (fp, str(path)))
        if verdict.loads:
            loaded_paths[plugin.pluginpath] = path
        seen[real] = verdict
        verdicts.append(verdict)
    return PluginCheck(host, tuple(verdicts))


def _read(path: Path, role: str) -> GoLinkInfo:
    if not path.is_file():
        raise BadInput(f"plugin-check: {role} {path} is not a file")
    try:
        return read_link_info(path)
    except ElfError as exc:
        raise BadInput(f"plugin-check: {role} {path}: {exc}", "give a Go binary built for Linux (ELF)") from None


def _predict(host: GoLinkInfo, plugin: GoLinkInfo, scope: dict[str, tuple[bytes, str]],
             loaded: dict[str, Path]) -> tuple[Verdict, bool]:
    """The verdict for one plugin, and whether dlopen itself succeeds (its symbols then join the process)."""
    causes = tuple(explain(host, plugin))
    fail = _refusal(host, plugin)
    if fail is not None:
        return Verdict(plugin.path, False, fail.plugin if fail.kind == "plugin" else fail.host, fail, causes), False
    if plugin.pluginpath in loaded:
        diff = Difference("pluginpath", plugin.pluginpath, str(loaded[plugin.pluginpath]), str(plugin.path))
        return Verdict(plugin.path, False, "plugin already loaded", diff, causes), True
    shared = 0
    for pkg in plugin.packages:
        mine = plugin.exported.get(pkg, b"")
        theirs, owner = scope.get(pkg, (mine, str(plugin.path)))
        if owner != str(plugin.path):
            shared += 1
        if theirs != mine:
            diff = Difference("package", pkg, theirs.hex(), mine.hex(), owner)
            error = f"plugin was built with a different version of package {pkg}"
            mod = _module_difference(host, plugin, pkg)
            extra = (mod,) if mod is not None and all(c.name != mod.name for c in causes) else ()
            return Verdict(plugin.path, False, error, diff, causes + extra, len(plugin.packages), shared), True
    return Verdict(plugin.path, True, "", None, causes, len(plugin.packages), shared), True


def _refusal(host: GoLinkInfo, plugin: GoLinkInfo) -> Difference | None:
    """Why the host cannot open the plugin at all (before any package is compared), or None."""
    if not host.imports_plugin:
        return Difference("host", "plugin support", "the host does not link package plugin: it cannot call "
                          "plugin.Open (and its linker exported no package hashes)", "")
    if host.build.settings.get("CGO_ENABLED") == "0":
        return Difference("host", "CGO_ENABLED", "plugin: not implemented (the host was built with CGO_ENABLED=0)",
                          plugin.build.settings.get("CGO_ENABLED", ""))
    if plugin.build_mode != "plugin" or not plugin.shared_object:
        return Difference("plugin", "-buildmode", host.build_mode,
                          f"not a Go plugin (-buildmode={plugin.build_mode or '?'}): dlopen refuses it")
    if plugin.machine != host.machine:
        return Difference("plugin", "ELF machine", str(host.machine),
                          f"built for another architecture (ELF machine {plugin.machine}, host {host.machine})")
    return None


def explain(host: GoLinkInfo, plugin: GoLinkInfo) -> list[Difference]:
    """What differs between the two builds, from their build info: the Go release first, then settings, then
    the versions of modules both contain."""
    out: list[Difference] = []
    if host.go_version != plugin.go_version:
        out.append(Difference("go-version", "go", host.go_version, plugin.go_version))
    hs, ps = host.build.settings, plugin.build.settings
    for key in sorted(set(hs) | set(ps)):
        if key not in IGNORED_SETTINGS and hs.get(key, "") != ps.get(key, ""):
            out.append(Difference("setting", key, hs.get(key, ""), ps.get(key, "")))
    for mod in sorted(set(host.build.deps) & set(plugin.build.deps)):
        hv, pv = str(host.build.deps[mod]), str(plugin.build.deps[mod])
        if hv != pv:
            out.append(Difference("module", mod, hv, pv))
    return out


def _module_difference(host: GoLinkInfo, plugin: GoLinkInfo, package: str) -> Difference | None:
    h, p = host.module_of(package), plugin.module_of(package)
    if h and p and h[0] == p[0] and h[1] != p[1]:
        return Difference("module", h[0], h[1], p[1])
    return None
