"""GRID's word timings: reading `.align` files, and data_prep storing them."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest

from lipsync_jax.data import format as fmt
from lipsync_jax.data import grid
from lipsync_jax.data import preprocess_lib

ALIGN = "0 23750 sil\n23750 29500 bin\n29500 34000 blue\n34000 74500 sil\n"


def _grid_layout(root: pathlib.Path, names, align_text=ALIGN) -> list[pathlib.Path]:
  (root / "video").mkdir(parents=True)
  (root / "align").mkdir()
  videos = []
  for n in names:
    v = root / "video" / f"{n}.mp4"
    v.write_bytes(b"")
    (root / "align" / f"{n}.align").write_text(align_text)
    videos.append(v)
  return videos


def test_read_align_units_and_frames(tmp_path):
  p = tmp_path / "x.align"
  p.write_text(ALIGN)
  words = grid.read_align(p)
  assert [w.word for w in words] == ["sil", "bin", "blue", "sil"]
  assert words[1].start == pytest.approx(0.95) and words[-1].end == pytest.approx(2.98)
  spans = grid.frame_spans(words, 25.0)
  assert spans[1] == (24, 30, "bin")      # 0.95 s -> frame 23.75 -> 24; 1.18 s -> 29.5 -> 30
  assert spans[-1][1] == 75               # 2.98 s at 25 fps = frame 74.5
  per_frame = grid.frame_words(spans, 75)
  assert per_frame[25] == "bin" and per_frame[0] == "sil" and per_frame[74] == "sil"


@pytest.mark.parametrize("text, reason", [
    ("0 100 sil\nten twenty bin\n", "line 2 is not"),
    ("0 100 sil\n100 50 bin\n", r"ends \(50\) before it starts"),
    ("0 100 sil\n50 200 bin\n", "starts before the previous word ends"),
    ("\n", "no words"),
])
def test_read_align_rejects_bad_files(tmp_path, text, reason):
  p = tmp_path / "x.align"
  p.write_text(text)
  with pytest.raises(grid.AlignError, match=reason):
    grid.read_align(p)


def test_clip_words_layouts_and_reasons(tmp_path):
  good, missing, short = _grid_layout(tmp_path / "g", ["good", "missing", "short"])
  (tmp_path / "g" / "align" / "missing.align").unlink()
  (tmp_path / "g" / "align" / "short.align").write_text("0 25000 sil\n")
  spans, note = grid.clip_words(good, 75, 25.0)
  assert note is None and spans[2] == (30, 34, "blue")
  assert grid.clip_words(missing, 75, 25.0) == (None, "no word timings: missing.align not found")
  spans, note = grid.clip_words(short, 75, 25.0)
  assert spans is None and "short.align ends at 1.00 s, the clip at 3.00 s" in note
  # the right file, but the clip was trimmed to 2 s: it no longer fits
  assert grid.clip_words(good, 50, 25.0)[0] is None
  # outside a GRID layout: no words and nothing to say
  plain = tmp_path / "plain" / "clip.mp4"
  plain.parent.mkdir()
  plain.write_bytes(b"")
  assert grid.clip_words(plain, 75, 25.0) == (None, None)
  # a file beside the video counts too
  plain.with_suffix(".align").write_text(ALIGN)
  assert grid.clip_words(plain, 75, 25.0)[0][1] == (24, 30, "bin")


def test_words_survive_the_index_round_trip():
  meta = fmt.ClipMeta(clip_id="a", speaker_id="a", source="a.mp4", fps=25.0, num_frames=3,
                      found=np.ones(3, bool), boxes=np.zeros((3, 4), np.float32),
                      detector="d", mel_cols=10, words=[(0, 2, "sil"), (2, 3, "bin")])
  back = fmt.ClipMeta.from_json(json.loads(json.dumps(meta.to_json())))
  assert back.words == [(0, 2, "sil"), (2, 3, "bin")]
  meta.words = None
  assert "words" not in meta.to_json()
  assert fmt.ClipMeta.from_json(meta.to_json()).words is None


@pytest.mark.slow  # decodes and detects faces in 4 real GRID clips
def test_preprocess_stores_grid_words_that_line_up_with_the_speech(tmp_path, shared_dir):
  """data_prep on a GRID layout: the words land in the index and match the
  sound (speech frames louder than `sil` frames, the last span at the clip's
  end); a missing and a mismatched `.align` are each listed with a reason
  and their clips are still packed."""
  from lipsync_jax.io import audio
  src = shared_dir / "data" / "grid_s1"
  names = ["bbaf2n", "bbaf4p", "bbaf5a", "bbal6n"]
  root = tmp_path / "s1"
  (root / "video").mkdir(parents=True)
  (root / "align").mkdir()
  for n in names:
    (root / "video" / f"{n}.mp4").symlink_to(src / "video" / f"{n}.mp4")
    shutil.copy(src / "align" / f"{n}.align", root / "align")
  (root / "align" / "bbaf5a.align").unlink()
  (root / "align" / "bbal6n.align").write_text("0 40000 sil\n")   # another clip's length
  out = tmp_path / "data"
  cfg = preprocess_lib.PrepConfig(split_ratios=(0.5, 0.25, 0.25))
  report = preprocess_lib.run(root / "video", out, cfg, progress=False)
  assert report["num_ok"] == 4 and report["num_with_words"] == 2
  assert report["num_words_unusable"] == 2
  text = preprocess_lib.format_report(report)
  assert "bbaf5a: bbaf5a.align not found" in text
  assert "bbal6n: bbal6n.align ends at 1.60 s, the clip at 3.00 s" in text
  index = fmt.load_index(out)
  by_id = {c.clip_id: c for c in index.split("all")}
  assert by_id["bbaf5a"].words is None and by_id["bbal6n"].words is None
  for n in names[:2]:
    clip = by_id[n]
    assert [w for _, _, w in clip.words if w != "sil"] == \
        [w.word for w in grid.read_align(src / "align" / f"{n}.align") if w.word != "sil"]
    assert abs(clip.words[-1][1] - clip.num_frames) <= 1
    wav = audio.load_audio(src / "video" / f"{n}.mp4")
    hop = audio.SAMPLE_RATE // 25
    rms = np.array([np.sqrt(np.mean(wav[t * hop:(t + 1) * hop] ** 2) + 1e-12)
                    for t in range(clip.num_frames)])
    words = grid.frame_words(clip.words, clip.num_frames)
    speech = np.array([w not in ("sil", "") for w in words])
    # silence frames well inside the leading/trailing `sil` spans
    quiet = np.zeros_like(speech)
    for first, stop, w in clip.words:
      if w == "sil":
        quiet[first + 2:stop - 2] = True
    assert np.median(rms[speech]) > 4 * np.median(rms[quiet]), (n, rms[speech], rms[quiet])
