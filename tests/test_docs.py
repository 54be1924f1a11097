"""Docs that cannot rot: README.md and docs/*.md against the code.

1. Every relative link and image resolves to a file of the checkout.
2. Every command line shown in a ```bash block for infer.py, train.py,
   data_prep/*.py, bench/*.py or `python -m lipsync_jax.*` parses with that
   program's own parser (`build_parser()`; train.py's absl flags through
   `train.define_flags`): no unknown flag, no missing argument.
3. Every config a page names (`configs/X.py`, `configs/X.py:variant`, in
   commands or prose) exists, and its `get_config` accepts the variant; a
   train.py command's config loads and its `--config.a.b=...` overrides name
   fields of that config.

Nothing is run: the scripts are imported and their parsers built (a few
seconds, no jax compilation).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import pathlib
import re
import shlex
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
README_MAX_LINES = 250

_FENCE = re.compile(r"^[ \t]*(```+|~~~+)[ \t]*([\w+-]*)[^\n]*$", re.M)
_SHELL_LANGS = {"bash", "sh", "shell", "console"}
_SEPARATORS = {"&&", "||", ";", "|", "&"}
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_PYTHON = re.compile(r"^(.*/)?python(3(\.\d+)?)?$")
_CONFIG_REF = re.compile(r"configs/(\w+)\.py(?::(\w+))?")


def _rel(path: pathlib.Path) -> str:
  return str(path.relative_to(ROOT))


# -----------------------------------------------------------------------------
# Markdown.
# -----------------------------------------------------------------------------

def _block_spans(text: str) -> list[tuple[str, int, str, int, int]]:
  """(language, first line number, body, start, end) of every fenced code
  block; start:end spans the fences too."""
  out, pos = [], 0
  while m := _FENCE.search(text, pos):
    fence = m.group(1)
    close = re.compile(rf"^[ \t]*{fence[0]}{{{len(fence)},}}[ \t]*$", re.M).search(text, m.end())
    end = close.end() if close else len(text)
    body = text[m.end() + 1:close.start() if close else len(text)]
    out.append((m.group(2).lower(), text.count("\n", 0, m.end()) + 2, body, m.start(), end))
    pos = end
  return out


def _blocks(text: str) -> list[tuple[str, int, str]]:
  """(language, first line number, body) of every fenced code block."""
  return [b[:3] for b in _block_spans(text)]


def _prose(text: str) -> str:
  """The text outside code blocks and inline code spans."""
  out, pos = [], 0
  for *_, start, end in _block_spans(text):
    out.append(text[pos:start])
    pos = end
  out.append(text[pos:])
  return re.sub(r"`[^`\n]*`", "", "".join(out))


def _commands(body: str) -> list[str]:
  """The command lines of a shell block: continuations joined, prompts cut."""
  lines, cur = [], ""
  for line in body.splitlines():
    line = re.sub(r"^\s*\$ ", "", line)
    if line.rstrip().endswith("\\"):
      cur += line.rstrip()[:-1] + " "
      continue
    lines.append(cur + line)
    cur = ""
  if cur:
    lines.append(cur)
  return [line.strip() for line in lines if line.strip()]


def _segments(line: str) -> list[list[str]]:
  """The simple commands of a line: split on && ; | etc., comments dropped,
  redirections cut, environment assignments and `time` stripped."""
  lex = shlex.shlex(line, posix=True, punctuation_chars=True)
  lex.whitespace_split = True
  lex.commenters = "#"
  out, cur = [], []
  for tok in lex:
    if tok in _SEPARATORS:
      out.append(cur)
      cur = []
    else:
      cur.append(tok)
  out.append(cur)
  cmds = []
  for toks in out:
    for i, tok in enumerate(toks):
      if tok[:1] in "<>" or tok in ("(", ")"):
        toks = toks[:i - 1] if i and toks[i - 1].isdigit() else toks[:i]
        break
    while toks and (_ENV.match(toks[0]) or toks[0] in ("time", "exec", "env")):
      toks = toks[1:]
    if toks:
      cmds.append(toks)
  return cmds


def _program(toks: list[str]) -> tuple[str, list[str]] | None:
  """('path/to/script.py' or 'lipsync_jax.x', its arguments) for a command
  this test checks, else None (pip, pytest, mkdir, ...)."""
  if _PYTHON.match(toks[0]):
    rest = toks[1:]
    while rest and rest[0].startswith("-") and rest[0] != "-m":  # python -u / -X ...
      rest = rest[1:]
    if len(rest) >= 2 and rest[0] == "-m":
      return (rest[1], rest[2:]) if rest[1].split(".")[0] == "lipsync_jax" else None
    if rest and rest[0].endswith(".py"):
      return rest[0], rest[1:]
    return None
  name = toks[0].removeprefix("./")
  if name in ("infer.py", "train.py") or re.match(r"(data_prep|bench)/\w+\.py$", name):
    return name, toks[1:]
  return None


def _documented_commands() -> list[tuple[str, str, str, list[str]]]:
  """(where, the line, program, arguments) of every checked command."""
  out = []
  for page in PAGES:
    for lang, lineno, body in _blocks(page.read_text()):
      if lang not in _SHELL_LANGS:
        continue
      for line in _commands(body):
        for toks in _segments(line):
          prog = _program(toks)
          if prog:
            out.append((f"{_rel(page)}:{lineno}", line, *prog))
  return out


# -----------------------------------------------------------------------------
# Parsers.
# -----------------------------------------------------------------------------

class _ParseError(Exception):
  pass


def _raise(message: str):
  raise _ParseError(message)


@functools.lru_cache(maxsize=None)
def _script(rel: str):
  """The script ROOT/rel imported as a module (its `main` is not run)."""
  name = "_docs_" + re.sub(r"\W", "_", rel.removesuffix(".py"))
  spec = importlib.util.spec_from_file_location(name, ROOT / rel)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


def _module(name: str):
  spec = importlib.util.find_spec(name)
  if spec is None:
    raise _ParseError(f"no module {name}")
  if spec.submodule_search_locations is not None:  # a package: python -m runs __main__
    name += ".__main__"
  return importlib.import_module(name)


def _check_argparse(module, args: list[str]) -> None:
  build = getattr(module, "build_parser", None)
  if build is None:
    raise _ParseError(f"{module.__name__} has no build_parser() (the docs test needs it)")
  parser = build()
  parser.error = _raise   # an argparse error raises instead of exiting
  parser.parse_args(args)


def _check_train(args: list[str], monkeypatch) -> None:
  """train.py's absl flags: the config file and variant load, every
  --config.field override names a field, --config and --workdir are given."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  train = _script("train.py")
  fv = flags.FlagValues()
  train.define_flags(fv)
  argv = ["train.py", *args]
  monkeypatch.setattr(sys, "argv", argv)  # config_flags reads the overrides there
  try:
    rest = fv(argv)
  except (flags.Error, AttributeError, KeyError) as e:
    raise _ParseError(str(e).strip().splitlines()[0]) from None
  if len(rest) > 1:
    raise _ParseError(f"unexpected arguments: {rest[1:]}")
  path = fv["config"].config_filename.partition(":")[0]
  if not (ROOT / path).is_file():
    raise _ParseError(f"config file not found: {path}")
  try:
    fv.config  # the config, with the overrides applied  # pylint: disable=pointless-statement
  except Exception as e:  # pylint: disable=broad-except
    raise _ParseError(f"config {fv['config'].config_filename}: {e}") from None


def check_command(prog: str, args: list[str], monkeypatch) -> None:
  """Raises _ParseError when `prog args` would not parse."""
  if prog.endswith(".py"):
    if not (ROOT / prog).is_file():
      raise _ParseError(f"no such script: {prog}")
    if prog == "train.py":
      _check_train(args, monkeypatch)
    else:
      _check_argparse(_script(prog), args)
  else:
    _check_argparse(_module(prog), args)


# -----------------------------------------------------------------------------
# The tests.
# -----------------------------------------------------------------------------

def test_readme_is_short_and_the_docs_exist():
  readme = (ROOT / "README.md").read_text()
  assert len(readme.splitlines()) <= README_MAX_LINES, "README.md: move details to docs/"
  assert len(PAGES) > 5 and (ROOT / "mkdocs.yml").is_file()


def test_every_relative_link_and_image_resolves():
  link = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
  ref = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.M)
  html = re.compile(r"<(?:img|a)\s[^>]*(?:src|href)=\"([^\"]+)\"", re.I)
  missing, checked = [], 0
  for page in PAGES:
    text = _prose(page.read_text())
    targets = [*link.findall(text), *ref.findall(text), *html.findall(text)]
    for target in targets:
      if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
        continue   # http:, mailto:, an anchor on the same page
      path = target.split("#")[0].split("?")[0]
      checked += 1
      if not (page.parent / path).exists():
        missing.append(f"{_rel(page)}: {target}")
  assert checked > 10
  assert not missing, "links to nothing:\n" + "\n".join(missing)


def test_every_documented_command_parses(monkeypatch):
  monkeypatch.chdir(ROOT)   # the docs' commands run from the checkout's root
  cmds = _documented_commands()
  progs = {prog for _, _, prog, _ in cmds}
  assert {"infer.py", "train.py", "data_prep/preprocess.py", "lipsync_jax.demo"} <= progs
  bad = []
  for where, line, prog, args in cmds:
    try:
      check_command(prog, args, monkeypatch)
    except _ParseError as e:
      bad.append(f"{where}: {line}\n    {e}")
  assert not bad, f"{len(bad)} of {len(cmds)} documented commands do not parse:\n" + \
      "\n".join(bad)


def test_every_config_cited_exists():
  from lipsync_jax.train import config_lib  # pylint: disable=import-outside-toplevel
  cited: dict[tuple[str, str | None], str] = {}
  for page in PAGES:
    for name, variant in _CONFIG_REF.findall(page.read_text()):
      cited.setdefault((name, variant or None), _rel(page))
  assert len(cited) > 5
  bad = []
  for (name, variant), page in sorted(cited.items(), key=str):
    path = ROOT / "configs" / f"{name}.py"
    if not path.is_file():
      bad.append(f"{page}: configs/{name}.py does not exist")
      continue
    if variant is None:   # the file named as a file (a train.py --config is checked above)
      continue
    try:
      config_lib.load(path, variant)
    except Exception as e:  # pylint: disable=broad-except
      bad.append(f"{page}: configs/{name}.py:{variant}: {type(e).__name__}: {e}")
  assert not bad, "\n".join(bad)


# The checker itself: it must catch what it is meant to catch.

@pytest.mark.parametrize("line, message", [
    ("python infer.py --checkpoint m --face f.mp4 --audio a.wav --outfile o.mp4 --no-such-flag",
     "unrecognized arguments"),
    ("python -m lipsync_jax.export --out x.onnx", "required"),
    ("python -m lipsync_jax.no_such_module --x 1", "no module"),
    ("python bench/no_such_bench.py", "no such script"),
    ("python data_prep/preprocess.py --input raw/ --output d --img-size", "expected one argument"),
    ("python train.py --config configs/no_such.py --workdir w", "not found"),
    ("python train.py --config configs/syncnet.py:no_such_variant --workdir w", "config"),
    ("python train.py --config configs/syncnet.py --workdir w --config.no_such_field=1",
     "no_such_field"),
    ("python train.py --config configs/syncnet.py", "workdir"),
    ("python train.py --config configs/syncnet.py --workdir w --bogus", "bogus"),
])
def test_the_checker_catches_bad_commands(line, message, monkeypatch):
  monkeypatch.chdir(ROOT)
  (toks,) = _segments(line)
  prog, args = _program(toks)
  with pytest.raises(_ParseError, match=message):
    check_command(prog, args, monkeypatch)


def test_the_checker_reads_blocks_as_a_shell_does(monkeypatch):
  body = ("mkdir -p out && LIPSYNC_CACHE_DIR=/tmp/c python -m lipsync_jax.demo \\\n"
          "    --workdir runs/d --quick  # a comment\n"
          "python train.py --config configs/syncnet.py:tiny --workdir w \\\n"
          "    --config.data_dir=data/prep --config.num_steps=5 > log.txt 2>&1\n")
  text = f"# t\n\n```bash\n{body}```\n\nsee [x](nowhere.md)\n"
  (lang, lineno, got), = _blocks(text)
  assert lang == "bash" and lineno == 4 and got == body
  cmds = [_program(t) for line in _commands(got) for t in _segments(line)]
  assert cmds == [None, ("lipsync_jax.demo", ["--workdir", "runs/d", "--quick"]),
                  ("train.py", ["--config", "configs/syncnet.py:tiny", "--workdir", "w",
                                "--config.data_dir=data/prep", "--config.num_steps=5"])]
  monkeypatch.chdir(ROOT)
  for prog, args in cmds[1:]:
    check_command(prog, args, monkeypatch)
  assert "nowhere.md" in _prose(text) and "lipsync_jax.demo" not in _prose(text)
