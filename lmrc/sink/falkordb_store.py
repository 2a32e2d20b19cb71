"""Server backend: FalkorDB (OpenCypher graph database on the Redis protocol)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from falkordb import FalkorDB
from redis import exceptions as redis_errors

from lmrc.sink.graph import CypherGraphStore, StoreUnavailableError

_UNAVAILABLE = (redis_errors.ConnectionError, redis_errors.TimeoutError)
#: Server replies that mean "the store is sick or misconfigured", not "this input is bad": out of
#: memory, a read-only replica, loading its data, busy with a script, no master, wrong credentials.
#: redis-py turns some into classes (dropping the prefix); the others keep their prefix.
_SICK = (
    redis_errors.OutOfMemoryError,
    redis_errors.ReadOnlyError,
    redis_errors.BusyLoadingError,
    redis_errors.NoPermissionError,
    redis_errors.AuthenticationError,
)
_SICK_PREFIXES = ("OOM", "READONLY", "LOADING", "BUSY", "MASTERDOWN", "NOAUTH", "WRONGPASS", "NOPERM")


INDEXES = (
    "CREATE INDEX FOR (e:Entity) ON (e.id)",
    "CREATE INDEX FOR (d:Document) ON (d.doc_id)",
    "CREATE INDEX FOR ()-[e:RELATION]-() ON (e.doc_id)",
)


class FalkorDBGraphStore(CypherGraphStore):
    """A batch is one query, and each query is atomic on the server: one transaction per batch."""

    backend = "falkordb"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6379,
        graph: str = "lmrc",
        password: str | None = None,
        username: str | None = None,
        ssl: bool = False,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._connect = lambda: FalkorDB(
            host=host,
            port=port,
            password=password,
            username=username,
            ssl=ssl,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
        )
        self._graph_name = graph
        self._client: FalkorDB | None = None
        self._schema_ready = False

    @property
    def _db(self) -> FalkorDB:
        """The client, connected on first use: the client's constructor talks to the server (it
        asks whether it is a sentinel), and a store that is down or refuses our password must not
        stop the sink from starting; the first write then pauses and retries like any outage."""
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _ensure_schema(self) -> None:
        """Index the entity and document keys and the edges' document once; done lazily so a
        store that is down does not stop start-up."""
        if self._schema_ready:
            return
        for index in INDEXES:
            try:
                self._graph().query(index)
            except redis_errors.ResponseError as error:
                if "already indexed" not in str(error):
                    raise
        self._schema_ready = True

    def _graph(self) -> Any:
        return self._db.select_graph(self._graph_name)

    def _read(self, query: str, params: dict[str, Any]) -> list[list[Any]]:
        return self._run(lambda: self._graph().ro_query(query, params).result_set)

    def _write_batch(self, statements: list[tuple[str, dict[str, Any]]]) -> None:
        """FalkorDB has no multi-statement transactions but runs each query atomically: chain the
        statements into one query, each closed by an aggregation so the next starts on one row."""
        query = "".join(
            statement if i == len(statements) - 1 else f"{statement}WITH count(*) AS _step{i}\n"
            for i, (statement, _params) in enumerate(statements)
        )
        params = {key: value for _statement, p in statements for key, value in p.items()}
        self._run(lambda: self._graph().query(query, params))

    def _run(self, operation: Callable[[], Any]) -> Any:
        """Creating the index also creates the graph, so reads of a new graph see an empty one."""
        try:
            self._ensure_schema()
            return operation()
        except _SICK as error:
            name = type(error).__name__
            raise StoreUnavailableError(f"FalkorDB cannot take the write ({name}): {error}") from error
        except _UNAVAILABLE as error:
            raise StoreUnavailableError(f"FalkorDB unreachable: {error}") from error
        except redis_errors.ResponseError as error:
            if str(error).lstrip().upper().startswith(_SICK_PREFIXES):
                raise StoreUnavailableError(f"FalkorDB cannot take the write: {error}") from error
            raise

    def close(self) -> None:
        if self._client is not None:
            self._client.connection.close()
            self._client = None
