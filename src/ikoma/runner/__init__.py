"""The runner agent: claims orders from the API, runs their playbooks on this host, reports back."""

from ikoma import __version__

RUNNER_VERSION = __version__

__all__ = ["RUNNER_VERSION"]
