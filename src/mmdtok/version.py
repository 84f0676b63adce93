"""The installed version of mmdtok (a leaf: every module may import it)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mmdtok")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
