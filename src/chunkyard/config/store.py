"""`ConfigDir`: the configuration directory, read without locks, edited under them.

    cfg = ConfigDir("/etc/chunkyard")
    stores, digest = cfg.read_datastore()
    cfg.update_datastore(lambda c: c.add(new_datastore("s1", "/b/s1")), expected_digest=digest)

An update takes the file's lock (`fileio.locked`, at most `lock_timeout` s), re-reads the file,
refuses if it no longer has the digest the caller's edit was based on (PBS's
`detected modified configuration` error), applies the edit, and replaces the file atomically.
The edit function may change its argument in place (returning None) or return a new value.
Lock files are PBS's names in PBS's directory layout, so chunkyard and PBS tools pointed at the
same directory exclude each other. Modes: 0640 for secrets, 0644 otherwise.

Nested updates must follow the file order below (datastore, user, acl, token.shadow,
shadow.json), so that two processes can never wait for each other.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from chunkyard.config import acl, datastore, section, user
from chunkyard.config.acl import AclConfig
from chunkyard.config.errors import ConfigChanged, ConfigError
from chunkyard.config.fileio import LOCK_TIMEOUT, locked, read_optional, replace_file
from chunkyard.config.section import SectionConfig, SectionSchema
from chunkyard.config.shadow import SHADOW, TOKEN_SHADOW

T = TypeVar("T")
DEFAULT_PATH = "./chunkyard-data/etc"
DIR_MODE = 0o750


@dataclass(frozen=True)
class ConfigFile(Generic[T]):
    """One configuration file: name, lock file, place in the lock order, format."""

    name: str
    lock_name: str
    rank: int
    secret: bool
    parse: Callable[[bytes, str], T]
    write: Callable[[T], bytes]

    @property
    def mode(self) -> int:
        return 0o640 if self.secret else 0o644


def _section_file(schema: SectionSchema, lock_name: str, rank: int
                  ) -> ConfigFile[SectionConfig]:
    return ConfigFile(schema.filename, lock_name, rank, False,
                      lambda raw, name: section.parse(schema, raw, name),
                      lambda config: section.write(schema, config))


DATASTORE_FILE = _section_file(datastore.SCHEMA, ".datastore.lck", 0)
USER_FILE = _section_file(user.SCHEMA, ".user.lck", 1)
ACL_FILE: ConfigFile[AclConfig] = ConfigFile("acl.cfg", ".acl.lck", 2, False, acl.parse, acl.write)
TOKEN_SHADOW_FILE: ConfigFile[dict[str, str]] = ConfigFile(
    "token.shadow", "token.shadow.lock", 3, True, TOKEN_SHADOW.parse, TOKEN_SHADOW.write)
SHADOW_FILE: ConfigFile[dict[str, str]] = ConfigFile(
    "shadow.json", "shadow.json.lock", 4, True, SHADOW.parse, SHADOW.write)

Edit = Callable[[T], T | None]


class ConfigDir:
    """A configuration directory (created on the first update)."""

    def __init__(self, path: str | os.PathLike[str] = DEFAULT_PATH,
                 lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.lock_timeout = lock_timeout
        self._ranks = threading.local()

    def file_path(self, file: ConfigFile[T]) -> str:
        return os.path.join(self.path, file.name)

    # -- generic -----------------------------------------------------------------------

    def read(self, file: ConfigFile[T]) -> tuple[T, str]:
        """The parsed file and its digest; a missing file is an empty one."""
        path = self.file_path(file)
        raw = read_optional(path) or b""
        return file.parse(raw, path), section.digest(raw)

    @contextlib.contextmanager
    def locked(self, file: ConfigFile[T]) -> Iterator[None]:
        """Hold `file`'s lock, refusing to take it out of the file order."""
        held: list[int] = self._held_ranks()
        if file.rank in held:
            raise ConfigError(f"{file.name} is already locked by this thread (nested update)")
        if held and held[-1] > file.rank:
            raise ConfigError(f"cannot lock {file.name} while holding a lock that comes after "
                              "it in the lock order (datastore, user, acl, token.shadow, "
                              "shadow.json)")
        try:
            os.makedirs(self.path, mode=DIR_MODE, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"unable to create '{self.path}': {e.strerror or e}") from None
        what = f"configuration file {self.file_path(file)!r}"
        with locked(os.path.join(self.path, file.lock_name), what, self.lock_timeout):
            held.append(file.rank)
            try:
                yield
            finally:
                held.pop()

    def update(self, file: ConfigFile[T], edit: Edit[T], expected_digest: str | None = None
               ) -> tuple[T, str]:
        """Apply `edit` under the lock and write the result atomically; returns the new
        configuration and digest. ConfigChanged if the file's digest is not
        `expected_digest` (when given); an unchanged file is not rewritten."""
        path = self.file_path(file)
        with self.locked(file):
            raw = read_optional(path) or b""
            current = section.digest(raw)
            if expected_digest is not None and expected_digest.lower() != current:
                raise ConfigChanged(file.name)
            config = file.parse(raw, path)
            result = edit(config)
            if result is None:
                result = config
            elif not isinstance(result, type(config)):  # e.g. a lambda returning dict.pop()
                raise ConfigError(f"updating {file.name}: the edit returned a "
                                  f"{type(result).__name__}, not None or a new configuration")
            data = file.write(result)
            if data != raw:
                replace_file(path, data, file.mode)
            return result, section.digest(data)

    def _held_ranks(self) -> list[int]:
        ranks: list[int] | None = getattr(self._ranks, "held", None)
        if ranks is None:
            ranks = []
            self._ranks.held = ranks
        return ranks

    # -- per file ----------------------------------------------------------------------

    def read_datastore(self) -> tuple[SectionConfig, str]:
        return self.read(DATASTORE_FILE)

    def update_datastore(self, edit: Edit[SectionConfig], expected_digest: str | None = None
                         ) -> tuple[SectionConfig, str]:
        return self.update(DATASTORE_FILE, edit, expected_digest)

    def read_user(self) -> tuple[SectionConfig, str]:
        return self.read(USER_FILE)

    def update_user(self, edit: Edit[SectionConfig], expected_digest: str | None = None
                    ) -> tuple[SectionConfig, str]:
        return self.update(USER_FILE, edit, expected_digest)

    def read_acl(self) -> tuple[AclConfig, str]:
        return self.read(ACL_FILE)

    def update_acl(self, edit: Edit[AclConfig], expected_digest: str | None = None
                   ) -> tuple[AclConfig, str]:
        return self.update(ACL_FILE, edit, expected_digest)

    def read_token_shadow(self) -> tuple[dict[str, str], str]:
        return self.read(TOKEN_SHADOW_FILE)

    def update_token_shadow(self, edit: Edit[dict[str, str]],
                            expected_digest: str | None = None) -> tuple[dict[str, str], str]:
        return self.update(TOKEN_SHADOW_FILE, edit, expected_digest)

    def read_shadow(self) -> tuple[dict[str, str], str]:
        return self.read(SHADOW_FILE)

    def update_shadow(self, edit: Edit[dict[str, str]], expected_digest: str | None = None
                      ) -> tuple[dict[str, str], str]:
        return self.update(SHADOW_FILE, edit, expected_digest)
