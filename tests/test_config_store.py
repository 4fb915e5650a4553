"""ConfigDir: digests, locks, atomic replacement, file modes, and many real processes editing
at once (no lost update, no torn file); accounts (tokens, passwords) on top of it."""

from __future__ import annotations

import hashlib
import multiprocessing
import multiprocessing.synchronize
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from chunkyard.config import accounts, datastore, fileio
from chunkyard.config.errors import ConfigBusy, ConfigChanged, ConfigError
from chunkyard.config.section import Section, SectionConfig
from chunkyard.config.store import ACL_FILE, USER_FILE, ConfigDir
from chunkyard.errors import AlreadyExists, NotFound
from chunkyard.names import Authid

CTX = multiprocessing.get_context("fork")
EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()


@pytest.fixture
def cfg(tmp_path: Path) -> ConfigDir:
    return ConfigDir(tmp_path / "etc", lock_timeout=2.0)


def add_store(name: str, path: str = "/srv") -> Callable[[SectionConfig], None]:
    def edit(config: SectionConfig) -> None:
        config.add(datastore.new_datastore(name, f"{path}/{name}"))
    return edit


def test_missing_files_read_as_empty_with_the_empty_digest(cfg: ConfigDir) -> None:
    assert cfg.read_datastore() == (SectionConfig(), EMPTY_DIGEST)
    assert cfg.read_acl()[0].entries() == []
    assert cfg.read_token_shadow() == ({}, EMPTY_DIGEST)
    assert not os.path.exists(cfg.path), "reading creates nothing"


def test_update_writes_atomically_with_pbs_digest_and_modes(cfg: ConfigDir) -> None:
    config, digest = cfg.update_datastore(add_store("store1"))
    raw = Path(cfg.path, "datastore.cfg").read_bytes()
    assert raw == b"datastore: store1\n\tpath /srv/store1\n"
    assert digest == hashlib.sha256(raw).hexdigest() == cfg.read_datastore()[1]
    assert [s.id for s in config] == ["store1"]
    accounts.set_password(cfg, Authid.parse("alice@pbs"), "pw")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in Path(cfg.path).iterdir()
             if not p.name.startswith(".") and not p.name.endswith(".lock")}
    assert modes == {"datastore.cfg": 0o644, "shadow.json": 0o640}
    assert sorted(p.name for p in Path(cfg.path).iterdir()) == [
        ".datastore.lck", "datastore.cfg", "shadow.json", "shadow.json.lock"], \
        "PBS's lock file names, no temporary file left"


def test_expected_digest_detects_a_concurrent_edit(cfg: ConfigDir) -> None:
    _, digest = cfg.update_datastore(add_store("store1"))
    cfg.update_datastore(add_store("store2"), expected_digest=digest)
    before = Path(cfg.path, "datastore.cfg").read_bytes()
    with pytest.raises(ConfigChanged, match="detected modified configuration - file changed "
                                            r"by other user\? Try again\."):
        cfg.update_datastore(add_store("store3"), expected_digest=digest)
    assert Path(cfg.path, "datastore.cfg").read_bytes() == before


def test_a_failing_edit_or_a_corrupt_file_changes_nothing(cfg: ConfigDir) -> None:
    cfg.update_datastore(add_store("store1"))
    path = Path(cfg.path, "datastore.cfg")
    with pytest.raises(ConfigError, match="duplicate section id 'store1'"):
        cfg.update_datastore(add_store("store1"))

    def invalid(config: SectionConfig) -> None:
        config.add(Section("datastore", "store2", {"path": "relative"}))

    with pytest.raises(ConfigError, match=r"writing 'datastore\.cfg' failed: section 'store2'"):
        cfg.update_datastore(invalid)
    assert path.read_bytes() == b"datastore: store1\n\tpath /srv/store1\n"
    path.write_bytes(b"datastore: store1\n\tpath /srv/store1\n\tpath /again\n")
    for call in (cfg.read_datastore, lambda: cfg.update_datastore(add_store("store2"))):
        with pytest.raises(ConfigError, match=rf"parsing '{path}' failed: line 3 - duplicate"):
            call()
    assert path.read_bytes().endswith(b"/again\n")


def test_an_unchanged_file_is_not_rewritten(cfg: ConfigDir) -> None:
    cfg.update_datastore(add_store("store1"))
    before = os.stat(Path(cfg.path, "datastore.cfg"))
    _, digest = cfg.update_datastore(lambda config: None)
    after = os.stat(Path(cfg.path, "datastore.cfg"))
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert digest == cfg.read_datastore()[1]


def test_nested_updates_follow_the_lock_order(cfg: ConfigDir) -> None:
    def same_file(config: SectionConfig) -> None:
        cfg.update_user(lambda c: None)

    with pytest.raises(ConfigError, match="already locked by this thread"):
        cfg.update_user(same_file)

    def backwards(config: object) -> None:
        cfg.update_user(lambda c: None)

    with pytest.raises(ConfigError, match=r"cannot lock user\.cfg while holding"):
        cfg.update_acl(backwards)
    with cfg.locked(USER_FILE), cfg.locked(ACL_FILE):
        pass  # forwards is fine, and the failures above released everything


def _hold_lock(path: str, ready: multiprocessing.synchronize.Event,
               release: multiprocessing.synchronize.Event) -> None:
    with ConfigDir(path).locked(USER_FILE):
        ready.set()
        release.wait(30)


def test_a_busy_lock_times_out_naming_the_holder(cfg: ConfigDir) -> None:
    ready, release = CTX.Event(), CTX.Event()
    holder = CTX.Process(target=_hold_lock, args=(cfg.path, ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        quick = ConfigDir(cfg.path, lock_timeout=0.2)
        started = time.monotonic()
        with pytest.raises(ConfigBusy) as info:
            quick.update_user(lambda c: None)
        assert 0.2 <= time.monotonic() - started < 2
        assert f"pid {holder.pid}" in str(info.value)
        assert "user.cfg" in str(info.value)
    finally:
        release.set()
        holder.join(10)
    ConfigDir(cfg.path, lock_timeout=0.2).update_user(lambda c: None)


def _crash_before_rename(path: str) -> None:
    fileio.os.rename = lambda *args: os._exit(3)  # type: ignore[assignment]
    ConfigDir(path).update_datastore(add_store("store2"))


def test_a_writer_killed_before_the_rename_leaves_the_old_file(cfg: ConfigDir) -> None:
    cfg.update_datastore(add_store("store1"))
    child = CTX.Process(target=_crash_before_rename, args=(cfg.path,))
    child.start()
    child.join(10)
    assert child.exitcode == 3
    config, _ = cfg.read_datastore()
    assert [s.id for s in config] == ["store1"]
    cfg.update_datastore(add_store("store3"))  # the dead writer's lock died with it


# -- many processes at once -------------------------------------------------------------------

WORKERS, ROUNDS = 4, 20


def _worker(path: str, worker: int, errors: multiprocessing.Queue[str]) -> None:
    cfg = ConfigDir(path, lock_timeout=30)
    try:
        for i in range(ROUNDS):
            def bump(config: SectionConfig) -> None:
                counter = config.lookup("user", "counter@pbs")
                value = counter.props["expire"]
                assert isinstance(value, int)
                counter.props["expire"] = value + 1

            cfg.update_user(bump)
            cfg.update_datastore(add_store(f"w{worker}-{i}"))
    except Exception as e:  # reported to the parent
        errors.put(f"worker {worker}: {e!r}")


def _reader(path: str, stop: multiprocessing.synchronize.Event,
            errors: multiprocessing.Queue[str], reads: multiprocessing.Queue[int]) -> None:
    cfg, count = ConfigDir(path), 0
    try:
        while not stop.is_set():
            cfg.read_user()
            cfg.read_datastore()
            count += 1
    except Exception as e:
        errors.put(f"reader: {e!r}")
    reads.put(count)


def test_concurrent_processes_lose_no_update_and_never_see_a_torn_file(cfg: ConfigDir) -> None:
    cfg.update_user(lambda c: c.add(Section("user", "counter@pbs", {"expire": 0})))
    errors: multiprocessing.Queue[str] = CTX.Queue()
    reads: multiprocessing.Queue[int] = CTX.Queue()
    stop = CTX.Event()
    reader = CTX.Process(target=_reader, args=(cfg.path, stop, errors, reads))
    reader.start()
    workers = [CTX.Process(target=_worker, args=(cfg.path, w, errors)) for w in range(WORKERS)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
    stop.set()
    reader.join(10)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert failures == []
    assert all(p.exitcode == 0 for p in [*workers, reader])
    assert reads.get(timeout=5) > 0
    users, _ = cfg.read_user()
    assert users.lookup("user", "counter@pbs").props["expire"] == WORKERS * ROUNDS
    stores, _ = cfg.read_datastore()
    assert {s.id for s in stores} == {f"w{w}-{i}" for w in range(WORKERS) for i in range(ROUNDS)}
    leftovers = [p.name for p in Path(cfg.path).iterdir() if ".tmp." in p.name]
    assert leftovers == []


# -- accounts ------------------------------------------------------------------------------

def test_tokens_are_created_verified_regenerated_and_deleted(cfg: ConfigDir) -> None:
    alice, token = Authid.parse("alice@pbs"), Authid.parse("alice@pbs!ci")
    with pytest.raises(NotFound, match="no such user 'alice@pbs'"):
        accounts.create_token(cfg, token)
    cfg.update_user(lambda c: c.add(Section("user", "alice@pbs", {})))
    secret = accounts.create_token(cfg, token, comment="CI runner")
    assert cfg.read_user()[0].lookup("token", "alice@pbs!ci").props == {"comment": "CI runner"}
    shadow, _ = cfg.read_token_shadow()
    assert list(shadow) == ["alice@pbs!ci"] and secret not in shadow["alice@pbs!ci"]
    assert stat.S_IMODE(os.stat(Path(cfg.path, "token.shadow")).st_mode) == 0o640
    assert accounts.verify_token(cfg, token, secret)
    assert not accounts.verify_token(cfg, token, secret.upper())
    assert not accounts.verify_token(cfg, Authid.parse("alice@pbs!other"), secret)
    with pytest.raises(AlreadyExists):
        accounts.create_token(cfg, token)
    with pytest.raises(ConfigError, match="not an API token id"):
        accounts.create_token(cfg, alice)

    def disable(config: SectionConfig) -> None:
        config.lookup("token", str(token)).props["enable"] = False

    cfg.update_user(disable)
    assert not accounts.verify_token(cfg, token, secret), "disabled"
    with pytest.raises(ConfigError, match="the edit returned a bool, not None"):
        cfg.update_user(lambda c: c.lookup("token", str(token)).props.pop("enable"))
    assert not accounts.verify_token(cfg, token, secret), "a refused edit changes nothing"

    def enable(config: SectionConfig) -> None:
        config.lookup("token", str(token)).props.pop("enable")

    cfg.update_user(enable)
    assert accounts.verify_token(cfg, token, secret)
    renewed = accounts.regenerate_token_secret(cfg, token)
    assert accounts.verify_token(cfg, token, renewed)
    assert not accounts.verify_token(cfg, token, secret)
    accounts.delete_token(cfg, token)
    assert cfg.read_token_shadow()[0] == {} and str(token) not in cfg.read_user()[0]


def test_passwords_and_deleting_a_user(cfg: ConfigDir) -> None:
    bob = Authid.parse("bob@pbs")
    cfg.update_user(lambda c: c.add(Section("user", "bob@pbs", {"expire": 0})))
    accounts.set_password(cfg, bob, "hunter2")
    assert accounts.verify_password(cfg, bob, "hunter2")
    assert not accounts.verify_password(cfg, bob, "hunter3")
    assert not accounts.verify_password(cfg, Authid.parse("eve@pbs"), "hunter2")
    with pytest.raises(ConfigError, match="token id"):
        accounts.set_password(cfg, Authid.parse("bob@pbs!t"), "x")
    accounts.create_token(cfg, Authid.parse("bob@pbs!t"))
    assert accounts.delete_user(cfg, bob) == ["bob@pbs", "bob@pbs!t"]
    assert len(cfg.read_user()[0]) == 0
    assert cfg.read_shadow()[0] == {} and cfg.read_token_shadow()[0] == {}


def test_config_accounts_separates_secrets_from_activity(cfg: ConfigDir) -> None:
    carol, token = Authid.parse("carol@pbs"), Authid.parse("carol@pbs!t")
    cfg.update_user(lambda c: c.add(Section("user", "carol@pbs", {"expire": 1000})))
    accounts.set_password(cfg, carol, "pw")
    secret = accounts.create_token(cfg, token)
    db = accounts.ConfigAccounts(cfg)
    assert db.verify_password(carol, "pw") and db.verify_token_secret(token, secret)
    assert not db.verify_password(token, "pw") and not db.verify_token_secret(carol, secret)
    assert db.is_active(carol, 999) and db.is_active(token, 999)
    assert not db.is_active(carol, 1000) and not db.is_active(token, 1000), "user expired"
    assert not accounts.verify_password(cfg, carol, "pw"), "expired long ago"
