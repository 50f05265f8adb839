"""callbridge: a self-hosted click-to-call server in pure Python."""

__version__ = "0.1.0"
