"""Errors of the configuration layer; the CLI and the server print them as one line."""

from __future__ import annotations

from chunkyard.errors import ChunkyardError


class ConfigError(ChunkyardError):
    """A configuration file is corrupt, a value violates its schema, or an edit was refused.

    Messages name the file and, when reading, the line, in PBS's words where PBS has some
    (`parsing 'datastore.cfg' failed: line 3 - unknown property 'x'`)."""


class ConfigBusy(ConfigError):
    """The lock of a configuration file was not free before the deadline; names the holder."""


class ConfigChanged(ConfigError):
    """The file changed since the caller read it (its digest no longer matches)."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        # PBS's words (proxmox-schema `ConfigDigest::detect_modification`), so clients that
        # match on them keep working.
        super().__init__("detected modified configuration - file changed by other user? "
                         "Try again.")
