"""Inference: a face video or photo plus speech -> a lip-synced mp4.

    from lipsync_jax.inference import LipSyncer, load_syncer
    syncer = LipSyncer.from_checkpoint("runs/wav2lip/model", batch_size=64)
    report = syncer.run("face.mp4", "speech.wav", "out.mp4")
    print(report.frames, report.frames_without_face, report.timings)
    syncer = load_syncer("builtin")   # the shipped two-stage model (two_stage)

One `LipSyncer` holds one jit-compiled generator and reuses it for every
`run` (batch mode compiles once for hundreds of clips).
`LipSyncer.stream(face)` lip-syncs audio that arrives in chunks, frame by
frame as its audio comes (`stream`: a microphone, real time).
`LipSyncer.from_onnx("wav2lip.onnx")` runs a file from `python -m
lipsync_jax.export` under onnxruntime instead (`onnx_backend`), through the
same pipeline.

Pipeline of one `run`:

1. Audio: `audio.load_audio` -> mel -> one (80, 16) window per output frame,
   frame i's window starting at mel column int(80 i / fps) (the alignment
   convention shared with training). The output has
   `audio.num_frames_for_audio` = round(audio_seconds * fps) frames, i.e. it
   is as long as the audio.
2. Faces: a box track per source frame, from the cache when this video
   (sha256 of its bytes) was seen before with the same detector settings,
   otherwise from one streaming pass of batched detection (decode thread ->
   detector), then `face_detection.select_track`, saved atomically to the
   cache (default ~/.cache/lipsync_jax/boxes/<sha256>.npz; the detection
   pass holds only boxes, never frames). Detection misses of <= `max_gap`
   frames between two detections are bridged by interpolation; boxes are
   padded (`pads`) and smoothed over runs of frames with a face. Detection
   must see the whole video before generation starts (the track is chosen
   globally), so it is the one stage not overlapped with generation; reruns
   with new audio skip it.
3. Generation pass, three stages overlapped through bounded queues:
   decode + crop (thread) -> jit generator on fixed-size batches, the last one
   padded, sharded over the devices when there are several (thread) ->
   paste + encode (main thread). Only a few batches of frames are in flight,
   so memory does not grow with the length of the input.
   When the audio is longer than the video the video plays forward, then
   backward, then forward... (ping-pong). Those revisited source frames are
   spilled to a raw temporary file (not RAM) on their first decode and read
   back by index, so memory stays flat for long audio too.
4. Frames where the track has no face are written unchanged and counted in
   `RunReport.frames_without_face`.
5. `video.VideoWriter` encodes H.264 + AAC to a temporary name and renames it
   on success, so a failed or killed run leaves no partial output.

Bad input raises an `InferenceError` (a ValueError) or the IO modules'
`AudioError`/`VideoError`/`CheckpointError` with a one-line message; `infer.py`
prints it and exits non-zero. `prepare` does every input check that does not
need the model (paths, streams, decodability, silence, frame count) without
importing jax, so the CLI fails fast.

Decisions on inputs the issue calls bad:
  * silent audio (peak <= -60 dBFS) is an error: there is nothing to sync to;
  * a 1-frame video is an error that points to still-image mode (an image file
    plus `--fps`), because its frame rate and duration are meaningless;
  * a still image in which no face is found is an error; in a video, frames
    without a face are passed through and counted instead.
"""

from lipsync_jax.inference.options import (CACHE_FORMAT, FACE_SIZE, IMAGE_EXTENSIONS,
                                           SILENCE_PEAK, STAGES, InferenceError,
                                           InferenceOptions, InputNotFoundError, RunReport,
                                           check_output_path, default_cache_dir, file_sha256)
from lipsync_jax.inference.sources import PreparedJob, ping_pong_index, prepare
from lipsync_jax.inference.syncer import LipSyncer
from lipsync_jax.inference.jobs import JobResult, error_message, open_jobs, run_jobs
from lipsync_jax.inference.stream import (RealtimeStream, StreamFrame, StreamSession,
                                          StreamStats)
from lipsync_jax.inference.two_stage import TwoStageSyncer, load_syncer

__all__ = [
    "CACHE_FORMAT", "FACE_SIZE", "IMAGE_EXTENSIONS", "SILENCE_PEAK", "STAGES",
    "InferenceError", "InferenceOptions", "InputNotFoundError", "JobResult", "LipSyncer",
    "PreparedJob", "RealtimeStream", "RunReport", "StreamFrame", "StreamSession", "StreamStats",
    "TwoStageSyncer", "check_output_path", "default_cache_dir", "error_message",
    "file_sha256", "load_syncer", "open_jobs", "ping_pong_index", "prepare", "run_jobs",
]
