"""The pure SIP layer: messages, URIs, digest auth, SDP, transactions and dialogs.

Nothing in this package performs I/O or reads a clock: time arrives as ``now: float``
arguments, randomness from injected factories, and results leave as bytes, events and
timer deadlines (RFC 3261; the aioquic shape). ``tests/test_layering.py`` enforces it.
"""
