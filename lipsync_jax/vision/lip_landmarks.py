"""Lip landmarks of face crops: the video side of the landmark sync expert.

A SyncNet that reads raw pixels needs hundreds of hours of talking faces to
stop reading identity, lighting and pose; MediaPipe FaceMesh (shipped inside
the mediapipe wheel, run by ai-edge-litert, ``face_mesh.FaceMesh``) has
already learned where the lips are on any face. The landmark expert
(``models/lip_sync.py``) therefore reads 40 lip points per frame instead of
pixels, and learns from minutes of video.

Coordinates. Lips are given in *face-crop units*: the crop is the padded,
smoothed face box that ``infer.py``, ``evaluate`` and the datasets cut out and
resize to a square (96x96 for the generators), and a point's (x, y) is its
position in that crop divided by the crop side, so (0, 0) is the crop's
top-left corner and (1, 1) its bottom-right. The same numbers describe a
point on the 96x96 generator crop and on a 192x192 crop of the same box, so
the expert's input does not depend on the resolution it was measured at, and
a pixel-to-lips regressor on generated 96x96 crops can target them.

FaceMesh runs on the crop itself (``crop_lips``): its ROI is 1.5x the crop,
with replicated borders, then refined from the first pass's landmarks
(rotated to the eye line), as MediaPipe's tracking loop does.

Shapes: crops ``(T, S, S, 3)`` BGR uint8; lips ``(T, 40, 2)`` float32.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from typing import Callable, Optional, Sequence, Union

import cv2
import numpy as np

PathLike = Union[str, os.PathLike]

# The 40 lip points (outer then inner contour) of MediaPipe's 468-point mesh,
# also the points of the mouth landmark distance (metrics.MOUTH_LANDMARKS).
# The shipped expert was trained on this order: do not reorder.
LIP_POINTS = (
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267,
    269, 270, 409, 78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81,
    82, 13, 312, 311, 310, 415)
NUM_LIP_POINTS = len(LIP_POINTS)
# Inner-lip midpoints (upper 13, lower 14) as indices into LIP_POINTS.
INNER_UPPER, INNER_LOWER = LIP_POINTS.index(13), LIP_POINTS.index(14)
# Left-right mirror of the lip points (for flip augmentation): index k of a
# mirrored face is the point MIRROR[k] of the original.
_MIRROR_PAIRS = {61: 291, 146: 375, 91: 321, 181: 405, 84: 314, 17: 17, 185: 409,
                 40: 270, 39: 269, 37: 267, 0: 0, 78: 308, 95: 324, 88: 318,
                 178: 402, 87: 317, 14: 14, 191: 415, 80: 310, 81: 311, 82: 312,
                 13: 13}
_MIRROR_PAIRS.update({v: k for k, v in list(_MIRROR_PAIRS.items())})
MIRROR = tuple(LIP_POINTS.index(_MIRROR_PAIRS[p]) for p in LIP_POINTS)

CROP_SIZE = 192   # crop side FaceMesh reads (its own input size)
MIN_PRESENCE = 0.5


class LipLandmarkError(ValueError):
  """A clip whose lips cannot be measured; the message is one line."""


def crop_lips(mesh, crops: np.ndarray, batch: int = 64,
              progress: Optional[Callable[[int], None]] = None
              ) -> tuple[np.ndarray, np.ndarray]:
  """FaceMesh lip points of face crops, in face-crop units.

  Args:
    mesh: a ``face_mesh.FaceMesh``.
    crops: (T, S, S, 3) BGR uint8 face crops (any S; 192 is FaceMesh's own).
    batch: crops per ``mesh.run`` call.
    progress: called with the number of crops done after each call.

  Returns:
    lips (T, 40, 2) float32 in crop units; presence (T,) FaceMesh's
    face-presence probability.
  """
  crops = np.asarray(crops)
  if crops.ndim != 4 or crops.shape[-1] != 3 or crops.shape[1] != crops.shape[2]:
    raise LipLandmarkError(f"need (T, S, S, 3) square BGR crops, got {crops.shape}")
  s = crops.shape[1]
  lips = np.empty((len(crops), NUM_LIP_POINTS, 2), np.float32)
  presence = np.empty((len(crops),), np.float32)
  box = [0.0, 0.0, float(s), float(s)]
  for b in range(0, len(crops), batch):
    chunk = [np.ascontiguousarray(c) for c in crops[b:b + batch]]
    lm, pr = mesh.run(chunk, [box] * len(chunk))
    lips[b:b + len(chunk)] = lm[:, list(LIP_POINTS), :2] / s
    presence[b:b + len(chunk)] = pr
    if progress:
      progress(len(chunk))
  return lips, presence


def inner_gap(lips: np.ndarray) -> np.ndarray:
  """(..., 40, 2) lips -> (...,) inner-lip opening (crop units)."""
  return np.linalg.norm(lips[..., INNER_LOWER, :] - lips[..., INNER_UPPER, :], axis=-1)


def mirror_lips(lips: np.ndarray) -> np.ndarray:
  """Lips of the horizontally flipped crop: x -> 1 - x, left <-> right."""
  out = np.asarray(lips)[..., list(MIRROR), :].copy()
  out[..., 0] = 1.0 - out[..., 0]
  return out


def normalise_clip(lips: np.ndarray, valid: Optional[np.ndarray] = None,
                   target_rms: float = 0.05) -> np.ndarray:
  """Removes a speaker's resting mouth and motion scale from a lip track.

  Each frame's lips, centred on their centroid, minus the clip's mean centred
  shape, scaled so that the clip's RMS deviation is `target_rms` (crop
  units), plus the centroid track minus its clip mean (same scale), plus a
  fixed neutral point (0.5, 0.5). What is left is how the mouth moves, not
  what it looks like: the input the expert sees for every speaker.

  Args:
    lips: (T, 40, 2) lips in crop units; valid: (T,) frames to take the
      statistics from (default all).
  Returns:
    (T, 40, 2) float32.
  """
  lips = np.asarray(lips, np.float64)
  ok = np.ones(len(lips), bool) if valid is None else np.asarray(valid, bool)
  if not ok.any():
    ok = np.ones(len(lips), bool)
  centroid = lips.mean(axis=1, keepdims=True)
  shape = lips - centroid
  dev = shape - shape[ok].mean(axis=0, keepdims=True)
  jaw = centroid - centroid[ok].mean(axis=0, keepdims=True)
  rms = float(np.sqrt(np.mean(dev[ok] ** 2))) or 1.0
  return (0.5 + (dev + jaw) * (target_rms / rms)).astype(np.float32)


# -----------------------------------------------------------------------------
# Clips: crops + lips + mel, cached.
# -----------------------------------------------------------------------------

@dataclasses.dataclass
class ClipLips:
  """One clip's lip track and audio.

  Attributes:
    name: clip name (file name, or `folder/file` under a dataset root).
    speaker: speaker id (for speaker splits; the folder-free name by default).
    fps: frame rate of the track (25: the scoring rate).
    first_frame: index of lips[0] on the audio's timeline.
    lips: (T, 40, 2) float32 lip points in face-crop units.
    valid: (T,) bool: FaceMesh saw a face (presence >= 0.5).
    mel: (80, N) float32 Wav2Lip mel of the whole clip.
    wav: (S,) float32 16 kHz waveform of the whole clip.
    crops: (T, 96, 96, 3) uint8 BGR face crops (generator size), or None.
  """
  name: str
  speaker: str
  fps: float
  first_frame: int
  lips: np.ndarray
  valid: np.ndarray
  mel: np.ndarray
  wav: np.ndarray
  crops: Optional[np.ndarray] = None

  @property
  def num_frames(self) -> int:
    return int(self.lips.shape[0])


def extract_clip(path: PathLike, mesh=None, detector=None, min_frames: int = 25,
                 keep_crops: bool = True, speaker: Optional[str] = None,
                 name: Optional[str] = None) -> ClipLips:
  """Face crops (as ``evaluate --videos`` cuts them), their lips and the mel.

  The longest run of frames with a face is used, resampled to 25 fps.

  Raises:
    LipLandmarkError (and video/audio errors, all ValueError): no face, too
    few frames, FaceMesh finds lips on too few frames, no audio.
  """
  from lipsync_jax.io import audio as audio_lib  # pylint: disable=import-outside-toplevel
  from lipsync_jax.vision import face_crops  # pylint: disable=import-outside-toplevel
  from lipsync_jax.vision import face_detection  # pylint: disable=import-outside-toplevel
  from lipsync_jax.vision import face_mesh  # pylint: disable=import-outside-toplevel
  path = pathlib.Path(path)
  mesh = mesh or face_mesh.FaceMesh()
  detector = detector or face_detection.create_detector("default")
  crops, first, fps, _ = face_crops.video_face_crops(str(path), CROP_SIZE, detector,
                                                   min_frames=min_frames)
  lips, presence = crop_lips(mesh, crops)
  valid = presence >= MIN_PRESENCE
  if valid.sum() < min_frames:
    raise LipLandmarkError(f"FaceMesh finds lips on {int(valid.sum())} of {len(valid)} "
                           f"frames (< {min_frames})")
  wav = audio_lib.load_audio(path)
  mel = audio_lib.melspectrogram(wav)
  small = None
  if keep_crops:
    small = np.stack([cv2.resize(c, (96, 96), interpolation=cv2.INTER_AREA) for c in crops])
  name = name or path.name
  return ClipLips(name=name, speaker=speaker or path.stem, fps=float(fps),
                  first_frame=int(first), lips=lips, valid=valid,
                  mel=mel.astype(np.float32), wav=wav.astype(np.float32), crops=small)


def _cache_key(path: pathlib.Path) -> str:
  st = path.stat()
  h = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|v2".encode())
  return h.hexdigest()[:16]


def save_clip(clip: ClipLips, path: PathLike) -> None:
  """Writes a clip to ``path`` (.npz) atomically (temp file, then rename)."""
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + ".tmp.npz")
  arrays = dict(lips=clip.lips, valid=clip.valid, mel=clip.mel, wav=clip.wav)
  if clip.crops is not None:
    arrays["crops"] = clip.crops
  meta = dict(name=clip.name, speaker=clip.speaker, fps=clip.fps,
              first_frame=clip.first_frame)
  np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
  os.replace(tmp, path)


def load_clip(path: PathLike) -> ClipLips:
  with np.load(path) as z:
    meta = json.loads(str(z["meta"]))
    return ClipLips(lips=z["lips"], valid=z["valid"], mel=z["mel"], wav=z["wav"],
                    crops=z["crops"] if "crops" in z else None, **meta)


def speaker_of(rel: str) -> str:
  """Speaker id of a clip path relative to its dataset root.

  A ``speakers.json`` ({clip: speaker}) beside the videos wins (see
  ``extract_videos``); otherwise every clip is its own speaker.
  """
  return pathlib.PurePath(rel).with_suffix("").as_posix()


def list_videos(root: PathLike) -> list[pathlib.Path]:
  """Every video under ``root`` (recursively), sorted."""
  from lipsync_jax.vision import face_crops  # pylint: disable=import-outside-toplevel
  root = pathlib.Path(root)
  if root.is_file():
    return [root]
  if not root.is_dir():
    raise LipLandmarkError(f"not a file or directory: {root}")
  return sorted(p for p in root.rglob("*")
                if p.is_file() and p.suffix.lower() in face_crops.VIDEO_EXTENSIONS)


def read_speakers(root: PathLike) -> dict[str, str]:
  """``speakers.json`` under a video root: {relative clip path: speaker}."""
  p = pathlib.Path(root) / "speakers.json"
  if not p.is_file():
    return {}
  try:
    d = json.loads(p.read_text())
  except json.JSONDecodeError as e:
    raise LipLandmarkError(f"{p}: not valid JSON ({e})") from None
  if not isinstance(d, dict):
    raise LipLandmarkError(f"{p}: expected an object {{clip: speaker}}")
  return {str(k): str(v) for k, v in d.items()}


def extract_videos(roots: Sequence[PathLike], cache_dir: Optional[PathLike] = None,
                   min_frames: int = 25, keep_crops: bool = True,
                   speakers: Optional[dict[str, str]] = None,
                   progress: bool = True) -> tuple[list[ClipLips], list[dict]]:
  """Lip tracks of every video under ``roots``, cached per file.

  Returns (clips, skipped), skipped = [{"name", "reason"}] for clips that
  cannot be used (no face, too few frames with lips, no audio, ...): they are
  listed, never silently dropped.
  """
  from lipsync_jax.vision import face_detection  # pylint: disable=import-outside-toplevel
  from lipsync_jax.vision import face_mesh  # pylint: disable=import-outside-toplevel
  import tqdm  # pylint: disable=import-outside-toplevel
  files = []
  for root in roots:
    root = pathlib.Path(root)
    names = read_speakers(root) if root.is_dir() else {}
    if speakers:
      names.update(speakers)
    for f in list_videos(root):
      rel = f.relative_to(root).as_posix() if root.is_dir() else f.name
      files.append((f, rel, names.get(rel, speaker_of(rel))))
  if not files:
    raise LipLandmarkError(f"no video files under {', '.join(map(str, roots))}")
  cache = pathlib.Path(cache_dir) if cache_dir else None
  if cache:
    cache.mkdir(parents=True, exist_ok=True)
  mesh = detector = None
  clips, skipped = [], []
  for f, rel, spk in tqdm.tqdm(files, desc="lip landmarks", unit="clip",
                               disable=not progress):
    cpath = cache / f"{_cache_key(f)}.npz" if cache else None
    if cpath is not None and cpath.is_file():
      try:
        c = load_clip(cpath)
        c.name, c.speaker = rel, spk
        clips.append(c)
        continue
      except (OSError, ValueError, KeyError):
        pass  # a corrupt cache entry is rebuilt
    try:
      if mesh is None:
        mesh, detector = face_mesh.FaceMesh(), face_detection.create_detector("default")
      c = extract_clip(f, mesh, detector, min_frames, keep_crops, spk, rel)
    except ValueError as e:
      skipped.append({"name": rel, "reason": str(e).splitlines()[0]})
      continue
    if cpath is not None:
      save_clip(c, cpath)
    clips.append(c)
  return clips, skipped
