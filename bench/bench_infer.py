"""Inference benchmark: end-to-end fps by stage, generator vs PyTorch, memory.

    python bench/bench_infer.py                 # everything (~10 min on 2 cores)
    python bench/bench_infer.py --only e2e,gen  # skip the 60 s memory runs
    python bench/bench_infer.py --quick         # smoke test (short clips, few iters)
    python bench/bench_infer.py --only warm     # infer.py cold vs warm (compilation cache)
    python bench/bench_infer.py --only backends # XLA vs onnxruntime vs PyTorch, one table

Model: the full-size Wav2Lip generator with the baseline's deterministic
weight fill (../shared/baseline/README.md), converted from the PyTorch
reference (bench/torch_models.py) so both frameworks run identical weights;
random numpy weights when torch is not installed. Weights do not change the
speed, only what the mouth looks like.

  Wall-clock numbers depend on how busy the machine is; CPU-seconds per frame
  (process time, all threads) much less so: on C idle cores the ceiling is
  about C / cpu_s_per_frame frames/s.

  e2e   `LipSyncer.run` on a 224x224 VoxCeleb2 clip and a 512x512 HDTF clip
        from ../shared/data/real/av/, each with its own audio track (so the
        output is as long as the clip): frames/s end to end (compile excluded,
        reported separately), first with face detection ("cold") and then with
        the box track from the cache ("cached"). Per-stage seconds come from
        `RunReport.timings`: decode, detect, mel, generate, paste, encode run
        in overlapping threads, so they add up to more than the total.
  long  end to end on a long output: the VoxCeleb2 clip ping-ponged under
        60 s of speech, boxes cached, as frames/s and as a ratio to the
        generator alone at the same batch ("gen"); then decode, paste and
        encode each run alone on the clip's frames, in CPU-s/frame.
  still a still photo (the clip's first frame) with the clip's audio: the
        face encoder run once (`reuse_face_features`, the default) against
        the whole generator on every frame, generator only and end to end,
        alternating, median of `--iters` runs.
  gen   generator-only throughput at the inference batch size: the jitted
        JAX step (uint8 crops in, uint8 faces out) against the PyTorch
        reference model's forward (torch.inference_mode, float32, NCHW) in the
        same process, alternating, median of `--iters` runs.
  warm  `infer.py` as a user runs it, twice, each a fresh process, on the same
        clip (VoxCeleb2 224x224) and 3 s of speech: first with an empty cache
        root ("cold": XLA compiles the generator, faces are detected), then
        with new audio ("warm": the compiled generator and the box track come
        from $LIPSYNC_CACHE_DIR). Process wall time, time to first frame
        (from the start of the run) and frames/s end to end.
  backends  one table, one interleaved run, per model (Wav2Lip,
        LPIPS-AttnWav2Lip): generator-only frames/s under PyTorch eager
        (Wav2Lip), XLA, onnxruntime on our ONNX export (`lipsync_jax.export`)
        and on its static INT8 quantisation (speed only; calibrated on the
        HDTF clip's faces), and end to end on the 224x224 clip (boxes cached),
        with the 1-minute load average.
  mem   peak RSS of a whole run in a fresh subprocess, for the 5.1 s 224x224
        clip ping-ponged under 10 s and 60 s of speech
        (../shared/data/real/audio/musetalk/eng.wav), plus RSS sampled during
        the run: flat when memory does not grow with the length.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

BENCH_DIR = pathlib.Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))
SHARED = pathlib.Path(os.environ.get("LIPSYNC_SHARED", REPO.parent / "shared"))

CLIPS = {
    "224x224 VoxCeleb2": "data/real/av/voxceleb2/00002.mp4",
    "512x512 HDTF": "data/real/av/hdtf/WDA_AlexandriaOcasioCortez_000.mp4",
}
LONG_SPEECH = "data/real/audio/musetalk/eng.wav"


def _weights(width: float = 1.0, arch: str = "wav2lip"):
  """(module, variables, source) for a generator (full size at 1.0); the
  baseline's fill for Wav2Lip where torch is installed, else random."""
  import jax
  import numpy as np
  from lipsync_jax import models
  module = models.create(arch, width_multiplier=width)
  try:
    if width != 1.0 or arch != "wav2lip":
      raise ImportError("the torch reference is Wav2Lip at full width")
    import torch  # noqa: F401
    sys.path.insert(0, str(BENCH_DIR))
    import torch_models as tm
    from lipsync_jax import convert
    sd = tm.filled_state_dict(tm.create("wav2lip"), "wav2lip")
    return module, convert.torch_to_flax("wav2lip", sd, {}), "baseline fill (via torch)"
  except ImportError:
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0),
                            np.zeros((1, 80, 16, 1), np.float32),
                            np.zeros((1, 96, 96, 6), np.float32))
    rng = np.random.default_rng(0)

    def leaf(path, s):
      name = str(path[-1].key)
      if name in ("scale", "var"):
        return np.ones(s.shape, np.float32)
      if name in ("bias", "mean"):
        return np.zeros(s.shape, np.float32)
      return (rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]))).astype(np.float32)
    return module, jax.tree_util.tree_map_with_path(leaf, shapes), "random numpy fill"


def _speech_head(src, seconds: float, dst: str) -> str:
  """Writes the first `seconds` of `src`'s audio (16 kHz mono) to `dst`."""
  from lipsync_jax.io import audio as audio_lib
  import soundfile as sf
  sf.write(dst, audio_lib.load_audio(src)[:int(seconds * audio_lib.SAMPLE_RATE)],
           audio_lib.SAMPLE_RATE)
  return dst


def _rss_mb() -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  return 0.0


def _peak_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -----------------------------------------------------------------------------
# e2e + gen (in this process).
# -----------------------------------------------------------------------------

def bench_e2e(syncer, quick: bool) -> list[dict[str, Any]]:
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    cached_syncer = syncer.with_options(cache_dir=os.path.join(tmp, "cache"))
    for name, rel in CLIPS.items():
      clip = SHARED / rel
      audio = clip
      if quick:  # 1 s of the clip's audio
        audio = _speech_head(clip, 1.0, os.path.join(tmp, "quick.wav"))
      for mode in ("cold", "cached"):
        out = os.path.join(tmp, f"out_{mode}.mp4")
        cpu = time.process_time()
        r = cached_syncer.run(clip, audio, out)
        cpu = time.process_time() - cpu
        assert r.detection_cached == (mode == "cached")
        row = {"clip": name, "mode": mode, "frames": r.frames,
               "without_face": r.frames_without_face,
               "fps": r.frames / r.timings["total"],
               "cpu_s_per_frame": cpu / r.frames, **r.timings}
        rows.append(row)
        print(f"  {name:18s} {mode:6s} {row['fps']:6.1f} fps  "
              f"{row['cpu_s_per_frame']:.3f} cpu-s/frame  "
              + " ".join(f"{k}={r.timings[k]:.2f}" for k in r.timings), flush=True)
  return rows


def _torch_runner(mel, crops):
  """The PyTorch reference Wav2Lip's forward on the same batch (uint8 out),
  with the baseline's weight fill; None when torch is not installed."""
  import numpy as np
  try:
    import torch
  except ImportError:
    print("  (torch not installed: PyTorch column skipped)")
    return None
  sys.path.insert(0, str(BENCH_DIR))
  import torch_models as tm
  torch.set_num_threads(os.cpu_count() or 1)
  gen = tm.create("wav2lip").eval()
  gen.load_state_dict(tm.filled_state_dict(gen, "wav2lip"))
  faces = np.concatenate([crops, crops], -1).astype(np.float32) / 255
  faces[:, 48:, :, :3] = 0
  a_t = torch.from_numpy(np.ascontiguousarray(mel.transpose(0, 3, 1, 2)))
  f_t = torch.from_numpy(np.ascontiguousarray(faces.transpose(0, 3, 1, 2)))

  def torch_run():
    with torch.inference_mode():
      out = gen(a_t, f_t)
    return (out * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
  torch_run()
  return torch_run


def bench_gen(syncer, iters: int) -> dict[str, Any]:
  import numpy as np
  n = syncer.batch_size
  rng = np.random.default_rng(0)
  mel = np.clip(rng.normal(0, 1.5, (n, 80, 16, 1)), -4, 4).astype(np.float32)
  crops = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
  jax_run = lambda: np.asarray(syncer.generate_batch(syncer.variables, mel, crops))
  jax_run()
  runs = {"jax": jax_run}
  torch_run = _torch_runner(mel, crops)
  if torch_run is not None:
    runs["torch"] = torch_run
  times = {k: [] for k in runs}
  cpu = {k: [] for k in runs}
  for _ in range(iters):  # alternate, so that load from others hits both alike
    for k, fn in runs.items():
      t, c = time.perf_counter(), time.process_time()
      fn()
      times[k].append(time.perf_counter() - t)
      cpu[k].append(time.process_time() - c)
  res = {"batch": n}
  for k, ts in times.items():
    res[f"{k}_fps"] = n / statistics.median(ts)
    res[f"{k}_cpu_s_per_frame"] = statistics.median(cpu[k]) / n
    print(f"  generator only, {k:5s}: {res[f'{k}_fps']:6.1f} frames/s, "
          f"{res[f'{k}_cpu_s_per_frame']:.3f} cpu-s/frame (batch {n}, median of {iters})",
          flush=True)
  return res


def bench_long(syncer, gen_fps: float, quick: bool) -> dict[str, Any]:
  """End to end on a long output (the 224x224 clip ping-ponged under 60 s of
  speech, boxes cached) against the generator alone at the same batch, plus
  each CPU stage run alone, in CPU-seconds a frame."""
  import numpy as np
  from lipsync_jax.io import video
  from lipsync_jax.vision import blending
  clip = SHARED / CLIPS["224x224 VoxCeleb2"]
  res: dict[str, Any] = {"batch": syncer.batch_size, "generator_only_fps": gen_fps}
  with tempfile.TemporaryDirectory() as tmp:
    seconds = 6.0 if quick else 60.0
    speech = _speech_head(SHARED / LONG_SPEECH, seconds, os.path.join(tmp, "speech.wav"))
    cached = syncer.with_options(cache_dir=os.path.join(tmp, "cache"))
    cached.run(clip, speech, os.path.join(tmp, "warm.mp4"))  # boxes into the cache
    cpu = time.process_time()
    r = cached.run(clip, speech, os.path.join(tmp, "out.mp4"))
    cpu = time.process_time() - cpu
    res.update(frames=r.frames, seconds=seconds, e2e_fps=r.frames / r.timings["total"],
               e2e_cpu_s_per_frame=cpu / r.frames, timings=r.timings)
    res["ratio"] = res["e2e_fps"] / gen_fps
    # The CPU stages alone, on the clip's frames.
    frames = list(video.iter_frames(clip))
    h, w = frames[0].shape[:2]
    face = np.full((96, 96, 3), 128, np.uint8)
    box = (w // 4, h // 4, 3 * w // 4, 3 * h // 4)
    stages = {}
    c = time.process_time()
    n = sum(1 for _ in video.iter_frames(clip))
    stages["decode"] = (time.process_time() - c) / n
    c = time.process_time()
    for f in frames:
      blending.paste(f.copy(), box, face)
    stages["paste"] = (time.process_time() - c) / len(frames)
    c = time.process_time()
    with video.VideoWriter(os.path.join(tmp, "enc.mp4"), 25.0, w, h) as writer:
      for f in frames:
        writer.write(f)
    stages["encode"] = (time.process_time() - c) / len(frames)
    res["stage_cpu_s_per_frame"] = stages
  print(f"  {r.frames} frames ({seconds:.0f} s of speech, boxes cached): end to end "
        f"{res['e2e_fps']:.1f} frames/s = {res['ratio']:.2f}x the generator alone "
        f"({gen_fps:.1f} frames/s, batch {syncer.batch_size}); "
        f"{res['e2e_cpu_s_per_frame']:.3f} cpu-s/frame in all", flush=True)
  print("  CPU stages alone, cpu-s/frame: "
        + ", ".join(f"{k} {v:.4f}" for k, v in stages.items())
        + "; stage wall seconds in the run (overlapping): "
        + ", ".join(f"{k} {v:.1f}" for k, v in r.timings.items()), flush=True)
  return res


def bench_still(syncer, iters: int, quick: bool) -> dict[str, Any]:
  """A still photo: the face encoded once (`reuse_face_features`, the
  default) against the whole generator on every frame, alternating."""
  import cv2
  import numpy as np
  from lipsync_jax.io import video
  clip = SHARED / CLIPS["224x224 VoxCeleb2"]
  n = syncer.batch_size
  rng = np.random.default_rng(0)
  mel = np.clip(rng.normal(0, 1.5, (n, 80, 16, 1)), -4, 4).astype(np.float32)
  crop = rng.integers(0, 256, (1, 96, 96, 3), dtype=np.uint8)
  crops = np.repeat(crop, n, 0)
  feats = syncer.encode_still(syncer.variables, crop)
  gen = {"per_frame": lambda: np.asarray(syncer.generate_batch(syncer.variables, mel, crops)),
         "face_once": lambda: np.asarray(syncer.generate_still(syncer.variables, mel, feats))}
  res: dict[str, Any] = {"batch": n}
  with tempfile.TemporaryDirectory() as tmp:
    image = os.path.join(tmp, "face.png")
    cv2.imwrite(image, next(video.iter_frames(clip)))
    audio = _speech_head(clip, 1.0, os.path.join(tmp, "a.wav")) if quick else clip
    cached = syncer.with_options(cache_dir=os.path.join(tmp, "cache"))
    e2e = {"per_frame": cached.with_options(reuse_face_features=False), "face_once": cached}
    for s in e2e.values():  # compile both paths, fill the box cache
      s.run(image, audio, os.path.join(tmp, "warm.mp4"))
    for fn in gen.values():
      fn()
    times = {f"{k}_{w}": [] for k in gen for w in ("gen", "e2e")}
    cpu = {k: [] for k in times}
    for _ in range(iters):  # alternate, so that load from others hits both alike
      for k in gen:
        t, c = time.perf_counter(), time.process_time()
        gen[k]()
        times[f"{k}_gen"].append(n / (time.perf_counter() - t))
        cpu[f"{k}_gen"].append((time.process_time() - c) / n)
        c = time.process_time()
        r = e2e[k].run(image, audio, os.path.join(tmp, "out.mp4"))
        times[f"{k}_e2e"].append(r.frames / r.timings["total"])
        cpu[f"{k}_e2e"].append((time.process_time() - c) / r.frames)
  for k in times:
    res[f"{k}_fps"] = statistics.median(times[k])
    res[f"{k}_cpu_s_per_frame"] = statistics.median(cpu[k])
  for w, label in (("gen", "generator only"), ("e2e", "end to end")):
    a, b = res[f"per_frame_{w}_fps"], res[f"face_once_{w}_fps"]
    print(f"  still photo, {label:14s}: whole generator per frame {a:6.1f} frames/s, "
          f"face encoded once {b:6.1f} frames/s ({b / a:.2f}x; median of {iters})", flush=True)
  return res


def three_backends(module, variables, arch: str, batch_size: int, tmp: str,
                   calibration_frames: int = 64, spinning: bool = True, **options):
  """(XLA, onnxruntime, onnxruntime INT8) `LipSyncer`s of one generator at
  `batch_size` (the ONNX files written in `tmp`). The INT8 file is speed
  only (the weights are a fill, not a trained generator; quality is judged
  by `python -m lipsync_jax.export --int8`), quantised from the sub-pixel
  form (faster under INT8), calibrated on `calibration_frames` faces of the
  HDTF clip. `spinning`: of the onnxruntime sessions (`export.session`).
  `options`: `InferenceOptions` fields for all three."""
  from lipsync_jax import export
  from lipsync_jax.export import int8
  from lipsync_jax.inference import LipSyncer
  options.setdefault("cache_dir", os.path.join(tmp, "cache"))
  xla = LipSyncer(module, variables, arch=arch, batch_size=batch_size, **options)
  n = xla.batch_size
  t = time.perf_counter()
  rep = export.export_onnx(module, variables, arch, os.path.join(tmp, "g.onnx"),
                           batch_size=n, log=lambda m: None)
  print(f"  {arch}: exported in {time.perf_counter() - t:.1f} s, {rep.nodes} nodes, "
        f"relative error {rep.relative_error:.1e}, max abs {rep.max_abs_error:.1e}")
  ort = LipSyncer.from_onnx(rep.path, spinning=spinning, **options)
  t = time.perf_counter()
  q_path, sub_path = os.path.join(tmp, "g.int8.onnx"), os.path.join(tmp, "sub.onnx")
  pathlib.Path(sub_path).write_bytes(export.generator_onnx(
      module, variables, arch, n, transposed_convs="subpixel").SerializeToString())
  int8.quantize(sub_path, q_path, int8.face_batches(
      [SHARED / CLIPS["512x512 HDTF"]], 96, n, max_batches=max(2, calibration_frames // n)))
  print(f"  {arch}: quantised to INT8 in {time.perf_counter() - t:.1f} s")
  return xla, ort, LipSyncer.from_onnx(q_path, spinning=spinning, **options)


def bench_backends(batch_size: int, iters: int, quick: bool) -> list[dict[str, Any]]:
  """One interleaved run per model: the generator alone and end to end (the
  224x224 clip, boxes cached) under XLA, under onnxruntime on our export, and
  PyTorch eager's generator (Wav2Lip only), with the load average."""
  import numpy as np
  clip = SHARED / CLIPS["224x224 VoxCeleb2"]
  rows = []
  for arch in ("wav2lip", "lpips_attnwav2lip"):
    module, variables, source = _weights(arch=arch)
    with tempfile.TemporaryDirectory() as tmp:
      xla, ort, ort8 = three_backends(module, variables, arch, batch_size, tmp)
      n = xla.batch_size
      rng = np.random.default_rng(0)
      mel = np.clip(rng.normal(0, 1.5, (n, 80, 16, 1)), -4, 4).astype(np.float32)
      crops = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
      gens = {"XLA": lambda s=xla: np.asarray(s.generate_batch(s.variables, mel, crops)),
              "onnxruntime": lambda s=ort: s.generate_batch(s.variables, mel, crops),
              "onnxruntime INT8": lambda s=ort8: s.generate_batch(s.variables, mel, crops)}
      if arch == "wav2lip":
        torch_run = _torch_runner(mel, crops)
        if torch_run is not None:
          gens = {"PyTorch eager": torch_run, **gens}
      syncers = {"XLA": xla, "onnxruntime": ort, "onnxruntime INT8": ort8}
      audio = _speech_head(clip, 1.0, os.path.join(tmp, "a.wav")) if quick else clip
      for s in syncers.values():  # compile, fill the box cache
        s.run(clip, audio, os.path.join(tmp, "warm.mp4"))
      for fn in gens.values():
        fn()
      gen_fps = {k: [] for k in gens}
      e2e_fps = {k: [] for k in syncers}
      loads = []
      for _ in range(iters):  # alternate, so that load from others hits all alike
        loads.append(os.getloadavg()[0])
        for k, fn in gens.items():
          t = time.perf_counter()
          fn()
          gen_fps[k].append(n / (time.perf_counter() - t))
          if k in syncers:
            r = syncers[k].run(clip, audio, os.path.join(tmp, "out.mp4"))
            e2e_fps[k].append(r.frames / r.timings["total"])
      base = statistics.median(gen_fps.get("PyTorch eager", gen_fps["XLA"]))
      for k in gens:
        g = statistics.median(gen_fps[k])
        rows.append({"model": arch, "backend": k, "batch": n, "weights": source,
                     "gen_fps": g, "gen_vs_torch": g / base if "PyTorch eager" in gens else None,
                     "e2e_fps": statistics.median(e2e_fps[k]) if k in e2e_fps else None,
                     "load_avg": statistics.mean(loads)})
  print(f"  {'model':18s} {'backend':16s} {'generator f/s':>13s} {'vs PyTorch':>10s} "
        f"{'end to end f/s':>14s} {'load avg':>8s}")
  for r in rows:
    vs = f"{r['gen_vs_torch']:.2f}x" if r["gen_vs_torch"] else "-"
    e2e = f"{r['e2e_fps']:.1f}" if r["e2e_fps"] else "-"
    print(f"  {r['model']:18s} {r['backend']:16s} {r['gen_fps']:13.1f} {vs:>10s} "
          f"{e2e:>14s} {r['load_avg']:8.2f}", flush=True)
  return rows


# -----------------------------------------------------------------------------
# mem (one subprocess per audio length).
# -----------------------------------------------------------------------------

def mem_worker(seconds: float, batch_size: int, width: float) -> dict[str, Any]:
  import numpy as np
  import soundfile as sf
  from lipsync_jax.io import audio as audio_lib
  from lipsync_jax.inference import LipSyncer
  module, variables, _ = _weights(width)
  syncer = LipSyncer(module, variables, batch_size=batch_size)
  syncer.warmup()
  rss_ready = _rss_mb()
  samples: list[tuple[float, float]] = []
  stop = threading.Event()

  def sample():
    t0 = time.perf_counter()
    while not stop.wait(0.5):
      samples.append((time.perf_counter() - t0, _rss_mb()))
  with tempfile.TemporaryDirectory() as tmp:
    wav = audio_lib.load_audio(SHARED / LONG_SPEECH)[:int(seconds * 16000)]
    speech = os.path.join(tmp, "speech.wav")
    sf.write(speech, wav, 16000)
    syncer = syncer.with_options(cache_dir=os.path.join(tmp, "cache"))
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    r = syncer.run(SHARED / CLIPS["224x224 VoxCeleb2"], speech, os.path.join(tmp, "o.mp4"))
    stop.set()
    th.join()
  rss = np.array([s[1] for s in samples] or [rss_ready])
  half = len(rss) // 2
  return {"audio_seconds": seconds, "frames": r.frames, "fps": r.frames / r.timings["total"],
          "rss_after_compile_mb": rss_ready, "peak_rss_mb": _peak_mb(),
          "rss_max_first_half_mb": float(rss[:max(half, 1)].max()),
          "rss_max_second_half_mb": float(rss[half:].max()) if half else float(rss.max())}


def bench_mem(lengths: list[float], batch_size: int, width: float) -> list[dict[str, Any]]:
  rows = []
  for s in lengths:
    cmd = [sys.executable, __file__, "--worker-mem", str(s), "--batch-size", str(batch_size),
           "--mem-width", str(width)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
      raise RuntimeError(f"memory worker failed: {out.stderr[-2000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    rows.append(row)
    print(f"  {s:5.0f} s of audio, {row['frames']} frames: peak RSS {row['peak_rss_mb']:.0f} MB "
          f"(after compile {row['rss_after_compile_mb']:.0f} MB; max RSS first half "
          f"{row['rss_max_first_half_mb']:.0f} MB, second half "
          f"{row['rss_max_second_half_mb']:.0f} MB), {row['fps']:.1f} fps", flush=True)
  return rows


WARM_CLIP = "data/real/av/voxceleb2/00002.mp4"
WARM_AUDIO = ("data/real/audio/librivox_pocketsphinx/sense_and_sensibility_01_austen_64kb-0870.wav",
              "data/real/audio/librivox_pocketsphinx/sense_and_sensibility_01_austen_64kb-0880.wav")


def bench_warm(batch_size: int) -> list[dict[str, Any]]:
  """`infer.py` in two fresh processes sharing one cache root: cold, then warm."""
  import jax
  from lipsync_jax import checkpoint
  module, variables, source = _weights()
  del module
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    model = os.path.join(tmp, "model")
    checkpoint.save_model(model, "wav2lip", {}, jax.device_get(variables),
                          extra_meta={"weights": source})
    env = {k: v for k, v in os.environ.items()
           if k not in ("JAX_COMPILATION_CACHE_DIR", "XLA_FLAGS")}
    env["LIPSYNC_CACHE_DIR"] = os.path.join(tmp, "cache")
    for run, audio in zip(("cold", "warm"), WARM_AUDIO):
      # Both speeches cut to the same length: the runs differ by the cache alone.
      wav = _speech_head(SHARED / audio, 3.0, os.path.join(tmp, f"{run}.wav"))
      report = os.path.join(tmp, f"{run}.json")
      cmd = [sys.executable, str(REPO / "infer.py"), "--checkpoint", model,
             "--face", str(SHARED / WARM_CLIP), "--audio", wav,
             "--outfile", os.path.join(tmp, f"{run}.mp4"), "--report", report,
             "--batch-size", str(batch_size)]
      t0 = time.perf_counter()
      proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
      wall = time.perf_counter() - t0
      if proc.returncode != 0:
        raise RuntimeError(f"infer.py failed: {proc.stderr[-2000:]}")
      rep = json.loads(pathlib.Path(report).read_text())
      rep = rep[0] if isinstance(rep, list) else rep
      t = rep["timings"]
      row = {"run": run, "wall_s": wall, "first_frame_s": t["first_frame"],
             "run_total_s": t["total"], "frames": rep["frames"],
             "fps_end_to_end": rep["frames"] / wall, "detection_cached": rep["detection_cached"]}
      rows.append(row)
      print(f"  {run:5s}: process {wall:5.1f} s (start-up and model {wall - t['total']:4.1f} s, "
            f"run {t['total']:4.1f} s, first frame after {t['first_frame']:4.1f} s, generate "
            f"{t['generate']:4.1f} s), {rep['frames']} frames, boxes cached: "
            f"{rep['detection_cached']}")
  print(f"  warm / cold process wall time: {rows[1]['wall_s'] / rows[0]['wall_s']:.2f}")
  return rows


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser (tests/test_docs.py checks the documented commands with it)."""
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--only", default="e2e,gen,long,still,backends,mem,warm",
                 help="comma list of e2e,gen,long,still,backends,mem,warm")
  p.add_argument("--batch-size", type=int, default=32)
  p.add_argument("--iters", type=int, default=5)
  p.add_argument("--quick", action="store_true")
  p.add_argument("--json", help="write the results here")
  p.add_argument("--mem-width", type=float, default=1.0,
                 help="generator width for the memory runs (1.0 = full Wav2Lip; smaller "
                      "is faster and shows the same growth, or its absence)")
  p.add_argument("--worker-mem", type=float, help=argparse.SUPPRESS)
  return p


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  if args.worker_mem is not None:
    print(json.dumps(mem_worker(args.worker_mem, args.batch_size, args.mem_width)))
    return 0
  if not SHARED.is_dir():
    print(f"error: needs the shared data folder at {SHARED}", file=sys.stderr)
    return 2

  import jax
  from lipsync_jax.inference import LipSyncer
  only = set(args.only.split(","))
  results: dict[str, Any] = {"cpu_count": os.cpu_count(), "devices": str(jax.devices()),
                             "load_avg_start": os.getloadavg()}
  print(f"devices: {jax.devices()}  load average: {os.getloadavg()}")
  if only & {"e2e", "gen", "long", "still"}:
    module, variables, source = _weights()
    syncer = LipSyncer(module, variables, batch_size=args.batch_size)
    t = time.perf_counter()
    syncer.warmup()
    results["weights"] = source
    results["compile_s"] = time.perf_counter() - t
    print(f"Wav2Lip generator ({source}), batch {syncer.batch_size}: compile "
          f"{results['compile_s']:.1f} s")
    if "e2e" in only:
      print("end to end:")
      results["e2e"] = bench_e2e(syncer, args.quick)
    if "gen" in only:
      print("generator only:")
      results["gen"] = bench_gen(syncer, 2 if args.quick else args.iters)
    if "long" in only:
      print("long output, end to end vs the generator alone:")
      gen_fps = (results["gen"]["jax_fps"] if "gen" in results
                 else bench_gen(syncer, 2 if args.quick else args.iters)["jax_fps"])
      results["long"] = bench_long(syncer, gen_fps, args.quick)
    if "still" in only:
      results["still"] = {}
      for arch in ("wav2lip", "lpips_attnwav2lip"):
        print(f"still photo, {arch} (the face encoded once vs the whole generator per frame):")
        if arch != "wav2lip":
          syncer = LipSyncer(*_weights(arch=arch)[:2], arch=arch, batch_size=args.batch_size)
        results["still"][arch] = bench_still(syncer, 2 if args.quick else args.iters,
                                             args.quick)
  if "backends" in only:
    print(f"backends, one interleaved run (median of {2 if args.quick else args.iters}):")
    results["backends"] = bench_backends(args.batch_size, 2 if args.quick else args.iters,
                                         args.quick)
  if "warm" in only:
    print("infer.py cold vs warm (fresh processes, one cache root):")
    results["warm"] = bench_warm(args.batch_size)
  if "mem" in only:
    print(f"memory (fresh process per run, generator width {args.mem_width}):")
    results["mem_width"] = args.mem_width
    results["mem"] = bench_mem([2.0, 4.0] if args.quick else [10.0, 60.0], args.batch_size,
                               args.mem_width)
  results["load_avg_end"] = os.getloadavg()
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(results, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
