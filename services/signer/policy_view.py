"""The signer's own read of the policy tables, with what it may share among concurrent calls.

The signer loads the requirement and the approver registry itself for every Sign
(it trusts no caller). Read naively, that is five statements and a few hundred ORM
objects per signature, most of them the same for every call. What is shared:

* a policy version is addressed by the hash of its document: once parsed (and its
  hash checked by ``PolicyService.load``) it never changes, so it is kept;
* the approver registry and the group directory change, so they are never kept
  beyond their use: calls share a read only when it began after each of them asked
  (:class:`FreshRead`). That is exactly as fresh as a read of its own; a revocation
  committed before a Sign asks is always seen by it.

What stays per call is the lookup of the intent's recorded evaluation (whose time
decides which rule applies), as ``PolicyService.requirement`` does it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, sessionmaker

from services.policy import engine
from services.policy.document import Policy
from services.policy.domain import (
    ApproverInfo,
    ApproverKeyInfo,
    RegistrySnapshot,
    Requirement,
    SignatureScheme,
)
from services.policy.models import ApproverGroupRow, ApproverKeyRow, ApproverRow, EvaluationRow
from services.policy.service import PolicyService, spec_json
from services.runtime.db import utcnow
from services.runtime.errors import FailedPrecondition
from services.runtime.intent import IntentSpec

T = TypeVar("T")

_K = ApproverKeyRow
_APPROVERS = select(ApproverRow.approver_id, ApproverRow.display_name, ApproverRow.created_at)
_GROUPS = select(ApproverGroupRow.approver_id, ApproverGroupRow.group_name)
_KEYS = select(_K.key_id, _K.approver_id, _K.scheme, _K.public_key, _K.created_at, _K.revoked_at).order_by(
    _K.created_at
)
_E = EvaluationRow
# ``Evaluations.latest_matching``, built once (it runs for every Sign).
_EVALUATED_AT = (
    select(_E.evaluated_at)
    .where(
        _E.spec == bindparam("spec"),
        _E.initiator == bindparam("initiator"),
        _E.policy_version == bindparam("version"),
    )
    .order_by(_E.evaluated_at.desc(), _E.id.desc())
    .limit(1)
)


class FreshRead(Generic[T]):
    """Shares loads among callers, never giving one a load that began before it asked.

    A caller passes the moment it asked (``time.monotonic()``). The latest load serves
    it when that load began at or after that moment; otherwise the caller joins the
    next load if one is waiting to start, or queues a new one. A load starts once the
    previous one has finished, and stops admitting callers when it starts. So at most
    one load runs and one waits, however many callers there are, and every result a
    caller gets was read after it asked: as fresh as a read of its own.
    """

    def __init__(self, load: Callable[[], T]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._idle = threading.Condition()
        self._running = False
        self._next: Future[T] | None = None
        self._latest: tuple[float, T] | None = None

    def get(self, asked_at: float) -> T:
        with self._lock:
            if self._latest is not None and self._latest[0] >= asked_at:
                return self._latest[1]
            future, lead = self._next, False
            if future is None:
                future = self._next = Future()
                lead = True
        if not lead:
            return future.result()
        with self._idle:
            while self._running:
                self._idle.wait()
            self._running = True
        with self._lock:
            self._next = None  # callers from now on wait for a later load
        try:
            began = time.monotonic()
            value = self._load()
            with self._lock:
                if self._latest is None or self._latest[0] < began:
                    self._latest = (began, value)
            future.set_result(value)
        except BaseException as e:
            future.set_exception(e)
        finally:
            with self._idle:
                self._running = False
                self._idle.notify()
        return future.result()


@dataclass(frozen=True)
class _Registry:
    approvers: RegistrySnapshot
    directory: Mapping[str, frozenset[str]]


class PolicyView:
    """A :class:`~services.signer.ports.PolicySource` over the policy tables (read-only).

    Args:
        reads: Sessions for reading (the signer's read-only engine).
        clock: Time of a requirement for an intent that has no recorded evaluation.
    """

    def __init__(self, reads: sessionmaker[Session], *, clock: Callable[[], datetime] = utcnow) -> None:
        self._reads = reads
        self._clock = clock
        self._versions = PolicyService(reads, clock=clock)  # parses and checks each version's hash
        self._parsed: dict[str, Policy] = {}
        self._registry = FreshRead(self._load_registry)

    def _load_registry(self) -> _Registry:
        """``Approvers.snapshot`` and ``Approvers.directory`` in one snapshot, as three plain queries.

        The ORM's loading of the same rows cost four times as much, on every Sign.
        """
        with self._reads() as s:
            people = s.execute(_APPROVERS).all()
            memberships = s.execute(_GROUPS).all()
            keys = s.execute(_KEYS).all()
        groups: dict[str, set[str]] = {}
        directory: dict[str, set[str]] = {}
        for approver_id, group in memberships:
            groups.setdefault(approver_id, set()).add(group)
            directory.setdefault(group, set()).add(approver_id)
        held: dict[str, list[ApproverKeyInfo]] = {}
        for key_id, approver_id, scheme, public_key, created_at, revoked_at in keys:  # by created_at
            held.setdefault(approver_id, []).append(
                ApproverKeyInfo(key_id, SignatureScheme(scheme), bytes(public_key), created_at, revoked_at)
            )
        approvers = {
            a: ApproverInfo(a, name, frozenset(groups.get(a, ())), tuple(held.get(a, ())), created_at)
            for a, name, created_at in people
        }
        return _Registry(approvers, {g: frozenset(m) for g, m in directory.items()})

    def _policy(self, version: str) -> Policy:
        policy = self._parsed.get(version)
        if policy is None:  # PolicyNotFound when there is no such version; never cached
            policy = self._parsed[version] = self._versions.load(version)
        return policy

    def requirement_and_registry(
        self, policy_version: str, spec: IntentSpec, initiator: str, *, asked_at: float | None = None
    ) -> tuple[Requirement, RegistrySnapshot]:
        """As ``PolicyService.requirement`` and ``approver_registry``, the registry read once for both.

        Rules are matched at the intent's recorded evaluation time (now when none is
        recorded); the requirement's groups are resolved against the same registry read
        that is returned, one begun at or after ``asked_at`` (``time.monotonic()``;
        default: now).
        """
        asked_at = time.monotonic() if asked_at is None else asked_at
        if not policy_version:
            raise FailedPrecondition("approvals must name a policy version")
        policy = self._policy(policy_version)
        with self._reads() as s:
            recorded = s.scalar(
                _EVALUATED_AT, {"spec": spec_json(spec), "initiator": initiator, "version": policy_version}
            )
        at = recorded if recorded is not None else self._clock()
        registry = self._registry.get(asked_at)
        requirement = engine.requirement_for(policy, spec, initiator, at, directory=registry.directory)
        return requirement, registry.approvers
