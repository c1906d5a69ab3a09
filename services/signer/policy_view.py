"""The signer's own read of the policy tables, with what it may keep between calls.

The signer loads the requirement and the approver registry itself for every Sign
(it trusts no caller). Read naively, that is five statements and a few hundred ORM
objects per signature, most of them the same for every call. What is kept:

* a policy version is addressed by the hash of its document: once parsed (and its
  hash checked by ``PolicyService.load``) it never changes, so it is kept;
* the approver registry (approvers, groups, keys and their revocations) is kept
  with the registry revision it was read at. Database triggers move that revision
  in the same transaction as any change to the registry tables (migration
  ``policy_0002``), so every Sign reads the current revision, after it was asked,
  and re-reads the registry only when the revision moved. That is exactly as fresh
  as reading the registry itself: a revocation committed before a Sign asks is
  always seen by it.

The revision and the lookup of the intent's recorded evaluation (whose time decides
which rule applies, as ``PolicyService.requirement`` does it) are one statement: one
round trip per Sign when the registry is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, select
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
from services.policy.models import (
    ApproverGroupRow,
    ApproverKeyRow,
    ApproverRow,
    EvaluationRow,
    RegistryRevisionRow,
)
from services.policy.service import PolicyService, spec_json
from services.runtime.db import utcnow
from services.runtime.errors import FailedPrecondition
from services.runtime.intent import IntentSpec

_K = ApproverKeyRow
_APPROVERS = select(ApproverRow.approver_id, ApproverRow.display_name, ApproverRow.created_at)
_GROUPS = select(ApproverGroupRow.approver_id, ApproverGroupRow.group_name)
_KEYS = select(_K.key_id, _K.approver_id, _K.scheme, _K.public_key, _K.created_at, _K.revoked_at).order_by(
    _K.created_at
)
_E = EvaluationRow
# The registry revision and ``Evaluations.latest_matching``, one statement built once (it runs
# for every Sign): both answers come from one snapshot, in one round trip.
_REVISION_AND_EVALUATED_AT = select(
    select(RegistryRevisionRow.revision).where(RegistryRevisionRow.id == 1).scalar_subquery(),
    select(_E.evaluated_at)
    .where(
        _E.initiator == bindparam("initiator"),
        _E.policy_version == bindparam("version"),
        _E.spec == bindparam("spec"),
    )
    .order_by(_E.evaluated_at.desc(), _E.id.desc())
    .limit(1)
    .scalar_subquery(),
)


@dataclass(frozen=True)
class _Registry:
    #: The revision read before the registry (its content is at least that recent).
    revision: int
    approvers: RegistrySnapshot
    directory: Mapping[str, frozenset[str]]


class PolicyView:
    """A :class:`~services.signer.ports.PolicySource` over the policy tables (read-only).

    Args:
        reads: Sessions for reading (the signer's read-only engine); statements run on
            connections of its engine, without the ORM.
        clock: Time of a requirement for an intent that has no recorded evaluation.
    """

    def __init__(self, reads: sessionmaker[Session], *, clock: Callable[[], datetime] = utcnow) -> None:
        self._engine = reads.kw["bind"]
        self._clock = clock
        self._versions = PolicyService(reads, clock=clock)  # parses and checks each version's hash
        self._parsed: dict[str, Policy] = {}
        # Replaced whole, never mutated: a reader holds one consistent (revision, registry).
        self._registry: _Registry | None = None

    def _load_registry(self, conn: Connection, revision: int) -> _Registry:
        """``Approvers.snapshot`` and ``Approvers.directory`` as three plain queries.

        Read after ``revision`` was, so at least as recent (on SQLite in the same
        snapshot). The ORM's loading of the same rows cost four times as much.
        """
        people = conn.execute(_APPROVERS).all()
        memberships = conn.execute(_GROUPS).all()
        keys = conn.execute(_KEYS).all()
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
        return _Registry(revision, approvers, {g: frozenset(m) for g, m in directory.items()})

    def _policy(self, version: str) -> Policy:
        policy = self._parsed.get(version)
        if policy is None:  # PolicyNotFound when there is no such version; never cached
            policy = self._parsed[version] = self._versions.load(version)
        return policy

    def requirement_and_registry(
        self, policy_version: str, spec: IntentSpec, initiator: str
    ) -> tuple[Requirement, RegistrySnapshot]:
        """As ``PolicyService.requirement`` and ``approver_registry``, the registry read once for both.

        Rules are matched at the intent's recorded evaluation time (now when none is
        recorded); the requirement's groups are resolved against the same registry
        that is returned, current as of this call.
        """
        if not policy_version:
            raise FailedPrecondition("approvals must name a policy version")
        policy = self._policy(policy_version)
        params = {"spec": spec_json(spec), "initiator": initiator, "version": policy_version}
        with self._engine.connect() as conn:
            revision, recorded = conn.execute(_REVISION_AND_EVALUATED_AT, params).one()
            if revision is None:
                raise FailedPrecondition("the policy tables have no registry revision (migrate the database)")
            registry = self._registry
            if registry is None or registry.revision != revision:
                registry = self._registry = self._load_registry(conn, revision)
        at = recorded if recorded is not None else self._clock()
        requirement = engine.requirement_for(policy, spec, initiator, at, directory=registry.directory)
        return requirement, registry.approvers
