"""Opening SQLite connections the way every Faultlens store wants them."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open ``path`` in WAL mode with full durability on commit.

    ``synchronous=FULL`` makes each commit fsync the WAL, so a committed transaction
    survives power loss and not only a killed process. Connections are used by one
    thread at a time but may be handed between threads, hence
    ``check_same_thread=False``.
    """
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=30
        )
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    # The default isolation wraps DML in implicit transactions; ``with conn:`` commits.
    return conn
