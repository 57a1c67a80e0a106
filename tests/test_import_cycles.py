"""The modules of mmrec_jax import each other without cycles.

Why: a cycle is what forces function-level imports ("imported here to avoid a circular
import"), which hide dependencies, fail late, and make the import order matter. Layers
(io_utils/errors -> data -> features -> graph -> models -> step -> train) stay honest only
if something checks them, so this test parses every module with ``ast`` -- no import is
executed, so it needs none of the optional dependencies -- and builds the graph of imports
of ``mmrec_jax.*``:

* every import counts: module-level, function-level, and ``if TYPE_CHECKING:`` ones
  (a type-only cycle is still a cycle in the design);
* ``from mmrec_jax.x import y`` is an edge to ``mmrec_jax.x.y`` when ``y`` is a submodule
  (``y.py`` or ``y/__init__.py``), else to ``mmrec_jax.x``; relative imports likewise;
* a package's ``__init__.py`` is the package's module (``mmrec_jax.data``). Importing
  ``mmrec_jax.p.x`` from outside package ``p`` runs ``p/__init__.py`` first, so that is an
  edge to ``mmrec_jax.p`` too (a cycle through an ``__init__`` fails at run time like any
  other: "cannot import name ... from partially initialized module"). From inside ``p``
  the package is already being imported, so no such edge: an ``__init__`` re-exporting
  its submodules would otherwise cycle with all of them.

Any strongly connected component with more than one module (or a module importing
itself) fails the test, naming the modules of the cycle and the import lines involved.
New packages and modules are picked up automatically.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "mmrec_jax"


def _module_name(path: pathlib.Path) -> str:
  rel = path.relative_to(ROOT).with_suffix("")
  parts = list(rel.parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
  return {
    _module_name(p): p
    for p in sorted((ROOT / PACKAGE).rglob("*.py"))
    if "__pycache__" not in p.parts
  }


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
  base = module.split(".")
  if not is_package:
    base = base[:-1]
  if level > 1:
    base = base[: len(base) - (level - 1)]
  return ".".join(base + ([name] if name else []))


def _imports(module: str, path: pathlib.Path, known: set[str]) -> list[tuple[str, int]]:
  """(imported mmrec_jax module, line) for every import in ``path``."""
  tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
  is_package = path.name == "__init__.py"
  out: list[tuple[str, int]] = []

  def target(name: str) -> str | None:
    # The longest known module prefix of a dotted name (``import a.b.c`` -> a.b.c).
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
      cand = ".".join(parts[:k])
      if cand in known:
        return cand
    return None

  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
          t = target(alias.name)
          if t:
            out.append((t, node.lineno))
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = _resolve_relative(module, is_package, node.level, node.module)
      else:
        base = node.module or ""
      if base != PACKAGE and not base.startswith(PACKAGE + "."):
        continue
      for alias in node.names:
        sub = f"{base}.{alias.name}"
        t = sub if sub in known else target(base)
        if t:
          out.append((t, node.lineno))
  return out


def import_graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], list[int]]]:
  """module -> imported modules, and (importer, imported) -> line numbers."""
  mods = _modules()
  known = set(mods)
  graph: dict[str, set[str]] = {m: set() for m in mods}
  lines: dict[tuple[str, str], list[int]] = {}
  for m, path in mods.items():
    for t, line in _imports(m, path, known):
      parts = t.split(".")
      packages = [".".join(parts[:k]) for k in range(2, len(parts))]
      for dst in [t] + [p for p in packages if p in known and m != p and not m.startswith(p + ".")]:
        graph[m].add(dst)
        seen = lines.setdefault((m, dst), [])
        if line not in seen:
          seen.append(line)
  return graph, lines


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
  """Tarjan's algorithm (iterative): the strongly connected components of ``graph``."""
  index: dict[str, int] = {}
  low: dict[str, int] = {}
  on_stack: set[str] = set()
  stack: list[str] = []
  comps: list[list[str]] = []
  counter = 0
  for root in sorted(graph):
    if root in index:
      continue
    work = [(root, iter(sorted(graph[root])))]
    index[root] = low[root] = counter
    counter += 1
    stack.append(root)
    on_stack.add(root)
    while work:
      v, it = work[-1]
      advanced = False
      for w in it:
        if w not in index:
          index[w] = low[w] = counter
          counter += 1
          stack.append(w)
          on_stack.add(w)
          work.append((w, iter(sorted(graph.get(w, ())))))
          advanced = True
          break
        if w in on_stack:
          low[v] = min(low[v], index[w])
      if advanced:
        continue
      work.pop()
      if work:
        low[work[-1][0]] = min(low[work[-1][0]], low[v])
      if low[v] == index[v]:
        comp = []
        while True:
          w = stack.pop()
          on_stack.discard(w)
          comp.append(w)
          if w == v:
            break
        comps.append(sorted(comp))
  return comps


def cycles() -> list[str]:
  """One line per cyclic component: its modules and the imports between them."""
  graph, lines = import_graph()
  out = []
  for comp in strongly_connected(graph):
    if len(comp) == 1 and comp[0] not in graph[comp[0]]:
      continue
    members = set(comp)
    edges = [
      f"{a} -> {b} (line {', '.join(map(str, lines[(a, b)]))})"
      for a in comp
      for b in sorted(graph[a] & members)
    ]
    out.append(f"cycle among {comp}: " + "; ".join(edges))
  return out


def test_graph_sees_the_package():
  graph, _ = import_graph()
  assert f"{PACKAGE}.data.dataset" in graph
  assert f"{PACKAGE}.errors" in graph[f"{PACKAGE}.data.dataset"]
  # A submodule named in ``from package import submodule`` is an edge to the submodule.
  assert f"{PACKAGE}.data.tables" in graph[f"{PACKAGE}.data.sources"]


def test_scc_finds_a_planted_cycle():
  graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
  comps = {tuple(c) for c in strongly_connected(graph)}
  assert ("a", "b", "c") in comps and ("d",) in comps and ("e",) in comps


def test_resolves_relative_and_function_level_imports(tmp_path, monkeypatch):
  pkg = tmp_path / PACKAGE
  (pkg / "sub").mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  (pkg / "sub" / "__init__.py").write_text("from . import a\n")
  (pkg / "sub" / "a.py").write_text("def f():\n  from ..sub import b\n")
  (pkg / "sub" / "b.py").write_text("import mmrec_jax.sub.a\n")
  monkeypatch.setitem(globals(), "ROOT", tmp_path)
  found = cycles()
  assert len(found) == 1 and "mmrec_jax.sub.a" in found[0] and "mmrec_jax.sub.b" in found[0]


def test_importing_from_outside_a_package_runs_its_init(tmp_path, monkeypatch):
  pkg = tmp_path / PACKAGE
  for sub in ("p", "q"):
    (pkg / sub).mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  (pkg / "p" / "__init__.py").write_text("from mmrec_jax.p import x\n")
  (pkg / "p" / "x.py").write_text("from mmrec_jax.q import y\n")
  (pkg / "p" / "z.py").write_text("")
  (pkg / "q" / "__init__.py").write_text("")
  (pkg / "q" / "y.py").write_text("from mmrec_jax.p.z import NAME\n")
  monkeypatch.setitem(globals(), "ROOT", tmp_path)
  graph, _ = import_graph()
  assert graph["mmrec_jax.q.y"] == {"mmrec_jax.p.z", "mmrec_jax.p"}
  assert graph["mmrec_jax.p.x"] == {"mmrec_jax.q.y", "mmrec_jax.q"}
  found = cycles()  # q.y -> p (its __init__) -> p.x -> q.y
  assert len(found) == 1 and "mmrec_jax.p'" in found[0] and "mmrec_jax.q.y" in found[0]


def test_no_import_cycles():
  found = cycles()
  if found:
    pytest.fail(
      "import cycles in mmrec_jax (break them by moving the shared part to a "
      "lower module):\n" + "\n".join(found)
    )
