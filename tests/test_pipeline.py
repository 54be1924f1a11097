"""Tests of the grain loaders over a synthetic dataset in the real format."""

from __future__ import annotations

import numpy as np
import pytest

from lipsync_jax.data import format as fmt
from lipsync_jax.data import make_eval_loader
from lipsync_jax.data import make_loader
from lipsync_jax.data import testing


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return testing.write_synthetic_dataset(tmp_path_factory.mktemp("syn"),
                                         num_clips=4, num_frames=40,
                                         img_size=32, seed=0)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_generator_batch_contract_and_contents(data_dir):
  index = fmt.load_index(data_dir)
  reader = fmt.ClipReader(data_dir, index.codec, index.img_size)
  it = iter(make_loader(data_dir, "train", "generator", 4, seed=1,
                        shard_index=0, shard_count=1, with_meta=True))
  b = next(it)
  assert b["target"].shape == (4, 5, 32, 32, 3)
  assert b["target"].dtype == np.uint8
  assert b["reference"].shape == (4, 5, 32, 32, 3)
  assert b["audio"].shape == (4, 5, 80, 16, 1)
  assert b["audio"].dtype == np.float32
  assert b["sync_audio"].shape == (4, 80, 16, 1)
  np.testing.assert_array_equal(b["sync_audio"], b["audio"][:, 0])
  for i in range(4):
    clip = index.clips[b["clip_index"][i]]
    f, r = int(b["target_start"][i]), int(b["reference_start"][i])
    assert f != r
    mel = reader.full_mel(clip)
    for k in range(5):
      s = int(80 * (f + k) / clip.fps)   # shared alignment, no -1 shift
      np.testing.assert_array_equal(b["audio"][i, k, :, :, 0], mel[:, s:s + 16])
    np.testing.assert_array_equal(b["target"][i], reader.frames(clip, f, 5))
    np.testing.assert_array_equal(b["reference"][i], reader.frames(clip, r, 5))
    assert clip.found[f:f + 5].all() and clip.found[r:r + 5].all()


def test_syncnet_negatives_offset_balance_and_no_face_gaps(data_dir):
  index = fmt.load_index(data_dir)
  gap_clip = [i for i, c in enumerate(index.clips) if not c.found.all()]
  assert gap_clip == [1]
  it = iter(make_loader(data_dir, "train", "syncnet", 8, seed=3,
                        shard_index=0, shard_count=1, with_meta=True,
                        min_offset=7))
  labels, seen_gap_clip = [], 0
  for b in _take(it, 25):
    assert b["faces"].shape == (8, 5, 32, 32, 3)
    assert b["audio"].shape == (8, 80, 16, 1)
    for i in range(8):
      ci, g, f = (int(b[k][i]) for k in ("clip_index", "face_start",
                                          "audio_start"))
      clip = index.clips[ci]
      assert clip.found[g:g + 5].all() and g + 5 <= clip.num_frames
      assert int(80 * f / clip.fps) + 16 <= clip.mel_cols
      if b["label"][i] == 1:
        assert g == f
      else:
        assert abs(g - f) >= 7
      seen_gap_clip += ci == 1
    labels.append(b["label"])
  labels = np.concatenate(labels)
  assert set(np.unique(labels)) == {0.0, 1.0}
  assert 0.35 < labels.mean() < 0.65, labels.mean()
  assert seen_gap_clip > 0


def test_deterministic_for_seed(data_dir):
  def first(seed):
    it = iter(make_loader(data_dir, "train", "generator", 2, seed=seed,
                          shard_index=0, shard_count=1, with_meta=True))
    return _take(it, 4)
  a, b, c = first(5), first(5), first(6)
  for x, y in zip(a, b):
    _assert_same(x, y)
  assert any(not np.array_equal(x["target"], z["target"]) for x, z in zip(a, c))


def test_epoch_visits_every_clip_and_sharding_partitions(data_dir):
  index = fmt.load_index(data_dir)
  n = len(index.clips)
  for epochs in (1, 2):
    full = [b["clip_index"] for b in make_loader(
        data_dir, "train", "syncnet", 1, seed=2, num_epochs=epochs,
        shard_index=0, shard_count=1, with_meta=True, windows_per_clip=3)]
    full = np.concatenate(full)
    assert len(full) == 3 * n * epochs
    # Each epoch is a permutation covering every clip windows_per_clip times.
    for e in range(epochs):
      counts = np.bincount(full[e * 3 * n:(e + 1) * 3 * n], minlength=n)
      assert (counts == 3).all(), counts
  parts = []
  for s in range(2):
    parts.append(np.concatenate([b["clip_index"] for b in make_loader(
        data_dir, "train", "syncnet", 2, seed=2, num_epochs=1, shard_index=s,
        shard_count=2, with_meta=True, windows_per_clip=2)]))
  assert len(parts[0]) == len(parts[1]) == n
  assert sorted(np.concatenate(parts).tolist()) == sorted(list(range(n)) * 2)


def test_process_batch_size_and_bad_args(data_dir):
  b = next(iter(make_loader(data_dir, "train", "syncnet", 8, seed=0,
                            shard_index=1, shard_count=4)))
  assert b["faces"].shape[0] == 2
  with pytest.raises(ValueError, match="multiple of the process count"):
    make_loader(data_dir, "train", "syncnet", 6, 0, shard_index=0,
                shard_count=4)
  with pytest.raises(ValueError, match="kind"):
    make_loader(data_dir, "train", "wav2lip", 2, 0, shard_index=0,
                shard_count=1)
  with pytest.raises(fmt.DatasetFormatError, match="not a lipsync dataset"):
    make_loader(data_dir / "nope", "train", "syncnet", 2, 0, shard_index=0,
                shard_count=1)


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_from_state_matches_uninterrupted_stream(data_dir, workers):
  kw = dict(shard_index=0, shard_count=1, with_meta=True,
            worker_count=workers)
  ref = _take(iter(make_loader(data_dir, "train", "generator", 2, 9, **kw)), 7)
  it = iter(make_loader(data_dir, "train", "generator", 2, 9, **kw))
  _take(it, 3)
  state = it.get_state()
  del it
  resumed = iter(make_loader(data_dir, "train", "generator", 2, 9, **kw))
  resumed.set_state(state)
  for x, y in zip(_take(resumed, 4), ref[3:]):
    _assert_same(x, y)


def test_eval_loader_is_one_deterministic_pass(data_dir):
  def run():
    return list(make_eval_loader(data_dir, "train", "generator", 3, seed=0,
                                 shard_index=0, shard_count=1,
                                 with_meta=True))
  a, b = run(), run()
  assert [len(x["clip_index"]) for x in a] == [3, 1]
  assert np.concatenate([x["clip_index"] for x in a]).tolist() == [0, 1, 2, 3]
  for x, y in zip(a, b):
    _assert_same(x, y)


def test_syncnet_augment_keeps_windows_and_labels(data_dir):
  """Augmentation transforms the pixels and mel of the same windows."""
  kw = dict(shard_index=0, shard_count=1, with_meta=True)
  plain = next(iter(make_loader(data_dir, "train", "syncnet", 16, 3, **kw)))
  aug = next(iter(make_loader(data_dir, "train", "syncnet", 16, 3, augment=True,
                              **kw)))
  again = next(iter(make_loader(data_dir, "train", "syncnet", 16, 3,
                                augment=True, **kw)))
  _assert_same(aug, again)                      # seeded
  for k in ("label", "clip_index", "face_start", "audio_start"):
    np.testing.assert_array_equal(aug[k], plain[k], err_msg=k)
  assert aug["faces"].dtype == np.uint8 and aug["faces"].shape == plain["faces"].shape
  assert (aug["faces"] != plain["faces"]).mean() > 0.5
  # Mel: one gain per sample, within +-0.25, clipped to [-4, 4].
  d = (aug["audio"] - plain["audio"]).reshape(16, -1)
  inside = np.abs(plain["audio"].reshape(16, -1)) < 3.5
  for i in range(16):
    gains = d[i][inside[i]]
    assert np.ptp(gains) < 1e-5 and abs(gains[0]) <= 0.25 + 1e-6
  assert aug["audio"].min() >= -4 and aug["audio"].max() <= 4
  with pytest.raises(ValueError, match="syncnet sample option"):
    make_loader(data_dir, "train", "generator", 4, 0, augment=True)


def test_augment_faces_is_one_transform_for_all_frames():
  from lipsync_jax.data import augment  # pylint: disable=g-import-not-at-top
  frame = np.zeros((32, 32, 3), np.uint8)
  frame[:, :8] = 200                          # a bright left band
  faces = np.stack([frame] * 5)
  flipped = 0
  for seed in range(20):
    out = augment.augment_faces(faces, np.random.default_rng(seed))
    assert all(np.array_equal(out[0], out[k]) for k in range(5))
    flipped += out[0, :, -4:].mean() > out[0, :, :4].mean()
  assert 4 <= flipped <= 16                   # p = 1/2 of moving the band right
