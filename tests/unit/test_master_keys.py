"""Master key configuration: BYTEOR_CLOUD_MASTER_KEYS, _MASTER_KEY_FILE and the embedded key."""

from __future__ import annotations

import base64
import os
import stat
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from commands.secret_keys import MasterKey, MasterKeyring, MasterKeyUnavailable
from ops.config import ConfigError, Settings
from ops.master_keys import EMBEDDED_FILE, child_env, embedded_key_file, keyring_for

P = "BYTEOR_CLOUD_"
RAW = bytes(range(32))
STD = base64.b64encode(RAW).decode()
URLSAFE = base64.urlsafe_b64encode(bytes(range(200, 232))).decode().rstrip("=")


def settings(home: Path, **env: str) -> Settings:
    return Settings.from_env({P + "HOME": str(home), **{P + k: v for k, v in env.items()}})


def test_keys_from_the_variable_in_order_the_first_is_current(tmp_path: Path) -> None:
    s = settings(tmp_path, MASTER_KEYS=f" new:{STD} , old:{URLSAFE} ")
    assert [k.id for k in s.master_keys] == ["new", "old"]
    ring = keyring_for(s)
    assert ring.current.id == "new" and ring.ids == ("new", "old")
    assert ring.current == MasterKey("new", RAW)


def test_padding_is_optional_and_both_alphabets_are_accepted(tmp_path: Path) -> None:
    s = settings(tmp_path, MASTER_KEYS=f"a:{STD.rstrip('=')},b:{URLSAFE}==")
    assert s.master_keys[0] == MasterKey("a", RAW)
    assert s.master_keys[1] == MasterKey("b", bytes(range(200, 232)))


def test_neither_settings_nor_keys_show_key_material(tmp_path: Path) -> None:
    s = settings(tmp_path, MASTER_KEYS=f"k1:{STD}")
    for text in (repr(s), str(s), repr(s.master_keys[0]), repr(keyring_for(s))):
        assert STD not in text and STD.rstrip("=") not in text and "k1" in text


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (f"k1{STD}", "BYTEOR_CLOUD_MASTER_KEYS: entry 1: expected id:base64key"),
        (f"k1:{STD},:{STD}", "BYTEOR_CLOUD_MASTER_KEYS: entry 2: expected id:base64key"),
        (f"k1:{STD},k2:", "BYTEOR_CLOUD_MASTER_KEYS: entry 2: expected id:base64key"),
        (f"bad id:{STD}", "BYTEOR_CLOUD_MASTER_KEYS: entry 1: key id 'bad id' must be"),
        (f"k1:{STD},k1:{URLSAFE}", "BYTEOR_CLOUD_MASTER_KEYS: duplicate key id 'k1'"),
        ("k1:not*base64!", "BYTEOR_CLOUD_MASTER_KEYS: key 'k1': not valid base64"),
        ("k1:abcde", "BYTEOR_CLOUD_MASTER_KEYS: key 'k1': not valid base64"),
        (
            f"k1:{base64.b64encode(os.urandom(16)).decode()}",
            "BYTEOR_CLOUD_MASTER_KEYS: key 'k1': expected 32 bytes (256 bits) after base64 "
            "decoding, got 16",
        ),
        (
            f"k1:{base64.b64encode(os.urandom(33)).decode()}",
            "key 'k1': expected 32 bytes (256 bits) after base64 decoding, got 33",
        ),
        (",,", "BYTEOR_CLOUD_MASTER_KEYS: no keys"),
    ],
)
def test_a_bad_variable_is_refused_naming_it_without_the_key(
    tmp_path: Path, value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, MASTER_KEYS=value)
    assert message in str(caught.value)
    for part in value.split(","):
        material = part.partition(":")[2]
        if len(material) > 8:
            assert material not in str(caught.value)


def test_keys_from_a_file_follow_the_variables_keys(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(f"# rotated 2026-12\n\nold:{URLSAFE}\n  other:{STD}  \n")
    s = settings(tmp_path, MASTER_KEYS=f"new:{STD}", MASTER_KEY_FILE=str(key_file))
    assert [k.id for k in s.master_keys] == ["new", "old", "other"]
    assert s.master_key_file == key_file
    only_file = settings(tmp_path, MASTER_KEY_FILE=str(key_file))
    assert keyring_for(only_file).current.id == "old"


def test_a_bad_key_file_is_refused_naming_the_variable_and_line(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(f"a:{STD}\n\nb:c2hvcnQ=\n")
    with pytest.raises(ConfigError, match=r"BYTEOR_CLOUD_MASTER_KEY_FILE \(.*keys\): key 'b'"):
        settings(tmp_path, MASTER_KEY_FILE=str(key_file))
    key_file.write_text(f"a:{STD}\nb {STD}\n")
    with pytest.raises(ConfigError, match=r"MASTER_KEY_FILE .*: line 2: expected id:base64key"):
        settings(tmp_path, MASTER_KEY_FILE=str(key_file))
    key_file.write_text("# nothing here\n")
    with pytest.raises(ConfigError, match=r"MASTER_KEY_FILE .*: no keys"):
        settings(tmp_path, MASTER_KEY_FILE=str(key_file))
    key_file.write_text(f"a:{STD}\n")
    with pytest.raises(ConfigError, match="MASTER_KEY_FILE: duplicate key id 'a'"):
        settings(tmp_path, MASTER_KEYS=f"a:{URLSAFE}", MASTER_KEY_FILE=str(key_file))
    with pytest.raises(ConfigError, match=r"MASTER_KEY_FILE: cannot read .*missing"):
        settings(tmp_path, MASTER_KEY_FILE=str(tmp_path / "missing"))


def test_the_embedded_stack_generates_one_private_key_file_and_reuses_it(tmp_path: Path) -> None:
    s = settings(tmp_path / "home")
    assert s.master_keys == ()
    with pytest.raises(ConfigError, match="no embedded key file"):
        keyring_for(s, create=False)
    first = keyring_for(s)
    path = tmp_path / "home" / EMBEDDED_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = keyring_for(s)
    assert again.current == first.current and again.current.id.startswith("local-")
    assert child_env(s) == {"BYTEOR_CLOUD_MASTER_KEY_FILE": str(path)}
    # what `up` hands its children reads back as the same key
    child = settings(tmp_path / "home", MASTER_KEY_FILE=str(path), DATABASE_URL="postgresql://h/d")
    assert keyring_for(child).current == first.current


def test_concurrent_generation_leaves_one_key(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda _: embedded_key_file(tmp_path), range(32)))
    assert set(paths) == {tmp_path / EMBEDDED_FILE}
    assert sorted(p.name for p in tmp_path.iterdir()) == [EMBEDDED_FILE]


def test_an_external_database_without_keys_has_no_default(tmp_path: Path) -> None:
    s = settings(tmp_path, DATABASE_URL="postgresql://db.example/byteor")
    with pytest.raises(ConfigError, match="BYTEOR_CLOUD_MASTER_KEYS: required with an external"):
        keyring_for(s)
    assert child_env(s) == {}
    assert not (tmp_path / EMBEDDED_FILE).exists()


def test_a_master_key_unwraps_only_its_own_wrap_for_the_same_org_and_key_id() -> None:
    key, other = MasterKey("a", os.urandom(32)), MasterKey("b", os.urandom(32))
    org = uuid.uuid4()
    wrapped = key.wrap(org, "dk_1", b"k" * 32)
    assert key.unwrap(org, "dk_1", wrapped) == b"k" * 32
    for attempt in (
        lambda: other.unwrap(org, "dk_1", wrapped),
        lambda: key.unwrap(uuid.uuid4(), "dk_1", wrapped),
        lambda: key.unwrap(org, "dk_2", wrapped),
        lambda: key.unwrap(org, "dk_1", wrapped[:-1] + bytes([wrapped[-1] ^ 1])),
    ):
        with pytest.raises(InvalidTag):
            attempt()


def test_a_keyring_refuses_duplicates_and_names_a_missing_key() -> None:
    a = MasterKey("a", os.urandom(32))
    with pytest.raises(ValueError, match="unique"):
        MasterKeyring([a, MasterKey("a", os.urandom(32))])
    with pytest.raises(ValueError):
        MasterKey("short", os.urandom(16))
    with pytest.raises(MasterKeyUnavailable, match="master key 'gone' is not configured"):
        MasterKeyring([a]).get("gone")
