"""The project's exceptions.

A `SearchlabError` is a user-facing problem: the CLI prints its message (no
traceback) and exits non-zero. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SearchlabError(Exception):
    """Base class for errors the user can act on."""


class ConfigError(SearchlabError):
    """A configuration value is invalid; raised before any training."""


class DataError(SearchlabError):
    """The data set cannot be loaded or cannot support the requested search."""


class StageFailedError(SearchlabError):
    """Every trial of a search stage failed, so the search cannot go on."""


class SearchInterrupted(SearchlabError):
    """Ctrl-C or SIGTERM stopped a search; its open runs were ended KILLED and it can be resumed."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"interrupted; the open MLflow runs were ended as KILLED. Resume with "
                         f"`searchlab resume={run_id}` (or `resume=last`).")
        self.run_id = run_id
