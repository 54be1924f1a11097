"""The two-stage model on real faces, judged twice: unseen speakers and GRID s1.

    python bench/two_stage_real.py [--model builtin] [--workdir runs/two_stage_real]
        [--lip-smoothing] [--lower-face-paste] [--adapt-steps N]
        [--suite unseen,grid,long] [--grid-data DATA] [--grid-clips 40]

`--suite unseen`: the 10 held-out speakers of the landmark expert
(configs/lip_sync.py SHARED_VAL_SPEAKERS), each driven by two LibriVox
speeches (20 videos), scored by

  * the built-in scorer (lip_sync:builtin): the share of videos whose best
    offset is within +-1 of the *source clip's own* best offset (the clips
    carry audio lags of their own), and within +-1 of 0;
  * the energy judge (evaluation/energy_judge.py, no learned sync weights):
    the share whose best lag is within +-1 of 0, beside the same judge on the
    source clips with their own audio (the reference), and a second reading
    of the same videos cropped along their sources' face tracks (on these
    short clips a crop a pixel or two away changes a third of the verdicts);
  * the control: both judges on each source's own face, laid out as the
    output's frames were drawn on it, under the new speech (a mouth that
    never heard it: what chance gives);

and each face lip-synced to its own speech, against its source frames:
mouth PSNR / SSIM / LPIPS, sharpness and colour speckle beside the source's
(`real_face_generator.reconstruction`), beside the sources through a round
trip at the renderer's size (`source_at_96px`: what a renderer that drew
every face perfectly at 96 px would read), and `mouth_grid.png` (truth, ours
on its own speech, ours on LibriVox). With `--adapt-steps N` the renderer is
adapted to each face first (infer.py's `--adapt-steps`): on its whole clip
for the LibriVox videos, and on the first half of its frames for its own
speech, whose second half alone is scored, beside the model unadapted on
the same frames.

`--suite long`: the same 10 faces, each driven by three longer speeches:
the three LibriVox speeches one after another (15.4 s), the first 20 s of
MuseTalk's English `eng.wav` and GeneFace's 10.9 s English `zozo.wav` (30
videos), scored by both judges beside the control. One LibriVox speech
lasts 3.0-7.1 s, and on 75 frames the energy judge's 17 lags often tie;
270-500 frames make its verdict on one video worth reading.

`--suite grid`: GRID s1 test sentences never trained on (the `test` split of
`--grid-data`, a `data_prep/preprocess.py` dataset of ../shared/data/grid_s1),
driven by their own audio: face PSNR / SSIM (128 px face crops, area-resized
from the scorer's 192 px crops; the output is cropped along its source's
face track, so both crops frame the same pixels), mouth
LPIPS, LMD (FaceMesh lip points, in pixels of a 96 px crop) and both sync
judges; and the first 10 driven by LibriVox speech, scored by both judges.

Each video is made once (rerun to resume); the tables are printed and
written to WORKDIR/results.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

SPEECH = ("sense_and_sensibility_01_austen_64kb-0870.wav",
          "sense_and_sensibility_01_austen_64kb-0880.wav",
          "sense_and_sensibility_01_austen_64kb-0890.wav")
# --suite long: name -> (files under ../shared/data/real/audio, joined in
# order; seconds kept, 0: all).
LONG_SPEECH = {"librivox": (tuple(f"librivox_pocketsphinx/{s}" for s in SPEECH), 0.0),
               "eng": (("musetalk/eng.wav",), 20.0),
               "zozo": (("geneface/zozo.wav",), 0.0)}
FACE_CROP = 128
GRID_CROP = 256   # mouth_grid.png: the lower halves of 256 px face crops


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser (tests/test_docs.py checks the documented commands with it)."""
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", default="builtin",
                 help="a two-stage model directory, or builtin (the shipped one)")
  p.add_argument("--workdir", default="runs/two_stage_real")
  p.add_argument("--shared", default=str(REPO.parent / "shared"))
  p.add_argument("--suite", default="unseen,grid",
                 help="comma-separated: unseen, grid, long (unseen faces, longer speech)")
  p.add_argument("--grid-data", default="data/grid_s1",
                 help="data_prep dataset of ../shared/data/grid_s1 (its test split is judged)")
  p.add_argument("--grid-clips", type=int, default=40,
                 help="GRID test sentences to judge (0: all)")
  p.add_argument("--faces", type=int, default=0,
                 help="judge only the first N unseen faces (0: all 10)")
  p.add_argument("--lip-smoothing", action="store_true",
                 help="smooth stage 1's lips over +-1 frame (infer.py's --lip-smoothing)")
  p.add_argument("--adapt-steps", type=int, default=0,
                 help="adapt the renderer to each face input first (infer.py's --adapt-steps); "
                      "own-speech reconstruction then adapts on each source's first half and "
                      "scores its second half, beside the model unadapted on the same frames")
  p.add_argument("--lower-face-paste", action="store_true",
                 help="paste the whole lower face (infer.py's --lower-face-paste) instead of "
                      "the region around the mouth")
  return p


class Judges:
  """Both sync judges on finished videos, FaceMesh run once per video; the
  source videos' crops and lips are kept, as every model is judged against
  the same ones."""

  def __init__(self):
    from lipsync_jax.evaluation import metrics
    from lipsync_jax.vision import face_detection
    self.scorer = metrics.load_builtin_scorer()
    self.detector = face_detection.create_detector("default")
    self._sources: dict[str, dict] = {}

  def read(self, path: pathlib.Path, track=None) -> dict:
    """Face crops (n, S, S, 3) at the scorer's size S, their first frame and
    fps, FaceMesh's lips (n, P, 2) with validity (n,), and the face track.
    With `track` (a source's), the video is cropped along it instead of
    being detected anew."""
    from lipsync_jax.vision import face_crops
    if track is None:
      track = face_crops.face_track(str(path), self.detector)
    crops = face_crops.crops_along(str(path), track, self.scorer.face_size)
    lips, valid = self.scorer.lips(crops)      # FaceMesh once, for both judges
    return {"crops": crops, "first": track.start, "fps": track.fps, "lips": lips,
            "valid": valid, "track": track}

  def source(self, path: pathlib.Path) -> dict:
    """`read` of a source video, kept."""
    if str(path) not in self._sources:
      self._sources[str(path)] = self.read(path)
    return self._sources[str(path)]

  def score(self, path: pathlib.Path, seen: dict) -> dict:
    """Both judges' best offsets of a video already `read`."""
    from lipsync_jax.evaluation import metrics
    from lipsync_jax.io import audio as audio_lib
    wav = audio_lib.load_audio(path)
    r = metrics.sync_scores(self.scorer, seen["crops"], metrics.ClipAudio(wav=wav), seen["fps"],
                            first_frame=seen["first"], padding="exclude",
                            video_windows=self.scorer.lip_video_windows(seen["lips"],
                                                                        seen["valid"]))
    lag, jr, jr0 = _energy(seen, wav)
    return {"video": path.name, "offset": int(r.offset), "lse_d": float(r.lse_d),
            "judge_lag": lag, "judge_r": jr, "judge_r0": jr0}

  def energy_along_source(self, path: pathlib.Path, source: dict) -> dict:
    """The energy judge on the video `path` cropped along its *source's*
    face track (`source`, its `read`) instead of the track detected on the
    output: a second FaceMesh reading of the same frames, a crop a pixel
    or two away. On 3-7 s of speech the two readings' verdicts differ on a
    third of the videos (docs/two_stage.md), so the bench gives both.
    Returns {"judge_lag_along", "judge_r0_along"}."""
    from lipsync_jax.io import audio as audio_lib
    lag, _, r0 = _energy(self.read(path, track=source["track"]), audio_lib.load_audio(path))
    return {"judge_lag_along": lag, "judge_r0_along": r0}

  def __call__(self, path: pathlib.Path) -> dict:
    return self.score(path, self.read(path))

  def chance(self, source: dict, path: pathlib.Path, seen: dict) -> dict:
    """Both judges on the *source's own* face (`source`, its `read`) under
    the speech of the output video `path` (`seen`, its `read`): the control,
    a mouth that never heard that speech. The output's frame j was drawn on
    source frame `ping_pong_index(j)`, so the source's crops and lips are
    laid out the same way. Returns {"chance_offset", "chance_lag",
    "chance_r"}."""
    from lipsync_jax.inference.sources import ping_pong_index
    n_src = source["first"] + len(source["lips"])
    idx = np.asarray([ping_pong_index(seen["first"] + j, n_src) - source["first"]
                      for j in range(len(seen["lips"]))])
    # Source frames before its track's first face have no lips.
    has = idx >= 0
    idx = np.maximum(idx, 0)
    laid_out = {"crops": source["crops"][idx], "lips": source["lips"][idx],
                "valid": source["valid"][idx] & has, "fps": seen["fps"],
                "first": seen["first"]}
    r = self.score(path, laid_out)
    return {"chance_offset": r["offset"], "chance_lag": r["judge_lag"],
            "chance_r": r["judge_r"], "chance_r0": r["judge_r0"]}


def _energy(seen: dict, wav: np.ndarray) -> tuple:
  """The energy judge on a `Judges.read` and its audio: (best lag, r there,
  r at lag 0), all None when it cannot judge (too few frames with lips)."""
  from lipsync_jax.evaluation import energy_judge
  try:
    j = energy_judge.lip_energy_lag(seen["lips"], seen["valid"], wav, seen["first"], seen["fps"])
  except energy_judge.JudgeError:
    return None, None, None
  return j.best_lag, j.r_best, j.r_zero


def _mean(values) -> float | None:
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


def _median(values) -> float | None:
  values = [v for v in values if v is not None]
  return float(np.median(values)) if values else None


def share(values, targets, tol=1) -> str:
  pairs = [(a, b) for a, b in zip(values, targets) if a is not None and b is not None]
  if not pairs:
    return "n/a"
  hits = sum(abs(a - b) <= tol for a, b in pairs)
  return f"{100 * hits / len(pairs):.0f}% ({hits}/{len(pairs)})"


def unseen_faces(shared: pathlib.Path, limit: int = 0) -> list:
  """The landmark expert's 10 held-out speakers' clips in ../shared (the
  first `limit`; 0: all), sorted."""
  sys.path.insert(0, str(REPO / "configs"))
  from lip_sync import SHARED_VAL_SPEAKERS  # pylint: disable=import-error
  videos = shared / "data" / "real" / "av"
  faces = sorted(f for f in videos.rglob("*") if f.suffix in (".mp4", ".mpg")
                 and f.relative_to(videos).with_suffix("").as_posix() in SHARED_VAL_SPEAKERS)
  return faces[:limit] if limit else faces


def drive(syncer, judges, faces: list, speeches_for, out: pathlib.Path,
          tag=lambda speech: speech.stem[-4:], along_source: bool = False
          ) -> tuple[list, dict]:
  """Lip-syncs face i to each speech of `speeches_for(i)` into
  OUT/FACE__TAG.mp4 (made once: a rerun resumes) and judges each video
  beside its control. Returns (rows, sources):
  a row per video (`Judges.score` + `Judges.chance` + "face" + "speech", its
  tag), and both
  judges on each source clip with its own audio, by face stem. With
  `along_source`, each row also has the energy judge on the video cropped
  along its source's face track (`Judges.energy_along_source`)."""
  import tqdm
  rows, sources = [], {}
  for i, face in enumerate(tqdm.tqdm(faces, desc="unseen faces", unit="face")):
    source = judges.source(face)
    sources[face.stem] = judges.score(face, source)
    for s in speeches_for(i):
      target = out / f"{face.stem}__{tag(s)}.mp4"
      if not target.is_file():
        syncer.run(face, s, target)
      seen = judges.read(target)
      rows.append(dict(judges.score(target, seen), face=face.stem, speech=tag(s),
                       **judges.chance(source, target, seen),
                       **(judges.energy_along_source(target, source) if along_source else {})))
  return rows, sources


def long_speech(syncer, judges, shared: pathlib.Path, work: pathlib.Path, limit: int = 0) -> dict:
  """`--suite long`: the unseen faces driven by `LONG_SPEECH`; both judges'
  shares within +-1 of 0 for ours and for the control, and median r."""
  from lipsync_jax.io import audio as audio_lib
  import soundfile
  out = work / "long"
  out.mkdir(parents=True, exist_ok=True)
  speech = []
  for name, (files, seconds) in LONG_SPEECH.items():
    path = out / f"{name}.wav"
    if not path.is_file():
      wav = np.concatenate([audio_lib.load_audio(shared / "data" / "real" / "audio" / f)
                            for f in files])
      if seconds:
        wav = wav[:int(seconds * audio_lib.SAMPLE_RATE)]
      soundfile.write(path, wav, audio_lib.SAMPLE_RATE)
    speech.append(path)
  rows, sources = drive(syncer, judges, unseen_faces(shared, limit), lambda i: speech, out,
                        tag=lambda s: s.stem)
  src = [sources[r["face"]] for r in rows]
  return {
      "videos": len(rows),
      "speech_seconds": {p.stem: round(soundfile.info(p).duration, 2) for p in speech},
      "scorer_within1_of_source": share([r["offset"] for r in rows], [s["offset"] for s in src]),
      "per_speech": {p.stem: {
          key: share(values, [0] * len(values))
          for key, values in (
              ("scorer_within1_of_0", [r["offset"] for r in rows if r["speech"] == p.stem]),
              ("judge_within1_of_0", [r["judge_lag"] for r in rows if r["speech"] == p.stem]))}
          for p in speech},
      "scorer_within1_of_0": share([r["offset"] for r in rows], [0] * len(rows)),
      "judge_within1_of_0": share([r["judge_lag"] for r in rows], [0] * len(rows)),
      "scorer_chance_within1_of_0": share([r["chance_offset"] for r in rows], [0] * len(rows)),
      "judge_chance_within1_of_0": share([r["chance_lag"] for r in rows], [0] * len(rows)),
      "judge_r_median": {"ours": _median([r["judge_r"] for r in rows]),
                         "control": _median([r["chance_r"] for r in rows])},
      "rows": rows}


def unseen(syncer, judges, shared: pathlib.Path, work: pathlib.Path, limit: int = 0) -> dict:
  import real_face_generator  # pylint: disable=import-error
  speech = [shared / "data" / "real" / "audio" / "librivox_pocketsphinx" / s for s in SPEECH]
  faces = unseen_faces(shared, limit)
  out = work / "unseen"
  (out / "own").mkdir(parents=True, exist_ok=True)
  rows, sources = drive(syncer, judges, faces,
                        lambda i: [speech[(i + k) % len(speech)] for k in range(2)], out,
                        along_source=True)
  adapting = bool(syncer.options.adapt_steps)
  if adapting:   # own speech: learn from the first half, score the second
    (out / "own_unadapted").mkdir(exist_ok=True)
    runs = ((first_half_adapting(syncer), out / "own"),
            (syncer.with_options(adapt_steps=0), out / "own_unadapted"))
  else:
    runs = ((syncer, out / "own"),)
  for run_syncer, folder in runs:
    for face in faces:
      own = folder / f"{face.stem}.mp4"
      if not own.is_file():
        run_syncer.run(face, face, own)
  recon = real_face_generator.reconstruction(
      {"ours": out / "own", **({"unadapted": out / "own_unadapted"} if adapting else {})},
      faces, judges.detector, second_half=adapting, ceiling_size=syncer.face_size)
  src = [sources[r["face"]] for r in rows]
  table = {
      "videos": len(rows),
      "scorer_within1_of_source": share([r["offset"] for r in rows], [s["offset"] for s in src]),
      "scorer_within1_of_0": share([r["offset"] for r in rows], [0] * len(rows)),
      "judge_within1_of_0": share([r["judge_lag"] for r in rows], [0] * len(rows)),
      # The same videos cropped along their sources' face tracks: a second reading.
      "judge_along_source_within1_of_0": share([r["judge_lag_along"] for r in rows],
                                               [0] * len(rows)),
      "judge_sources_within1_of_0": share([s["judge_lag"] for s in sources.values()],
                                           [0] * len(sources)),
      # The control: each source's own mouth under the new speech.
      "scorer_chance_within1_of_0": share([r["chance_offset"] for r in rows], [0] * len(rows)),
      "judge_chance_within1_of_0": share([r["chance_lag"] for r in rows], [0] * len(rows)),
      "judge_r_median": {
          "ours": _median([r["judge_r"] for r in rows]),
          "control": _median([r["chance_r"] for r in rows]),
          "sources": _median([s["judge_r"] for s in sources.values()])},
      # r at lag 0: a continuous reading, steadier than a verdict per video.
      "judge_r0_mean": {
          "ours": _mean([r["judge_r0"] for r in rows]),
          "ours_along_source": _mean([r["judge_r0_along"] for r in rows]),
          "control": _mean([r["chance_r0"] for r in rows]),
          "sources": _mean([s["judge_r0"] for s in sources.values()])},
      "judge_within1_of_source": share([r["judge_lag"] for r in rows],
                                        [s["judge_lag"] for s in src]),
      "rows": rows, "sources": sources, "reconstruction": recon}
  mouth_grid(faces[:4], out, work / "mouth_grid.png")
  return table


def first_half_adapting(syncer):
  """A copy of an adapting syncer that adapts on the first half of each face
  input's frames only, so that own-speech reconstruction can be scored on
  frames the renderer never trained on."""
  import copy
  other = copy.copy(syncer)
  def adapted_variables(crops, lips, valid):
    valid = np.array(valid, bool)
    valid[len(valid) // 2:] = False
    return type(syncer).adapted_variables(other, crops, lips, valid)
  other.adapted_variables = adapted_variables
  return other


def mouth_grid(faces, out: pathlib.Path, path: pathlib.Path) -> None:
  """Rows: the source's mouth, ours on its own speech, ours on LibriVox; three
  moments of each face (the lower halves of GRID_CROP px face crops)."""
  import cv2
  from lipsync_jax.vision import face_crops, face_detection
  det = face_detection.create_detector("default")
  size = GRID_CROP
  def crops_of(p):
    return face_crops.video_face_crops(str(p), size, det)[0]
  rows = []
  for label, pick in (("truth", lambda f: f), ("ours, own speech", lambda f: out / "own" /
                                                f"{f.stem}.mp4"),
                      ("ours, LibriVox", lambda f: sorted(out.glob(f"{f.stem}__*.mp4"))[0])):
    tiles = []
    for face in faces:
      c = crops_of(pick(face))
      for frac in (0.25, 0.5, 0.75):
        tiles.append(c[int(frac * (len(c) - 1))][size // 2:])
    strip = np.concatenate(tiles, 1)
    name = np.full((size // 2, 170, 3), 255, np.uint8)
    cv2.putText(name, label, (4, size // 4 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    rows.append(np.concatenate([name, strip], 1))
  cv2.imwrite(str(path), np.concatenate(rows, 0))


def _resized(crops: np.ndarray, size: int) -> np.ndarray:
  """(n, S, S, 3) uint8 -> (n, size, size, 3), area-averaged."""
  import cv2
  return np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops])


def grid(syncer, judges, shared: pathlib.Path, data: pathlib.Path, work: pathlib.Path,
         limit: int) -> dict:
  from lipsync_jax.data import format as fmt
  from lipsync_jax.evaluation import metrics
  import tqdm
  index = fmt.load_index(data)
  clips = [c for c in index.split("test")]
  clips = clips[:limit] if limit else clips
  out = work / "grid"
  out.mkdir(parents=True, exist_ok=True)
  speech = [shared / "data" / "real" / "audio" / "librivox_pocketsphinx" / s for s in SPEECH]
  lpips = metrics.LPIPSMetric("alexnet")
  face_m, mouth_lp, lmd, own_sync, foreign = [], [], [], [], []
  for i, clip in enumerate(tqdm.tqdm(clips, desc="GRID test sentences", unit="clip")):
    src = pathlib.Path(clip.source)
    own = out / f"{src.stem}.mp4"
    if not own.is_file():
      syncer.run(src, src, own)
    # The output is cropped along its source's face track, as the papers
    # crop both with the truth's alignment: boxes found anew on the output
    # move a pixel or two with its new mouth, which cost 5-12 dB (docs/grid.md).
    t = judges.source(src)
    g = judges.read(own, t["track"])
    n = len(g["crops"])              # the copy is as long as its audio
    gen, tru = _resized(g["crops"], FACE_CROP), _resized(t["crops"][:n], FACE_CROP)
    face_m.append(metrics.reconstruction_metrics(gen, tru, None))
    mouth_lp.append(float(np.mean(lpips(gen[:, FACE_CROP // 2:], tru[:, FACE_CROP // 2:]))))
    ok = g["valid"] & t["valid"][:n]
    lmd.append(float(np.mean(np.linalg.norm(g["lips"][ok] - t["lips"][:n][ok], axis=-1)) * 96))
    own_sync.append(judges(own))     # sync as `evaluate` sees it: its own detection
    if i < 10:   # foreign speech: 10 sentences, one LibriVox WAV each
      s = speech[i % len(speech)]
      f = out / f"{src.stem}__{s.stem[-4:]}.mp4"
      if not f.is_file():
        syncer.run(src, s, f)
      foreign.append(judges(f))
  return {"clips": len(clips),
          "face_psnr": float(np.mean([m["psnr"] for m in face_m])),
          "face_ssim": float(np.mean([m["ssim"] for m in face_m])),
          "mouth_lpips": float(np.mean(mouth_lp)), "lmd_px96": float(np.mean(lmd)),
          "own_scorer_within1_of_0": share([r["offset"] for r in own_sync],
                                            [0] * len(own_sync)),
          "own_judge_within1_of_0": share([r["judge_lag"] for r in own_sync],
                                           [0] * len(own_sync)),
          "foreign_scorer_within1_of_0": share([r["offset"] for r in foreign],
                                                [0] * len(foreign)),
          "foreign_judge_within1_of_0": share([r["judge_lag"] for r in foreign],
                                               [0] * len(foreign)),
          "own": own_sync, "foreign": foreign}


def main(argv=None) -> int:
  a = build_parser().parse_args(argv)
  suites = {s.strip() for s in a.suite.split(",") if s.strip()}
  if not suites or suites - {"unseen", "grid", "long"}:
    print(f"error: --suite takes unseen, grid and long (comma-separated), got {a.suite!r}",
          file=sys.stderr)
    return 2
  shared = pathlib.Path(a.shared)
  if not (shared / "data" / "real" / "av").is_dir():
    print(f"error: no shared data at {shared} (--shared)", file=sys.stderr)
    return 2
  if "grid" in suites and not (pathlib.Path(a.grid_data) / "index.json").is_file():
    print(f"error: --grid-data {a.grid_data} is not a prepared dataset (python "
          f"data_prep/preprocess.py --input {shared}/data/grid_s1/video --output "
          f"{a.grid_data} --split-ratios 0.8 0.08 0.12)", file=sys.stderr)
    return 2
  from lipsync_jax import inference
  t0 = time.time()
  work = pathlib.Path(a.workdir).absolute()
  work.mkdir(parents=True, exist_ok=True)
  syncer = inference.load_syncer(a.model, cache_dir=str(work / "cache"),
                                 mouth_paste=not a.lower_face_paste,
                                 lip_smoothing=a.lip_smoothing, adapt_steps=a.adapt_steps)
  judges = Judges()
  # A suite run on its own keeps the other suite's results of the same model.
  saved = work / "results.json"
  results = json.loads(saved.read_text()) if saved.is_file() else {}
  paste = "lower face" if a.lower_face_paste else "mouth"
  if (results.get("model") != a.model or results.get("paste", "mouth") != paste
      or results.get("lip_smoothing", False) != a.lip_smoothing
      or results.get("adapt_steps", 0) != a.adapt_steps):
    results = {}
  results["model"], results["paste"] = a.model, paste
  results["lip_smoothing"], results["adapt_steps"] = a.lip_smoothing, a.adapt_steps
  if "unseen" in suites:
    u = unseen(syncer, judges, shared, work, a.faces)
    results["unseen"] = u
    r = u["reconstruction"]
    print(f"\nUnseen speakers, {u['videos']} videos (10 faces x 2 LibriVox speeches):")
    print("| judge | ours | the source clips |")
    print("|---|---|---|")
    print(f"| built-in scorer, best offset within +-1 of the source's own | "
          f"{u['scorer_within1_of_source']} | |")
    print(f"| built-in scorer, best offset within +-1 of 0 | {u['scorer_within1_of_0']} | |")
    print(f"| energy judge, best lag within +-1 of 0 | {u['judge_within1_of_0']} | "
          f"{u['judge_sources_within1_of_0']} |")
    print(f"| the same, the videos cropped along their sources' face tracks | "
          f"{u['judge_along_source_within1_of_0']} | |")
    print(f"| the control, each source's own mouth under the new speech: scorer / energy "
          f"judge within +-1 of 0 | {u['scorer_chance_within1_of_0']} / "
          f"{u['judge_chance_within1_of_0']} | |")
    m = u["judge_r_median"]
    print("energy judge, median r at the best lag: ours "
          + ", control ".join(f"{m[k]:.2f}" if m[k] is not None else "n/a"
                              for k in ("ours", "control"))
          + (f", the sources {m['sources']:.2f}" if m["sources"] is not None else ""))
    m0 = u["judge_r0_mean"]
    print("energy judge, mean r at lag 0: "
          + ", ".join(f"{k.replace('_', ' ')} {m0[k]:.3f}"
                  for k in ("ours", "ours_along_source", "control", "sources")
                  if m0.get(k) is not None))
    print("\nOwn-speech reconstruction (mouth: lower half of a 256 px face crop"
          + ("; adapted on each source's first half, the second half scored)"
             if a.adapt_steps else "):"))
    print("| | mouth PSNR | SSIM | LPIPS | sharpness | colour speckle |")
    print("|---|---|---|---|---|---|")
    models = [k for k in ("ours", "unadapted") if k in r]
    # The sources at the renderer's size: what a perfect renderer would read.
    models += [k for k in r if k.startswith("source_at_")]
    s = r["source"]
    for k in models:
      o = r[k]
      print(f"| {k} | {o['psnr']:.2f} | {o['ssim']:.3f} | {o['lpips']:.3f} | "
            f"{o['sharpness']:.0f} | {o['chroma_noise']:.2f} |")
    print(f"| source | | | | {s['sharpness']:.0f} | {s['chroma_noise']:.2f} |")
    import real_face_generator  # pylint: disable=import-error
    print(f"\nThe lips box alone ({real_face_generator.lips_box_text()}):")
    print("| | PSNR | SSIM | LPIPS | sharpness |")
    print("|---|---|---|---|---|")
    for k in models:
      o = r[k]
      print(f"| {k} | {o['lips_psnr']:.2f} | {o['lips_ssim']:.3f} | {o['lips_lpips']:.3f} | "
            f"{o['lips_sharpness']:.0f} |")
    print(f"| source | | | | {s['lips_sharpness']:.0f} |")
  if "long" in suites:
    g = long_speech(syncer, judges, shared, work, a.faces)
    results["long"] = g
    secs = ", ".join(f"{k} {v:.1f} s" for k, v in g["speech_seconds"].items())
    print(f"\nUnseen speakers, {g['videos']} videos on longer speech ({secs}):")
    print("| judge, within +-1 of 0 | ours | the control |")
    print("|---|---|---|")
    print(f"| built-in scorer | {g['scorer_within1_of_0']} | {g['scorer_chance_within1_of_0']} |")
    print(f"| energy judge | {g['judge_within1_of_0']} | {g['judge_chance_within1_of_0']} |")
    print(f"| built-in scorer, within +-1 of the source clip's own | "
          f"{g['scorer_within1_of_source']} | |")
    for name, v in g["per_speech"].items():
      print(f"{name}: scorer {v['scorer_within1_of_0']}, energy judge {v['judge_within1_of_0']}")
    m = g["judge_r_median"]
    print("energy judge, median r at the best lag: ours "
          + ", control ".join(f"{m[k]:.2f}" if m[k] is not None else "n/a"
                              for k in ("ours", "control")))
  if "grid" in suites:
    g = grid(syncer, judges, shared, pathlib.Path(a.grid_data), work, a.grid_clips)
    results["grid"] = g
    print(f"\nGRID s1, {g['clips']} test sentences on their own audio:")
    print(f"face PSNR {g['face_psnr']:.2f} dB, SSIM {g['face_ssim']:.3f} ({FACE_CROP} px "
          f"crops), mouth LPIPS {g['mouth_lpips']:.3f}, LMD {g['lmd_px96']:.2f} px (96 px crop); "
          f"sync within +-1 of 0: scorer {g['own_scorer_within1_of_0']}, energy judge "
          f"{g['own_judge_within1_of_0']}")
    print(f"foreign speech (10 sentences): scorer within +-1 of 0 "
          f"{g['foreign_scorer_within1_of_0']}, energy judge {g['foreign_judge_within1_of_0']}")
  saved.write_text(json.dumps(results, indent=1, default=float))
  print(f"\nwrote {saved}; {time.time() - t0:.0f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
