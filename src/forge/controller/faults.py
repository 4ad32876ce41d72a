"""Fault handling for the forge controller: Monarch's fault hook, the watchdog, and error classification.

Monarch reports a dead process in two ways: the pending calls to its actors raise a `SupervisionError`, and
an *unhandled* supervision event reaches `monarch.actor.unhandled_fault_hook`, whose default `sys.exit`s the
controller (see ../shared/FACTS.md). `install_fault_handling()` replaces that hook with one that logs and
notifies listeners (services mark the replica unhealthy) and shortens the supervision watchdog from 10 s to
2 s, so a dead replica is noticed quickly (issue 3, item 4).

`is_replica_failure(exc)` tells a replica failure (process death, unreachable actor: retry elsewhere) from
an application exception (raised by the endpoint's own code: never retried, re-raised at the caller).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

import monarch
import monarch.actor
from monarch._rust_bindings.monarch_hyperactor.config import reload_config_from_env
from monarch._rust_bindings.monarch_hyperactor.supervision import SupervisionError
from monarch.actor import ActorError, MeshFailure

logger = logging.getLogger(__name__)

# How long the controller waits without a supervision heartbeat before declaring a mesh dead (Monarch's
# default: 2 min). Overridable with HYPERACTOR_MESH_SUPERVISION_WATCHDOG_TIMEOUT.
SUPERVISION_WATCHDOG_TIMEOUT = "2s"
# How often Monarch polls a mesh's processes and heartbeats the controller (default 10 s). Measured on
# torchmonarch 0.7.0: with a watchdog shorter than this poll, *every* mesh is declared dead once the
# watchdog elapses, even with no fault at all; so the poll must be well under the watchdog.
# Overridable with HYPERACTOR_MESH_SUPERVISION_POLL_FREQUENCY.
SUPERVISION_POLL_FREQUENCY = "500ms"

_installed = False
_install_lock = threading.Lock()
_listeners: list[Callable[[MeshFailure], None]] = []
_faults_seen: list[str] = []


class ReplicaFailedError(RuntimeError):
    """A request could not be served because the replica(s) it was sent to failed (not an app error)."""


class ServiceUnavailableError(RuntimeError):
    """No healthy replica became available within the service's timeout."""


def _forge_fault_hook(failure: MeshFailure) -> None:
    """Log an unhandled mesh failure and tell the services; returning normally keeps the controller alive."""
    text = str(failure)
    _faults_seen.append(text[:2000])
    logger.warning("forge: a Monarch mesh failed (controller keeps running): %s", text[:500])
    for listener in _listeners:
        try:
            listener(failure)
        except Exception:  # a listener bug must not turn a handled fault into a controller exit
            logger.exception("forge: fault listener raised")


def install_fault_handling() -> None:
    """Install forge's unhandled-fault hook and the 2 s supervision watchdog (idempotent)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        monarch.actor.unhandled_fault_hook = _forge_fault_hook
        # The poll frequency has no configure() key; it is read from the environment, so set it there
        # (child processes inherit it too) and reload Monarch's config.
        os.environ.setdefault("HYPERACTOR_MESH_SUPERVISION_POLL_FREQUENCY", SUPERVISION_POLL_FREQUENCY)
        reload_config_from_env()
        watchdog = os.environ.get("HYPERACTOR_MESH_SUPERVISION_WATCHDOG_TIMEOUT",
                                  SUPERVISION_WATCHDOG_TIMEOUT)
        monarch.configure(supervision_watchdog_timeout=watchdog)
        _installed = True


def add_fault_listener(listener: Callable[[MeshFailure], None]) -> None:
    """Call `listener(failure)` for every unhandled mesh failure (services use it to react early)."""
    _listeners.append(listener)


def remove_fault_listener(listener: Callable[[MeshFailure], None]) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def faults_seen() -> list[str]:
    """Texts of the unhandled mesh failures the hook received so far (for logs and tests)."""
    return list(_faults_seen)


def is_replica_failure(exc: BaseException) -> bool:
    """True when `exc` means the replica (process/actor) failed, False for an application exception.

    `ActorError` wraps an exception raised by the endpoint's code: the actor is still alive. Monarch's
    `SupervisionError` (process died, actor unreachable or stopped) means the actor or its process is gone.
    Anything else (e.g. a `TypeError` for arguments that do not match the endpoint) is the caller's.
    """
    return isinstance(exc, (SupervisionError, ReplicaFailedError))


def raise_remote(exc: ActorError) -> None:
    """Re-raise the endpoint's own exception at the caller, carrying the remote traceback.

    The original exception type is kept (so `except ValueError` works at the caller) and the Monarch
    `ActorError`, whose text holds the remote traceback, is chained as its cause and added as a note.
    """
    original = getattr(exc, "exception", None)
    if not isinstance(original, BaseException) or isinstance(original, ActorError):
        raise exc
    note = f"remote traceback (from the actor):\n{exc}"
    if note not in getattr(original, "__notes__", []):
        original.add_note(note)
    raise original from exc
