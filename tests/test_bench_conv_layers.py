"""bench/bench_conv_layers.py: the layer census and one timed table row."""

from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
import bench_conv_layers  # noqa: E402  pylint: disable=wrong-import-position


def test_conv_shapes_census_of_wav2lip():
  shapes = bench_conv_layers.conv_shapes("wav2lip", batch=2, frames=5)
  # Every conv of the generator goes through layers.conv2d: 49 calls, the
  # 7x7 stem on the 6-channel (masked target + reference) 96x96 input first.
  assert sum(shapes.values()) == 49
  assert shapes[((10, 96, 96, 6), (7, 7, 6, 16), (1, 1), ((3, 3), (3, 3)))] == 1
  assert all(s[0][0] == 10 for s in shapes)          # B*T frames per call


def test_table_row_for_the_heaviest_layer(capsys):
  pytest.importorskip("torch", reason="needs torch (the [torch] extra)")
  assert bench_conv_layers.main(["--batch", "1", "--frames", "1", "--top", "1"]) == 0
  out = capsys.readouterr().out.splitlines()
  rows = [l for l in out if l.startswith("| (1, ")]
  assert len(rows) == 1 and out[-1].startswith("| **total**")
  ratio = float(rows[0].rsplit("|", 2)[-2])
  assert ratio > 0
