"""Shared CLI plumbing: the repository, the caller's auth id, keys and the error boundary."""

from __future__ import annotations

import getpass
import os
import pwd
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from chunkyard.errors import ChunkyardError

F = TypeVar("F", bound=Callable[..., Any])


class UsageError(ChunkyardError):
    """A command-line argument is missing or contradicts another."""


def repository_path(option: str | None) -> str:
    """`--repository`, else $CHUNKYARD_REPOSITORY; local mode: a datastore directory."""
    path = option or os.environ.get("CHUNKYARD_REPOSITORY")
    if not path:
        raise UsageError("no repository given: use --repository PATH or set CHUNKYARD_REPOSITORY")
    return path


def local_authid() -> str:
    """Who owns what this client creates: $CHUNKYARD_AUTHID, else root@pam / <user>@pam."""
    explicit = os.environ.get("CHUNKYARD_AUTHID")
    if explicit:
        return explicit
    uid = os.getuid()
    if uid == 0:
        return "root@pam"
    try:
        return f"{pwd.getpwuid(uid).pw_name}@pam"
    except KeyError:
        return f"uid{uid}@pam"


def key_password(confirm: bool = False) -> bytes | None:
    """$CHUNKYARD_ENCRYPTION_PASSWORD or $PBS_ENCRYPTION_PASSWORD, else ask on the terminal."""
    for var in ("CHUNKYARD_ENCRYPTION_PASSWORD", "PBS_ENCRYPTION_PASSWORD"):
        value = os.environ.get(var)
        if value is not None:
            return value.encode()
    if not sys.stdin.isatty():
        return None
    first = getpass.getpass("Encryption Key Password: ")
    if confirm and getpass.getpass("Verify Password: ") != first:
        raise UsageError("passwords do not match")
    return first.encode()


def one_line_errors(func: F) -> F:
    """Print every expected failure as one `Error: ...` line (exit 1), never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ChunkyardError as e:
            _fail(str(e))
        except KeyboardInterrupt:
            _fail("interrupted")
        except BrokenPipeError:
            sys.stderr.close()
            raise SystemExit(1) from None
        except OSError as e:
            where = f" ({e.filename})" if e.filename else ""
            _fail(f"{e.strerror or e}{where}")
        except MemoryError:
            _fail("out of memory")

    return wrapper  # type: ignore[return-value]


def _fail(message: str) -> None:
    sys.stderr.write(f"Error: {message}\n")
    raise SystemExit(1)
