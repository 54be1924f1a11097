"""The Gradio app: lip-sync files in the browser.

    python -m lipsync_jax.app [--host 127.0.0.1 --port 7861] [--model CKPT ...]

Upload a face video or photo, upload or record speech, pick a model ("builtin",
the two-stage model shipped in the package, or any checkpoint `infer.py`
takes, as a path on the server: a model directory, an upstream .pth, a
.onnx), optionally adapt a two-stage model's renderer to the face first (the
slider; the weights are kept, so the same face adapts once), and get back the
mp4 and its run report, with progress shown. It runs
`infer.py`'s pipeline in this process (`LipSyncer.run_prepared`), and every
model stays loaded (and compiled) between requests: the second request on a
model pays no start-up.

Bad input gets a one-line message in the page, and the upload is deleted: a
face file that is neither a video nor an image, speech that is not audio or
is silent, a face with no face, a model that is missing or foreign. Requests
run one at a time; the others wait in Gradio's queue (their place is
shown), and past --max-queue a request is refused with a message.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import os
import shutil
import sys
import tempfile
import time
import uuid

from lipsync_jax.inference.pipeline import Timer
from lipsync_jax.web.loading import BUILTIN, ModelCache

FACE_TYPES = ["video", "image"]
MAX_APP_ADAPT_STEPS = 500   # the page's slider; infer.py takes up to 5000


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser (tests/test_docs.py checks the documented commands with it)."""
  p = argparse.ArgumentParser(description="Serve the Gradio app that lip-syncs files.")
  p.add_argument("--host", default="127.0.0.1",
                 help="address to listen on (default 127.0.0.1: this machine only)")
  p.add_argument("--port", type=int, default=7861, help="port (default 7861)")
  p.add_argument("--model", action="append", default=[], metavar="CKPT",
                 help="a checkpoint offered in the model list besides builtin (repeatable); "
                      "any other path on the server can be typed in the page")
  p.add_argument("--max-queue", type=int, default=16,
                 help="requests that may wait while one runs; more are refused (default 16)")
  return p


class FrameTimer(Timer):
  """A `Timer` that also calls `on_frame(frames written)` as each frame is
  written (the pipeline times every frame's "encode")."""

  def __init__(self, totals: dict[str, float], on_frame):
    super().__init__()
    self.totals.update(totals)
    self.on_frame = on_frame
    self.frames = 0

  @contextlib.contextmanager
  def __call__(self, stage: str):
    with super().__call__(stage):
      yield
    if stage == "encode":
      self.frames += 1
      self.on_frame(self.frames)


def remove_uploads(*paths) -> None:
  """Deletes uploaded files (of a refused request), and their folder in
  Gradio's cache when that leaves it empty; None and missing ones are
  skipped."""
  for path in paths:
    if path and os.path.isfile(path):
      os.remove(path)
      with contextlib.suppress(OSError):  # not empty: other uploads live there
        os.rmdir(os.path.dirname(path))


def _named(message: str, *uploads: str) -> str:
  """`message` with the uploads' paths (in Gradio's cache) cut to their names."""
  for path in uploads:
    message = message.replace(path, os.path.basename(path))
  return message


def summary(report, seconds: float) -> str:
  """One line on a finished request (`report`: its `RunReport`)."""
  note = "" if not report.notes else " " + " ".join(f"Note: {n}." for n in report.notes)
  adapt = report.timings.get("adapt")   # near 0 when this face's adapted weights were kept
  adapted = "" if adapt is None else f" Adapting the renderer to the face took {adapt:.1f} s."
  return (f"Done in {seconds:.1f} s: {report.frames} frames at {report.fps:g} fps "
          f"({report.audio_seconds:.1f} s of speech), "
          f"{report.frames_without_face} without a face.{adapted}{note}")


class LipSyncApp:
  """What the page's button runs: inputs checked, model from the cache, the
  pipeline, the mp4 and its report.

  Args:
    models: the `ModelCache` (models stay loaded between requests).
    out_dir: where the mp4s are written.
  """

  def __init__(self, models: ModelCache, out_dir: str):
    self.models, self.out_dir = models, out_dir

  def run(self, face: str | None, speech: str | None, model: str, progress=None,
          adapt_steps: int = 0):
    """-> (mp4 path or None, report dict or None, message, face input,
    speech input); the inputs come back as None when a refused upload was
    deleted. `progress(fraction, desc=...)` as `gr.Progress`. `adapt_steps`:
    `InferenceOptions.adapt_steps` (two-stage models, face videos)."""
    from lipsync_jax import inference  # pylint: disable=import-outside-toplevel
    progress = progress or (lambda *a, **k: None)
    if not face or not speech:
      return None, None, "Upload a face (video or photo) and speech first.", face, speech
    t0 = time.perf_counter()
    outfile = os.path.join(self.out_dir, f"lipsync_{uuid.uuid4().hex[:8]}.mp4")
    progress(0.0, desc="checking the inputs")
    try:
      adapt_steps = int(adapt_steps or 0)
      job = inference.prepare(face, speech, outfile,
                              inference.InferenceOptions(adapt_steps=adapt_steps))
    except Exception as e:  # pylint: disable=broad-except
      remove_uploads(face, speech)
      return None, None, f"**Error:** {_named(inference.error_message(e), face, speech)}", None, None
    try:
      if model.strip() not in self.models:
        progress(0.02, desc=f"loading {model} (once: it stays loaded)")
      syncer = self.models.get(model.strip())
      if adapt_steps:
        syncer = syncer.with_options(adapt_steps=adapt_steps)   # the same compiled model
        progress(0.03, desc=f"adapting the renderer to the face ({adapt_steps} steps)")
      on_frame = lambda n: n % 5 == 0 and progress(n / job.frames, desc="lip-syncing")
      job = dataclasses.replace(job, timer=FrameTimer(job.timer.totals, on_frame))
      report = syncer.run_prepared(job)
    except Exception as e:  # pylint: disable=broad-except
      return None, None, f"**Error:** {_named(inference.error_message(e), face, speech)}", face, speech
    return outfile, report.to_dict(), summary(report, time.perf_counter() - t0), face, speech


def build_app(lipsync: LipSyncApp, choices: list[str], max_queue: int = 16):
  """The Gradio Blocks of the app (queued, one request at a time)."""
  import gradio as gr  # pylint: disable=import-outside-toplevel
  from gradio.utils import NamedString  # pylint: disable=import-outside-toplevel

  def run(face, speech, model, adapt_steps, progress=gr.Progress()):
    return lipsync.run(face, speech, model, progress, adapt_steps)

  with gr.Blocks(title="lipsync-jax", delete_cache=(3600, 3600)) as demo:
    gr.Markdown("# lipsync-jax\nA face video or photo and speech in, the face lip-synced "
                "to the speech out.")
    with gr.Row():
      with gr.Column():
        face = gr.File(label="Face: a video or a photo", file_types=FACE_TYPES,
                       type="filepath")
        # The upload's path as it is: gr.File (6.x) would also leave an empty
        # temporary file in its cache per request. (An instance override: a
        # subclass would make Gradio write a .pyi beside this file.) The
        # file's type is checked by `inference.prepare`, which deletes a bad one.
        face._process_single_file = lambda f: NamedString(f.path)
        speech = gr.Audio(label="Speech: upload or record", sources=["upload", "microphone"],
                          type="filepath", format=None)
        model = gr.Dropdown(choices=choices, value=choices[0], allow_custom_value=True,
                            label="Model", info="builtin, or a path on the server: a model "
                                                "directory, an upstream .pth, a .onnx")
        adapt = gr.Slider(0, MAX_APP_ADAPT_STEPS, value=0, step=50,
                          label="Adapt to the face (steps)",
                          info="two-stage models and face videos: first fine-tune the "
                               "renderer on the video's own frames, so it draws this face's "
                               "lips and teeth (about 35 s per 100 steps on 2 CPU cores; "
                               "0: off)")
        button = gr.Button("Lip-sync", variant="primary")
      with gr.Column():
        video = gr.Video(label="Lip-synced", format=None, interactive=False)
        message = gr.Markdown()
        report = gr.JSON(label="Run report")
    button.click(run, [face, speech, model, adapt], [video, report, message, face, speech],
                 concurrency_limit=1, show_progress_on=[video])
  return demo.queue(max_size=max_queue, default_concurrency_limit=1)


def main(argv: list[str] | None = None, make_syncer=None) -> int:
  """CLI entry point. `make_syncer(checkpoint)` replaces `loading.load_model`."""
  args = build_parser().parse_args(argv)
  os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no calls home
  from lipsync_jax.serve import bind  # pylint: disable=import-outside-toplevel
  try:
    bind(args.host, args.port).close()  # a busy port: one line, before anything loads
  except OSError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  out_dir = tempfile.mkdtemp(prefix="lipsync_app_")
  atexit.register(shutil.rmtree, out_dir, ignore_errors=True)
  models = ModelCache(make_syncer) if make_syncer else ModelCache()
  choices = list(dict.fromkeys([BUILTIN, *args.model]))
  demo = build_app(LipSyncApp(models, out_dir), choices, args.max_queue)
  demo.launch(server_name=args.host, server_port=args.port, ssr_mode=False,
              footer_links=[])
  return 0


if __name__ == "__main__":
  sys.exit(main())
