"""The ABI and policy gate: a declarative table (`reprobuild/data/compat.yaml`) judging the lock and pipelines.

The table says *what* is allowed; this module only knows how to evaluate each `check` kind
(`version-pair`, `version`, `go-directive`, `host-env`). `evaluate` is pure apart from reading
go.mod files and the environment it is given; `enforce` turns error findings into a refusal (exit 2).
`reprobuild build` calls both before building anything; `reprobuild doctor` lists the findings.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from reprobuild.config.model import Lock
from reprobuild.config.pipeline import Pipeline
from reprobuild.config.yamlload import Fields, Node, load_one
from reprobuild.errors import BadInput

SEVERITIES = ("error", "warning", "info")
CHECKS = ("version-pair", "version", "go-directive", "host-env")
SUBJECTS = ("paddle", "go")
TABLE_VERSION = 1
# Package data, so that an installed (not editable) reprobuild has it too.
DEFAULT_TABLE = Path(__file__).resolve().parent.parent / "data" / "compat.yaml"
_COMPARISON_RE = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*(\d+(?:\.\d+)*)\s*$")
_LEADING_VERSION_RE = re.compile(r"^\d+(?:\.\d+)*(?:(?:a|b|rc|alpha|beta)\d+)?")


@dataclass(frozen=True)
class Finding:
    """One rule that fired: JSON-able with `to_json()` (for `doctor --json` and the build manifest)."""

    rule: str
    severity: str  # error | warning | info
    message: str
    remedies: tuple[str, ...] = ()
    where: str | None = None  # file:line, when a file is the cause

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "severity": self.severity, "message": self.message,
                "remedies": list(self.remedies), "where": self.where}

    def __str__(self) -> str:
        head = f"[{self.severity}] {self.rule}: " + (f"{self.where}: " if self.where else "") + self.message
        return head + "".join(f"\n    - {r}" for r in self.remedies)


@dataclass(frozen=True)
class Rule:
    id: str
    check: str
    severity: str
    message: str
    remedies: tuple[str, ...] = ()
    when: tuple[tuple[str, str], ...] = ()  # (subject, comparisons)
    variables: tuple[str, ...] = ()  # host-env: names or globs
    workaround_tag: str | None = None
    workaround_severity: str = "warning"
    line: int = 0


@dataclass(frozen=True)
class Table:
    path: Path
    rules: tuple[Rule, ...] = field(default_factory=tuple)


class PolicyRefused(BadInput):
    """An error finding: the build refuses before building anything (exit 2)."""

    def __init__(self, findings: list[Finding]) -> None:
        listed = "\n".join(f"  {f}".replace("\n", "\n  ") for f in findings)
        super().__init__(f"the policy gate refuses this build ({len(findings)} error finding"
                         f"{'s' * (len(findings) != 1)}):\n{listed}",
                         "take one of the ways out listed above; `reprobuild doctor` lists every finding")
        self.findings = findings


# --- the table ------------------------------------------------------------------------------------

def load_table(path: Path | None = None) -> Table:
    """Read and validate the rule table; any problem is a FileError naming the file and line."""
    path = path or DEFAULT_TABLE
    root = load_one(path)
    top = Fields(root, "the policy table", {"version", "rules"})
    ver = top.required("version")
    if ver.integer("version") != TABLE_VERSION:
        raise ver.error(f"unsupported policy table version {ver.value}; this reprobuild reads {TABLE_VERSION}")
    rules = [_parse_rule(node) for node in top.required("rules").sequence("rules")]
    ids = [r.id for r in rules]
    for rule in rules:
        if ids.count(rule.id) > 1:
            raise BadInput(f"{path}:{rule.line}: rule id `{rule.id}` is used twice")
    return Table(path, tuple(rules))


def _parse_rule(node: Node) -> Rule:
    f = Fields(node, "a policy rule", {"id", "check", "severity", "when", "message", "remedies", "variables",
                                       "workaround"})
    rid = f.required("id").string("rule id")
    what = f"rule `{rid}`"
    check_node = f.required("check")
    check = check_node.string(f"{what}: check")
    if check not in CHECKS:
        raise check_node.error(f"{what}: unknown check `{check}`", f"one of: {', '.join(CHECKS)}")
    severity = _severity(f.required("severity"), what)
    when: list[tuple[str, str]] = []
    when_node = f.optional("when")
    if when_node is not None:
        for subject, cnode in when_node.mapping(f"{what}: when").items():
            if subject not in SUBJECTS:
                raise cnode.error(f"{what}: unknown version subject `{subject}`", f"one of: {', '.join(SUBJECTS)}")
            spec = cnode.string(f"{what}: when.{subject}")
            for part in spec.split(","):
                if not _COMPARISON_RE.match(part):
                    raise cnode.error(f"{what}: `{part.strip()}` is not a comparison like >=1.21 or <2.6.0")
            when.append((subject, spec))
    if check in ("version-pair", "version") and not when:
        raise node.error(f"{what}: a `{check}` rule needs `when`")
    remedies_node = f.optional("remedies")
    remedies = tuple(remedies_node.strings(f"{what}: remedies")) if remedies_node else ()
    var_node = f.optional("variables")
    variables = tuple(var_node.strings(f"{what}: variables")) if var_node else ()
    if check == "host-env" and not variables:
        raise node.error(f"{what}: a host-env rule needs `variables`")
    tag = None
    wsev = "warning"
    w_node = f.optional("workaround")
    if w_node is not None:
        wf = Fields(w_node, f"{what}: workaround", {"go_build_tag", "severity"})
        tag = wf.required("go_build_tag").string(f"{what}: workaround.go_build_tag")
        ws = wf.optional("severity")
        wsev = _severity(ws, what) if ws else "warning"
    return Rule(rid, check, severity, f.required("message").string(f"{what}: message"), remedies, tuple(when),
                variables, tag, wsev, node.line)


def _severity(node: Node, what: str) -> str:
    value = node.string(f"{what}: severity")
    if value not in SEVERITIES:
        raise node.error(f"{what}: unknown severity `{value}`", f"one of: {', '.join(SEVERITIES)}")
    return value


# --- versions -------------------------------------------------------------------------------------

def parse_version(version: str) -> Version:
    """A Go or Paddle version, ordered as `packaging` orders versions: `go1.22rc1` < `1.22.0` (a pre-release
    comes before its release), `1.21` == `1.21.0`, `2.5.2.post117` > `2.5.2`. A leading `go` is dropped."""
    text = version.strip().removeprefix("go")
    try:
        return Version(text)
    except InvalidVersion:
        pass
    m = _LEADING_VERSION_RE.match(text)  # e.g. `1.21.13-custom`: judged by its release (and pre-release) part
    if not m:
        raise BadInput(f"`{version}` is not a version number")
    return Version(m.group(0))


def satisfies(version: str, spec: str) -> bool:
    """Whether `version` meets every comparison of `spec` (e.g. `>=1.20,<1.21`)."""
    have = parse_version(version)
    for part in spec.split(","):
        m = _COMPARISON_RE.match(part)
        if not m:
            raise BadInput(f"`{part}` is not a version comparison")
        op, want = m.group(1), parse_version(m.group(2))
        ok = {">=": have >= want, "<=": have <= want, "==": have == want, "!=": have != want,
              ">": have > want, "<": have < want}[op]
        if not ok:
            return False
    return True


# --- what the rules look at -----------------------------------------------------------------------

@dataclass(frozen=True)
class GoUse:
    """A Go toolchain as the pipelines use it: `name` asked for, `entry` after substitution."""

    name: str
    entry: str
    version: str
    pipelines: tuple[Pipeline, ...]


def paddle_version(lock: Lock) -> str | None:
    """The paddlepaddle pin of the lock's `python` section (the first environment that pins it)."""
    from reprobuild.config.pylock import parse_python_section

    for env in parse_python_section(lock).values():
        if "paddlepaddle" in env.packages:
            return env.packages["paddlepaddle"]
    return None


def go_uses(lock: Lock, overrides: Mapping[str, str], pipelines: list[Pipeline]) -> list[GoUse]:
    """The Go toolchains the Go pipelines use after `--toolchain` substitution (the lock's `go` entry when
    there are no Go pipelines, so the lock alone can be judged)."""
    by_name: dict[str, list[Pipeline]] = {}
    for p in pipelines:
        if p.builder == "go" and p.toolchain:
            by_name.setdefault(p.toolchain, []).append(p)
    if not by_name and "go" in lock.toolchains:
        by_name["go"] = []
    uses = []
    for name, ps in sorted(by_name.items()):
        entry = overrides.get(name, name)
        if entry not in lock.toolchains:
            continue  # reported elsewhere (check_overrides / the Go builder) as bad input
        uses.append(GoUse(name, entry, lock.toolchains[entry].version, tuple(ps)))
    return uses


def evaluate(lock: Lock, overrides: Mapping[str, str], pipelines: list[Pipeline],
             environ: Mapping[str, str] | None = None, table: Table | None = None) -> list[Finding]:
    """Every finding of the policy table for this lock, `--toolchain` overrides and pipelines, errors first."""
    table = table or load_table()
    env = os.environ if environ is None else environ
    paddle = paddle_version(lock)
    uses = go_uses(lock, overrides, pipelines)
    findings: list[Finding] = []
    for rule in table.rules:
        if rule.check == "version-pair":
            findings += _version_pair(rule, paddle, uses, pipelines)
        elif rule.check == "version":
            findings += _version(rule, paddle, uses)
        elif rule.check == "go-directive":
            findings += _go_directive(rule, uses)
        else:
            findings += _host_env(rule, env)
    order = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(findings, key=lambda f: order[f.severity])


def enforce(findings: list[Finding], say: Any = None) -> None:
    """Refuse (PolicyRefused, exit 2) when any finding is an error; hand the others to `say`."""
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        raise PolicyRefused(errors)
    if say is not None:
        for f in findings:
            if f.severity == "warning":
                say(f"policy: {f}")


def _values(**kwargs: object) -> dict[str, object]:
    return kwargs


def _fill(rule: Rule, values: dict[str, object]) -> tuple[str, tuple[str, ...]]:
    fields = {"workaround_tag": rule.workaround_tag or "", **values}
    return rule.message.format(**fields), tuple(r.format(**fields) for r in rule.remedies)


def _matches(rule: Rule, versions: dict[str, str | None]) -> bool:
    for subject, spec in rule.when:
        version = versions.get(subject)
        if version is None or not satisfies(version, spec):
            return False
    return True


def _version_pair(rule: Rule, paddle: str | None, uses: list[GoUse], pipelines: list[Pipeline]) -> list[Finding]:
    findings = []
    for use in uses:
        if not _matches(rule, {"paddle": paddle, "go": use.version}):
            continue
        severity = rule.severity
        if rule.workaround_tag and _workaround_applied(rule.workaround_tag, use.pipelines):
            severity = rule.workaround_severity
        message, remedies = _fill(rule, _values(paddle=paddle, go=use.version, go_name=use.name,
                                                go_entry=use.entry))
        if use.entry != use.name:
            message += f" (toolchain `{use.name}` substituted by `{use.entry}`)"
        findings.append(Finding(rule.id, severity, message, remedies))
    return findings


def _workaround_applied(tag: str, pipelines: tuple[Pipeline, ...]) -> bool:
    """Every cgo target of these pipelines is built with the workaround tag (and there is at least one)."""
    cgo = [t for p in pipelines for t in p.targets if t.cgo]
    return bool(cgo) and all(tag in t.tags for t in cgo)


def _version(rule: Rule, paddle: str | None, uses: list[GoUse]) -> list[Finding]:
    subjects = {s for s, _ in rule.when}
    findings = []
    if subjects == {"paddle"}:
        if _matches(rule, {"paddle": paddle}):
            message, remedies = _fill(rule, _values(paddle=paddle))
            findings.append(Finding(rule.id, rule.severity, message, remedies))
        return findings
    seen = set()
    for use in uses:
        if use.version in seen or not _matches(rule, {"paddle": paddle, "go": use.version}):
            continue
        seen.add(use.version)
        message, remedies = _fill(rule, _values(paddle=paddle, go=use.version, go_name=use.name,
                                                go_entry=use.entry))
        findings.append(Finding(rule.id, rule.severity, message, remedies))
    return findings


def go_mod_directives(module_dir: Path) -> list[tuple[str, str, int]]:
    """The go.mod `go` and `toolchain` directives: (directive, version, line)."""
    gomod = module_dir / "go.mod"
    if not gomod.exists():
        return []
    found = []
    for i, line in enumerate(gomod.read_text(encoding="utf-8").splitlines(), 1):
        m = re.match(r"^(go|toolchain)\s+(?:go)?(\d+(?:\.\d+)*(?:(?:rc|beta)\d+)?)\S*\s*(?://.*)?$", line.strip())
        if m:
            found.append((m.group(1), m.group(2), i))
    return found


def _go_directive(rule: Rule, uses: list[GoUse]) -> list[Finding]:
    return [f for use in uses for p in use.pipelines for f in _module_directives(rule, p.source, use)]


def _module_directives(rule: Rule, module_dir: Path, use: GoUse) -> list[Finding]:
    findings = []
    have = parse_version(use.version)
    for directive, wanted, line in go_mod_directives(module_dir):
        want = parse_version(wanted)
        # `go 1.21` means 1.21.0; compare in full only when the directive names a patch release.
        if want.release[:2] > have.release[:2] or (wanted.count(".") >= 2 and want > have):
            gomod = module_dir / "go.mod"
            minor = ".".join(str(n) for n in (*have.release, 0)[:2])
            lowered = f"`go {minor}`" if directive == "go" else f"`toolchain go{use.version}` (or remove it)"
            message, remedies = _fill(rule, _values(gomod=gomod, directive=directive, wanted=wanted,
                                                    go=use.version, go_name=use.name, entry=use.entry,
                                                    lowered=lowered))
            findings.append(Finding(rule.id, rule.severity, message, remedies, f"{gomod}:{line}"))
    return findings


def check_go_directives(module_dir: Path, entry: str, go_version: str, table: Table | None = None) -> None:
    """The table's go-directive rules for one module, enforced: the Go builder and `vendor` call this
    before running Go, which would say it less clearly (or, from Go 1.21 on, switch toolchains)."""
    use = GoUse(entry, entry, go_version, ())
    rules = [r for r in (table or load_table()).rules if r.check == "go-directive"]
    enforce([f for rule in rules for f in _module_directives(rule, module_dir, use)])


def _host_env(rule: Rule, environ: Mapping[str, str]) -> list[Finding]:
    findings = []
    for name in sorted(environ):
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in rule.variables):
            message, remedies = _fill(rule, _values(variable=name, value=environ[name]))
            findings.append(Finding(rule.id, rule.severity, message, remedies))
    return findings
