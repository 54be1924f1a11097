"""LMD-FM: mouth landmark distance on MediaPipe FaceMesh lip points.

The LMD of the talking-face literature (Chen et al. 2018; the SyncTalkFace
and AU papers' tables) uses dlib's 68-point mouth landmarks. dlib's model is
not usable here (spec/variants.md A7), so this is a DIFFERENT metric computed
on FaceMesh's 40 lip points; it is called **LMD-FM** everywhere and its
numbers must not be compared with published LMD values.

Definition. For predicted and ground-truth FaceMesh landmarks of the same
frames (``(T, 468, 3)``, e.g. from ``face_mesh.FaceMesh`` on generated and
real frames), each frame of each sequence is normalised on its own:

  1. translate so that the midpoint of the eye outer corners (33, 263) is the
     origin (``center="eyes"``, default);
  2. divide by that frame's inter-ocular distance ``IOD = |p33 - p263|`` in
     the image plane (spec B5's normalisation).

LMD-FM is then the mean, over frames and the 40 lip points, of the Euclidean
distance between the normalised (x, y) points (``use_z=True`` adds z). The
unit is one IOD; multiply by 100 for "% of IOD". The result is therefore
invariant to a global scale and translation of either sequence (e.g. the
generated video at another resolution), but not to rotation (head roll is
part of the error, as in the pixel LMD).

The 40 lip points (spec B5; the lip loops of MediaPipe's FACEMESH_LIPS):

* outer upper lip: 61 185 40 39 37 0 267 269 270 409 291
* outer lower lip: 146 91 181 84 17 314 405 321 375 (corners 61, 291 shared)
* inner upper lip: 78 191 80 81 82 13 312 311 310 415 308
* inner lower lip: 95 88 178 87 14 317 402 318 324 (corners 78, 308 shared)

``metrics.landmark_distance`` is a third variant (FaceMesh on the face crop
itself, in crop pixels, no normalisation); keep the names apart.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

LIP_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291,
             146, 91, 181, 84, 17, 314, 405, 321, 375)
LIP_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308,
             95, 88, 178, 87, 14, 317, 402, 318, 324)
MOUTH_LANDMARKS = LIP_OUTER + LIP_INNER  # 40 points
EYE_OUTER = (33, 263)
CENTERS = ("eyes", "mouth", "none")


class LMDError(ValueError):
  """Bad LMD-FM input."""


def normalise_face(landmarks: np.ndarray, center: str = "eyes"
                   ) -> np.ndarray:
  """Per-frame translation and IOD scale normalisation.

  Args:
    landmarks: (T, 468, D) with D >= 2 (x, y image pixels[, z]).
    center: origin of each frame: "eyes" (midpoint of 33 and 263), "mouth"
      (centroid of the 40 lip points; removes the mouth's position, keeps
      only its shape) or "none" (scale only).

  Returns:
    (T, 468, D) float64, in IOD units.
  """
  lm = np.asarray(landmarks, np.float64)
  if lm.ndim != 3 or lm.shape[1] != 468 or lm.shape[2] < 2:
    raise LMDError(f"landmarks must be (T, 468, 2 or 3), got {lm.shape}")
  if center not in CENTERS:
    raise LMDError(f"center must be one of {CENTERS}, got {center!r}")
  iod = np.linalg.norm(lm[:, EYE_OUTER[0], :2] - lm[:, EYE_OUTER[1], :2],
                       axis=-1)
  if center == "eyes":
    origin = lm[:, list(EYE_OUTER)].mean(1)
  elif center == "mouth":
    origin = lm[:, list(MOUTH_LANDMARKS)].mean(1)
  else:
    origin = np.zeros((lm.shape[0], lm.shape[2]))
  with np.errstate(divide="ignore", invalid="ignore"):
    return (lm - origin[:, None]) / np.where(iod > 0, iod, np.nan)[:, None,
                                                                   None]


def lmd_fm_per_frame(landmarks_pred: np.ndarray, landmarks_gt: np.ndarray,
                     center: str = "eyes", use_z: bool = False) -> np.ndarray:
  """LMD-FM of every frame: (T, 468, 3) x 2 -> (T,) in IOD units.

  Frames where either input is non-finite (no face) or has a zero IOD come
  back as NaN.
  """
  p, g = np.asarray(landmarks_pred), np.asarray(landmarks_gt)
  if p.shape != g.shape:
    raise LMDError(f"shape mismatch: pred {p.shape} vs gt {g.shape}")
  if use_z and p.shape[-1] < 3:
    raise LMDError("use_z needs (T, 468, 3) landmarks")
  d = 3 if use_z else 2
  pn = normalise_face(p, center)[:, list(MOUTH_LANDMARKS), :d]
  gn = normalise_face(g, center)[:, list(MOUTH_LANDMARKS), :d]
  return np.linalg.norm(pn - gn, axis=-1).mean(-1)


def lmd_fm(landmarks_pred: np.ndarray, landmarks_gt: np.ndarray,
           center: str = "eyes", use_z: bool = False,
           valid: Optional[np.ndarray] = None) -> float:
  """LMD-FM (FaceMesh lip-landmark distance; NOT dlib's LMD).

  Args:
    landmarks_pred: (T, 468, 3) FaceMesh landmarks of the generated frames.
    landmarks_gt: (T, 468, 3) FaceMesh landmarks of the real frames.
    center: per-frame origin, see ``normalise_face`` (default "eyes").
    use_z: include FaceMesh's relative depth in the distance.
    valid: optional (T,) bool mask of frames to average.

  Returns:
    Mean Euclidean distance over the frames and the 40 lip points of the
    normalised landmarks, in inter-ocular distances. 0 for identical inputs.

  Raises:
    LMDError: mismatched/bad shapes, or no frame with finite landmarks.
  """
  per = lmd_fm_per_frame(landmarks_pred, landmarks_gt, center, use_z)
  keep = np.isfinite(per)
  if valid is not None:
    keep &= np.asarray(valid, bool)
  if not keep.any():
    raise LMDError("LMD-FM: no frame with finite landmarks in both inputs")
  return float(per[keep].mean())
