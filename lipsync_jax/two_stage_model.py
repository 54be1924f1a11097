"""The two-stage model on disk: load, pack and its lip gain.

A two-stage model directory holds the two stages as ordinary model
directories (`model_dir.save_model`) and a manifest::

  DIR/two_stage.json   {"format": 1, "lips": "lips", "renderer": "renderer",
                        "lip_gain": 2.8, "lip_gain_calibration": {...},
                        "lip_gain_smoothed": 3.1,
                        "lip_gain_smoothed_calibration": {...}, ...}
  DIR/lips/            arch audio_to_lips
  DIR/renderer/        arch lip_renderer

`lip_gain` is measured with stage 1's lips drawn as predicted (`infer.py`'s
default), `lip_gain_smoothed` with them smoothed over +-1 frame
(`--lip-smoothing`), which takes about 15% off their amplitude; each is
optional, and a model measured in one mode only uses that gain in both.

This module reads and writes it and needs nothing from `inference`;
`lipsync_jax.two_stage` (the command line) re-exports it and adds
fine-tuning and the lip-gain calibration.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any

MANIFEST = "two_stage.json"
FORMAT = 1
MAX_GAIN = 10.0
# The manifest's gain for stage 1's lips unsmoothed (False) and smoothed (True).
GAIN_KEYS = {False: "lip_gain", True: "lip_gain_smoothed"}


class TwoStageError(ValueError):
  """A two-stage model directory that is missing or malformed (one line)."""


def builtin_path() -> pathlib.Path:
  """The two-stage model shipped inside the package (research use)."""
  return pathlib.Path(__file__).resolve().parent / "assets" / "two_stage"


def is_two_stage(path: str | os.PathLike) -> bool:
  return (pathlib.Path(path) / MANIFEST).is_file()


@dataclasses.dataclass
class TwoStageModel:
  """Both stages, loaded: modules, variables and the manifest."""
  lips_module: Any
  lips_variables: Any
  renderer_module: Any
  renderer_variables: Any
  manifest: dict[str, Any]

  @property
  def face_size(self) -> int:
    from lipsync_jax import models  # pylint: disable=import-outside-toplevel
    return int(models.face_size_of(self.renderer_module) or 96)

  @property
  def context(self) -> int:
    return int(self.lips_module.context)

  @property
  def lip_gain(self) -> float:
    """The factor on stage 1's lip motion at inference, the lips unsmoothed
    (`calibrate`)."""
    return float(self.manifest.get("lip_gain", 1.0))

  def lip_gain_for(self, lip_smoothing: bool) -> float:
    """The lip gain measured for stage 1's lips smoothed or not; the other
    mode's when only that one was measured."""
    key = GAIN_KEYS[bool(lip_smoothing)]
    return float(self.manifest.get(key, self.manifest.get(
        GAIN_KEYS[not lip_smoothing], 1.0)))


def load(path: str | os.PathLike) -> TwoStageModel:
  """Loads a two-stage model directory ("builtin": the shipped one)."""
  from lipsync_jax import checkpoint  # pylint: disable=import-outside-toplevel
  root = builtin_path() if str(path) == "builtin" else pathlib.Path(path)
  if not is_two_stage(root):
    raise TwoStageError(f"not a two-stage model directory (no {MANIFEST}): {root}")
  try:
    manifest = json.loads((root / MANIFEST).read_text())
  except json.JSONDecodeError as e:
    raise TwoStageError(f"{root / MANIFEST}: not valid JSON ({e})") from None
  if manifest.get("format") != FORMAT:
    raise TwoStageError(f"{root / MANIFEST}: unknown format {manifest.get('format')!r}")
  for key in GAIN_KEYS.values():
    gain = manifest.get(key, 1.0)
    if not isinstance(gain, (int, float)) or not 0 < gain <= MAX_GAIN:
      raise TwoStageError(f"{root / MANIFEST}: {key} must be a number in (0, {MAX_GAIN}], "
                          f"got {gain!r}")
  lips = checkpoint.load_model(root / manifest.get("lips", "lips"),
                               expected_arch="audio_to_lips")
  renderer = checkpoint.load_model(root / manifest.get("renderer", "renderer"),
                                   expected_arch="lip_renderer")
  return TwoStageModel(lips.module, dict(lips.variables), renderer.module,
                       dict(renderer.variables), manifest)


def pack(lips: str | os.PathLike, renderer: str | os.PathLike, out: str | os.PathLike,
         note: str = "", lip_gain: dict[str, Any] | None = None) -> pathlib.Path:
  """Writes a two-stage model directory from two workdirs or model dirs.

  The stages are loaded (so a wrong or broken one fails here, not at
  inference), saved again under `out` through a temporary folder that is
  renamed only when complete. `lip_gain`: a `calibrate` result, kept in the
  manifest (the gain inference uses, and how it was measured) under its
  mode's key (`set_lip_gain`).
  """
  from lipsync_jax import checkpoint  # pylint: disable=import-outside-toplevel
  out = pathlib.Path(out)
  parts = {"lips": checkpoint.load_model(lips, expected_arch="audio_to_lips"),
           "renderer": checkpoint.load_model(renderer, expected_arch="lip_renderer")}
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
  try:
    for name, loaded in parts.items():
      meta = {k: v for k, v in loaded.meta.items()
              if k not in ("format", "arch", "config", "lipsync_jax_version", "created")}
      checkpoint.save_model(tmp / name, loaded.arch, dict(loaded.config),
                            dict(loaded.variables), extra_meta=meta)
    manifest = {"format": FORMAT, "lips": "lips", "renderer": "renderer",
                "sources": {"lips": str(lips), "renderer": str(renderer)}}
    if note:
      manifest["note"] = note
    if lip_gain is not None:
      _record_gain(manifest, lip_gain)
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    if out.exists():
      shutil.rmtree(out)
    os.replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out


def crossing_gain(ratios: dict[float, float]) -> float:
  """{gain: amplitude ratio} -> the gain where the ratio crosses 1, linearly
  interpolated between the two gains around the first crossing; the largest
  gain when every ratio is below 1, the smallest when none is."""
  xs = sorted(ratios)
  if ratios[xs[0]] >= 1:
    return float(xs[0])
  for a, b in zip(xs, xs[1:]):
    if ratios[a] < 1 <= ratios[b]:
      return float(a + (1 - ratios[a]) * (b - a) / (ratios[b] - ratios[a]))
  return float(xs[-1])


def _record_gain(manifest: dict[str, Any], result: dict[str, Any]) -> None:
  """Puts a `calibrate` result under the key of the mode it was measured in
  (`result["lip_smoothing"]`; absent: unsmoothed)."""
  key = GAIN_KEYS[bool(result.get("lip_smoothing", False))]
  manifest[key] = float(result["lip_gain"])
  manifest[key + "_calibration"] = result


def set_lip_gain(path: str | os.PathLike, result: dict[str, Any]) -> pathlib.Path:
  """Writes a `calibrate` result into a two-stage model's manifest
  (atomically), as the gain of the mode it was measured in: `lip_gain`, or
  `lip_gain_smoothed` when `result["lip_smoothing"]`."""
  root = pathlib.Path(path)
  load(root)
  manifest = json.loads((root / MANIFEST).read_text())
  _record_gain(manifest, result)
  tmp = root / (MANIFEST + ".tmp")
  tmp.write_text(json.dumps(manifest, indent=1))
  os.replace(tmp, root / MANIFEST)
  return root


