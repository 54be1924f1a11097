"""Reading and writing media: `audio` (WAV/any-format loading, the Wav2Lip mel
spectrogram and its windows) and `video` (frame decoding, encoding with the
speech track muxed in, frame-rate handling)."""
