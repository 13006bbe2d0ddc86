"""The storage actor: a Ray actor on the driver's node that owns a storage, and the proxy workers call it by.

:class:`StorageServer` runs as the actor; :class:`RayStorageProxy` is a complete
:class:`optuna.storages.BaseStorage` that forwards each call to it, retrying only calls that are safe to repeat
(:data:`IDEMPOTENT`) when Ray restarts the actor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from optuna.storages import BaseStorage

from sparsearch._redact import redact
from sparsearch.errors import ConnectionProblem, SpecError, first_line
from sparsearch.search.storage.opening import open_storage
from sparsearch.search.storage.rdb import is_backend_failure
from sparsearch.search.storage.urls import is_memory_url

if TYPE_CHECKING:
    from ray import ObjectRef
    from ray.actor import ActorHandle

__all__ = ["IDEMPOTENT", "RayStorageProxy", "StorageActorLost", "StorageServer", "is_storage_outage",
           "start_storage_server"]


class StorageServer:
    """Owns one Optuna storage; every call is made here. Run as a Ray actor (see :func:`start_storage_server`)."""

    def __init__(self, url: str) -> None:
        self._storage = open_storage(url)

    def call(self, method: str, args: tuple[object, ...], kwargs: dict[str, object]) -> tuple[bool, object]:
        """``(True, what the storage's ``method`` returned)``, or ``(False, the exception it raised)``."""
        try:
            return True, getattr(self._storage, method)(*args, **kwargs)
        except Exception as exc:  # returned, re-raised by the proxy with its own type
            return False, exc

    def ping(self) -> bool:
        return True


def start_storage_server(url: str, *, wait: bool = True) -> ActorHandle:
    """Start the storage actor on this (the driver's) node; with ``wait``, until its storage is open.

    Without ``wait`` the actor's process starts in the background (about a second here) while trials run; its
    first caller waits for it. The driver uses that when it has opened the same storage itself already (so the
    URL is known to work) and workers need the actor only for what they cannot do locally.

    Restarts: an actor over a file or a database is restarted by Ray when its process dies (it reopens the same
    storage); an in-memory study lives in the actor alone, so that actor is never restarted (a restart would
    silently start an empty study). Ray never re-sends a call itself (``max_task_retries=0``): the proxy retries
    only calls that are safe to repeat (see :data:`IDEMPOTENT`).
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    restarts = 0 if is_memory_url(url) else -1
    actor_cls = ray.remote(num_cpus=0, max_restarts=restarts, max_task_retries=0)(StorageServer)
    actor: ActorHandle = actor_cls.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False),
        runtime_env={"env_vars": {"OPTUNA_DISABLE_PROGRESS": "1"}},
    ).remote(url)  # type: ignore[assignment]  # ray's annotations give the actor or its class
    if not wait:
        return actor
    try:
        ray.get(actor.ping.remote())
    except ray.exceptions.RayActorError as exc:
        cause = getattr(exc, "cause", None) or exc
        inner = getattr(cause, "cause", None) or cause
        if isinstance(inner, (SpecError, ConnectionProblem)):
            raise inner from None
        raise ConnectionProblem(f"cannot open storage {redact(url)!r}: {redact(first_line(inner))}") from None
    return actor


IDEMPOTENT = frozenset({
    "get_all_studies", "get_all_trials", "get_best_trial", "get_n_trials", "get_study_directions",
    "get_study_id_from_name", "get_study_name_from_id", "get_study_system_attrs", "get_study_user_attrs",
    "get_trial", "get_trial_id_from_study_id_trial_number", "get_trial_number_from_id", "get_trial_param",
    "get_trial_params", "get_trial_system_attrs", "get_trial_user_attrs", "check_trial_is_updatable",
    "set_study_system_attr", "set_study_user_attr", "set_trial_intermediate_value", "set_trial_param",
    "set_trial_system_attr", "set_trial_user_attr",
})
"""Storage calls that give the same study when made twice (reads, and writes of a value under a key). Everything
else (``create_new_trial``, ``create_new_study``, ``set_trial_state_values``, deletions) is sent at most once: if
the actor died during the call, it may or may not have been applied."""


class StorageActorLost(ConnectionProblem):
    """The storage actor died during a call that cannot be repeated safely, or with the only copy of the study."""


def is_storage_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the study's storage could not be reached (not that a call was wrong): the storage
    actor died, a worker cannot reach the storage, or the database backend failed."""
    return isinstance(exc, (StorageActorLost, ConnectionProblem)) or is_backend_failure(exc)


class RayStorageProxy(BaseStorage):
    """A :class:`BaseStorage` that forwards every call to a :class:`StorageServer` actor.

    When the actor's process dies (its node's OOM killer, a crash), Ray restarts it over the same storage, and a
    call in :data:`IDEMPOTENT` is sent again (up to ``retries`` times); any other call, and every call to an
    in-memory study's actor (never restarted: the study died with it), raises :class:`StorageActorLost`. Errors
    the storage itself raises (a finished trial, a database outage) come back with their own type, never retried.
    """

    def __init__(self, actor: ActorHandle, *, retries: int = 3) -> None:
        self._actor = actor
        self._retries = retries

    def _call(self, method: str, *args: object, **kwargs: object) -> object:
        import time

        import ray

        attempt = 0
        while True:
            try:
                ref: ObjectRef[tuple[bool, object]] = self._actor.call.remote(method, args, kwargs)  # StorageServer.call
                reply = ray.get(ref)
                break
            except ray.exceptions.RayActorError as exc:  # ActorDiedError, ActorUnavailableError (restarting)
                if method not in IDEMPOTENT or attempt >= self._retries:
                    first = first_line(exc, limit=200)
                    if not self._retries:
                        what = "the in-memory study was lost with it"
                    elif method not in IDEMPOTENT:
                        what = "the call was not repeated: it may or may not have been applied"
                    else:
                        what = f"it did not come back after {attempt} retries"
                    raise StorageActorLost(f"the study's storage actor died during {method}: {what} "
                                           f"({type(exc).__name__}: {first})") from None
                attempt += 1
                time.sleep(min(2.0, 0.2 * 2 ** attempt))  # Ray restarts the actor's process meanwhile
        ok, value = reply
        if not ok:
            assert isinstance(value, BaseException)  # StorageServer.call returns the exception it caught
            raise value
        return value

    def __reduce__(self) -> tuple[Callable[[ActorHandle, int], RayStorageProxy], tuple[ActorHandle, int]]:
        return (_proxy, (self._actor, self._retries))


def _proxy(actor: ActorHandle, retries: int) -> RayStorageProxy:
    return RayStorageProxy(actor, retries=retries)  # type: ignore[abstract]  # forwarded: _FORWARDED below


def _forwarder(name: str) -> Callable[..., object]:
    def method(self: RayStorageProxy, *args: object, **kwargs: object) -> object:
        return self._call(name, *args, **kwargs)

    method.__name__ = name
    method.__doc__ = f"Forwarded to the storage actor: ``BaseStorage.{name}``."
    return method


_FORWARDED = sorted(BaseStorage.__abstractmethods__) + [
    "get_best_trial", "get_n_trials", "get_trial_id_from_study_id_trial_number", "get_trial_number_from_id",
    "get_trial_param", "get_trial_params", "get_trial_system_attrs", "get_trial_user_attrs", "check_trial_is_updatable",
]
for _name in _FORWARDED:
    setattr(RayStorageProxy, _name, _forwarder(_name))
RayStorageProxy.__abstractmethods__ = frozenset()
del _name
