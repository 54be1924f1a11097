"""GRID corpus word timings: the `.align` files beside the videos.

GRID (Cooke et al., JASA 2006) ships one `NAME.align` per sentence video,
each line `start end word` in 1/25,000 s units (`sil` marks silence):

    0 23750 sil
    23750 29500 bin
    ...

Two layouts are recognised: the corpus's own (`ROOT/video/NAME.mpg` with
`ROOT/align/NAME.align`, as in ../shared/data/grid_s1) and a file beside the
video (`NAME.mpg` with `NAME.align`). `data_prep/preprocess.py` stores the
timings of each clip in its index entry (`ClipMeta.words`, as frame spans of
the 25 fps frames it packed); a clip whose file is missing or does not fit
the clip keeps no words and says why in its report notes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib

UNITS_PER_SECOND = 25_000
ALIGN_DIR = "align"
# How far the last word may end from the clip's end (GRID's files end at
# 2.98 s of 3.00 s clips; a file of another length is not this clip's).
END_TOLERANCE_S = 0.2
# The report note of a clip in a GRID layout that keeps no words.
NO_WORDS = "no word timings: "


class AlignError(ValueError):
  """An `.align` file that cannot be read; the message says why."""


@dataclasses.dataclass(frozen=True)
class Word:
  """One timed word: [start, end) seconds."""

  start: float
  end: float
  word: str


def read_align(path: str | os.PathLike[str]) -> list[Word]:
  """Parses a GRID `.align` file.

  Raises:
    AlignError: an unreadable line, a word that ends before it starts or
      overlaps the previous one, or no words at all.
  """
  words: list[Word] = []
  for n, line in enumerate(pathlib.Path(path).read_text().splitlines(), 1):
    if not line.strip():
      continue
    parts = line.split()
    try:
      start, end = int(parts[0]), int(parts[1])
      word = parts[2]
    except (IndexError, ValueError):
      raise AlignError(f"line {n} is not 'start end word': {line.strip()!r}") from None
    if end <= start:
      raise AlignError(f"line {n}: ends ({end}) before it starts ({start})")
    if words and start < words[-1].end * UNITS_PER_SECOND:
      raise AlignError(f"line {n}: starts before the previous word ends")
    words.append(Word(start / UNITS_PER_SECOND, end / UNITS_PER_SECOND, word))
  if not words:
    raise AlignError("no words")
  return words


def align_candidates(video: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
  """Where a video's `.align` may be: beside it, or in GRID's `align/`."""
  name = video.stem + ".align"
  return video.with_suffix(".align"), video.parent.parent / ALIGN_DIR / name


def expects_align(video: pathlib.Path) -> bool:
  """True when the video sits in a GRID layout: an `align/` folder beside
  its folder, or an `.align` file beside it."""
  beside, in_dir = align_candidates(video)
  return beside.is_file() or in_dir.parent.is_dir()


def frame_spans(words: list[Word], fps: float) -> list[tuple[int, int, str]]:
  """Words as [first, stop) frame spans at `fps` (each time rounded half up
  to the nearest frame boundary; a word keeps at least one frame)."""
  spans = []
  for w in words:
    first = math.floor(w.start * fps + 0.5)
    spans.append((first, max(first + 1, math.floor(w.end * fps + 0.5)), w.word))
  return spans


def clip_words(video: pathlib.Path, num_frames: int, fps: float
               ) -> tuple[list[tuple[int, int, str]] | None, str | None]:
  """The word spans of a clip of `num_frames` frames, and a report note.

  Returns (spans, None) when the `.align` file is found and fits the clip;
  (None, reason) when the video is in a GRID layout but its file is missing,
  unreadable or of another length; (None, None) outside a GRID layout.
  """
  if not expects_align(video):
    return None, None
  path = next((p for p in align_candidates(video) if p.is_file()), None)
  if path is None:
    return None, NO_WORDS + f"{video.stem}.align not found"
  try:
    words = read_align(path)
  except (AlignError, OSError, UnicodeDecodeError) as e:
    return None, NO_WORDS + f"{path.name}: {e}"
  duration = num_frames / fps
  if abs(words[-1].end - duration) > END_TOLERANCE_S:
    return None, (NO_WORDS + f"{path.name} ends at {words[-1].end:.2f} s, the clip "
                  f"at {duration:.2f} s")
  return frame_spans(words, fps), None


def frame_words(spans: list[tuple[int, int, str]], num_frames: int) -> list[str]:
  """The word spoken at each frame ('' where no span covers it)."""
  out = [""] * num_frames
  for first, stop, word in spans:
    for t in range(max(0, first), min(stop, num_frames)):
      out[t] = word
  return out
