"""Round trips of the ArrayRecord dataset format."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lipsync_jax.data import format as fmt
from lipsync_jax.data import testing


def _clip(rng, t=12, mel_cols=170, name="spk/a"):
  found = np.ones((t,), bool)
  found[4] = False
  return fmt.ClipMeta(
      clip_id=name, speaker_id="spk", source=f"/raw/{name}.mp4", fps=25.0,
      num_frames=t, found=found, boxes=rng.uniform(0, 100, (t, 4)),
      detector="test", mel_cols=mel_cols, notes=["note"],
      file="shards/s.array_record")


@pytest.mark.parametrize("codec", fmt.CODECS)
def test_round_trip(tmp_path, codec):
  rng = np.random.default_rng(0)
  clips = [_clip(rng, name="spk/a"), _clip(rng, t=7, mel_cols=80, name="spk/b")]
  mels, frames = [], []
  with fmt.ShardWriter(tmp_path / "shards/s.array_record") as w:
    for c in clips:
      mel = rng.uniform(-4, 4, (80, c.mel_cols)).astype(np.float32)
      fr = [None if not f else cv2.resize(
          rng.integers(0, 256, (4, 4, 3), np.uint8), (16, 16))
            for f in c.found]
      w.write_clip(c, mel, fr, codec)
      mels.append(mel)
      frames.append(fr)
  fmt.write_index(tmp_path, clips, img_size=16, codec=codec, fps=25.0)
  fmt.write_splits(tmp_path, {"train": ["spk/b"], "val": ["spk/a"]})
  index = fmt.load_index(tmp_path)
  assert index.codec == codec and index.img_size == 16
  assert [c.clip_id for c in index.split("train")] == ["spk/b"]
  assert index.split("test") == []
  reader = fmt.ClipReader(tmp_path, codec, 16)
  for c, mel, fr in zip(index.clips, mels, frames):
    np.testing.assert_array_equal(c.found, fr and [f is not None for f in fr])
    np.testing.assert_allclose(reader.full_mel(c), mel, atol=4e-3)
    # A window straddling a mel block boundary.
    if c.mel_cols > 90:
      np.testing.assert_allclose(reader.mel(c, 70, 86), mel[:, 70:86],
                                 atol=4e-3)
    got = reader.frames(c, 0, 4)
    want = np.stack(fr[:4])
    if codec == "jpeg":
      assert np.abs(got.astype(int) - want).mean() < 4  # lossy
    else:
      np.testing.assert_array_equal(got, want)
    with pytest.raises(fmt.DatasetFormatError, match="without a face"):
      reader.frames(c, 2, 5)
  # The shard is self-describing: metadata (with boxes) rebuilt by scanning.
  scanned = fmt.scan_shard(tmp_path / "shards/s.array_record")
  assert [(c.clip_id, c.offset) for c in scanned] == [
      (c.clip_id, c.offset) for c in index.clips]
  np.testing.assert_allclose(scanned[0].boxes, clips[0].boxes, atol=0.01)


def test_writer_is_atomic(tmp_path):
  path = tmp_path / "x.array_record"
  with pytest.raises(RuntimeError):
    with fmt.ShardWriter(path) as w:
      w.write(b"abc")
      raise RuntimeError("boom")
  assert list(tmp_path.iterdir()) == []


def test_inconsistent_clip_rejected(tmp_path):
  rng = np.random.default_rng(1)
  c = _clip(rng)
  with pytest.raises(fmt.DatasetFormatError, match="found mask"):
    with fmt.ShardWriter(tmp_path / "x.array_record") as w:
      w.write_clip(c, np.zeros((80, c.mel_cols)), [np.zeros((8, 8, 3))] * 12,
                   "raw")
  assert list(tmp_path.iterdir()) == []


def test_splits_deterministic_and_by_speaker():
  clips = [fmt.ClipMeta(clip_id=f"s{i % 7}/c{i}", speaker_id=f"s{i % 7}",
                        source="", fps=25, num_frames=1, found=np.ones(1, bool),
                        boxes=np.zeros((1, 4)), detector="", mel_cols=1)
           for i in range(300)]
  a = fmt.assign_splits(clips, "clip", (0.8, 0.1, 0.1))
  assert a == fmt.assign_splits(clips[::-1], "clip", (0.8, 0.1, 0.1))
  assert sum(len(v) for v in a.values()) == 300
  assert 0.7 < len(a["train"]) / 300 < 0.9
  b = fmt.assign_splits(clips, "speaker", (0.5, 0.25, 0.25))
  for split, ids in b.items():
    for other, oids in b.items():
      if other != split:
        assert not {i.split("/")[0] for i in ids} & {
            i.split("/")[0] for i in oids}
  with pytest.raises(ValueError, match="split-by"):
    fmt.assign_splits(clips, "day")


def test_load_index_errors(tmp_path):
  with pytest.raises(fmt.DatasetFormatError, match="not a lipsync dataset"):
    fmt.load_index(tmp_path)
  (tmp_path / "index.json").write_text("{")
  with pytest.raises(fmt.DatasetFormatError, match="not valid JSON"):
    fmt.load_index(tmp_path)


def test_synthetic_dataset(tmp_path):
  d = testing.write_synthetic_dataset(tmp_path, num_clips=3, num_frames=30,
                                      img_size=48, seed=4)
  index = fmt.load_index(d)
  assert len(index.clips) == 3 and index.img_size == 48
  assert [c.num_frames for c in index.clips] == [30] * 3
  assert not index.clips[1].found[18:20].any()
  assert len(index.split("train")) == 3 and len(index.split("val")) == 1
  reader = fmt.ClipReader(d, index.codec, 48)
  fr = reader.frames(index.clips[0], 0, 5)
  assert fr.shape == (5, 48, 48, 3) and fr.std() > 10
  mel = reader.full_mel(index.clips[0])
  assert mel.shape == (80, 97) and np.isfinite(mel).all()


def test_convert_wav2lip_tree(tmp_path):
  import soundfile as sf
  from lipsync_jax.data import make_loader
  from lipsync_jax.data import wav2lip_tree
  rng = np.random.default_rng(0)
  root, lists = tmp_path / "pre", tmp_path / "filelists"
  lists.mkdir()
  frames = {}
  for cid, n, missing in (("d1/c1", 30, {7}), ("d1/c2", 25, set()),
                          ("d2/c3", 28, {0, 27})):
    d = root / cid
    d.mkdir(parents=True)
    frames[cid] = {}
    for t in range(n):
      if t in missing:
        continue
      img = cv2.resize(rng.integers(0, 256, (4, 4, 3), np.uint8), (40, 50))
      cv2.imwrite(str(d / f"{t}.jpg"), img)
      frames[cid][t] = cv2.resize(cv2.imread(str(d / f"{t}.jpg")), (32, 32))
    wav = 0.1 * np.sin(np.arange(int(n / 25 * 16000)) / 9.0)
    sf.write(d / "audio.wav", wav.astype(np.float32), 16000)
  (root / "d2" / "empty").mkdir()
  (lists / "train.txt").write_text("d1/c1\nd2/c3\nd2/empty\n")
  (lists / "val.txt").write_text("d1/c2 NF\nd9/gone\n")
  report = wav2lip_tree.convert(root, lists, tmp_path / "ds", img_size=32,
                                codec="png", progress=False)
  reasons = {e["clip_id"]: e["reason"] for e in report["clips"]}
  assert reasons == {"d1/c1": "", "d2/c3": "", "d2/empty":
                     "no numbered .jpg frames", "d1/c2": "",
                     "d9/gone": "clip folder not found"}
  index = fmt.load_index(tmp_path / "ds")
  assert [c.clip_id for c in index.split("train")] == ["d1/c1", "d2/c3"]
  assert [c.clip_id for c in index.split("val")] == ["d1/c2"]
  c1 = index.by_id()["d1/c1"]
  assert c1.num_frames == 30 and np.nonzero(~c1.found)[0].tolist() == [7]
  c3 = index.by_id()["d2/c3"]
  assert c3.num_frames == 27 and np.nonzero(~c3.found)[0].tolist() == [0]
  reader = fmt.ClipReader(tmp_path / "ds", "png", 32)
  np.testing.assert_array_equal(reader.frames(c1, 8, 5)[0], frames["d1/c1"][8])
  b = next(iter(make_loader(tmp_path / "ds", "train", "syncnet", 4, 0,
                            shard_index=0, shard_count=1)))
  assert b["faces"].shape == (4, 5, 32, 32, 3)


def test_time_spans_cover_the_clip_in_order_with_gaps():
  spans = fmt.time_spans(100, (0.7, 0.15, 0.15))
  assert spans == {"train": (0, 70), "val": (75, 85), "test": (90, 100)}
  # A zero ratio gives no span; spans never overlap and keep the gap.
  spans = fmt.time_spans(75, (0.7, 0.3, 0.0))
  assert spans == {"train": (0, 52), "val": (57, 75)}
  assert fmt.time_spans(75, (0.7, 0.3, 0.0), gap=0)["val"] == (52, 75)


def test_split_by_time_restricts_every_clip_to_its_span(tmp_path):
  d = testing.write_synthetic_dataset(tmp_path, num_clips=3, num_frames=60,
                                      img_size=32, seed=1)
  index = fmt.load_index(d)
  splits = fmt.assign_splits(index.clips, "time", (0.6, 0.4, 0.0))
  assert splits["test"] == []
  assert splits["train"][0] == f"{index.clips[0].clip_id}@0:36"
  fmt.write_splits(d, splits)
  index = fmt.load_index(d)
  full = index.by_id()
  for name, (a, b) in (("train", (0, 36)), ("val", (41, 60))):
    clips = index.split(name)
    assert [c.clip_id for c in clips] == [c.clip_id for c in index.clips]
    for c in clips:
      assert c.span == (a, b) and full[c.clip_id].span is None
      want = np.asarray(full[c.clip_id].found).copy()
      want[:a] = want[b:] = False
      np.testing.assert_array_equal(c.found, want)
  # The index's own clips are untouched, and sampled windows stay in span.
  for c, fresh in zip(index.clips, fmt.load_index(d).clips):
    np.testing.assert_array_equal(c.found, fresh.found)
  from lipsync_jax import data  # pylint: disable=g-import-not-at-top
  batch = next(iter(data.make_loader(d, "val", "syncnet", 16, 0,
                                     with_meta=True)))
  for key in ("face_start", "audio_start"):
    assert batch[key].min() >= 41 and batch[key].max() + 5 <= 60


def test_split_entry_parsing():
  assert fmt.parse_split_entry("spk/a") == ("spk/a", None)
  assert fmt.parse_split_entry("spk/a@3:9") == ("spk/a", (3, 9))
  assert fmt.parse_split_entry("me@home") == ("me@home", None)
  with pytest.raises(fmt.DatasetFormatError, match="empty span"):
    fmt.parse_split_entry("spk/a@9:3")


# Seven clips whose ids hash to train and test only (none to val): the
# few-clips report (4 GRID and 3 HDTF clips prepared with the defaults).
FEW_CLIP_IDS = ("bbaf2n", "brbk7n", "lbax4n", "lbbc2a", "RD_Radio2_000",
                "WDA_BobMenendez_000", "WDA_EdMarkey0_000")


def _metas(frames_by_id):
  return [fmt.ClipMeta(clip_id=cid, speaker_id=cid, source="", fps=25,
                       num_frames=t, found=np.ones(t, bool),
                       boxes=np.zeros((t, 4)), detector="", mel_cols=t * 16 // 5)
          for cid, t in frames_by_id.items()]


def _spans(entries):
  return [fmt.parse_split_entry(e) for e in entries]


def test_few_clips_get_val_and_test_carved_in_time():
  frames = dict(zip(FEW_CLIP_IDS, [75] * 4 + [200] * 3))
  clips = _metas(frames)
  assert fmt.assign_splits(clips)["val"] == []  # what hashing alone gives
  splits, used, note = fmt.assign_splits_or_carve(clips)
  assert used == "carved" and "left val empty" in note
  assert "\n" not in note
  # 5% of the 900 frames (45) each, from the end of the longest clip (the
  # 200-frame ones, ties by id; at most half of it), a 5-frame gap before
  # each span.
  assert splits["val"] == ["RD_Radio2_000@105:150"]
  assert splits["test"] == ["RD_Radio2_000@155:200"]
  assert sorted(splits["train"]) == sorted(
      ["RD_Radio2_000@0:100"] + [c for c in FEW_CLIP_IDS if c[:3] != "RD_"])
  assert {s: fmt.split_frames(clips, splits[s]) for s in fmt.SPLITS} == {
      "train": 800, "val": 45, "test": 45}
  # Only short clips: at least 25 frames a span, at most half a clip each.
  clips = _metas(dict(zip(FEW_CLIP_IDS, [75] * 7)))
  splits, used, _ = fmt.assign_splits_or_carve(clips)
  assert used == "carved"
  assert _spans(splits["val"]) == [("RD_Radio2_000", (49, 75))]
  assert _spans(splits["test"]) == [("WDA_BobMenendez_000", (49, 75))]
  assert "RD_Radio2_000@0:44" in splits["train"]
  # A few minutes of one speaker: both from the one clip, test last.
  splits, used, _ = fmt.assign_splits_or_carve(_metas({"me/talk": 4500}))
  assert used == "carved" and splits == {
      "train": ["me/talk@0:4040"], "val": ["me/talk@4045:4270"],
      "test": ["me/talk@4275:4500"]}
  # A zero ratio stays empty and is no reason to carve.
  splits, used, note = fmt.assign_splits_or_carve(
      _metas({"me/talk": 4500}), ratios=(0.9, 0.1, 0.0))
  assert used == "carved" and splits["test"] == [] and "test" not in note
  # Enough clips: hashing as asked, no note.
  many = _metas({f"s{i}/c{i}": 75 for i in range(300)})
  assert fmt.assign_splits_or_carve(many) == (fmt.assign_splits(many), "clip",
                                              "")
  # Clips too short to carve from: the hashed splits stay, with a note.
  short = _metas(dict(zip(FEW_CLIP_IDS, [40] * 7)))
  splits, used, note = fmt.assign_splits_or_carve(short)
  assert used == "clip" and splits == fmt.assign_splits(short)
  assert "val came out empty" in note


def test_empty_or_too_short_split_errors_name_the_cause(tmp_path):
  import os  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from lipsync_jax import data  # pylint: disable=g-import-not-at-top
  d = testing.write_synthetic_dataset(tmp_path / "ds", num_clips=2,
                                      num_frames=30, img_size=32, seed=0)
  ids = [c.clip_id for c in fmt.load_index(d).clips]
  fmt.write_splits(d, {"train": ids, "val": [], "test": []})
  repo = pathlib.Path(__file__).resolve().parents[1]
  res = subprocess.run(
      [sys.executable, str(repo / "train.py"), "--config",
       str(repo / "configs" / "syncnet.py") + ":tiny", "--workdir",
       str(tmp_path / "run"), f"--config.data_dir={d}"],
      env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
      text=True, timeout=3600)  # catches hangs only
  assert res.returncode == 2, res.stderr[-2000:]
  last = res.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: split 'val' of {d} is empty"), last
  assert "Traceback" not in res.stderr and "--split-by time" in last
  # A split whose only entry is a 7-frame span: too short, not empty.
  fmt.write_splits(d, {"train": ids, "val": [f"{ids[0]}@2:9"]})
  with pytest.raises(fmt.DatasetFormatError,
                     match=r"split 'val' .*: all 1 of its clips \(or time "
                     r"spans\) are too short for a syncnet sample, which "
                     r"needs 10\+ consecutive frames"):
    data.make_loader(d, "val", "syncnet", 8, 0)
