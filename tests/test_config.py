"""chunkyard.config formats: section config (datastore.cfg, user.cfg), property strings,
acl.cfg, roles, scrypt hashes and the shadow files. Round trips and "garbage only ever raises
ConfigError" are property tests; the rest pins PBS's exact syntax."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chunkyard.config import acl, datastore, hashing, section, user
from chunkyard.config.acl import AclConfig, AclEntry
from chunkyard.config.errors import ConfigError
from chunkyard.config.property_string import PropertyStringType, quote_value
from chunkyard.config.section import Section, SectionConfig
from chunkyard.config.shadow import SHADOW, TOKEN_SHADOW
from chunkyard.config.types import COMMENT, Prop, StrType, ws_strip
from chunkyard.errors import ChunkyardError, NotFound
from chunkyard.names import Authid

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

DATASTORE_CFG = (
    "datastore: store1\n"
    "\tcomment My store\n"
    "\tgc-schedule daily\n"
    "\tpath /backup/disk1/store1\n"
    "\ttuning gc-atime-cutoff=1445,sync-level=filesystem\n"
    "\n"
    "datastore: store2\n"
    "\tmaintenance-mode type=read-only,message=\"disk, replaced\"\n"
    "\tpath /mnt/x\n"
)


def parse_ds(text: str) -> SectionConfig:
    return section.parse(datastore.SCHEMA, text.encode())


def write_ds(config: SectionConfig) -> str:
    return section.write(datastore.SCHEMA, config).decode()


def error_of(text: str, schema: section.SectionSchema = datastore.SCHEMA) -> str:
    with pytest.raises(ConfigError) as info:
        section.parse(schema, text.encode())
    return str(info.value)


# -- section config: reading -------------------------------------------------------------------

def test_datastore_cfg_reads_typed_values_and_writes_back_byte_for_byte() -> None:
    config = parse_ds(DATASTORE_CFG)
    assert [s.id for s in config] == ["store1", "store2"]
    store1 = config.lookup("datastore", "store1")
    assert store1.props["tuning"] == {"gc-atime-cutoff": 1445, "sync-level": "filesystem"}
    assert datastore.tuning(store1).gc_cache_capacity == 1024 * 1024, "default filled in"
    assert datastore.maintenance(config.lookup("datastore", "store2")) == (
        "read-only", "disk, replaced")
    assert write_ds(config) == DATASTORE_CFG
    assert section.digest(DATASTORE_CFG.encode()) == section.digest(
        section.write(datastore.SCHEMA, config))


def test_reading_is_as_lenient_as_pbs_and_writing_is_canonical() -> None:
    text = ("\n\n# a comment, which PBS would not read\n"
            "datastore:   store1  \n"
            "    path   /a b  \n"
            "  \tverify-new   YES\r\n"
            "\tcomment \n"
            "   \n"
            "datastore: store2\n"
            "\t# a comment inside a section\n"
            "\tpath /b")
    config = parse_ds(text)
    assert config.lookup("datastore", "store1").props == {
        "path": "/a b", "verify-new": True, "comment": ""}
    assert write_ds(config) == ("datastore: store1\n\tcomment \n\tpath /a b\n\tverify-new true\n"
                                "\ndatastore: store2\n\tpath /b\n")


@pytest.mark.parametrize(("text", "message"), [
    ("datastore: store1\n\tpath /a\n\tpath /b\n", "line 3 - duplicate property 'path'"),
    ("datastore: store1\n\tpath /a\n\tcolour blue\n", "line 3 - unknown property 'colour'"),
    ("datastore: store1\n\tpath relative\n", "line 2 - property 'path': path 'relative' is "
     "not absolute"),
    ("datastore: store1\n\tcomment x\n\ndatastore: store2\n\tpath /b\n",
     "line 1 - section 'store1': property 'path' is missing and it is not optional."),
    ("datastore: s1\n\tpath /a\n", "line 1 - syntax error in section identifier"),
    ("datastore: store1\n\tpath /a\n\ndatastore: store1\n\tpath /b\n",
     "line 4 - duplicate section id 'store1'"),
    ("datastore: store1\n\tpath /a\ndatastore: store2\n\tpath /b\n",
     "line 3 - syntax error (expected section properties)"),
    ("\tpath /a\n", "line 1 - syntax error (expected header)"),
    ("datastore: store1\n\tpath\n", "line 2 - syntax error (expected section properties)"),
    ("remote: r1\n\thost x\n", "line 1 - unknown section type 'remote'"),
    ("datastore: store1\n\tpath /a\n\tverify-new maybe\n",
     "line 3 - property 'verify-new': value 'maybe' is not a boolean"),
    ("datastore: store1\n\tpath /a\n\tkeep-last 1_000\n",
     "line 3 - property 'keep-last': value '1_000' is not an integer"),
    ("datastore: store1\n\tpath /a\n\tkeep-last 0\n",
     "line 3 - property 'keep-last': value must be in the range 1.."),
    ("datastore: store1\n\tpath /a\n\ttuning gc-atime-cutoff=2881\n",
     "line 3 - property 'tuning': key 'gc-atime-cutoff': value must be in the range 1..2880"),
    ("datastore: store1\n\tpath /a\n\ttuning turbo=1\n",
     "line 3 - property 'tuning': unknown key 'turbo'"),
    ("datastore: store1\n\tpath /a\n\tbackend type=s3,bucket=b\n",
     "key 'type': value 's3' is not one of filesystem (chunkyard supports filesystem "
     "datastores only)"),
    ("datastore: store1\n\tpath /a\n\tbacking-device 1234\n",
     "line 3 - unknown property 'backing-device'"),
    ("datastore: store1\n\tpath /a\n\tmaintenance-mode message=x\n",
     "line 3 - property 'maintenance-mode': key 'type' is required"),
    ("datastore: store1\n\tpath /a\x01b\n", "line 2 - property 'path': contains a control"),
])
def test_bad_datastore_cfg_names_file_line_and_reason(text: str, message: str) -> None:
    error = error_of(text)
    assert error.startswith("parsing 'datastore.cfg' failed: line ")
    assert message in error


def test_invalid_utf8_names_the_line() -> None:
    with pytest.raises(ConfigError, match=r"'datastore.cfg' failed: line 2 - not valid UTF-8"):
        section.parse(datastore.SCHEMA, b"datastore: store1\n\tpath /\xff\n")


def test_only_newline_ends_a_line_as_in_rust() -> None:
    # U+2028 and U+2029 split lines for Python's splitlines, not for PBS's str::lines.
    config = parse_ds("datastore: store1\n\tpath /a\u2028b\u2029c\n")
    assert config.lookup("datastore", "store1").props["path"] == "/a\u2028b\u2029c"


# -- section config: the model and writing ------------------------------------------------------

def test_section_order_is_kept_and_lookup_speaks_pbs() -> None:
    config = SectionConfig([datastore.new_datastore("zeta", "/z"),
                            datastore.new_datastore("alpha", "/a", gc_schedule="daily")])
    config.put(datastore.new_datastore("zeta", "/z2"))
    config.add(datastore.new_datastore("mid", "/m"))
    assert [s.id for s in parse_ds(write_ds(config))] == ["zeta", "alpha", "mid"]
    with pytest.raises(NotFound, match="no such datastore 'nope'"):
        config.lookup("datastore", "nope")
    with pytest.raises(ConfigError, match="duplicate section id 'mid'"):
        config.add(datastore.new_datastore("mid", "/m"))
    assert config.remove("mid") and not config.remove("mid")


@pytest.mark.parametrize(("props", "message"), [
    ({"path": "/a", "comment": "two\nlines"}, "property 'comment': contains a control"),
    ({"path": "/a", "comment": " padded"}, "leading or trailing whitespace"),
    ({"path": "/a", "verify-new": "yes"}, "property 'verify-new': expected a boolean"),
    ({"path": "/a", "keep-last": True}, "property 'keep-last': expected an integer"),
    ({"path": "/a", "tuning": {"sync-level": "always"}}, "key 'sync-level'"),
    ({"path": "/a", "frobnicate": 1}, "unknown property 'frobnicate'"),
    ({"comment": "no path"}, "property 'path' is missing"),
])
def test_writing_validates_every_value(props: dict[str, section.Value], message: str) -> None:
    config = SectionConfig([Section("datastore", "store1", props)])
    with pytest.raises(ConfigError, match=r"writing 'datastore\.cfg' failed") as info:
        section.write(datastore.SCHEMA, config)
    assert message in str(info.value)


def test_user_cfg_users_and_tokens() -> None:
    text = ("user: root@pam\n\tcomment Superuser\n\temail root@example.com\n\tenable true\n"
            "\texpire 0\n\n"
            "user: alice@pbs\n\tenable false\n\tfirstname Alice\n\n"
            "token: root@pam!automation\n\tcomment CI\n\texpire 1\n")
    config = section.parse(user.SCHEMA, text.encode())
    assert section.write(user.SCHEMA, config).decode() == text
    assert user.auth_active(config, Authid.parse("root@pam"))
    assert not user.auth_active(config, Authid.parse("alice@pbs")), "disabled"
    assert not user.auth_active(config, Authid.parse("root@pam!automation")), "expired"
    assert not user.auth_active(config, Authid.parse("bob@pbs")), "unknown"
    assert [s.id for s in user.tokens_of(config, "root@pam")] == ["root@pam!automation"]
    for bad, message in [("user: root@pam!tok\n", "is a token id, not a user id"),
                         ("token: root@pam\n", "is a user id, not a token id"),
                         ("user: nobody\n", "is not of the form user@realm"),
                         ("user: a@pbs\n\tfirstname A\n", "at least 2 characters"),
                         ("token: a@pbs!t\n\temail x@y\n", "unknown property 'email'")]:
        assert message in error_of(bad, user.SCHEMA)


# -- section config: properties ------------------------------------------------------------------

_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=20).filter(
    lambda s: ws_strip(s) == s)
_STORE = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{2,31}", fullmatch=True)
_TUNING = st.fixed_dictionaries({}, optional={
    "chunk-order": st.sampled_from(["none", "inode"]),
    "sync-level": st.sampled_from(["none", "file", "filesystem"]),
    "gc-atime-safety-check": st.booleans(),
    "gc-atime-cutoff": st.integers(1, 2880),
    "gc-cache-capacity": st.integers(0, 8 * 1024 * 1024),
    "default-verification-workers": st.integers(1, 32),
})
_DATASTORE_PROPS = st.fixed_dictionaries(
    {"path": _TEXT.map(lambda s: "/" + s).filter(lambda s: ws_strip(s) == s)},
    optional={
        "comment": _TEXT,
        "gc-schedule": st.sampled_from(["daily", "mon..fri 8..17,22:0/15", "*:0/15",
                                         "Sat *-1..7 15:00", "2015-10-21 UTC"]),
        "keep-last": st.integers(1, 2**63 - 1),
        "verify-new": st.booleans(),
        "notify-user": st.just("admin@pbs"),
        "notify": st.fixed_dictionaries({}, optional={
            "gc": st.sampled_from(["always", "error", "never"]),
            "prune": st.sampled_from(["always", "error", "never"])}),
        "tuning": _TUNING,
        "maintenance-mode": st.fixed_dictionaries(
            {"type": st.sampled_from(datastore.MAINTENANCE_TYPES)},
            optional={"message": _TEXT}),
        "backend": st.just({"type": "filesystem"}),
    })


@st.composite
def datastore_configs(draw: st.DrawFn) -> SectionConfig:
    names = draw(st.lists(_STORE, max_size=5, unique=True))
    return SectionConfig([Section("datastore", n, draw(_DATASTORE_PROPS)) for n in names])


_USERNAME = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._@!~\-]{0,12}", fullmatch=True)
_REALM = st.sampled_from(["pbs", "pam", "ldap-1"])


@st.composite
def user_configs(draw: st.DrawFn) -> SectionConfig:
    config = SectionConfig()
    for name in draw(st.lists(_USERNAME, max_size=4, unique=True)):
        userid = f"{name}@{draw(_REALM)}"
        if userid in config:
            continue
        props: dict[str, section.Value] = draw(st.fixed_dictionaries({}, optional={
            "comment": _TEXT, "enable": st.booleans(), "expire": st.integers(0, 2**40),
            "email": _TEXT.filter(lambda s: 2 <= len(s) <= 64)}))
        config.add(Section("user", userid, props))
        for token in draw(st.lists(st.from_regex(r"[a-z0-9_][a-z0-9._-]{0,8}", fullmatch=True),
                                   max_size=2, unique=True)):
            config.add(Section("token", f"{userid}!{token}", {"enable": draw(st.booleans())}))
    return config


@FAST
@given(datastore_configs())
def test_datastore_cfg_round_trips(config: SectionConfig) -> None:
    raw = section.write(datastore.SCHEMA, config)
    assert section.parse(datastore.SCHEMA, raw) == config
    assert section.write(datastore.SCHEMA, section.parse(datastore.SCHEMA, raw)) == raw


@FAST
@given(user_configs())
def test_user_cfg_round_trips(config: SectionConfig) -> None:
    raw = section.write(user.SCHEMA, config)
    assert section.parse(user.SCHEMA, raw) == config


# -- property strings ----------------------------------------------------------------------------

_PS = PropertyStringType({"type": Prop(StrType(), required=True), "message": Prop(COMMENT),
                          "n": Prop(datastore.TUNING.schema["gc-atime-cutoff"].type)},
                         default_key="type")


def test_property_strings_quote_only_when_needed() -> None:
    assert _PS.parse('offline,message="a, \\"b\\" \\\\ c",n=5') == {
        "type": "offline", "message": 'a, "b" \\ c', "n": 5}
    assert _PS.format({"type": "x", "message": 'a, "b"'}) == 'type=x,message="a, \\"b\\""'
    assert quote_value("plain%20text=ok") == "plain%20text=ok"
    for bad, message in [("type=a,type=b", "duplicate key 'type'"), ("message=x", "required"),
                         ("type=a,", "trailing ','"), ("type=a,,n=1", "empty item"),
                         ('type="a', "unterminated"), ('type="a"b', "expected ','"),
                         ('type=a"b', "unexpected '\"'"), ("=a", "empty key"),
                         ('type="\\n"', "invalid escape"), ("type=a,n=x", "key 'n'")]:
        with pytest.raises(ValueError, match=message):
            _PS.parse(bad)


@FAST
@given(st.fixed_dictionaries({"type": _TEXT.filter(bool)},
                             optional={"message": _TEXT, "n": st.integers(1, 2880)}))
def test_property_strings_round_trip(values: dict[str, section.Value]) -> None:
    assert _PS.parse(_PS.format(values)) == values


# -- acl.cfg ---------------------------------------------------------------------------------

def test_acl_cfg_is_written_exactly_as_pbs_writes_it() -> None:
    text = ("acl:0:/datastore/store2:user1@pbs:Admin\n"
            "acl:0:/datastore/store2:user2@pbs:Admin\n"
            "acl:0:/datastore/store2:user1@pbs:DatastoreBackup\n"
            "acl:0:/datastore/store2:user2@pbs:DatastoreBackup\n"
            "acl:1:/datastore/store2:@admins:Audit\n"
            "acl:1:/:root@pam:Admin\n"
            "acl:1:/:root@pam!ci:DatastoreReader\n"
            " acl:1:/datastore/store2/ns1/ns2:carol@pbs : DatastoreReader , DatastoreAudit \n"
            "acl:1:/datastore/store10:carol@pbs:DatastoreAdmin\n"
            "acl:1:/system/network/interfaces/eth0:dave@pbs:Audit\n")
    config = acl.parse(text.encode())
    assert acl.write_text(config) == (
        "acl:1:/:root@pam!ci:DatastoreReader\n"  # root@pam itself is never written
        "acl:1:/datastore/store10:carol@pbs:DatastoreAdmin\n"
        "acl:0:/datastore/store2:user1@pbs,user2@pbs:Admin,DatastoreBackup\n"
        "acl:1:/datastore/store2:@admins:Audit\n"
        "acl:1:/datastore/store2/ns1/ns2:carol@pbs:DatastoreAudit,DatastoreReader\n"
        "acl:1:/system/network/interfaces/eth0:dave@pbs:Audit\n")
    again = acl.write(acl.parse(acl.write(config)))
    assert again == acl.write(config)


def test_acl_noaccess_replaces_and_is_replaced_on_insert() -> None:
    """PBS's insert rules; evaluating privileges is `server.auth.acl.AclTree`'s job."""
    config = acl.parse_text("acl:1:/:u@pbs:Admin\n"
                            "acl:1:/datastore:u@pbs:NoAccess\n"
                            "acl:1:/datastore/s1:u@pbs:DatastoreBackup\n"
                            "acl:0:/datastore/s2:v@pbs:DatastoreReader\n"
                            "acl:1:/datastore/s2:v@pbs:NoAccess\n"
                            "acl:1:/datastore/s2:v@pbs:DatastoreAudit\n")
    # NoAccess replaced DatastoreReader, then DatastoreAudit replaced NoAccess.
    assert config.node("/datastore/s2") == {"v@pbs": {"DatastoreAudit": True}}
    assert config.delete("/datastore/s2", "v@pbs", "DatastoreAudit")
    assert config.paths() == [(), ("datastore",), ("datastore", "s1")]
    assert config.remove_ugid("u@pbs") == 3 and config.entries() == []


@pytest.mark.parametrize(("line", "message"), [
    ("acl:1:/:u@pbs", "wrong number of items"),
    ("acl:2:/:u@pbs:Admin", "expected '0' or '1'"),
    ("acx:1:/:u@pbs:Admin", "does not start with 'acl'"),
    ("acl:1:/:u@pbs:Superuser", "unknown role 'Superuser'"),
    ("acl:1:/:nobody:Admin", "is not of the form user@realm"),
    ("acl:1:/:u@pbs,,v@pbs:Admin", "is not of the form"),
    ("acl:1:/:@bad group:Admin", "invalid group name"),
    ("acl:1:/storage:u@pbs:Admin", "invalid acl path '/storage'"),
    ("acl:1:/system/kernel:u@pbs:Admin", "invalid acl path"),
    ("acl:1:/datastore/s/a/b/c/d/e/f/g/h:u@pbs:Admin", "invalid acl path"),
    ("acl:1:/datastore/s/bad name:u@pbs:Admin", "is not a valid name"),
    ("# comment", "wrong number of items"),
])
def test_bad_acl_lines_name_file_line_and_reason(line: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        acl.parse_text("acl:1:/:u@pbs:Audit\n\n" + line + "\n")
    assert str(info.value).startswith("parsing 'acl.cfg' failed: line 3 - ")
    assert message in str(info.value)


def test_roles_mirror_pbs() -> None:
    assert set(acl.ROLES) >= {"Admin", "Audit", "NoAccess", "DatastoreAdmin", "DatastoreReader",
                              "DatastoreBackup", "DatastorePowerUser", "DatastoreAudit",
                              "RemoteAudit", "RemoteAdmin", "RemoteSyncOperator", "TapeAudit",
                              "TapeAdmin", "TapeOperator", "TapeReader"}
    privs = {name: role.privileges for name, role in acl.ROLES.items()}
    assert privs["Admin"] == set(acl.PRIVILEGES) and privs["NoAccess"] == frozenset()
    assert privs["Audit"] == {"Sys.Audit", "Datastore.Audit"}
    assert privs["DatastoreAdmin"] == {"Datastore.Audit", "Datastore.Modify", "Datastore.Read",
                                       "Datastore.Verify", "Datastore.Backup", "Datastore.Prune"}
    assert privs["DatastoreReader"] == {"Datastore.Audit", "Datastore.Verify", "Datastore.Read"}
    assert privs["DatastoreBackup"] == {"Datastore.Backup"}
    assert privs["DatastorePowerUser"] == {"Datastore.Backup", "Datastore.Prune"}
    assert privs["DatastoreAudit"] == {"Datastore.Audit"}
    assert "Datastore.Allocate" not in privs["DatastoreAdmin"], "only Admin creates stores"


_UGID = st.one_of(
    st.builds(lambda n, r: f"{n}@{r}", _USERNAME.filter(lambda n: "!" not in n), _REALM),
    st.builds(lambda n, t: f"{n}@pbs!{t}", st.sampled_from(["root", "u1", "u.2"]),
              st.from_regex(r"[a-z0-9_][a-z0-9._-]{0,6}", fullmatch=True)),
    st.from_regex(r"@[a-z][a-z0-9_-]{0,6}", fullmatch=True),
).filter(lambda u: u != acl.ROOT_USER)
_ACL_PATH = st.one_of(
    st.just(()), st.just(("datastore",)), st.just(("access", "users")),
    st.just(("system", "services", "proxy")),
    st.lists(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,5}", fullmatch=True),
             min_size=1, max_size=7).map(lambda ns: ("datastore", "store1", *ns)),
)
_ENTRIES = st.lists(st.builds(AclEntry, _ACL_PATH, _UGID, st.sampled_from(sorted(acl.ROLES)),
                              st.booleans()), max_size=12)


@FAST
@given(_ENTRIES)
def test_acl_cfg_round_trips(entries: list[AclEntry]) -> None:
    config = AclConfig(entries)
    raw = acl.write(config)
    assert acl.parse(raw) == config
    assert acl.write(acl.parse(raw)) == raw


# -- hashes and shadow files ---------------------------------------------------------------------

def test_scrypt_hashes_are_salted_self_describing_and_verified() -> None:
    stored = hashing.hash_secret("correct horse")
    assert stored.startswith("$scrypt$ln=14,r=8,p=1$") and len(stored.split("$")) == 5
    assert hashing.verify_secret("correct horse", stored)
    assert not hashing.verify_secret("correct horsE", stored)
    assert not hashing.verify_secret("correct horse", None), "unknown account: dummy work"
    assert hashing.hash_secret("correct horse") != stored, "fresh salt"
    parsed = hashing.parse_hash(stored)
    assert (parsed.log2_n, parsed.r, parsed.p, len(parsed.salt), len(parsed.digest)) == (
        14, 8, 1, 16, 32)
    salt_digest = stored.split("$", 3)[3]
    for bad in ["$5$abc$def", stored + "x", f"$scrypt$ln=10,r=8,p=1${salt_digest}",
                f"$scrypt$ln=20,r=8,p=1${salt_digest}", f"$scrypt$ln=14,r=8,p=9${salt_digest}"]:
        with pytest.raises(ValueError):
            hashing.parse_hash(bad)
    secret = hashing.new_token_secret()
    assert len(secret) == 36 and secret.count("-") == 4


def test_shadow_files_validate_entries_without_echoing_secrets() -> None:
    good = hashing.hash_secret("pw")
    raw = TOKEN_SHADOW.write({"u@pbs!t2": good, "u@pbs!t1": good})
    assert list(json.loads(raw)) == ["u@pbs!t1", "u@pbs!t2"] and raw.endswith(b"\n")
    assert TOKEN_SHADOW.parse(raw) == {"u@pbs!t1": good, "u@pbs!t2": good}
    assert SHADOW.parse(b"") == {} and SHADOW.parse(b" \n") == {}
    cases = [
        (SHADOW, b'{\n "u@pbs": "%s",\n "v@pbs": "s3cr3t"\n}' % good.encode(),
         "line 3 - entry 'v@pbs': not a chunkyard scrypt hash"),
        (SHADOW, b'{"u@pbs!t": "%s"}' % good.encode(), "is a token id, not a user id"),
        (TOKEN_SHADOW, b'{"u@pbs": "%s"}' % good.encode(), "is not a token id"),
        (SHADOW, b'{\n"u@pbs": "%s",\n"u@pbs": "%s"}' % (good.encode(), good.encode()),
         "duplicate entry 'u@pbs'"),
        (SHADOW, b'["u@pbs"]', "expected a JSON object"),
        (SHADOW, b'{\n"u@pbs": 1}', "line 2 - entry 'u@pbs': the value is not a string"),
        (SHADOW, b'{\n\n"u@pbs": }', "line 3 - invalid JSON"),
    ]
    for fmt, data, message in cases:
        with pytest.raises(ConfigError) as info:
            fmt.parse(data)
        assert message in str(info.value) and "s3cr3t" not in str(info.value)
    with pytest.raises(ConfigError, match=r"writing 'shadow\.json' failed"):
        SHADOW.write({"u@pbs": "plaintext"})


# -- garbage never crashes ---------------------------------------------------------------------

_FRAGMENTS = st.sampled_from([
    "datastore: ", "user: ", "token: ", "store1", "a@pbs", "a@pbs!t", "\t", " ", "\n", "\n\n",
    "\r\n", "path ", "/x", "tuning ", "maintenance-mode ", "backend ", "type=", "offline",
    "filesystem", "s3", "sync-level=", ",", "=", '"', "\\", "#", ":", "acl", "acl:1:/:",
    "Admin", "NoAccess", "/datastore/store1/a", "enable ", "true", "expire ", "-1",
    "99999999999999999999", "keep-last ", "{", "}", '"u@pbs"', "[", "\x00", "\u2028", "\xa0",
    "\x85", "é",
])
_GARBAGE = st.one_of(st.binary(max_size=300), st.text(max_size=200),
                     st.lists(_FRAGMENTS, max_size=40).map(lambda xs: "".join(xs).encode()),
                     st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")))


@FAST
@given(_GARBAGE)
def test_garbage_only_ever_raises_config_error(data: bytes | str) -> None:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    parsers = [lambda: section.parse(datastore.SCHEMA, raw),
               lambda: section.parse(user.SCHEMA, raw),
               lambda: acl.parse(raw), lambda: SHADOW.parse(raw), lambda: TOKEN_SHADOW.parse(raw)]
    for parse in parsers:
        try:
            result = parse()
        except ConfigError:
            continue
        # What parsed must be writable and read back the same.
        if isinstance(result, SectionConfig):
            schema = datastore.SCHEMA if parse is parsers[0] else user.SCHEMA
            assert section.parse(schema, section.write(schema, result)) == result
        elif isinstance(result, AclConfig):
            assert acl.parse(acl.write(result)) == result


@FAST
@given(st.one_of(st.text(max_size=60), st.lists(_FRAGMENTS, max_size=20).map("".join)))
def test_property_string_garbage_only_raises_value_error(text: str) -> None:
    for ps in (_PS, datastore.TUNING, datastore.MAINTENANCE_MODE, datastore.BACKEND):
        try:
            values = ps.parse(text)
        except ValueError:
            continue
        assert ps.parse(ps.format(values)) == values


def test_config_error_is_a_chunkyard_error() -> None:
    assert issubclass(ConfigError, ChunkyardError)


def test_roles_agree_with_the_servers_privilege_table() -> None:
    privileges = pytest.importorskip("chunkyard.server.auth.privileges")
    names = {name: frozenset(privileges.privilege_names(privs))
             for name, privs in privileges.ROLES.items()}
    assert names == {name: role.privileges for name, role in acl.ROLES.items()}
