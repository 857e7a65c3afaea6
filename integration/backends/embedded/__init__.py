"""The embedded backend: server-less search in the calling process, persisted under a folder.

One module per part; `EmbeddedBackend` composes them, and each part uses the others only
through their public functions:

- `store`: the store of record, one SQLite database per index (tables, transactions, fsync
  policy, the store's errors), and every SQL statement run on it;
- `cache`: the in-memory copy of an index the searches read (`IndexCache`), caught up with
  what other connections committed;
- `search`: exact top-k over the cache, rescoring, and ANN candidates merged with fresh rows;
- `ann`: the approximate-search (SEISMIC) build: files, build lock, loading;
- `legacy`: format 1 (snapshot + JSON-lines log), read and converted once;
- `faults`: the fault points the fault-injection tests hook into;
- `backend`: `EmbeddedBackend`, the `Backend` implementation over all of them.
"""

from convsparse.integration.backends.embedded.ann import (
    AnnBuild,
    AnnDamagedError,
    AnnInfo,
    AnnNotBuiltError,
    AnnQuery,
)
from convsparse.integration.backends.embedded.backend import EmbeddedBackend, check_index_name
from convsparse.integration.backends.embedded.store import IndexCorruptError, IndexWriteError

__all__ = ["AnnBuild", "AnnDamagedError", "AnnInfo", "AnnNotBuiltError", "AnnQuery", "EmbeddedBackend",
           "IndexCorruptError", "IndexWriteError", "check_index_name"]
