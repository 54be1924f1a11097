"""SyncTalkFace memory inspection: decode one mouth per memory slot.

  python -m lipsync_jax.evaluation.memory_grid --checkpoint RUN_OR_MODEL --data DATA_DIR \
      --out slots.png [--split val] [--clip 0] [--frame 0.5] [--audio-free]

The paper's memory analysis: force a one-hot address on each slot of the
Audio-Lip Memory, decode a face with the same identity input, and lay the
mouths (lower halves) out in a grid, one cell per slot, labelled with its
index. After training, distinct slots should give distinct mouth shapes.
Beside the PNG, a JSON file gives the spread of the slot mouths:
``slot_spread`` = mean absolute difference of each slot's mouth from the
mean slot mouth (0 would mean every slot decodes the same mouth), and
``pairwise_l1`` = mean over slot pairs, both in [0, 1] pixel units.

By default f_aud is the audio embedding of the identity frame's own mel
window (as at inference, so the decoder sees a realistic input) and only
the recalled lip feature changes across cells; `--audio-free` sets f_aud to
0 so that the memory alone drives the mouth.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
from typing import Any

import numpy as np

from lipsync_jax.io import files

ARCHS = ("synctalkface", "synctalkface_paper")


class MemoryGridError(ValueError):
  """Bad input (one-line message)."""


def slot_mouths(module, variables, face: np.ndarray, mel: np.ndarray | None,
                batch: int = 16) -> np.ndarray:
  """Decodes every slot for one identity.

  Args:
    module: a `SyncTalkFace`.
    variables: its variables.
    face: (S, S, 3) uint8 BGR face crop at the model's size.
    mel: (80, 16) mel window of the frame, or None (f_aud = 0).
    batch: slots decoded per call.
  Returns:
    (slots, S, S, 3) float32 faces in [0, 1].
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  lo, hi = module.pixel_range
  x = face.astype(np.float32) / 255.0
  masked = x.copy()
  masked[x.shape[0] // 2:] = 0.0
  faces = lo + (hi - lo) * np.concatenate([masked, x], -1)[None]
  if mel is not None:
    mel = np.asarray(mel, np.float32)[None, ..., None]

  n = module.memory_slots

  @jax.jit
  def decode(v, slots):
    # `forced_slot_decode` with traced slot indices: one-hot addresses.
    k = slots.shape[0]
    address = jax.nn.one_hot(slots, n, dtype=jnp.float32)
    audio = None if mel is None else jnp.tile(jnp.asarray(mel), (k, 1, 1, 1))
    out = module.apply(v, jnp.tile(jnp.asarray(faces), (k, 1, 1, 1)), address, audio,
                       False, method="decode_with_address")
    return (out - lo) / (hi - lo)

  outs = []
  for s in range(0, n, batch):
    idx = list(range(s, min(n, s + batch)))
    idx += [idx[-1]] * (batch - len(idx))     # one compiled shape
    outs.append(np.asarray(decode(variables, jnp.asarray(idx)))[:min(batch, n - s)])
  return np.clip(np.concatenate(outs), 0.0, 1.0)


def spread(mouths: np.ndarray) -> dict[str, float]:
  """Spread of (K, h, w, 3) slot mouths in [0, 1]: how different slots are."""
  k = mouths.shape[0]
  flat = mouths.reshape(k, -1).astype(np.float64)
  mean = flat.mean(0)
  pair = [np.abs(flat[i] - flat[j]).mean() for i in range(k) for j in range(i + 1, k)]
  return {"slot_spread": float(np.abs(flat - mean).mean()),
          "pairwise_l1": float(np.mean(pair)) if pair else 0.0,
          "slots": int(k)}


def grid_image(mouths: np.ndarray, cols: int = 12, scale: int = 2) -> np.ndarray:
  """(K, h, w, 3) [0, 1] BGR -> a uint8 BGR grid with slot numbers."""
  import cv2  # pylint: disable=import-outside-toplevel
  k, h, w = mouths.shape[:3]
  cols = min(cols, k)
  rows = math.ceil(k / cols)
  ch, cw = h * scale + 14, w * scale + 4
  img = np.full((rows * ch, cols * cw, 3), 255, np.uint8)
  for i in range(k):
    r, c = divmod(i, cols)
    cell = cv2.resize((mouths[i] * 255).round().astype(np.uint8), (w * scale, h * scale),
                      interpolation=cv2.INTER_NEAREST)
    y, x = r * ch + 12, c * cw + 2
    img[y:y + h * scale, x:x + w * scale] = cell
    cv2.putText(img, str(i), (x, y - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1,
                cv2.LINE_AA)
  return img


def _identity(data_dir: str, split: str, clip: int, frame: float, size: int):
  """(face (S,S,3) uint8, mel (80,16)) of a dataset frame."""
  import cv2  # pylint: disable=import-outside-toplevel
  from lipsync_jax.data import format as fmt  # pylint: disable=import-outside-toplevel
  from lipsync_jax.data import sources  # pylint: disable=import-outside-toplevel
  index = fmt.load_index(data_dir)
  clips = index.split(split)
  if not clips:
    raise MemoryGridError(f"split {split!r} of {data_dir} is empty")
  if not 0 <= clip < len(clips):
    raise MemoryGridError(f"--clip {clip} out of range: the split has {len(clips)} clips")
  c = clips[clip]
  found = np.nonzero(c.found)[0]
  w = sources.clip_windows(c).gen
  if not len(found) or not len(w):
    raise MemoryGridError(f"clip {c.clip_id} has no usable frame")
  t = int(w[min(len(w) - 1, int(frame * len(w)))])
  reader = fmt.ClipReader(index.data_dir, index.codec, index.img_size)
  face = reader.frames(c, t, 1)[0]
  if face.shape[0] != size:
    face = cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA)
  m0 = sources.mel_start(t, c.fps)
  return face, reader.mel(c, m0, m0 + sources.MEL_WINDOW), f"{c.clip_id} frame {t}"


def run(args: argparse.Namespace) -> dict[str, Any]:
  import cv2  # pylint: disable=import-outside-toplevel
  from lipsync_jax import checkpoint  # pylint: disable=import-outside-toplevel
  out = pathlib.Path(args.out)
  if out.suffix.lower() != ".png":
    raise MemoryGridError(f"--out must be a .png file, got {args.out}")
  if not out.parent.is_dir():
    raise MemoryGridError(f"output folder {out.parent} does not exist")
  if not os.path.exists(args.checkpoint):
    raise MemoryGridError(f"checkpoint not found: {args.checkpoint}")
  loaded = checkpoint.load_model(args.checkpoint, expected_arch=ARCHS)
  module = loaded.module
  face, mel, where = _identity(args.data, args.split, args.clip, args.frame, module.image_size)
  mouths = slot_mouths(module, dict(loaded.variables), face, None if args.audio_free else mel)
  lower = mouths[:, mouths.shape[1] // 2:]
  stats = spread(lower)
  stats.update(identity=where, audio_free=bool(args.audio_free), checkpoint=args.checkpoint)
  ok, png = cv2.imencode(".png", grid_image(lower))
  if not ok:
    raise MemoryGridError("PNG encoding failed")
  files.atomic_write_bytes(out, png.tobytes())
  files.atomic_write_bytes(out.with_suffix(".json"), json.dumps(stats, indent=2).encode())
  return stats


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser (tests/test_docs.py checks the documented commands with it)."""
  p = argparse.ArgumentParser(prog="python -m lipsync_jax.evaluation.memory_grid",
                              description=__doc__.split("\n")[0])
  p.add_argument("--checkpoint", required=True, help="synctalkface model dir or training workdir")
  p.add_argument("--data", required=True, help="dataset folder (identity frames)")
  p.add_argument("--out", required=True, help="output .png (a .json with the spread beside it)")
  p.add_argument("--split", default="val")
  p.add_argument("--clip", type=int, default=0, help="clip index in the split")
  p.add_argument("--frame", type=float, default=0.5, help="position in the clip, 0-1")
  p.add_argument("--audio-free", action="store_true", help="f_aud = 0 (memory only)")
  return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  try:
    stats = run(args)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"{stats['slots']} slots -> {args.out}: slot spread {stats['slot_spread']:.4f}, "
        f"pairwise L1 {stats['pairwise_l1']:.4f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
