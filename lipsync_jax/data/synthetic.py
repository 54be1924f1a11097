"""Synthetic talking-face clips built only from installed packages.

The demo and the end-to-end tests need speech with mouth motion that truly
follows it, without downloading a dataset. This module makes such clips:

* speech from eSpeak NG (the library and its voice data ship in the
  `espeakng-loader` wheel), with the phoneme timings of its phoneme events;
* a real photo that scikit-image ships (`skimage.data.astronaut()`), in a few
  identity variants (mirrored, recoloured, re-cropped);
* a mouth drawn per frame from the phoneme timings: jaw opening, lip spreading
  and rounding per viseme, with coarticulation smoothing, plus slow head motion
  and lighting changes so that a model cannot solve the task by copying the
  reference frame.

`make_clip` returns frames (T, H, W, 3) BGR uint8 at 25 fps and 16 kHz audio;
`write_dataset` writes real mp4 files (H.264 + AAC) for `data_prep`.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import pathlib
import threading
from typing import Sequence

import cv2
import numpy as np

FPS = 25
SAMPLE_RATE = 16000

# Face box of skimage.data.astronaut() (x, y, w, h), found with OpenCV's
# frontal Haar cascade; fixed here so clips do not depend on a detector.
_ASTRONAUT_FACE = (177, 66, 95, 95)

# -----------------------------------------------------------------------------
# Speech: eSpeak NG through ctypes.
# -----------------------------------------------------------------------------

_EVENT_END, _EVENT_PHONEME = 0, 7


class _EspeakEvent(ctypes.Structure):
  _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
              ("text_position", ctypes.c_int), ("length", ctypes.c_int),
              ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
              ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short),
                                  ctypes.c_int, ctypes.POINTER(_EspeakEvent))


class SpeechSynthError(RuntimeError):
  pass


class _Espeak:
  """Process-wide eSpeak NG handle (the C library keeps global state)."""

  def __init__(self):
    try:
      import espeakng_loader
    except ImportError:
      raise SpeechSynthError(
          "the synthetic data needs eSpeak NG: pip install espeakng-loader") from None
    self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
    self.lib.espeak_Synth.argtypes = [
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
        ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    # AUDIO_OUTPUT_RETRIEVAL = 1; option 1 = espeakINITIALIZE_PHONEME_EVENTS.
    self.sample_rate = self.lib.espeak_Initialize(
        1, 0, espeakng_loader.get_data_path().encode(), 1)
    if self.sample_rate <= 0:
      raise SpeechSynthError("eSpeak NG failed to initialise")
    self.lock = threading.Lock()
    self._chunks: list[np.ndarray] = []
    self._phonemes: list[tuple[int, str]] = []
    self._callback = _SynthCallback(self._on_audio)  # keep a reference
    self.lib.espeak_SetSynthCallback(self._callback)

  def _on_audio(self, wav, num_samples, events):
    if num_samples > 0:
      self._chunks.append(np.ctypeslib.as_array(wav, (num_samples,)).copy())
    i = 0
    while events[i].type != _EVENT_END:
      if events[i].type == _EVENT_PHONEME:
        self._phonemes.append((events[i].sample, events[i].id.decode("ascii", "replace")))
      i += 1
    return 0

  def synth(self, text: str, voice: str, rate: int, pitch: int):
    with self.lock:
      if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
        raise SpeechSynthError(f"eSpeak NG has no voice {voice!r}")
      self.lib.espeak_SetParameter(1, int(rate), 0)   # espeakRATE
      self.lib.espeak_SetParameter(3, int(pitch), 0)  # espeakPITCH
      self._chunks, self._phonemes = [], []
      data = text.encode()
      # position_type 1 = POS_CHARACTER, flags 0 = espeakCHARS_AUTO.
      if self.lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 0, None, None) != 0:
        raise SpeechSynthError(f"eSpeak NG could not speak {text!r}")
      self.lib.espeak_Synchronize()
      wav = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
      return wav.astype(np.float32) / 32768.0, list(self._phonemes)


@functools.cache
def _espeak() -> _Espeak:
  return _Espeak()


@dataclasses.dataclass(frozen=True)
class Speech:
  """Synthesised speech at 16 kHz with phoneme segments in seconds."""
  wav: np.ndarray                                   # (n,) float32
  phonemes: tuple[tuple[float, float, str], ...]    # (start, end, symbol)

  @property
  def duration(self) -> float:
    return len(self.wav) / SAMPLE_RATE


def synthesize(text: str, voice: str = "en-us", rate: int = 150,
               pitch: int = 50) -> Speech:
  """Speaks `text` with eSpeak NG; returns 16 kHz audio and phoneme timings."""
  import librosa
  engine = _espeak()
  wav, events = engine.synth(text, voice, rate, pitch)
  sr = engine.sample_rate
  wav16 = librosa.resample(wav, orig_sr=sr, target_sr=SAMPLE_RATE).astype(np.float32)
  starts = [s / sr for s, _ in events] + [len(wav) / sr]
  segments = tuple((starts[i], starts[i + 1], sym) for i, (_, sym) in enumerate(events))
  return Speech(wav16, segments)


# -----------------------------------------------------------------------------
# Visemes: phoneme -> (jaw opening, lip width, rounding), each in [0, 1].
# -----------------------------------------------------------------------------

_CLOSED, _REST = (0.0, 0.5, 0.0), (0.05, 0.5, 0.0)
_VISEME_GROUPS = {
    ("p", "b", "m"): _CLOSED,
    ("f", "v"): (0.08, 0.55, 0.0),
    ("a", "A", "aI", "aU", "V", "0", "a#", "A:", "aa"): (1.0, 0.65, 0.0),
    ("E", "e", "eI", "@", "3", "3:", "@L", "e@", "a@", "I@"): (0.6, 0.6, 0.0),
    ("i", "i:", "I", "I#", "i@", "j"): (0.3, 0.85, 0.0),
    ("u", "u:", "U", "oU", "O", "O:", "OI", "o", "w", "U@", "O@"): (0.4, 0.25, 1.0),
    ("S", "Z", "tS", "dZ", "r"): (0.25, 0.35, 0.6),
    ("T", "D", "s", "z", "t", "d", "n", "l", "k", "g", "N", "h", "x", "t#", "d#"):
        (0.25, 0.6, 0.0),
}
_VISEMES = {sym: v for group, v in _VISEME_GROUPS.items() for sym in group}
# Dominance of a viseme when a frame spans several phonemes: lip closures are
# short (30-60 ms, under one 40 ms frame) but always visible, as in
# dominance-based coarticulation models.
_DOMINANCE = {"p": 6.0, "b": 6.0, "m": 4.0, "f": 2.0, "v": 2.0}


def viseme(symbol: str) -> tuple[float, float, float]:
  """Mouth shape for an eSpeak phoneme mnemonic (stress marks ignored)."""
  s = symbol.strip("',%=_:!")
  if not s:
    return _REST
  for candidate in (s, s.rstrip(":"), s[:2], s[:1]):
    if candidate in _VISEMES:
      return _VISEMES[candidate]
  return (0.3, 0.55, 0.0)


def mouth_track(speech: Speech, num_frames: int, fps: float = FPS) -> np.ndarray:
  """Per-frame mouth shape (num_frames, 3): opening, width, rounding.

  Each frame averages the visemes active during its 1/fps interval, weighted
  by overlap and dominance (closures dominate), and a short symmetric filter
  adds coarticulation.
  """
  track = np.tile(np.array(_REST, np.float32), (num_frames, 1))
  for i in range(num_frames):
    t0, t1 = i / fps, (i + 1) / fps
    acc, total = np.zeros(3, np.float32), 0.0
    for start, end, sym in speech.phonemes:
      overlap = min(end, t1) - max(start, t0)
      if overlap > 0:
        weight = overlap * _DOMINANCE.get(sym.strip("',%=_:!"), 1.0)
        acc += weight * np.asarray(viseme(sym), np.float32)
        total += weight
    if total > 0:
      track[i] = acc / total
  kernel = np.array([0.2, 0.6, 0.2], np.float32)
  padded = np.pad(track, ((1, 1), (0, 0)), mode="edge")
  return sum(k * padded[j:j + num_frames] for j, k in enumerate(kernel))


# -----------------------------------------------------------------------------
# Faces and rendering.
# -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class FaceTemplate:
  """A photo with the mouth removed, plus where and how to draw one."""
  image: np.ndarray          # (H, W, 3) BGR uint8, mouth inpainted
  mouth_center: tuple[float, float]
  mouth_width: float
  lip_color: tuple[int, int, int]


@functools.cache
def _astronaut() -> np.ndarray:
  from skimage import data
  return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def face_template(identity: int = 0) -> FaceTemplate:
  """Identity variants of the astronaut photo, cropped around the face.

  identity 0: the photo; 1: mirrored; 2: warmer, darker skin tone and a
  tighter crop; 3: mirrored, cooler and brighter; others cycle with new tints.
  """
  img = _astronaut()
  x, y, w, h = _ASTRONAUT_FACE
  cx, cy = x + w / 2, y + h / 2
  half = 0.95 * w if identity % 4 != 2 else 0.8 * w
  x0, y0 = int(round(cx - half)), int(round(cy - half))
  size = int(round(2 * half))
  crop = img[max(0, y0):y0 + size, max(0, x0):x0 + size].astype(np.float32)
  scale = 256.0 / size
  crop = cv2.resize(crop, (256, 256), interpolation=cv2.INTER_AREA)
  mx, my, mw = (cx - x0) * scale, (y + 0.78 * h - y0) * scale, 0.40 * w * scale
  # Remove the original (smiling, open) mouth so that only our mouth shows.
  mask = np.zeros(crop.shape[:2], np.uint8)
  cv2.ellipse(mask, (int(mx), int(my)), (int(0.62 * mw), int(0.3 * mw)), 0, 0, 360, 255, -1)
  crop = cv2.inpaint(np.clip(crop, 0, 255).astype(np.uint8), mask, 7, cv2.INPAINT_TELEA)
  crop = crop.astype(np.float32)
  tints = [(1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (0.8, 0.85, 1.0), (1.1, 1.05, 0.95)]
  rng = np.random.default_rng(identity)
  tint = tints[identity % 4] if identity < 4 else tuple(rng.uniform(0.8, 1.15, 3))
  crop = np.clip(crop * np.asarray(tint, np.float32), 0, 255).astype(np.uint8)
  if identity % 2 == 1:
    crop, mx = crop[:, ::-1].copy(), 255.0 - mx
  lip = tuple(int(c) for c in np.clip(np.array([70, 60, 165]) * np.asarray(tint), 0, 255))
  return FaceTemplate(crop, (mx, my), mw, lip)


def render_frame(template: FaceTemplate, shape: Sequence[float], t: float,
                 motion_seed: int, out_size: int = 256) -> np.ndarray:
  """Draws one frame: the mouth `shape` (opening, width, rounding) at time t.

  Head motion (rotation, translation, scale) and lighting follow smooth
  functions of t with phases drawn from `motion_seed`.
  """
  opening, width, rounding = (float(v) for v in shape)
  img = template.image.copy()
  mx, my = template.mouth_center
  mw = template.mouth_width
  half_w = 0.5 * mw * (0.7 + 0.5 * width) * (1.0 - 0.35 * rounding)
  open_h = 0.32 * mw * opening
  lip = 0.09 * mw * (1.0 + 0.6 * rounding)
  s = 8  # sub-pixel precision for anti-aliased ellipses
  center = (int(mx * s), int((my + 0.3 * open_h) * s))
  cv2.ellipse(img, center, (int(half_w * s), int((lip + 0.5 * open_h + 1) * s)),
              0, 0, 360, template.lip_color, -1, cv2.LINE_AA, 3)
  if opening > 0.02:
    inner = (int(0.82 * half_w * s), int(max(0.5 * open_h, 0.5) * s))
    cv2.ellipse(img, center, inner, 0, 0, 360, (35, 20, 40), -1, cv2.LINE_AA, 3)
    if opening > 0.3:  # upper teeth
      teeth_h = 0.25 * open_h
      cv2.ellipse(img, (center[0], int((my + 0.3 * open_h - 0.5 * open_h + 0.5 * teeth_h) * s)),
                  (int(0.6 * half_w * s), int(0.5 * teeth_h * s)), 0, 0, 360,
                  (215, 225, 230), -1, cv2.LINE_AA, 3)
  else:
    cv2.line(img, (int((mx - half_w) * s), center[1]), (int((mx + half_w) * s), center[1]),
             (40, 30, 70), 2, cv2.LINE_AA, 3)
  # Slow head motion and lighting.
  ph = np.random.default_rng(motion_seed).uniform(0, 2 * np.pi, 6)
  angle = 3.0 * np.sin(0.7 * t + ph[0])
  tx, ty = 5.0 * np.sin(0.5 * t + ph[1]), 4.0 * np.sin(0.6 * t + ph[2])
  scale = 1.0 + 0.03 * np.sin(0.4 * t + ph[3])
  size = img.shape[0]
  m = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
  m[:, 2] += (tx, ty)
  img = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REFLECT)
  gain = 1.0 + 0.12 * np.sin(0.8 * t + ph[4])
  cast = 1.0 + 0.04 * np.sin(0.3 * t + ph[5] + np.array([0.0, 2.0, 4.0]))
  img = np.clip(img.astype(np.float32) * gain * cast, 0, 255).astype(np.uint8)
  if out_size != size:
    img = cv2.resize(img, (out_size, out_size), interpolation=cv2.INTER_AREA)
  return img


# -----------------------------------------------------------------------------
# Sentences and clips.
# -----------------------------------------------------------------------------

# A GRID-like grammar: short sentences with many distinct mouth shapes.
_WORDS = (
    ("bin", "lay", "place", "set", "move", "pull"),
    ("blue", "green", "red", "white", "orange", "purple"),
    ("at", "by", "in", "with", "under", "over"),
    tuple("abcdefghijklmnopqrstuvwxz"),
    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    ("again", "now", "please", "soon", "quickly", "maybe"),
)
VOICES = ("en-us", "en", "en-gb-scotland", "en-029", "en-gb-x-rp")


def random_sentence(rng: np.random.Generator, num_phrases: int = 2) -> str:
  return ", ".join(" ".join(str(rng.choice(group)) for group in _WORDS)
                   for _ in range(num_phrases))


@dataclasses.dataclass(frozen=True)
class Clip:
  frames: np.ndarray    # (T, H, W, 3) BGR uint8 at FPS
  wav: np.ndarray       # (n,) float32 at SAMPLE_RATE
  mouth: np.ndarray     # (T, 3) opening, width, rounding
  text: str
  voice: str
  identity: int
  lip_mask: np.ndarray | None = None   # (T, H, W) bool: the drawn lips, if asked


def render_clip(text: str, identity: int, voice: str = "en-us", rate: int = 160,
                pitch: int = 50, motion_seed: int = 0, out_size: int = 256,
                lip_mask: bool = False) -> Clip:
  """`identity` speaking `text`: speech, mouth track and frames.

  The head motion and lighting depend only on `motion_seed`, so two clips
  with the same identity and motion seed but different texts differ only in
  the mouth (the demo renders its ground truth this way). `lip_mask=True`
  also returns where the lips are drawn (`Clip.lip_mask`): the pixels that
  change when the frames are drawn again with another lip colour, i.e. the lip
  ring without the open mouth's inside and teeth (the demo's colour check).
  """
  speech = synthesize(text, voice=voice, rate=rate, pitch=pitch)
  template = face_template(identity)
  num_frames = max(1, int(round(speech.duration * FPS)))
  mouth = mouth_track(speech, num_frames)
  frames = np.stack([render_frame(template, mouth[i], i / FPS, motion_seed, out_size)
                     for i in range(num_frames)])
  masks = None
  if lip_mask:
    marked = dataclasses.replace(template, lip_color=(255 - template.lip_color[0], 255, 0))
    masks = np.stack([
        np.abs(render_frame(marked, mouth[i], i / FPS, motion_seed, out_size).astype(np.int16)
               - frames[i]).max(axis=-1) > 48
        for i in range(num_frames)])
  return Clip(frames, speech.wav, mouth, text, voice, identity, masks)


def random_voice(rng: np.random.Generator) -> dict[str, int | str]:
  """Random `render_clip` voice kwargs: voice name, rate (wpm) and pitch."""
  return {"voice": str(rng.choice(VOICES)), "rate": int(rng.integers(130, 190)),
          "pitch": int(rng.integers(30, 70))}


def make_clip(seed: int, identity: int | None = None, num_phrases: int = 2,
              out_size: int = 256) -> Clip:
  """One synthetic talking-face clip determined by `seed`.

  Text, voice, identity and motion are exact functions of the seed. eSpeak NG
  keeps some state between utterances in one process, so the audio of a
  repeated call may differ by a few samples (sub-millisecond phoneme timing);
  the frames then differ in at most a few mouth pixels.
  """
  rng = np.random.default_rng(seed)
  text = random_sentence(rng, num_phrases)
  voice = random_voice(rng)
  identity = int(rng.integers(0, 4)) if identity is None else identity
  return render_clip(text, identity, motion_seed=seed, out_size=out_size, **voice)


def write_clip(path: str | pathlib.Path, clip: Clip) -> pathlib.Path:
  """Writes an mp4 (H.264 + AAC) through the project's atomic video writer."""
  from lipsync_jax.io import video
  path = pathlib.Path(path)
  h, w = clip.frames.shape[1:3]
  with video.VideoWriter(path, FPS, w, h, audio=(clip.wav, SAMPLE_RATE)) as writer:
    for frame in clip.frames:
      writer.write(frame)
  return path
