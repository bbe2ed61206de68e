"""Master keys from configuration, and the embedded stack's generated one.

``BYTEOR_CLOUD_MASTER_KEYS`` holds ``id:base64key`` entries separated by commas;
``BYTEOR_CLOUD_MASTER_KEY_FILE`` names a file of the same entries, one a line
(``#`` comments and blank lines allowed). Both may be set: the variable's keys
come first. The first key overall is the current one (it wraps new data keys);
the others only unwrap, until ``byteor-cloud keys rotate`` has moved every data
key off them. A key is 32 bytes (256 bits) in standard or URL-safe base64,
padding optional, e.g. from ``openssl rand -base64 32``.

With neither set and the embedded database, ``<BYTEOR_CLOUD_HOME>/master.keys``
(mode 0600) is generated on first use and reused; ``byteor-cloud up`` hands it
to its children as ``BYTEOR_CLOUD_MASTER_KEY_FILE``. With an external database
and no keys configured there is no default: each host would otherwise invent
its own key and fail to decrypt the others' secrets.

Error messages name the variable, the entry and the key id, never key material.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from commands.secret_keys import KEY_BYTES, MasterKey, MasterKeyring
from ops.config import PREFIX, ConfigError

if TYPE_CHECKING:
    from ops.config import Settings

KEYS_VARIABLE = PREFIX + "MASTER_KEYS"
FILE_VARIABLE = PREFIX + "MASTER_KEY_FILE"
EMBEDDED_FILE = "master.keys"

_KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/_-]+={0,2}$")


def parse_keys(text: str, source: str, *, lines: bool = False) -> tuple[MasterKey, ...]:
    """Master keys from ``id:base64key`` entries (comma separated, or one a line with
    ``lines``); ``source`` names where they came from in error messages."""
    entries: list[tuple[str, str]] = []
    if lines:
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                entries.append((f"line {number}", stripped))
    else:
        for number, part in enumerate(text.split(","), start=1):
            if part.strip():
                entries.append((f"entry {number}", part.strip()))
    if not entries:
        raise ConfigError(f"{source}: no keys (expected id:base64key entries)")
    keys: list[MasterKey] = []
    seen: set[str] = set()
    for where, entry in entries:
        key_id, sep, encoded = entry.partition(":")
        key_id, encoded = key_id.strip(), encoded.strip()
        if not sep or not key_id or not encoded:
            raise ConfigError(f"{source}: {where}: expected id:base64key")
        if not _KEY_ID.match(key_id):
            raise ConfigError(
                f"{source}: {where}: key id {key_id[:64]!r} must be 1-64 letters, digits, "
                "'_', '.' or '-', starting with a letter or digit"
            )
        if key_id in seen:
            raise ConfigError(f"{source}: duplicate key id {key_id!r}")
        seen.add(key_id)
        material = _decode(encoded)
        if material is None:
            raise ConfigError(f"{source}: key {key_id!r}: not valid base64")
        if len(material) != KEY_BYTES:
            raise ConfigError(
                f"{source}: key {key_id!r}: expected {KEY_BYTES} bytes (256 bits) after "
                f"base64 decoding, got {len(material)}"
            )
        keys.append(MasterKey(key_id, material))
    return tuple(keys)


def _decode(encoded: str) -> bytes | None:
    if not _BASE64.match(encoded):
        return None
    standard = encoded.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def read_key_file(path: Path, source: str) -> tuple[MasterKey, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
        raise ConfigError(f"{source}: cannot read {str(path)!r}: {reason}") from None
    return parse_keys(text, f"{source} ({path})", lines=True)


def from_env(
    keys_text: str | None, file_text: str | None
) -> tuple[tuple[MasterKey, ...], Path | None]:
    """The configured master keys (variable first, then file) and the key file's path."""
    keys: tuple[MasterKey, ...] = ()
    if keys_text is not None:
        keys = parse_keys(keys_text, KEYS_VARIABLE)
    path: Path | None = None
    if file_text is not None:
        path = Path(file_text).expanduser().absolute()
        from_file = read_key_file(path, FILE_VARIABLE)
        clash = {k.id for k in keys} & {k.id for k in from_file}
        if clash:
            raise ConfigError(
                f"{FILE_VARIABLE}: duplicate key id {sorted(clash)[0]!r} (also in {KEYS_VARIABLE})"
            )
        keys += from_file
    return keys, path


def embedded_key_file(home: Path) -> Path:
    """``<home>/master.keys``, generated (one 256-bit key, mode 0600) if missing."""
    path = home / EMBEDDED_FILE
    if path.exists():
        return path
    home.mkdir(parents=True, exist_ok=True)
    content = (
        "# ByteOr Cloud master key for the embedded stack, generated once; keep it with\n"
        "# the data in this directory (losing it loses every inline secret).\n"
        f"local-{secrets.token_hex(4)}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}\n"
    )
    tmp = home / f".{EMBEDDED_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        # link() never replaces: when two processes generate at once, the
        # first link wins and the other adopts its file, and no reader ever
        # sees a half-written one.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def keyring_for(settings: Settings, *, create: bool = True) -> MasterKeyring:
    """The master keys this process uses (module docstring for the embedded default)."""
    if settings.master_keys:
        return MasterKeyring(settings.master_keys)
    if settings.database_url is None:
        path = settings.home / EMBEDDED_FILE
        if create:
            path = embedded_key_file(settings.home)
        elif not path.exists():
            raise ConfigError(
                f"{KEYS_VARIABLE}: not set, and no embedded key file {str(path)!r} yet"
            )
        return MasterKeyring(read_key_file(path, str(path)))
    raise ConfigError(
        f"{KEYS_VARIABLE}: required with an external database ({PREFIX}DATABASE_URL); "
        f"set it (id:base64key, e.g. from `openssl rand -base64 32`) or {FILE_VARIABLE}"
    )


def child_env(settings: Settings) -> dict[str, str]:
    """What ``byteor-cloud up`` adds to its children's environment: the embedded key file,
    when no master keys are configured (the children see an explicit database URL)."""
    if settings.master_keys or settings.database_url is not None:
        return {}
    return {FILE_VARIABLE: str(embedded_key_file(settings.home))}


__all__ = [
    "EMBEDDED_FILE",
    "FILE_VARIABLE",
    "KEYS_VARIABLE",
    "child_env",
    "embedded_key_file",
    "from_env",
    "keyring_for",
    "parse_keys",
    "read_key_file",
]
