"""chunkyard: a deduplicating backup server with a PBS-compatible datastore."""

__version__ = "0.1.0"
