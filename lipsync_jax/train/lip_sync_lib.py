"""Training of the landmark sync expert (`lip_sync`) on lip tracks of videos.

    python train.py --config configs/lip_sync.py --workdir runs/lip_sync \\
        --config.videos=../shared/data/real/av

The data are tiny next to a pixel SyncNet's (a clip is 40 points a frame), so
the whole training set lives in memory and one step sees every one of its
clips. A step takes `clips_per_batch` clips and, from each, a segment of
`segment` consecutive 5-frame video windows plus the audio windows from
`max_shift` frames before the segment to `max_shift` after it (a clip shorter
than a segment, such as the 31-frame clips of `lrw_ar`, gives all its windows
and the rest of its row is masked; a clip without a single usable window is
left out, and `train` prints how many). Each video
window must pick its own audio window out of

  * the 2 * max_shift audio windows of the same clip at other offsets: the
    hard negatives, which teach the peak at offset 0 that LSE-D/offset
    scoring looks for, and
  * the aligned audio windows of the other clips of the batch,

by a softmax over scaled cosines (`offset_loss`). A second, small term trains
the decision head (`pair_loss`): BCE(s * cos + b) on one in-sync pair and one
off-sync pair (the audio window at a random other offset of the same clip,
as upstream SyncNet's negatives) per video window, so pair accuracy is
defined as for the pixel expert.

Clips are split by speaker (`config.val_speakers`); the trainer reports val
pair accuracy and offset recovery (`offset_recovery`) on the held-out
speakers, and exports the model with `checkpoint.save_model`. With
`config.regressor.num_steps > 0` it then distils FaceMesh into a small
pixel-to-lips CNN (`train_regressor`) and exports expert and regressor
together (arch `lip_sync_pixels`, `WORKDIR/expert_pixels`), the expert a
generator is trained against.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lipsync_jax.io import audio as audio_lib
from lipsync_jax.vision import lip_landmarks
from lipsync_jax.evaluation import metrics
from lipsync_jax import models
from lipsync_jax.data.lip_windows import (WINDOW, ClipWindows, clip_inputs, clip_windows,  # pylint: disable=unused-import
                                          mel_columns, mel_windows,
                                          video_windows)

SHIFTS = (3, -3, 5, -5, 8, -8)


class LipSyncConfigError(ValueError):
  """Bad config or data for the landmark expert; the message is one line."""


# -----------------------------------------------------------------------------
# Batches.
# -----------------------------------------------------------------------------

def _augment_lips(lips: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
  """One random similarity transform (about the crop centre) + jitter + flip."""
  if strength <= 0:
    return lips
  if rng.random() < 0.5:
    lips = lip_landmarks.mirror_lips(lips)
  s = 1.0 + strength * rng.uniform(-0.1, 0.1)
  a = strength * np.deg2rad(rng.uniform(-6, 6))
  r = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], np.float32)
  t = strength * rng.uniform(-0.03, 0.03, size=2)
  out = (lips - 0.5) @ r.T + 0.5 + t
  out = out + strength * rng.normal(0, 0.002, size=out.shape)
  return out.astype(np.float32)


class SegmentSampler:
  """Random training batches (see the module docstring).

  A batch: lips (C, L, 5, 40, 2), vmask (C, L), audio (C, L + 2K, 80, 16, 1),
  amask (C, L + 2K), neg (C, L) int index of each window's off-sync audio in
  0..2K (never K), with C = clips_per_batch, L = segment, K = max_shift.
  Audio position j of segment row c is the audio window K - j frames before
  (j < K) or j - K after the aligned one of video window 0.

  A clip with fewer windows than L gives the windows it has (the rest of its
  row is masked out of the loss); a clip without one usable window (shorter
  than `window` frames, or no run of `window` frames with lips and audio) is
  left out and named in `skipped`.
  """

  def __init__(self, clips: Sequence[ClipWindows], clips_per_batch: int, segment: int,
               max_shift: int, seed: int, augment: float = 1.0,
               mel_gain: float = 0.0, mel_shift: int = 0, window: int = WINDOW):
    self.clips = [c for c in clips if c.video_ok.any()]
    self.skipped = [c.name for c in clips if not c.video_ok.any()]
    if not self.clips:
      raise LipSyncConfigError("no training clip has a 5-frame window with lips")
    self.c, self.l, self.k = clips_per_batch, segment, max_shift
    self.rng = np.random.default_rng(seed)
    self.augment, self.mel_gain, self.mel_shift = augment, mel_gain, mel_shift
    self.window = window
    w = np.array([c.video_ok.sum() for c in self.clips], np.float64)
    self.p = w / w.sum()

  def notes(self) -> list[str]:
    """What `train` prints about the clips: those skipped, and how many are
    shorter than a segment."""
    out = []
    n = len(self.clips) + len(self.skipped)
    if self.skipped:
      out.append(f"lip_sync: {len(self.skipped)} of {n} training clips skipped, without "
                 f"one {self.window}-frame window with lips and audio: "
                 + ", ".join(self.skipped[:5]) + (" ..." if len(self.skipped) > 5 else ""))
    short = sum(int(c.video_ok.sum()) < self.l for c in self.clips)
    if short:
      out.append(f"lip_sync: {short} of {len(self.clips)} training clips have fewer usable "
                 f"windows than a segment ({self.l}): each gives the windows it has")
    return out

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    c, l, k = self.c, self.l, self.k
    w = self.window
    lips = np.zeros((c, l, w, 40, 2), np.float32)
    vmask = np.zeros((c, l), bool)
    aud = np.zeros((c, l + 2 * k, 80, mel_columns(w), 1), np.float32)
    amask = np.zeros((c, l + 2 * k), bool)
    neg = np.zeros((c, l), np.int32)
    replace = c > len(self.clips)
    picks = self.rng.choice(len(self.clips), size=c, replace=replace, p=self.p)
    for r, ci in enumerate(picks):
      clip = self.clips[ci]
      n = len(clip.video_ok)
      ok_idx = np.flatnonzero(clip.video_ok)
      centre = int(self.rng.choice(ok_idx))
      s = int(np.clip(centre - l // 2, 0, max(n - l, 0)))
      m = min(l, n - s)
      seg_lips = _augment_lips(clip.lips[s:s + m + w - 1], self.rng, self.augment)
      lips[r, :m] = video_windows(seg_lips, w)
      vmask[r, :m] = clip.video_ok[s:s + m]
      pos = clip.first_frame + s - k + np.arange(l + 2 * k)
      inside = (pos >= 0) & (pos < len(clip.audio))
      aud[r, inside, ..., 0] = clip.audio[pos[inside]]
      amask[r] = inside
      if self.mel_gain:   # level and spectral tilt
        tilt = np.linspace(-1, 1, 80, dtype=np.float32)[:, None, None]
        aud[r] += (self.rng.uniform(-self.mel_gain, self.mel_gain)
                   + tilt * self.rng.uniform(-self.mel_gain, self.mel_gain))
      if self.mel_shift:  # a voice a little higher or lower
        d = int(self.rng.integers(-self.mel_shift, self.mel_shift + 1))
        if d:
          aud[r] = np.roll(aud[r], d, axis=1)
          if d > 0:
            aud[r][:, :d] = aud[r][:, d:d + 1]
          else:
            aud[r][:, d:] = aud[r][:, d - 1:d]
      for i in range(m):
        cand = [j for j in range(2 * k + 1) if j != k and amask[r, i + j]]
        neg[r, i] = self.rng.choice(cand) if cand else k
        if not cand:
          vmask[r, i] = False
    return {"lips": lips, "vmask": vmask, "audio": aud, "amask": amask, "neg": neg}


# -----------------------------------------------------------------------------
# Loss and step.
# -----------------------------------------------------------------------------

def init_head() -> dict[str, jax.Array]:
  """Learned scalars: CE temperature (log) and the pair head's scale and bias."""
  return {"ce_log_scale": jnp.float32(math.log(10.0)),
          "scale": jnp.float32(10.0), "bias": jnp.float32(-5.0)}


def lip_sync_losses(a: jax.Array, v: jax.Array, batch: dict[str, jax.Array],
                    head: dict[str, jax.Array], max_shift: int,
                    pair_weight: float) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Offset/in-batch softmax + pair BCE.

  Args:
    a: (C, L + 2K, D) unit audio embeddings; v: (C, L, D) unit video ones.
    batch: vmask (C, L), amask (C, L + 2K), neg (C, L) (see SegmentSampler).
  Returns:
    (total loss, metrics).
  """
  c, l, _ = v.shape
  k = max_shift
  vmask = batch["vmask"].astype(jnp.float32)
  idx = jnp.arange(l)[:, None] + jnp.arange(2 * k + 1)[None]          # (L, 2K+1)
  a_same = a[:, idx]                                                  # (C, L, 2K+1, D)
  cos_same = jnp.einsum("cld,cljd->clj", v, a_same)
  same_ok = batch["amask"][:, idx]
  a_aligned = a[:, k:k + l].reshape(c * l, -1)                        # (C*L, D)
  cos_cross = jnp.einsum("cld,nd->cln", v, a_aligned)                 # (C, L, C*L)
  other = (jnp.arange(c)[:, None, None] != (jnp.arange(c * l) // l)[None, None]) & \
      (batch["vmask"].reshape(-1)[None, None])
  scale = jnp.exp(head["ce_log_scale"])
  logits = jnp.concatenate([jnp.where(same_ok, scale * cos_same, -1e9),
                            jnp.where(other, scale * cos_cross, -1e9)], axis=-1)
  ce = -jax.nn.log_softmax(logits, axis=-1)[..., k]
  offset_loss = jnp.sum(ce * vmask) / jnp.maximum(vmask.sum(), 1.0)
  top = jnp.argmax(logits, axis=-1) == k
  offset_acc = jnp.sum(top * vmask) / jnp.maximum(vmask.sum(), 1.0)

  pos = cos_same[..., k]
  negc = jnp.take_along_axis(cos_same, batch["neg"][..., None], axis=-1)[..., 0]
  z = head["scale"] * jnp.stack([pos, negc], -1) + head["bias"]
  y = jnp.broadcast_to(jnp.array([1.0, 0.0]), z.shape)
  bce = optax.sigmoid_binary_cross_entropy(z, y).mean(-1)
  pair_loss = jnp.sum(bce * vmask) / jnp.maximum(vmask.sum(), 1.0)
  pair_acc = jnp.sum(((z > 0) == (y > 0.5)).mean(-1) * vmask) / jnp.maximum(vmask.sum(), 1.0)
  total = offset_loss + pair_weight * pair_loss
  return total, {"loss": total, "offset_loss": offset_loss, "offset_top1": offset_acc,
                 "pair_loss": pair_loss, "pair_acc": pair_acc, "ce_scale": scale}


def make_train_step(model: Any, tx: optax.GradientTransformation, max_shift: int,
                    pair_weight: float) -> Callable:
  """jit(step)(params, head, opt_state, batch) -> (params, head, opt_state, metrics)."""

  def loss_fn(trainable, batch):
    params, head = trainable
    c, l = batch["vmask"].shape
    a = model.apply({"params": params}, batch["audio"].reshape((-1,) + batch["audio"].shape[2:]),
                    method="embed_audio").reshape(c, l + 2 * max_shift, -1)
    v = model.apply({"params": params}, batch["lips"].reshape((-1,) + batch["lips"].shape[2:]),
                    method="embed_video").reshape(c, l, -1)
    return lip_sync_losses(a, v, batch, head, max_shift, pair_weight)

  @jax.jit
  def step(params, head, opt_state, batch):
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)((params, head), batch)
    updates, opt_state = tx.update(grads, opt_state, (params, head))
    params, head = optax.apply_updates((params, head), updates)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return params, head, opt_state, metrics

  return step


# -----------------------------------------------------------------------------
# Embedding whole clips, pair accuracy, offset recovery.
# -----------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _embed_fns(model: Any) -> tuple[Callable, Callable]:
  ea = jax.jit(lambda p, x: model.apply(p, x, method="embed_audio"))
  ev = jax.jit(lambda p, x: model.apply(p, x, method="embed_video"))
  return ea, ev


def _batched(fn, variables, x: np.ndarray, batch: int = 256) -> np.ndarray:
  """`fn(variables, x)` in fixed-size batches (`metrics.batched_apply`)."""
  return metrics.batched_apply(functools.partial(fn, variables), [x], batch)


def embed_clip(model: Any, variables: Any, lips: np.ndarray, mel: np.ndarray,
               fps: float, first_frame: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(T-W+1, D) video and audio embeddings of a clip's aligned windows."""
  ea, ev = _embed_fns(model)
  vw = video_windows(np.asarray(lips, np.float32), model.window)
  aw = mel_windows(mel, first_frame + len(vw), fps, model.window)[first_frame:]
  return (_batched(ev, variables, vw.astype(np.float32)),
          _batched(ea, variables, aw[..., None].astype(np.float32)))


def pair_auc(in_sync: np.ndarray, off_sync: np.ndarray) -> float:
  """AUC of in-sync vs off-sync scores: the probability that an in-sync pair
  scores above an off-sync one (ties count half), from ranks (Mann-Whitney U)."""
  import scipy.stats  # pylint: disable=import-outside-toplevel
  pos, neg = np.ravel(in_sync), np.ravel(off_sync)
  if not len(pos) or not len(neg):
    return float("nan")
  ranks = scipy.stats.rankdata(np.concatenate([pos, neg]))
  u = ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
  return float(u / (len(pos) * len(neg)))


def pair_accuracy(model: Any, variables: Any, head: dict[str, float],
                  clips: Sequence[ClipWindows], seed: int = 0,
                  min_pairs: int = 256) -> dict[str, float]:
  """In-sync vs off-sync pair accuracy over every valid video window of `clips`.

  Each window gives one in-sync pair (its own audio) and one off-sync pair
  (the audio window at a uniformly random other position of the same clip,
  as upstream SyncNet's negatives); a pair is called in sync when
  `scale * cos + bias > 0`. When the windows give fewer than `min_pairs`
  pairs, windows are drawn again (with new negatives) until they do. "auc"
  is `pair_auc` of the same pairs' cosines (free of the head's threshold).
  """
  rng = np.random.default_rng(seed)
  ea, ev = _embed_fns(model)
  correct, n, pos_cos, neg_cos = 0, 0, [], []
  rounds = 0
  while n < min_pairs and rounds < 64:
    rounds += 1
    for c in clips:
      ok = np.flatnonzero(c.video_ok)
      if len(ok) == 0 or len(c.audio) < 2:
        continue
      v = _batched(ev, variables, video_windows(c.lips, model.window)[ok])
      a_all = _batched(ea, variables, c.audio[..., None])
      own = c.first_frame + ok
      other = rng.integers(0, len(c.audio) - 1, size=len(ok))
      other = np.where(other >= own, other + 1, other)
      cp = np.sum(v * a_all[own], -1)
      cn = np.sum(v * a_all[other], -1)
      correct += int(np.sum(head["scale"] * cp + head["bias"] > 0))
      correct += int(np.sum(head["scale"] * cn + head["bias"] <= 0))
      n += 2 * len(ok)
      pos_cos.append(cp)
      neg_cos.append(cn)
  pos_cos = np.concatenate(pos_cos) if pos_cos else np.zeros(0)
  neg_cos = np.concatenate(neg_cos) if neg_cos else np.zeros(0)
  return {"pair_acc": correct / max(n, 1), "pairs": n, "auc": pair_auc(pos_cos, neg_cos),
          "cos_in_sync": float(np.mean(pos_cos)) if n else float("nan"),
          "cos_off_sync": float(np.mean(neg_cos)) if n else float("nan")}


def shift_waveform(wav: np.ndarray, frames: int, fps: float = 25.0) -> np.ndarray:
  """Delays the audio by `frames` video frames (negative: advances it)."""
  n = int(round(frames * audio_lib.SAMPLE_RATE / fps))
  if n >= 0:
    return np.concatenate([np.zeros(n, np.float32), wav.astype(np.float32)])
  return wav[-n:].astype(np.float32)


def best_offset(video_emb: np.ndarray, audio_emb: np.ndarray, padding: str = "zeros") -> int:
  """Best audio offset in frames (+ = audio lags), as `evaluate` reports it."""
  return metrics.lse_from_embeddings(video_emb, audio_emb, padding=padding).offset


def offset_recovery(offset_fn: Callable[[lip_landmarks.ClipLips, np.ndarray], int],
                    clips: Sequence[lip_landmarks.ClipLips],
                    shifts: Sequence[int] = (0,) + SHIFTS, tolerance: int = 1
                    ) -> dict[str, Any]:
  """Share of clips whose best offset recovers a known audio shift.

  For every clip and shift k, the clip's waveform is delayed by k frames
  (advanced for k < 0) and `offset_fn(clip, shifted_wav)` must return an
  offset within `tolerance` of k.

  Returns {"rate": {k: share}, "offsets": {clip: {k: offset}}, and, when 0 is
  among the shifts, "rate_relative": {k: share of clips whose offset moved by
  k +- tolerance from their unshifted best offset} (a source clip may itself
  be a frame or two out of sync)}.
  """
  offsets: dict[str, dict[int, int]] = {}
  for c in clips:
    offsets[c.name] = {k: int(offset_fn(c, shift_waveform(c.wav, k, c.fps))) for k in shifts}
  rate = {k: float(np.mean([abs(o[k] - k) <= tolerance for o in offsets.values()]))
          for k in shifts}
  out = {"rate": rate, "offsets": offsets, "tolerance": tolerance}
  if 0 in shifts:  # the shift seen against the clip's own best offset
    out["rate_relative"] = {
        k: float(np.mean([abs(o[k] - o[0] - k) <= tolerance for o in offsets.values()]))
        for k in shifts if k}
  return out


def model_offset_fn(model: Any, variables: Any, padding: str = "exclude",
                    normalise: bool = False
                    ) -> Callable[[lip_landmarks.ClipLips, np.ndarray], int]:
  """offset_fn for `offset_recovery` from a trained `lip_sync` model."""
  def fn(clip, wav):
    lips, mel = clip_inputs(clip.lips, clip.valid, audio_lib.melspectrogram(wav), normalise)
    v, a = embed_clip(model, variables, lips, mel, clip.fps, clip.first_frame)
    return best_offset(v, a, padding)
  return fn


# -----------------------------------------------------------------------------
# Train and evaluate.
# -----------------------------------------------------------------------------

def _parse_entries(entries: Sequence[str], field: str, form: str) -> dict[str, str]:
  out = {}
  for e in entries:
    key, sep, value = (x.strip() for x in str(e).partition("="))
    if not sep or not key or not value:
      raise LipSyncConfigError(f"config.{field}: bad entry {e!r}; expected '{form}'")
    out[key] = value
  return out


def parse_speakers(entries: Sequence[str]) -> dict[str, str]:
  """("clip=speaker", ...) -> {clip: speaker}."""
  return _parse_entries(entries, "speakers", "clip=speaker")


def parse_audio_lags(entries: Sequence[str], roots: Sequence[str]) -> dict[str, int]:
  """("folder=frames", ...) -> {folder: frames}, each folder one of `roots`."""
  out = {}
  for root, frames in _parse_entries(entries, "audio_lag", "folder=frames").items():
    if root not in roots:
      raise LipSyncConfigError(f"config.audio_lag: {root} is not one of config.videos")
    try:
      out[root] = int(frames)
    except ValueError:
      raise LipSyncConfigError(f"config.audio_lag: {frames!r} is not a whole number of "
                               f"frames") from None
  return out


def split_clips(clips: Sequence[lip_landmarks.ClipLips], val_speakers: Sequence[str]
                ) -> tuple[list, list]:
  val = set(val_speakers)
  unknown = val - {c.speaker for c in clips}
  if unknown:
    raise LipSyncConfigError(f"val_speakers not among the clips' speakers: "
                             f"{', '.join(sorted(unknown))}")
  return ([c for c in clips if c.speaker not in val], [c for c in clips if c.speaker in val])


def make_optimizer(config: Any) -> optax.GradientTransformation:
  o = config.optimizer
  sched = optax.warmup_cosine_decay_schedule(0.0, o.learning_rate, o.warmup_steps,
                                             max(config.num_steps, o.warmup_steps + 1),
                                             end_value=o.learning_rate * 0.01)
  return optax.chain(optax.clip_by_global_norm(o.grad_clip_norm or 1e9),
                     optax.adamw(sched, weight_decay=o.weight_decay))


def train(config: Any, train_clips: Sequence[lip_landmarks.ClipLips],
          log: Callable[[str], None] = print, progress: bool = True
          ) -> tuple[Any, Any, dict[str, float], list[dict]]:
  """Trains a `lip_sync` model. Returns (module, variables, head, history)."""
  import tqdm  # pylint: disable=import-outside-toplevel
  model = models.create("lip_sync", **dict(config.model))
  w = model.window
  windows = [clip_windows(c, normalise=config.normalise, window=w) for c in train_clips]
  sampler = SegmentSampler(windows, config.clips_per_batch, config.segment,
                           config.max_shift, config.seed, config.augment, config.mel_gain,
                           config.mel_shift, w)
  for line in sampler.notes():
    log(line)
  params = model.init(jax.random.PRNGKey(config.seed), jnp.zeros((1, 80, mel_columns(w), 1)),
                      jnp.zeros((1, w, 40, 2)))["params"]
  head = init_head()
  tx = make_optimizer(config)
  opt_state = tx.init((params, head))
  step_fn = make_train_step(model, tx, config.max_shift, config.pair_weight)
  history = []
  bar = tqdm.trange(config.num_steps, desc="lip_sync expert", disable=not progress)
  acc = {}
  for step in bar:
    batch = next(sampler)
    params, head, opt_state, m = step_fn(params, head, opt_state, batch)
    for k, v in m.items():
      acc.setdefault(k, []).append(v)
    if (step + 1) % config.log_every == 0 or step + 1 == config.num_steps:
      row = {k: float(np.mean(jax.device_get(v))) for k, v in acc.items()}
      row["step"] = step + 1
      history.append(row)
      acc = {}
      bar.set_postfix(loss=f"{row['loss']:.3f}", top1=f"{row['offset_top1']:.2f}",
                      pair=f"{row['pair_acc']:.2f}")
  head = {k: float(v) for k, v in jax.device_get(head).items()}
  return model, {"params": jax.device_get(params)}, head, history


def train_and_evaluate(config: Any, workdir: str) -> dict[str, Any]:
  """Extracts lip tracks, trains the landmark expert, evaluates on held-out
  speakers and exports the model to `workdir/model` (and, with
  `config.export_to`, there too). Returns the summary (also summary.json)."""
  from lipsync_jax import checkpoint  # pylint: disable=import-outside-toplevel
  t0 = time.time()
  work = pathlib.Path(workdir)
  work.mkdir(parents=True, exist_ok=True)
  if not config.videos:
    raise LipSyncConfigError("config.videos is not set: give one or more folders of "
                             "talking-face videos (comma-separated)")
  roots = [r for r in str(config.videos).split(",") if r]
  for r in roots:
    if not pathlib.Path(r).exists():
      raise LipSyncConfigError(f"config.videos: no such file or directory: {r}")
  cache = config.cache_dir or str(work / "lip_cache")
  lags = parse_audio_lags(config.audio_lag, roots)
  clips, skipped = [], []
  for root in roots:   # a folder at a time: its audio lag applies to its clips
    got, lost = lip_landmarks.extract_videos([root], cache, config.min_frames,
                                             keep_crops=True,
                                             speakers=parse_speakers(config.speakers),
                                             progress=config.progress_bar)
    # Audio that lags its video by d frames: lips[0] is d frames later on it.
    clips += [dataclasses.replace(c, first_frame=c.first_frame + lags.get(root, 0))
              for c in got]
    skipped += lost
  if not clips:
    raise LipSyncConfigError(f"no usable clip under {config.videos}: "
                             + "; ".join(f"{s['name']}: {s['reason']}" for s in skipped[:3]))
  print(f"lip_sync: lip tracks of {len(clips)} clips; {len(skipped)} skipped"
        + "".join(f"\n  {s['name']}: {s['reason']}" for s in skipped[:10])
        + (f"\n  ... (all in {work / 'summary.json'})" if len(skipped) > 10 else ""))
  train_clips, val_clips = split_clips(clips, list(config.val_speakers))
  if not train_clips:
    raise LipSyncConfigError("every clip is a val speaker's: nothing left to train on")
  t_extract = time.time() - t0
  model, variables, head, history = train(config, train_clips, progress=config.progress_bar)
  t_train = time.time() - t0 - t_extract
  summary: dict[str, Any] = {
      "status": "finished", "step": config.num_steps,
      "train_clips": [c.name for c in train_clips], "val_clips": [c.name for c in val_clips],
      "skipped": skipped, "train_frames": int(sum(c.num_frames for c in train_clips)),
      "val_frames": int(sum(c.num_frames for c in val_clips)),
      "head": head, "history": history[-1] if history else {},
      "seconds": {"extract": round(t_extract, 1), "train": round(t_train, 1)}}
  if val_clips:
    vw = [clip_windows(c, normalise=config.normalise, window=model.window) for c in val_clips]
    summary["val"] = pair_accuracy(model, variables, head, vw, seed=config.seed)
    rec = offset_recovery(model_offset_fn(model, variables, normalise=config.normalise),
                          val_clips)
    summary["val"]["offset_recovery"] = {str(k): v for k, v in rec["rate"].items()}
    summary["val"]["offsets"] = rec["offsets"]
  meta = {"logit_scale": head["scale"], "logit_bias": head["bias"],
          "inputs": {"normalise": bool(config.normalise), "window": model.window,
                     "lips": "FaceMesh lip points (lip_landmarks.LIP_POINTS) of "
                             "192x192 face crops, in crop units"},
          "training": {"videos": roots, "train_clips": summary["train_clips"],
                       "speakers": list(config.speakers),
                       "audio_lag": list(config.audio_lag),
                       "val_speakers": list(config.val_speakers),
                       "steps": config.num_steps, "seed": config.seed,
                       "command": "python train.py --config configs/lip_sync.py "
                                  "--workdir WORKDIR --config.videos=VIDEOS"}}
  if val_clips:
    meta["validation"] = {k: summary["val"][k] for k in ("pair_acc", "pairs", "auc",
                                                         "offset_recovery")}
  cfg = dict(config.model)
  checkpoint.save_model(work / "model", "lip_sync", cfg, variables, meta)
  if config.export_to:
    checkpoint.save_model(config.export_to, "lip_sync", cfg, variables, meta)
  if config.regressor.num_steps > 0:
    # The same expert behind a pixel-to-lips regressor: what a generator
    # trains against (config.syncnet_checkpoint=WORKDIR/expert_pixels).
    t1 = time.time()
    reg, reg_vars, reg_hist = train_regressor(config, train_clips, config.progress_bar)
    summary["regressor"] = {"train_l1_px": reg_hist[-1]["l1_px"],
                            "seconds": round(time.time() - t1, 1)}
    if val_clips:
      summary["regressor"]["val_l1_px"] = regressor_error(reg, reg_vars, val_clips)
    pix_cfg = {"sync": cfg, "regressor": dict(config.regressor.model),
               "head_scale": head["scale"], "head_bias": head["bias"],
               "blur": float(config.regressor.loss_blur)}
    pix_vars = {"params": {"lip_sync": variables["params"],
                           "lip_regressor": reg_vars["params"]}}
    checkpoint.save_model(work / "expert_pixels", "lip_sync_pixels", pix_cfg, pix_vars,
                          dict(meta, regressor=summary["regressor"]))
  summary["seconds"]["total"] = round(time.time() - t0, 1)
  (work / "summary.json").write_text(json.dumps(summary, indent=1))
  with open(work / "history.jsonl", "w") as f:
    for row in history:
      f.write(json.dumps(row) + "\n")
  return summary


# -----------------------------------------------------------------------------
# The pixel-to-lips regressor (for training generators against the expert).
# -----------------------------------------------------------------------------

def _regressor_batch(crops: np.ndarray, lips: np.ndarray, idx: np.ndarray,
                     rng: np.random.Generator, augment: bool
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Lower halves (B, 48, 96, 3) in [0, 1] and their lips (B, 40, 2)."""
  import cv2  # pylint: disable=import-outside-toplevel
  x = crops[idx].astype(np.float32) / 255.0
  y = lips[idx].copy()
  if augment:
    for i in range(len(idx)):
      if rng.random() < 0.5:
        x[i] = x[i, :, ::-1]
        y[i] = lip_landmarks.mirror_lips(y[i])
      # A small shift and zoom of the crop (a face box a little off).
      s = rng.uniform(0.94, 1.06)
      t = rng.uniform(-3, 3, size=2)
      m = np.array([[s, 0, (1 - s) * 48 + t[0]], [0, s, (1 - s) * 48 + t[1]]], np.float32)
      x[i] = cv2.warpAffine(x[i], m, (96, 96), borderMode=cv2.BORDER_REPLICATE)
      y[i] = (y[i] * 96 * s + (1 - s) * 48 + t) / 96
      # Colour: gain, bias per channel; a little blur (generated faces are soft).
      x[i] = x[i] * rng.uniform(0.75, 1.25, 3) + rng.uniform(-0.08, 0.08, 3)
      if rng.random() < 0.5:
        k = int(rng.choice([3, 5]))
        x[i] = cv2.GaussianBlur(x[i], (k, k), 0)
  return np.clip(x[:, 48:], 0.0, 1.0), y


def train_regressor(config: Any, clips: Sequence[lip_landmarks.ClipLips],
                    progress: bool = True) -> tuple[Any, Any, list[dict]]:
  """Distils FaceMesh into `LipRegressor` on the clips' 96x96 crops.

  Returns (module, {"params"}, history). Loss: mean L1 of the 40 points, in
  crop pixels of a 96 crop (x 96).
  """
  import tqdm  # pylint: disable=import-outside-toplevel
  from lipsync_jax.models import lip_sync as lip_sync_model  # pylint: disable=import-outside-toplevel
  rc = config.regressor
  crops = np.concatenate([c.crops[c.valid] for c in clips if c.crops is not None])
  lips = np.concatenate([c.lips[c.valid] for c in clips if c.crops is not None])
  if not len(crops):
    raise LipSyncConfigError("no clip kept its 96x96 crops for the lip regressor")
  model = lip_sync_model.LipRegressor(**dict(rc.model))
  params = model.init(jax.random.PRNGKey(config.seed), jnp.zeros((1, 48, 96, 3)))["params"]
  sched = optax.warmup_cosine_decay_schedule(0.0, rc.learning_rate, 100, rc.num_steps,
                                             rc.learning_rate * 0.01)
  tx = optax.adamw(sched, weight_decay=1e-4)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, x, y):
    def loss_fn(p):
      return jnp.mean(jnp.abs(model.apply({"params": p}, x) - y)) * 96.0
    loss, g = jax.value_and_grad(loss_fn)(params)
    u, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, u), opt, loss

  rng = np.random.default_rng(config.seed)
  hist, acc = [], []
  for i in tqdm.trange(rc.num_steps, desc="lip regressor", disable=not progress):
    idx = rng.integers(0, len(crops), rc.batch_size)
    x, y = _regressor_batch(crops, lips, idx, rng, True)
    params, opt, loss = step(params, opt, x, y)
    acc.append(loss)
    if (i + 1) % config.log_every == 0 or i + 1 == rc.num_steps:
      hist.append({"step": i + 1, "l1_px": float(np.mean(jax.device_get(acc)))})
      acc = []
  return model, {"params": jax.device_get(params)}, hist


def regressor_error(model: Any, variables: Any, clips: Sequence[lip_landmarks.ClipLips],
                    batch: int = 128) -> float:
  """Mean L1 (96-crop pixels) of the regressor against FaceMesh on `clips`."""
  fn = jax.jit(lambda p, x: model.apply(p, x))
  errs = []
  for c in clips:
    if c.crops is None:
      continue
    x = c.crops[c.valid][:, 48:].astype(np.float32) / 255.0
    pred = _batched(fn, variables, x, batch)
    errs.append(np.abs(pred - c.lips[c.valid]).mean(axis=(1, 2)) * 96.0)
  return float(np.mean(np.concatenate(errs))) if errs else float("nan")
