"""What a running server holds: its data directory, configuration, keys, tasks, datastores.

Layout of the data directory (`chunkyard serve --data-dir`, default ./chunkyard-data):

    <data-dir>/etc      the configuration directory (PBS: /etc/proxmox-backup): datastore.cfg,
                        user.cfg, acl.cfg, shadow.json, token.shadow, authkey.key, csrf.key,
                        proxy.pem, proxy.key
    <data-dir>/log      task logs and lists (PBS: /var/log/proxmox-backup)
    <data-dir>/lib      job states, `lib/jobstates/` (PBS: /var/lib/proxmox-backup)
    <data-dir>/store1   the embedded default datastore

`ensure_defaults` makes the embedded default on first start: datastore `store1` and user
`admin@pbs` with role Admin on `/`, each only if the configuration has no datastore / no user
yet, so an operator's later changes are never undone. The admin's password is written to
shadow.json and acl.cfg before user.cfg (all under the user.cfg lock), so a start cut short
is redone whole by the next one.

`ServerState.datastore` opens a configured store once and keeps it by name, reopening it when
its configured path or the directory there (device and inode) changed; a store deleted through
the API is dropped (`begin_delete`, `end_delete`), so a later request gets "no such datastore"
and a new store of the same name is opened afresh. Maintenance modes gate requests as PBS's
`MaintenanceMode::check`: `delete` (and a delete running in this server, `begin_delete`)
refuses everything, `offline`, `unmount` and `s3-refresh` everything, `read-only` writes.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from chunkyard.config import ConfigDir, make_acl_reference_hook, store_name_by_path
from chunkyard.config.accounts import ConfigAccounts, set_password
from chunkyard.config.acl import AclConfig
from chunkyard.config.datastore import maintenance, new_datastore
from chunkyard.config.section import Section, SectionConfig
from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.layout import CHUNKS_DIR
from chunkyard.datastore.moves import register_reference_hook
from chunkyard.errors import DatastoreError
from chunkyard.names import Authid
from chunkyard.server.auth import AclTree, AuthKeys, LoginRateLimiter
from chunkyard.server.tasks import TaskManager

DEFAULT_STORE = "store1"
DELETE_WAIT = 10.0  # seconds deleting a store's data waits for its tasks and locks
DEFAULT_ADMIN = "admin@pbs"
ADMIN_PASSWORD_ENV = "CHUNKYARD_ADMIN_PASSWORD"


@dataclass(frozen=True)
class DataDir:
    """The paths of a data directory."""

    root: str

    @property
    def etc(self) -> str:
        return os.path.join(self.root, "etc")

    @property
    def log(self) -> str:
        return os.path.join(self.root, "log")

    @property
    def default_store(self) -> str:
        return os.path.join(self.root, DEFAULT_STORE)


@dataclass
class Defaults:
    """What `ensure_defaults` created (for the start-up message)."""

    created_store: str | None = None
    admin: str | None = None
    admin_password: str | None = None  # None if it came from the environment
    password_from_env: bool = False


def ensure_defaults(data: DataDir, *, sparse: bool = False,
                    environ: dict[str, str] | None = None) -> Defaults:
    """Create the embedded default configuration where the configuration is empty."""
    env = os.environ if environ is None else environ
    cfg = ConfigDir(data.etc)
    os.makedirs(data.etc, mode=0o750, exist_ok=True)
    done = Defaults()
    stores, _ = cfg.read_datastore()
    if not stores.of_type("datastore"):
        path = data.default_store

        def add_store(config: SectionConfig) -> None:
            if config.of_type("datastore"):
                return
            if not os.path.isdir(os.path.join(path, CHUNKS_DIR)):
                Datastore.create(path, sparse=sparse)
            config.add(new_datastore(DEFAULT_STORE, path))
            done.created_store = DEFAULT_STORE

        cfg.update_datastore(add_store)
    users, _ = cfg.read_user()
    if not users.of_type("user"):
        password = env.get(ADMIN_PASSWORD_ENV) or secrets.token_urlsafe(15)
        admin = Authid.parse(DEFAULT_ADMIN)

        def add_admin(config: SectionConfig) -> None:
            if config.of_type("user"):
                return

            def grant(acl: AclConfig) -> None:
                acl.insert("/", DEFAULT_ADMIN, "Admin", True)

            cfg.update_acl(grant)
            set_password(cfg, admin, password)
            config.add(Section("user", DEFAULT_ADMIN,
                               {"comment": "created by chunkyard serve on first start"}))
            done.admin = DEFAULT_ADMIN
            done.password_from_env = bool(env.get(ADMIN_PASSWORD_ENV))
            done.admin_password = None if done.password_from_env else password

        cfg.update_user(add_admin)
    return done


OFFLINE_MODES = frozenset({"offline", "unmount", "s3-refresh"})  # refuse reads too


def _identity(path: str) -> str | None:
    """`<st_dev>:<st_ino>` of a store's directory (as `Datastore.identity`), None if absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}"


@dataclass
class ServerState:
    """Everything the endpoints share; thread-safe (endpoints run on a thread pool)."""

    data: DataDir
    config: ConfigDir
    keys: AuthKeys
    tasks: TaskManager
    limiter: LoginRateLimiter = field(default_factory=LoginRateLimiter)
    auth_failure_delay: float = 3.0  # PBS delays every failed authentication by 3 s
    sparse: bool = False  # stores created through the API lack the 65,536 dirs (tests)
    delete_wait: float = DELETE_WAIT
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stores: dict[str, Datastore] = field(default_factory=dict)
    _deleting: set[str] = field(default_factory=set)
    _acl: tuple[str, AclTree] | None = None
    _unregister: Callable[[], None] | None = None

    @classmethod
    def open(cls, root: str | os.PathLike[str], *, sparse: bool = False,
             auth_failure_delay: float = 3.0, delete_wait: float = DELETE_WAIT,
             ) -> tuple[ServerState, Defaults]:
        data = DataDir(os.path.abspath(os.fspath(root)))
        defaults = ensure_defaults(data, sparse=sparse)
        config = ConfigDir(data.etc)
        state = cls(data=data, config=config, keys=AuthKeys.load_or_create(data.etc),
                    tasks=TaskManager(data.log), auth_failure_delay=auth_failure_delay,
                    sparse=sparse, delete_wait=delete_wait)
        # before any datastore is opened: a move (or its recovery) rewrites acl.cfg
        state._unregister = register_reference_hook(
            make_acl_reference_hook(config, store_name_by_path(config)))
        return state, defaults

    @property
    def accounts(self) -> ConfigAccounts:
        return ConfigAccounts(self.config)

    def acl(self) -> AclTree:
        """The ACL tree of acl.cfg, parsed again only when the file changed."""
        acl_config, digest = self.config.read_acl()
        with self._lock:
            if self._acl is not None and self._acl[0] == digest:
                return self._acl[1]
        tree = AclTree.from_entries(acl_config.entries())
        with self._lock:
            self._acl = (digest, tree)
        return tree

    def store_section(self, name: str) -> Section:
        stores, _ = self.config.read_datastore()
        return stores.lookup("datastore", name)  # NotFound: "no such datastore 'x'"

    def datastore(self, name: str, *, write: bool = False) -> Datastore:
        """The configured datastore `name`, opened once and kept (its lock manager with it);
        refused while being deleted or in maintenance mode (see the module docstring)."""
        section = self.store_section(name)
        with self._lock:
            deleting = name in self._deleting
        mode = maintenance(section)
        if deleting or (mode is not None and mode[0] == "delete"):
            raise DatastoreError(f"datastore '{name}' is being deleted")
        if mode is not None and (mode[0] in OFFLINE_MODES or write):
            raise DatastoreError(f"datastore '{name}' is in maintenance mode: {mode[0]}")
        path = section.props.get("path")
        if not isinstance(path, str):
            raise DatastoreError(f"datastore '{name}' has no path")
        path = os.path.abspath(path)
        identity = _identity(path)
        with self._lock:
            ds = self._stores.get(name)
            if ds is None or ds.path != path or ds.identity != identity:
                ds = Datastore.open(path)  # NotFound if the directory is gone
                self._stores[name] = ds
            return ds

    def begin_delete(self, name: str) -> None:
        """Mark store `name` as being deleted by this server: every request for it is
        refused until `end_delete`. DatastoreError if a delete of it already runs."""
        with self._lock:
            if name in self._deleting:
                raise DatastoreError(f"datastore '{name}' is being deleted")
            self._deleting.add(name)
            self._stores.pop(name, None)

    def end_delete(self, name: str) -> None:
        with self._lock:
            self._deleting.discard(name)
            self._stores.pop(name, None)

    def is_being_deleted(self, name: str) -> bool:
        with self._lock:
            return name in self._deleting

    def shutdown(self, timeout: float) -> list[str]:
        """End the tasks (asked to stop, then forced); unregister the move hook."""
        forced = self.tasks.shutdown(timeout)
        if self._unregister is not None:
            self._unregister()
            self._unregister = None
        return forced


__all__ = ["DEFAULT_ADMIN", "DEFAULT_STORE", "DELETE_WAIT", "DataDir", "Defaults", "ServerState",
           "ensure_defaults"]
