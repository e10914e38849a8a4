"""The key of the collector's placeholder tags: every process that scrubs a trace must hold the same one.

``VEIL_PII_PLACEHOLDER_KEY`` when set (replicas agree only through it: give them all the same one); else
a random key generated once in ``data_dir``, which the receiver workers of one collector and its restarts
share. Whoever holds the key can confirm a guessed value from its placeholder, so it stays secret: the
file is the collector user's alone (mode 0600).
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from veil_collector.spool.files import fsync_dir

__all__ = ["KEY_FILE", "load_or_create_key", "placeholder_key"]

logger = logging.getLogger(__name__)

KEY_FILE = "pii_placeholder.key"
"""The generated key's file name in ``data_dir``."""
_MIN_KEY_CHARS = 16  # what the setting requires too; a generated key has 64


def placeholder_key(settings: Any) -> bytes:
    """Return the collector's placeholder key: ``settings.pii_placeholder_key``, else the one in
    ``settings.data_dir`` (generated on first use)."""
    configured = settings.pii_placeholder_key
    if configured is not None:
        return configured.get_secret_value().encode()
    return load_or_create_key(settings.data_dir / KEY_FILE)


def load_or_create_key(path: Path) -> bytes:
    """Return the key stored in ``path``, first writing a random one (mode 0600) when there is none.

    The new key is written whole under a temporary name and then linked to ``path``, which fails when
    ``path`` exists: a process starting beside another on the same folder reads either no file or a
    whole key, and the first key written is the one every process keeps.

    Raises:
        ValueError: ``path`` holds no key (empty or too short).
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(secrets.token_hex(32) + "\n")
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(tmp, path)
                fsync_dir(path.parent)
                logger.info("generated the PII placeholder key in %s", path)
            except FileExistsError:
                pass  # another process linked its key first: that one stands
        finally:
            os.unlink(tmp)
    if path.stat().st_mode & 0o077:
        logger.warning(
            "%s is readable by other users; with it anyone can confirm a guessed value from its "
            "placeholder (chmod 600 it)",
            path,
        )
    key = path.read_text(encoding="utf-8").strip()
    if len(key) < _MIN_KEY_CHARS:
        raise ValueError(
            f"{path} holds no PII placeholder key (at least {_MIN_KEY_CHARS} characters); remove it to have "
            f"one generated, or set VEIL_PII_PLACEHOLDER_KEY"
        )
    return key.encode()
