"""Batch jobs: a jobs file of (face, audio, output) lines run by one `LipSyncer`."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Sequence
from lipsync_jax.inference.options import InferenceError, RunReport, check_input
from lipsync_jax.inference.syncer import LipSyncer




def open_jobs(path: str) -> list[tuple[str, str, str]]:
  """Reads a jobs CSV of `face,audio,outfile` rows (optional header row).

  Relative paths are taken relative to the CSV's folder.
  """
  import csv
  path = check_input(path, "jobs")
  base = os.path.dirname(os.path.abspath(path))
  jobs = []
  with open(path, newline="") as f:
    for lineno, row in enumerate(csv.reader(f), start=1):
      row = [c.strip() for c in row]
      if not row or all(not c for c in row) or row[0].startswith("#"):
        continue
      if lineno == 1 and [c.lower() for c in row] == ["face", "audio", "outfile"]:
        continue
      if len(row) != 3 or not all(row):
        raise InferenceError(f"{path}:{lineno}: expected 3 columns face,audio,outfile, got {row}")
      jobs.append(tuple(os.path.join(base, os.path.expanduser(c)) for c in row))
  if not jobs:
    raise InferenceError(f"no jobs in {path}")
  return jobs


@dataclasses.dataclass
class JobResult:
  face: str
  audio: str
  outfile: str
  ok: bool
  error: str | None = None
  report: RunReport | None = None

  def to_dict(self) -> dict[str, Any]:
    d = {"face": self.face, "audio": self.audio, "outfile": self.outfile,
         "ok": self.ok, "error": self.error}
    if self.report is not None:
      d["report"] = self.report.to_dict()
    return d


def error_message(e: BaseException) -> str:
  """One-line user-facing message for an exception."""
  msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
  if isinstance(e, (ValueError, OSError)):
    return msg
  return f"{type(e).__name__}: {msg}"


def run_jobs(syncer: LipSyncer, jobs: Sequence[tuple[str, str, str]],
             on_result: Callable[[JobResult], None] | None = None) -> list[JobResult]:
  """Runs every job with the same compiled model; a failure fails only its row."""
  results = []
  for face, audio, outfile in jobs:
    try:
      report = syncer.run(face, audio, outfile)
      res = JobResult(face, audio, outfile, True, report=report)
    except Exception as e:  # reported per row, never stops the batch
      res = JobResult(face, audio, outfile, False, error=error_message(e))
    results.append(res)
    if on_result is not None:
      on_result(res)
  return results
