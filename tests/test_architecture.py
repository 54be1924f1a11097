"""The package's shape: no import cycles, one family object per generator kind."""

from __future__ import annotations

import ast
import dataclasses
import pathlib

import pytest

from lipsync_jax import models
from lipsync_jax.train import families

PKG = pathlib.Path(__file__).resolve().parents[1] / "lipsync_jax"


def _import_graph() -> dict[str, set[str]]:
  """module -> lipsync_jax modules it imports, lazy (function-level) imports included."""
  mods = {}
  for p in PKG.rglob("*.py"):
    parts = p.relative_to(PKG.parent).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    mods[name] = p

  def resolve(name: str) -> str:
    while name not in mods and "." in name:
      name = name.rsplit(".", 1)[0]
    return name

  graph = {m: set() for m in mods}
  for m, p in mods.items():
    for node in ast.walk(ast.parse(p.read_text())):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        targets = [f"{node.module}.{a.name}" for a in node.names]
      else:
        continue
      graph[m] |= {resolve(t) for t in targets if t.startswith("lipsync_jax")}
    graph[m].discard(m)
  return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components of more than one module (Tarjan)."""
  index, low, stack, on, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def test_cycle_finder_finds_a_cycle():
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
  graph = _import_graph()
  assert "lipsync_jax.checkpoint" in graph and "lipsync_jax.inference.syncer" in graph
  assert _cycles(graph) == []


def test_every_package_says_what_lives_there():
  for init in PKG.rglob("__init__.py"):
    if "assets" in init.parts:
      continue
    doc = ast.get_docstring(ast.parse(init.read_text()))
    assert doc and len(doc) > 40, f"{init} has no docstring"


@pytest.mark.parametrize("arch,family", [
    ("wav2lip", families.OnePathFamily),
    ("lpips_attnwav2lip", families.OnePathFamily),
    ("synctalkface", families.SyncTalkFaceFamily),
    ("synctalkface_paper", families.SyncTalkFaceFamily),   # a subclass: found by MRO
    ("au_tcn", families.AUTCNFamily),
])
def test_family_of(arch, family):
  gen = models.create(arch, width_multiplier=0.25)
  fam = families.family_of(gen, au_classifier=None)
  assert type(fam) is family and fam.gen is gen


def test_register_family_and_kwargs():
  class MyGen(models.create("wav2lip").__class__):
    pass

  @dataclasses.dataclass(frozen=True)
  class MyFamily(families.OnePathFamily):
    extra: int = 0
    name = "mine"

  families.register_family(MyGen, MyFamily)
  try:
    fam = families.family_of(MyGen(), extra=3, au_classifier=None)
    assert isinstance(fam, MyFamily) and fam.extra == 3
  finally:
    families._FAMILIES.pop(MyGen)  # pylint: disable=protected-access
  au = families.family_of(models.create("au_tcn", width_multiplier=0.25), au_classifier="cls")
  assert au.au_classifier == "cls"


ROOT = PKG.parent
SCRIPTS = sorted([*ROOT.glob("*.py"), *(ROOT / "bench").glob("*.py"),
                  *(ROOT / "data_prep").glob("*.py"), *(ROOT / "configs").glob("*.py")])


def _is_module(name: str) -> bool:
  path = ROOT.joinpath(*name.split("."))
  return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def test_every_script_parses_and_imports_modules_that_exist():
  """The command-line scripts outside the package (train.py, infer.py,
  bench/, data_prep/, configs/) are not imported by any test of the package,
  so a syntax slip or a module moved by a refactor would go unseen: a bench
  script once shipped with an indentation error."""
  assert len(SCRIPTS) > 10 and ROOT / "bench" / "real_face_generator.py" in SCRIPTS
  for path in SCRIPTS:
    tree = compile(path.read_text(), str(path), "exec", flags=ast.PyCF_ONLY_AST)
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names = [node.module]
      else:
        continue
      for name in names:
        if name.startswith("lipsync_jax"):
          assert _is_module(name), f"{path.name}: no module {name}"


def test_script_check_catches_a_broken_script(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text("def f():\n  '''doc'''\n    import os\n")
  with pytest.raises(SyntaxError):
    compile(bad.read_text(), str(bad), "exec", flags=ast.PyCF_ONLY_AST)
  assert _is_module("lipsync_jax.evaluation.metrics")
  assert not _is_module("lipsync_jax.metrics")
