"""Sentistream: streaming sentiment processor (train offline, score a live Kafka stream, watch it)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sentistream")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
