"""Configuration in PBS's formats: datastores, users and tokens, ACLs, secrets.

| module | purpose |
|---|---|
| `section.py` | proxmox-section-config files: parse, validate against a schema, write |
| `types.py`, `property_string.py` | value types (Rust's text rules) and `key=value,...` strings |
| `datastore.py`, `user.py` | the schemas of `datastore.cfg` and `user.cfg` |
| `acl.py` | `acl.cfg`: the ACL tree, PBS's exact line format, the namespace-move hook |
| `roles.py`, `acl_paths.py` | PBS's roles and privileges; valid ACL paths and ugids |
| `hashing.py`, `shadow.py` | scrypt hashes; `shadow.json` and `token.shadow` |
| `fileio.py`, `store.py` | locks, atomic replacement, `ConfigDir` (read, update with digests) |
| `accounts.py` | tokens and passwords, the edits that span two files |

Everything read from disk is validated; a bad file raises `ConfigError` naming the file and
line, and nothing is half-applied.
"""

from chunkyard.config.acl import (
    ROLES,
    AclConfig,
    AclEntry,
    make_acl_reference_hook,
    rewrite_acl_paths,
    store_name_by_path,
)
from chunkyard.config.errors import ConfigBusy, ConfigChanged, ConfigError
from chunkyard.config.section import Section, SectionConfig
from chunkyard.config.store import ConfigDir

__all__ = [
    "ROLES",
    "AclConfig",
    "AclEntry",
    "ConfigBusy",
    "ConfigChanged",
    "ConfigDir",
    "ConfigError",
    "Section",
    "SectionConfig",
    "make_acl_reference_hook",
    "rewrite_acl_paths",
    "store_name_by_path",
]
