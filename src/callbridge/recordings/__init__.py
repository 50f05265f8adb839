"""Recordings: the call recorder (frames -> stereo WAV), naming, and repair after a crash."""
