"""Data pipeline benchmark: preprocessing, face detection, frame codecs, loader.

  python bench/bench_data.py [--shared ../shared] [--workers 2]
      [--out /tmp/bench_data] [--loader-batches 20]

Prints:
* preprocessing throughput (frames/s, wall clock incl. worker start-up) on
  ``shared/data/real/av/`` and per clip: frames, face-detection rate, box
  jitter (mean frame-to-frame centre motion / box size) of the raw detections
  and of the smoothed track;
* detector speed (ms/frame) alone;
* frame codec size and decode cost for the dataset's 96x96 crops;
* loader throughput (samples/s) for both kinds, against the samples one
  training step consumes.
"""

from __future__ import annotations

import argparse
import itertools
import os
import pathlib
import shutil
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # pylint: disable=wrong-import-position

from lipsync_jax.vision import face_detection as fd  # pylint: disable=wrong-import-position
from lipsync_jax.io import video  # pylint: disable=wrong-import-position
from lipsync_jax.data import format as fmt  # pylint: disable=wrong-import-position
from lipsync_jax.data import make_loader  # pylint: disable=wrong-import-position
from lipsync_jax.data import preprocess_lib  # pylint: disable=wrong-import-position


def _table(rows: list[tuple]) -> str:
  rows = [tuple(str(c) for c in r) for r in rows]
  w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  return "\n".join("  ".join(c.ljust(w[i]) for i, c in enumerate(r))
                   for r in rows)


def bench_preprocess(av: pathlib.Path, out: pathlib.Path, workers: int,
                     detector: str) -> None:
  if out.exists():
    shutil.rmtree(out)
  t = time.time()
  report = preprocess_lib.run(av, out, preprocess_lib.PrepConfig(
      detector=detector), workers=workers, progress=False)
  wall = time.time() - t
  rows = [("clip", "status", "frames", "face rate", "jitter raw",
           "jitter smoothed", "s")]
  frames = 0
  for e in report["clips"]:
    n = e.get("frames", 0)
    frames += n
    rate = f"{e['face_frames'] / n:.3f}" if n else "-"
    rows.append((e["clip_id"], e["status"] if e["status"] == "ok" else
                 f"{e['status']}: {e['reason']}", n, rate,
                 e.get("jitter_raw", "-"), e.get("jitter", "-"),
                 e.get("seconds", "-")))
  print(_table(rows))
  cpu = sum(e.get("seconds", 0) for e in report["clips"])
  print(f"\npreprocess: {len(report['clips'])} clips, {frames} frames at 25 "
        f"fps, wall {wall:.1f} s with {workers} worker(s) -> {frames / wall:.1f}"
        f" frames/s (incl. start-up); per-clip work {cpu:.1f} s -> "
        f"{frames / max(cpu, 1e-9):.1f} frames/s per worker")


def bench_detectors(av: pathlib.Path, names: list[str]) -> None:
  clips = sorted(p for p in av.rglob("*") if p.is_file())
  frames = []
  for c in clips:
    frames += list(itertools.islice(video.iter_frames(c, fps=25), 0, 50, 10))
  rows = [("detector", "frames", "with face", "ms/frame")]
  for name in names:
    try:
      det = fd.create_detector(name)
    except fd.FaceDetectionError as e:
      rows.append((name, "-", f"unavailable: {e}", "-"))
      continue
    t = time.time()
    res = det.detect(frames)
    dt = time.time() - t
    rows.append((name, len(frames), f"{np.mean([len(r) > 0 for r in res]):.3f}",
                 f"{dt / len(frames) * 1e3:.1f}"))
  print(_table(rows))


def bench_codecs(data_dir: pathlib.Path) -> None:
  index = fmt.load_index(data_dir)
  reader = fmt.ClipReader(data_dir, index.codec, index.img_size)
  crops = []
  for c in index.clips:
    good = np.nonzero(c.found)[0][:40]
    crops += [reader.frames(c, int(t), 1)[0] for t in good]
  rows = [("codec", "bytes/frame", "encode ms", "decode ms", "PSNR dB")]
  for codec in fmt.CODECS:
    t = time.time()
    enc = [fmt.encode_frame(x, codec) for x in crops]
    te = (time.time() - t) / len(crops) * 1e3
    t = time.time()
    dec = [fmt.decode_frame(b, codec, index.img_size) for b in enc]
    td = (time.time() - t) / len(crops) * 1e3
    err = np.mean([np.mean((a.astype(float) - b) ** 2)
                   for a, b in zip(crops, dec)])
    psnr = "lossless" if err == 0 else f"{10 * np.log10(255 ** 2 / err):.1f}"
    rows.append((codec, int(np.mean([len(b) for b in enc])), f"{te:.3f}",
                 f"{td:.3f}", psnr))
  print(f"(relative to the stored {index.codec} crops)")
  print(_table(rows))


def bench_loader(data_dir: pathlib.Path, batches: int) -> None:
  rows = [("kind", "batch", "workers", "samples/s", "batches/s")]
  for kind, batch in (("syncnet", 64), ("generator", 16)):
    for workers in (0, 2):
      it = iter(make_loader(data_dir, "all", kind, batch, seed=0,
                            worker_count=workers, shard_index=0,
                            shard_count=1))
      next(it)  # start-up (worker spawn) excluded
      t = time.time()
      for _ in range(batches):
        next(it)
      dt = time.time() - t
      rows.append((kind, batch, workers, f"{batches * batch / dt:.0f}",
                   f"{batches / dt:.2f}"))
      del it
  print(_table(rows))
  print("one training step consumes one batch: 64 samples (SyncNet) or 16 "
        "(generator, 5 target + 5 reference frames each)")


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser (tests/test_docs.py checks the documented commands with it)."""
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--shared", default=str(
      pathlib.Path(__file__).resolve().parents[2] / "shared"))
  p.add_argument("--workers", type=int, default=2)
  p.add_argument("--detector", default="default")
  p.add_argument("--out", default=os.path.join(tempfile.gettempdir(),
                                               "bench_data"))
  p.add_argument("--loader-batches", type=int, default=20)
  p.add_argument("--skip-preprocess", action="store_true",
                 help="reuse the dataset in --out")
  return p


def main() -> int:
  a = build_parser().parse_args()
  av = pathlib.Path(a.shared) / "data" / "real" / "av"
  if not av.is_dir():
    print(f"error: no clips at {av}", file=sys.stderr)
    return 2
  out = pathlib.Path(a.out)
  print("== detectors (every 10th frame of the first 50 of each clip) ==")
  bench_detectors(av, ["blazeface", "blazeface_full", "haar"])
  if not a.skip_preprocess:
    print("\n== preprocessing ==")
    bench_preprocess(av, out, a.workers, a.detector)
  print("\n== frame codecs ==")
  bench_codecs(out)
  print("\n== loader ==")
  bench_loader(out, a.loader_batches)
  return 0


if __name__ == "__main__":
  sys.exit(main())
