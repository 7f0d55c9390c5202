"""API keys: created by ``rag keys create``, stored only as sha256 hashes.

The store is ``api_keys.json`` in the data folder (``$WENYUAN_DATA``, else
``$XDG_DATA_HOME/wenyuan`` or ``~/.local/share/wenyuan``). Keys in
``$WENYUAN_API_KEYS`` (comma-separated) are accepted too. A server checks the
file's modification time on every request, so a revoked key stops working
without a restart.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rag.errors import ConfigError

logger = logging.getLogger(__name__)

KEY_PREFIX = "wy-"
STORE_NAME = "api_keys.json"
STORE_VERSION = 1


def data_dir() -> Path:
    """Where the server keeps its own state (API keys): ``$WENYUAN_DATA`` or the XDG data folder."""
    env = os.environ.get("WENYUAN_DATA")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "wenyuan"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class KeyRecord:
    """One stored key: never the key itself, only its hash."""

    id: str
    name: str
    sha256: str
    created: float
    prefix: str = ""  # the key's first characters, to recognise it in `rag keys list`


class KeyStore:
    """The keys a server accepts: the hashed store file plus ``$WENYUAN_API_KEYS``."""

    def __init__(self, folder: str | Path | None = None, env_keys: str | None = None) -> None:
        self.path = Path(folder if folder is not None else data_dir()) / STORE_NAME
        raw = os.environ.get("WENYUAN_API_KEYS", "") if env_keys is None else env_keys
        self._env = {hash_key(k.strip()): f"env-{i}" for i, k in enumerate(raw.split(",")) if k.strip()}
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._records: list[KeyRecord] = []

    # --- reading ---
    def records(self) -> list[KeyRecord]:
        """Keys in the store file (re-read when the file changed)."""
        with self._lock:
            try:
                mtime = self.path.stat().st_mtime_ns
            except FileNotFoundError:
                self._mtime, self._records = None, []
                return []
            if mtime != self._mtime:
                self._records = self._read()
                self._mtime = mtime
            return list(self._records)

    def _read(self) -> list[KeyRecord]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") != STORE_VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {STORE_VERSION}")
            return [KeyRecord(**item) for item in data["keys"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"the API key file {self.path} is unreadable ({e}); delete it and create keys again "
                              "with `rag keys create`") from e

    def has_keys(self) -> bool:
        return bool(self._env) or bool(self.records())

    def check(self, key: str) -> str | None:
        """The id of the key ``key`` if it is accepted, else None."""
        digest = hash_key(key)
        found = None
        # compare_digest against every hash: the time taken does not say how close a guess came
        for known, key_id in list(self._env.items()) + [(r.sha256, r.id) for r in self.records()]:
            if hmac.compare_digest(digest, known):
                found = key_id
        return found

    # --- writing (the `rag keys` commands) ---
    def create(self, name: str = "") -> tuple[str, KeyRecord]:
        """Make a new key; returns ``(key, record)``. The key is shown once and never stored."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        digest = hash_key(key)
        record = KeyRecord(id=digest[:12], name=name, sha256=digest, created=round(time.time(), 3), prefix=key[:7])
        self._write(self.records() + [record])
        return key, record

    def revoke(self, key_or_name: str) -> list[KeyRecord]:
        """Remove the keys whose id or name is ``key_or_name``; returns what was removed."""
        records = self.records()
        gone = [r for r in records if key_or_name in (r.id, r.name)]
        if not gone:
            raise ConfigError(f"no API key with id or name {key_or_name!r}; `rag keys list` shows them")
        self._write([r for r in records if r not in gone])
        return gone

    def _write(self, records: list[KeyRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"version": STORE_VERSION, "keys": [asdict(r) for r in records]}, ensure_ascii=False, indent=1)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".api_keys-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)  # atomic: a running server never reads half a file
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, store: KeyStore) -> None:
    """Refuse to serve the API beyond this machine without a key.

    Raises:
        ConfigError: ``host`` is not a loopback address and no API key exists.
    """
    if not is_loopback(host) and not store.has_keys():
        raise ConfigError(
            f"refusing to listen on {host} without an API key: anyone on the network could use the API. "
            f"Create a key with `rag keys create --name NAME` (stored in {store.path.parent}), or set "
            "WENYUAN_API_KEYS, or serve on 127.0.0.1"
        )
