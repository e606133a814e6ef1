"""The package's layout rules, checked on the source (ast, nothing imported):

- a module uses only public names of another reprobuild module: no `from reprobuild.x import _name`, no
  `x._name` on an imported reprobuild module (a leading underscore means "this module's business"). A
  private *module* (`commands/_common.py`) is its package's business: its siblings may import it;
- the package root holds at most 8 modules: the rest lives in the domain subpackages;
- no module is longer than 400 lines, except any listed (each with the reason) in LONG_MODULES.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "reprobuild"
MAX_ROOT_MODULES = 8
MAX_LINES = 400
# Modules allowed over MAX_LINES for now, and why. Remove an entry as soon as its module is split.
LONG_MODULES: set[str] = set()


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (relative imports resolved against `module`)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, node.module] if node.module else base)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(source: str, module: str, rel: str, is_package: bool = False) -> list[str]:
    """`rel:line: what` for every private name of another reprobuild module that `source` (module `module`) uses."""
    tree = ast.parse(source, filename=rel)
    found: list[str] = []
    aliases: dict[str, str] = {}  # local name -> reprobuild module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("reprobuild"):
                    aliases[alias.asname or alias.name] = alias.name
                    if _foreign_private_module(alias.name, module, is_package):
                        found.append(f"{rel}:{node.lineno}: imports {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, is_package, node)
            if not source.startswith("reprobuild") or source == module:
                continue
            if _foreign_private_module(source, module, is_package):
                found.append(f"{rel}:{node.lineno}: imports from {source}")
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{rel}:{node.lineno}: imports {alias.name} from {source}")
                else:
                    aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            target = node.value
            dotted: list[str] = []
            while isinstance(target, ast.Attribute):
                dotted.insert(0, target.attr)
                target = target.value
            if isinstance(target, ast.Name) and target.id in aliases:
                bound = ".".join([aliases[target.id], *dotted])
                if _is_module(bound) and bound != module:
                    found.append(f"{rel}:{node.lineno}: uses {bound}.{node.attr}")
    return found


def _foreign_private_module(source: str, module: str, is_package: bool) -> bool:
    """`source` is a private module (or lies in a private package) outside the importer's own package."""
    parts = source.split(".")
    home = module if is_package else module.rpartition(".")[0]
    return any(_private(part) and ".".join(parts[:i]) != home for i, part in enumerate(parts))


def _is_module(dotted: str) -> bool:
    rel = Path(*dotted.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def test_no_module_uses_another_modules_private_names() -> None:
    found = [line for path in _modules()
             for line in private_uses(path.read_text(), _name_of(path), path.relative_to(PACKAGE.parent).as_posix(),
                                      path.name == "__init__.py")]
    assert found == [], "private names used across modules (make the shared piece public):\n" + "\n".join(found)


def test_the_package_root_holds_few_modules() -> None:
    root = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(root) <= MAX_ROOT_MODULES, f"reprobuild/ holds {len(root)} modules: {root}"


def test_no_module_is_longer_than_the_limit_unless_listed() -> None:
    long = {}
    for path in _modules():
        rel = path.relative_to(PACKAGE).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES and rel not in LONG_MODULES:
            long[rel] = lines
    assert long == {}, f"modules over {MAX_LINES} lines (split them): {long}"


def test_the_allowlist_names_only_modules_that_exist() -> None:
    missing = [rel for rel in LONG_MODULES if not (PACKAGE / rel).is_file()]
    assert missing == [], f"LONG_MODULES names modules that are gone (drop them): {missing}"


@pytest.mark.parametrize("source, expected", [
    ("from reprobuild.build.orchestrate import _publish\n", "imports _publish from reprobuild.build.orchestrate"),
    ("from reprobuild.build import provenance\nprovenance._invocation_id([], [])\n",
     "uses reprobuild.build.provenance._invocation_id"),
    ("import reprobuild.toolchains.download as download\ndownload._python()\n",
     "uses reprobuild.toolchains.download._python"),
    ("from reprobuild.build import _hidden\n", "imports _hidden from reprobuild.build"),
    ("from reprobuild.commands._common import lock_path\n", "imports from reprobuild.commands._common"),
])
def test_the_check_catches_private_names(source: str, expected: str) -> None:
    """The rule itself: each form of reaching into another module is reported, with its line."""
    found = private_uses(source, "reprobuild.build.merge", "reprobuild/build/merge.py")
    assert any(expected in line and line.startswith("reprobuild/build/merge.py:") for line in found), found


def test_the_check_allows_a_modules_own_private_names_and_dunders() -> None:
    source = ("from reprobuild import __version__\nfrom . import _own_helper\nfrom reprobuild.build import merge\n"
              "merge._combine([])\nclass A:\n    def _x(self) -> None:\n        self._y = 1\n")
    assert private_uses(source, "reprobuild.build.merge", "reprobuild/build/merge.py") == [
        "reprobuild/build/merge.py:2: imports _own_helper from reprobuild.build"]


def _compares_backend_name(source: str) -> list[int]:
    """Lines where `<...>backend.name` is compared (==, !=, in) with something."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                if isinstance(side, ast.Attribute) and side.attr == "name":
                    owner = side.value
                    label = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
                    if label.endswith("backend"):
                        lines.append(node.lineno)
    return lines


def test_the_build_never_branches_on_the_backends_name() -> None:
    """The build asks a backend's capabilities (`builds_images`, `hermetic`, `supports`), never its name."""
    found = {path.relative_to(PACKAGE).as_posix(): lines for path in sorted((PACKAGE / "build").glob("*.py"))
             if (lines := _compares_backend_name(path.read_text()))}
    assert found == {}
    assert _compares_backend_name("if ctx.backend.name != 'docker':\n    pass\n") == [1]
