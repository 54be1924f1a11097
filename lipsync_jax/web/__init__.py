"""The web pages: a live WebRTC page and a Gradio app for files.

`python -m lipsync_jax.serve` (the live page: microphone in over WebRTC,
lip-synced video and audio back, latency and frame rate shown) and
`python -m lipsync_jax.app` (the Gradio app: a face file and speech in, the
mp4 and its run report out) are the entry points; this package holds what
they are made of:

* `loading`: any checkpoint `infer.py` takes, loaded once and kept
  (`ModelCache`), with the cheap checks that fail before jax is imported.
* `live`: one browser's live session: aiortc tracks around the streaming
  engine (`inference.stream.RealtimeStream`).
* `live.html`: the live page (plain HTML and JavaScript, no build step).

Needs the `web` extra (`pip install -e ".[web]"`: aiortc, gradio).
"""
