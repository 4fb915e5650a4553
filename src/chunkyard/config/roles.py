"""PBS's privileges and roles (pbs-api-types `acl.rs`), by the names PBS persists them under.

Roles are fixed in PBS (no custom roles); `acl.cfg` names them, the API checks privileges.
"""

from __future__ import annotations

from dataclasses import dataclass

PRIVILEGES: tuple[str, ...] = (
    "Sys.Audit", "Sys.Modify", "Sys.PowerManagement",
    "Datastore.Audit", "Datastore.Allocate", "Datastore.Modify", "Datastore.Read",
    "Datastore.Verify", "Datastore.Backup", "Datastore.Prune",
    "Permissions.Modify",
    "Remote.Audit", "Remote.Modify", "Remote.Read",
    "Remote.DatastoreBackup", "Remote.DatastoreModify", "Remote.DatastorePrune",
    "Sys.Console",
    "Tape.Audit", "Tape.Modify", "Tape.Write", "Tape.Read",
    "Realm.Allocate",
)


@dataclass(frozen=True)
class Role:
    name: str
    privileges: frozenset[str]
    description: str


def _role(name: str, description: str, *privs: str) -> Role:
    unknown = set(privs) - set(PRIVILEGES)
    assert not unknown, unknown
    return Role(name, frozenset(privs), description)


ROLE_NO_ACCESS = "NoAccess"
ROLES: dict[str, Role] = {r.name: r for r in (
    _role("Admin", "Administrator", *PRIVILEGES),
    _role("Audit", "Auditor", "Sys.Audit", "Datastore.Audit"),
    _role(ROLE_NO_ACCESS, "Disable Access"),
    _role("DatastoreAdmin", "Datastore Administrator", "Datastore.Audit", "Datastore.Modify",
          "Datastore.Read", "Datastore.Verify", "Datastore.Backup", "Datastore.Prune"),
    _role("DatastoreReader", "Datastore Reader (inspect datastore content and do restores)",
          "Datastore.Audit", "Datastore.Verify", "Datastore.Read"),
    _role("DatastoreBackup", "Datastore Backup (backup and restore owned backups)",
          "Datastore.Backup"),
    _role("DatastorePowerUser", "Datastore PowerUser (backup, restore and prune owned backup)",
          "Datastore.Prune", "Datastore.Backup"),
    _role("DatastoreAudit", "Datastore Auditor", "Datastore.Audit"),
    _role("RemoteAudit", "Remote Auditor", "Remote.Audit"),
    _role("RemoteAdmin", "Remote Administrator", "Remote.Audit", "Remote.Modify",
          "Remote.Read"),
    _role("RemoteSyncOperator", "Synchronization Operator", "Remote.Audit", "Remote.Read"),
    # The three push-sync roles (PBS 3.3+): privilege sets from memory of pbs-api-types,
    # not checked against its source (UNCERTAIN).
    _role("RemoteSyncPushOperator", "Synchronisation Operator (push direction)",
          "Remote.Audit", "Remote.DatastoreBackup"),
    _role("RemoteDatastorePowerUser", "Remote Datastore Prune", "Remote.Audit",
          "Remote.DatastoreBackup", "Remote.DatastorePrune"),
    _role("RemoteDatastoreAdmin", "Remote Datastore Admin", "Remote.Audit",
          "Remote.DatastoreBackup", "Remote.DatastoreModify", "Remote.DatastorePrune"),
    _role("TapeAudit", "Tape Auditor", "Tape.Audit"),
    _role("TapeAdmin", "Tape Administrator", "Tape.Audit", "Tape.Modify", "Tape.Read",
          "Tape.Write"),
    _role("TapeOperator", "Tape Operator", "Tape.Audit", "Tape.Read", "Tape.Write"),
    _role("TapeReader", "Tape Reader", "Tape.Audit", "Tape.Read"),
)}
