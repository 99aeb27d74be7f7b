"""drbfr: batch blind face restoration with degradation representations (DR-BFR)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("drbfr")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
