"""The exception hierarchy every layer raises; the CLI prints these as one line."""


class ChunkyardError(Exception):
    """Base of every error chunkyard raises on purpose (bad input, corrupt data, busy locks)."""


class InvalidName(ChunkyardError, ValueError):
    """A namespace, backup type, id, time, archive or owner name violates PBS's rules."""


class FormatError(ChunkyardError):
    """A file or blob is not what the PBS format says it must be (magic, CRC, size, digest)."""


class CryptError(FormatError):
    """Decryption or authentication of encrypted data failed, or a key is unusable."""


class NotFound(ChunkyardError):
    """A datastore, namespace, group, snapshot, archive or chunk does not exist."""


class AlreadyExists(ChunkyardError):
    """The thing to create is already there."""


class DatastoreError(ChunkyardError):
    """A datastore operation was refused (protected snapshot, not empty, wrong state)."""
