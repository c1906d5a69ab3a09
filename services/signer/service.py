"""The signer's logic: keys in the HSM, and signing that trusts no caller.

``sign`` refuses unless, on its own (:mod:`services.signer.authorize`): the
approvals name the policy version the admin quorum made active, the intent passes
that policy evaluated now (limits, allowlists, windows, velocity from the signer's
own ledger), and the approvals are valid signatures of registered keys over this
intent's digest meeting the requirement, within its approval window; the unsigned
transaction decodes to exactly the approved intent, every value and fee bounded;
and no conflicting signature exists. Only then does the HSM sign, with the key
bound to the vault on the token, and the signing record and its audit entry (naming
the approvals it accepted) commit together before the signature is returned. Every
refusal is a typed error and an audit entry.

The public methods are coroutines that run the blocking work (database, HSM) in
worker threads; the HSM serialises itself with its lock. Writes of concurrent
calls share transactions (:mod:`services.signer.commits`): a caller is released
only after the transaction holding its record and audit entry committed. Reads
that only decide whether to go on use ``reads`` (deferred transactions on SQLite,
see :func:`services.runtime.db.read_only`); the unique constraints,
not those reads, decide races.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import secrets
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from services.families import secp256k1
from services.families.base import Decoded, Family, StepKind
from services.families.config import ChainConfig
from services.families.errors import FamilyError, TransactionInvalid, UnknownFamily
from services.families.errors import FeeAboveCap as ChainFeeAboveCap
from services.families.errors import TransactionMismatch as ChainMismatch
from services.families.registry import family_of
from services.runtime.convert import require_id
from services.runtime.db import transaction, utcnow
from services.runtime.errors import CustosError, InvalidArgument
from services.runtime.intent import Approval, IntentBinding, IntentSpec, intent_digest
from services.runtime.telemetry import sign_timer
from services.signer import repository
from services.signer.anchor import HEAD_LABEL as LEDGER_HEAD_LABEL
from services.signer.anchor import DataStore, HeadAnchor
from services.signer.authorize import Authorizer, Grant, Request
from services.signer.commits import GroupCommitter
from services.signer.errors import (
    AuditUnavailable,
    BadSignRequest,
    ConflictingSignature,
    FeeAboveCap,
    HsmKeyNotFound,
    HsmOperationFailed,
    KeyBindingInvalid,
    KeyExists,
    KeyNotFound,
    LedgerUnverified,
    NonceReused,
    TransactionMismatch,
    UnsupportedAlgorithm,
)
from services.signer.hsm import Hsm
from services.signer.ledger import Ledger, LedgerRace
from services.signer.models import SignerKey, SigningRecord
from services.signer.ports import AuditWriterFactory, PolicySource
from services.signer.types import KeyAlgorithm, KeyPurpose

log = logging.getLogger(__name__)

ACTION_SIGN = "signer.sign"
ACTION_CREATE_KEY = "signer.create_key"
MAX_PAGE = 500
MAX_REPLAY_KEY = 2**63 - 1
#: At most this many signatures of one intent step (the first and its replacements: fee bumps,
#: rebuilds after an expired blockhash). Each replacement that lands and fails still pays its fee.
MAX_ATTEMPTS = 8


def intent_replay_key(replay_key: int, intent_id: str) -> int:
    """The ledger's replay key of a family whose replay key spans intents (``replay_per_intent``): the
    family's, mixed with the intent's id (63 bits, like a nonce)."""
    digest = hashlib.sha256(b"custos.replay.intent\x00" + replay_key.to_bytes(8, "big") + intent_id.encode())
    return int.from_bytes(digest.digest()[:8], "big") >> 1


@dataclass(frozen=True)
class _Chain:
    """A chain the signer signs on, with its family (the signer's own decoder and encoder)."""

    config: ChainConfig
    family: Family


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    label: str
    vault_id: str
    algorithm: KeyAlgorithm
    purpose: KeyPurpose
    public_key: bytes
    addresses: tuple[tuple[str, str], ...]
    created_at: datetime


@dataclass(frozen=True)
class SignInput:
    intent_id: str
    step: str
    spec: IntentSpec
    initiator: str
    policy_version: str
    approvals: tuple[Approval, ...]
    unsigned_tx: bytes
    #: When the intent was submitted: bound into the digest the approvals sign.
    submitted_at: datetime

    def authorization(self) -> Request:
        return Request(
            self.intent_id, self.initiator, self.submitted_at, self.spec, self.policy_version, self.approvals
        )


def vault_binding(vault_id: str) -> bytes:
    """What a vault key carries as its (unmodifiable) CKA_SUBJECT on the token: its vault."""
    return b"custos-vault:" + vault_id.encode()


@dataclass(frozen=True)
class SignOutput:
    signature: bytes
    signed_tx: bytes
    tx_hash: str
    replayed: bool
    replacement: bool
    signing_record_id: str


class SignerService:
    """Keys and signatures. Dependencies are injected; none is trusted to have checked anything."""

    def __init__(
        self,
        *,
        hsm: Hsm,
        sessions: sessionmaker[Session],
        policy: PolicySource,
        audit: AuditWriterFactory,
        chains: Iterable[ChainConfig] = (),
        clock: Callable[[], datetime] = utcnow,
        reads: sessionmaker[Session] | None = None,
        ledger_store: DataStore | None = None,
        ledger_label: str = LEDGER_HEAD_LABEL,
        max_batch: int = 64,
        decide_threads: int = 1,
        commit_window: float = 0.0,
    ) -> None:
        self._hsm = hsm
        self._sessions = sessions
        self._reads = reads or sessions
        self._read_engine = self._reads.kw["bind"]  # statements without the ORM, on the hot path
        # What it signed, verified against its chain and the head the HSM anchored: the signer
        # answers "already signed?" and "how much this window?" from here, not from rows.
        anchor = HeadAnchor(ledger_store, label=ledger_label) if ledger_store is not None else None
        self._ledger = Ledger(anchor, check=self._made_here)
        try:
            with self._read_engine.connect() as conn:
                self._ledger.load(conn)
        except LedgerUnverified as e:  # it starts, and refuses every Sign with the reason
            log.critical("the signer will sign nothing: %s", e.message)
        self._authorizer = Authorizer(
            policy,
            self._ledger.signed_amounts,
            lambda name: c.config if (c := self._chains.get(name)) is not None else None,
            clock=clock,
        )
        self._audit = audit
        # The chains it signs on, each with its family: the signer's own copy of the codec.
        self._chains: dict[str, _Chain] = {}
        for chain in chains:
            try:
                self._chains[chain.name] = _Chain(chain, family_of(chain))
            except UnknownFamily:
                log.warning("chain %s of family %s: the signer cannot sign for it", chain.name, chain.family)
        self._clock = clock
        # Calls of sign() between arrival and handing their write to the committer: while
        # some are, a batch waits up to ``commit_window`` for them (only touched on the loop).
        self._deciding = 0
        self._commits = GroupCommitter(
            sessions,
            max_batch=max_batch,
            window=commit_window,
            pending=lambda: self._deciding,
            before_commit=self._ledger.before_commit,
            after_commit=self._ledger.committed,
        )
        # Where sign() runs its checks and the HSM call: n worker threads, or the event loop (0).
        self._decider = ThreadPoolExecutor(decide_threads, "signer-decide") if decide_threads else None
        # Registered keys never change (a key is only ever added): found ones are kept.
        self._vault_keys: dict[tuple[str, KeyAlgorithm], SignerKey] = {}
        self._senders: dict[tuple[str, bytes], str] = {}

    def close(self) -> None:
        """Commits what is queued and stops the commit thread."""
        if self._decider is not None:
            self._decider.shutdown()
        self._commits.close()

    def _made_here(self, record: SigningRecord) -> str | None:
        """Whether ``record``'s signature is this HSM's, by the key it names, over its signing digest
        (a record appended by whoever writes the database is not: ``Ledger``'s ``check``)."""
        hsm_id = _hsm_id(record.key_id)
        if hsm_id is None:
            return f"key {record.key_id!r} is not a key of the HSM"
        try:
            algorithm, public = self._hsm.public_key(hsm_id)
        except HsmKeyNotFound:
            return f"key {record.key_id!r} is not on the HSM"
        signed, signature = bytes(record.signing_digest), bytes(record.signature)
        if algorithm is KeyAlgorithm.SECP256K1:
            made = secp256k1.verify(signed, signature, public)
        else:  # Ed25519 signs the whole message, which the record keeps as its signing digest
            try:
                Ed25519PublicKey.from_public_bytes(public).verify(signature, signed)
                made = True
            except (InvalidSignature, ValueError):
                made = False
        if not made:
            return "its signature is not the HSM key's over its signing digest"
        return None

    # --- keys -----------------------------------------------------------------------------

    def addresses(self, algorithm: KeyAlgorithm, public_key: bytes) -> tuple[tuple[str, str], ...]:
        """The key's address on each chain it signs for (its family's key algorithm)."""
        return tuple(
            (name, c.family.address(c.config, public_key))
            for name, c in self._chains.items()
            if c.family.key_algorithm is algorithm
        )

    def _info(self, key: SignerKey) -> KeyInfo:
        algorithm = KeyAlgorithm(key.algorithm)
        purpose = KeyPurpose(key.purpose)
        return KeyInfo(
            key_id=key.key_id,
            label=key.label,
            vault_id=key.vault_id,
            algorithm=algorithm,
            purpose=purpose,
            public_key=key.public_key,
            addresses=self.addresses(algorithm, key.public_key) if purpose is KeyPurpose.VAULT else (),
            created_at=key.created_at,
        )

    async def create_key(
        self, *, actor: str, vault_id: str, algorithm: KeyAlgorithm, purpose: KeyPurpose, label: str = ""
    ) -> KeyInfo:
        return await asyncio.to_thread(self.create_key_blocking, actor, vault_id, algorithm, purpose, label)

    def create_key_blocking(
        self, actor: str, vault_id: str, algorithm: KeyAlgorithm, purpose: KeyPurpose, label: str = ""
    ) -> KeyInfo:
        """Generates the key pair in the HSM and registers it (with its audit entry)."""
        vault_id = require_id(vault_id, "vault_id")
        label = require_id(label or f"{vault_id}.{algorithm.lower()}.{purpose.lower()}", "label")
        with self._sessions() as s:
            if repository.key_by_label(s, label) is not None:
                raise KeyExists(f"a key labelled {label!r} exists")
            if any(k.algorithm == algorithm for k in repository.keys_for_vault(s, vault_id, purpose)):
                raise KeyExists(f"vault {vault_id!r} already has a {algorithm} {purpose} key")
        hsm_id = secrets.token_bytes(16)
        binding = vault_binding(vault_id) if purpose is KeyPurpose.VAULT else None
        public = self._hsm.generate_keypair(algorithm, label, hsm_id, binding=binding)
        key = SignerKey(
            key_id=_key_id(hsm_id),
            label=label,
            hsm_id=hsm_id,
            vault_id=vault_id,
            algorithm=algorithm.value,
            purpose=purpose.value,
            public_key=public,
            created_at=self._clock(),
        )
        try:
            with transaction(self._sessions) as s:
                repository.add_key(s, key)
                self._write_audit(
                    s,
                    actor,
                    ACTION_CREATE_KEY,
                    key.key_id,
                    "created",
                    {
                        "vault_id": vault_id,
                        "label": label,
                        "algorithm": algorithm.value,
                        "purpose": purpose.value,
                        "public_key": public.hex(),
                    },
                )
        except (IntegrityError, AuditUnavailable) as e:
            self._hsm.destroy_key(hsm_id)  # nothing may hold a key the registry does not know
            if isinstance(e, AuditUnavailable):
                raise
            raise KeyExists(f"a key labelled {label!r} or for this vault exists") from None
        return self._info(key)

    async def get_key(self, *, key_id: str = "", vault_id: str = "", chain: str = "") -> KeyInfo:
        return await asyncio.to_thread(self.get_key_blocking, key_id, vault_id, chain)

    def get_key_blocking(self, key_id: str = "", vault_id: str = "", chain: str = "") -> KeyInfo:
        """A key by id, or a vault's key: the one that signs on ``chain`` (its family's algorithm)
        when a chain is named, else its first."""
        algorithm: KeyAlgorithm | None = None
        if chain:
            signs_on = self._chains.get(chain)
            if signs_on is None:
                raise KeyNotFound(f"the signer does not sign on chain {chain!r}")
            algorithm = signs_on.family.key_algorithm
        with self._sessions() as s:
            if key_id:
                key = repository.get_key(s, key_id)
            elif vault_id:
                found = [
                    k
                    for k in repository.keys_for_vault(s, vault_id, KeyPurpose.VAULT.value)
                    if algorithm is None or k.algorithm == algorithm.value
                ]
                key = found[0] if found else None
            else:
                raise InvalidArgument("key_id or vault_id is required")
        if key is None:
            on = f" that signs on {chain}" if chain else ""
            raise KeyNotFound(f"no key {key_id or 'for vault ' + repr(vault_id) + on}")
        return self._info(key)

    async def list_keys(
        self, *, vault_id: str = "", page_size: int = 100, page_token: str = ""
    ) -> tuple[list[KeyInfo], str]:
        """A page of keys ordered by key id, and the token of the next page ("" at the end)."""
        limit = min(page_size or 100, MAX_PAGE)

        def run() -> tuple[list[KeyInfo], str]:
            with self._sessions() as s:
                keys = repository.list_keys(s, vault_id=vault_id, after=page_token, limit=limit + 1)
            more = len(keys) > limit
            keys = keys[:limit]
            return [self._info(k) for k in keys], keys[-1].key_id if more else ""

        return await asyncio.to_thread(run)

    # --- signing --------------------------------------------------------------------------

    async def sign(self, request: SignInput, *, actor: str) -> SignOutput:
        """:meth:`sign_blocking` for the event loop.

        The checks and the HSM call run in ``decide_threads`` worker threads (one by
        default: more only contend for the GIL and the HSM lock; it keeps the loop free
        for gRPC), or on the loop itself with 0. The wait for the group commit holds no
        thread; while calls are deciding, a batch waits up to ``commit_window`` for them.
        """
        with sign_timer(request.spec.chain) as timer:  # custos.sign.duration, by outcome
            subject = f"intent:{request.intent_id}"
            try:
                self._deciding += 1
                try:
                    write = await self._off_loop(self._decide, request, actor, subject)
                finally:
                    self._deciding -= 1
                try:
                    await self._acommit(write.work)
                except (IntegrityError, LedgerRace):
                    write = await self._off_loop(self._after_race, write, actor, subject)
                    await self._acommit(write.work)
            except CustosError as e:
                if not isinstance(e, AuditUnavailable):
                    refusal = self._refusal(actor, subject, e)
                    try:
                        await self._acommit(refusal)
                    except CustosError:
                        log.error("could not audit the refusal of %s (%s)", subject, type(e).__name__)
                raise
            timer.outcome = "replayed" if write.output.replayed else "signed"
            return write.output

    async def _off_loop(self, fn: Callable[..., _Write], *args: Any) -> _Write:
        if self._decider is None:
            return fn(*args)
        # the caller's context (its trace span) goes along, as asyncio.to_thread would carry it
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._decider, context.run, fn, *args)

    def sign_blocking(self, request: SignInput, actor: str) -> SignOutput:
        """Signs ``request`` if every check passes; returns once its record is committed."""
        subject = f"intent:{request.intent_id}"  # one subject per intent, as every component records it
        try:
            write = self._decide(request, actor, subject)
            try:
                self._commit(write.work)
            except (IntegrityError, LedgerRace):
                write = self._after_race(write, actor, subject)
                self._commit(write.work)
            return write.output
        except CustosError as e:
            if not isinstance(e, AuditUnavailable):
                try:
                    self._commit(self._refusal(actor, subject, e))
                except CustosError:
                    log.error("could not audit the refusal of %s (%s)", subject, type(e).__name__)
            raise

    def _refusal(self, actor: str, subject: str, error: CustosError) -> Callable[[Session], None]:
        payload = {"error": type(error).__name__, "reason": error.message, **_safe(error.details)}
        return lambda s: self._write_audit(s, actor, ACTION_SIGN, subject, "refused", payload)

    def _write_audit(
        self, session: Session, actor: str, action: str, subject: str, outcome: str, payload: dict[str, Any]
    ) -> None:
        try:
            self._audit(session).record(actor, action, subject, outcome, payload)
        except Exception as e:  # whatever the writer's failure, nothing is signed without it
            raise AuditUnavailable(f"audit entry could not be written ({type(e).__name__})") from e

    def _commit(self, work: Callable[[Session], None]) -> None:
        """Runs ``work`` in the next group commit; returns once it is committed.

        A failure to commit is a failure to write the audit entry: nothing goes on.
        """
        try:
            self._commits.run(work)
        except (CustosError, IntegrityError, LedgerRace):
            raise
        except SQLAlchemyError as e:
            cause = type(getattr(e, "orig", None) or e).__name__
            raise AuditUnavailable(f"the signing transaction could not be committed ({cause})") from e

    async def _acommit(self, work: Callable[[Session], None]) -> None:
        """:meth:`_commit`, awaited on the event loop."""
        try:
            await asyncio.wrap_future(self._commits.submit(work))
        except (CustosError, IntegrityError, LedgerRace):
            raise
        except SQLAlchemyError as e:
            cause = type(getattr(e, "orig", None) or e).__name__
            raise AuditUnavailable(f"the signing transaction could not be committed ({cause})") from e

    def _chain(self, spec: IntentSpec) -> _Chain:
        chain = self._chains.get(spec.chain)
        if chain is None:
            raise UnsupportedAlgorithm(f"signing on chain {spec.chain!r} is not configured")
        return chain

    def _vault_key(self, spec: IntentSpec, algorithm: KeyAlgorithm) -> SignerKey:
        cached = self._vault_keys.get((spec.vault_id, algorithm))
        if cached is not None:
            return cached
        with self._reads() as s:
            keys = repository.keys_for_vault(s, spec.vault_id, KeyPurpose.VAULT.value)
        for key in keys:
            if key.algorithm == algorithm:
                if key.key_id != _key_id(key.hsm_id):  # the ledger's records name the HSM key
                    raise KeyBindingInvalid(
                        f"the key registered for vault {spec.vault_id!r} is not named after its HSM key"
                    )
                # The row says which HSM key is the vault's; the token, which only the signer
                # can write, must say so too: a row pointed at another vault's key signs nothing.
                if self._hsm.key_binding(key.hsm_id) != vault_binding(spec.vault_id):
                    raise KeyBindingInvalid(
                        f"the HSM key registered for vault {spec.vault_id!r} is not bound to it"
                    )
                # ...and its public half, which names the sender the transaction is checked against
                if self._hsm.public_key(key.hsm_id)[1] != key.public_key:
                    raise KeyBindingInvalid(
                        f"the public key registered for vault {spec.vault_id!r} is not its HSM key's"
                    )
                self._vault_keys[(spec.vault_id, algorithm)] = key
                return key
        raise KeyNotFound(f"vault {spec.vault_id!r} has no {algorithm.lower()} signing key")

    def _sender(self, chain: _Chain, key: SignerKey) -> str:
        sender = self._senders.get((chain.config.name, key.public_key))
        if sender is None:
            sender = chain.family.address(chain.config, key.public_key)
            self._senders[(chain.config.name, key.public_key)] = sender
        return sender

    def _check_transaction(self, request: SignInput, chain: _Chain, key: SignerKey, grant: Grant) -> Decoded:
        """(c): the signer's own copy of the chain's family decodes the bytes and compares them
        with the approved step; every value and the fee are bounded there and by the policy."""
        try:
            decoded = chain.family.check(
                chain.config, request.spec, request.step, request.unsigned_tx, self._sender(chain, key)
            )
        except TransactionInvalid as e:
            raise BadSignRequest(f"unsigned_tx: {e.message}") from None
        except ChainFeeAboveCap as e:
            raise FeeAboveCap(e.message, details=e.details) from None
        except ChainMismatch as e:
            raise TransactionMismatch(e.message, details=e.details) from None
        except FamilyError as e:
            raise TransactionMismatch(f"transaction is not the approved intent: {e.message}") from None
        fee_cap = grant.requirement.fee_cap
        if fee_cap is not None and decoded.fee_ceiling > fee_cap:
            raise FeeAboveCap(
                f"transaction may pay {decoded.fee_ceiling} in fees, the policy's cap is {fee_cap}"
            )
        return decoded

    def _decide(self, request: SignInput, actor: str, subject: str) -> _Write:
        """Runs every check, asks the HSM when they pass; returns what to commit before answering.

        Raises the refusal when a check fails. The returned write is a new signing
        record with its audit entry, or only the audit entry of a replay. The approver
        registry is current as of the call.
        """
        try:
            require_id(request.intent_id, "intent_id")
            require_id(request.step, "step")
        except InvalidArgument as e:
            raise BadSignRequest(e.message) from None
        if not request.unsigned_tx:
            raise BadSignRequest("unsigned_tx is required")
        chain = self._chain(request.spec)
        steps = tuple(s.name for s in chain.family.steps(request.spec.action) if s.kind is StepKind.SIGN)
        if request.step not in steps:
            # one approval set, one signature per step it defines: another name would be a second spend
            raise BadSignRequest(
                f"{request.step!r} is not a step of a {request.spec.action} ({', '.join(steps) or 'none'})"
            )
        key = self._vault_key(request.spec, chain.family.key_algorithm)
        binding = IntentBinding(request.intent_id, request.initiator, request.submitted_at)
        approved = intent_digest(request.spec, request.policy_version, binding)  # what the approvers signed
        now = self._clock()
        grant = self._authorizer.authorize(request.authorization(), approved, now)
        tx = self._check_transaction(request, chain, key, grant)
        if tx.replay_key > MAX_REPLAY_KEY:  # the ledger's column is a signed 64-bit integer
            raise BadSignRequest(f"the transaction's nonce {tx.replay_key} is beyond {MAX_REPLAY_KEY}")
        replay_key = (
            intent_replay_key(tx.replay_key, request.intent_id)
            if chain.family.replay_per_intent
            else tx.replay_key
        )
        payload_digest = hashlib.sha256(request.unsigned_tx).digest()
        name = request.spec.chain

        # (d) conflicts, decided before the HSM is asked, from the verified ledger; the committing
        # transaction checks again holding the ledger lock, so races are decided there.
        attempt, replaces = 0, None
        with self._read_engine.connect() as conn:
            self._ledger.sync(conn)
            prior_entry, by_nonce = self._ledger.conflicts(
                intent_id=request.intent_id,
                step=request.step,
                key_id=key.key_id,
                chain=name,
                nonce=replay_key,
            )
            if prior_entry is not None and prior_entry.lost:
                # Signed before a crash, or its record removed after it was read: its signature
                # may be out there, so only the same transaction (same nonce) is signed again.
                lost, same = prior_entry, (request.intent_id, request.step, payload_digest)
                if not lost.same_transaction(*same):
                    raise ConflictingSignature(
                        f"{subject} was signed over another payload (its record is not in the database)",
                        details={"nonce": lost.nonce},
                    )
                attempt, replaces, prior_entry = lost.attempt, lost.replaces_id, None
            prior = self._ledger.fetch(conn, prior_entry.record_id) if prior_entry is not None else None
        if prior is not None:
            if prior.payload_digest == payload_digest:
                return self._replay(prior, actor, subject, grant)
            same_slot = (prior.key_id, prior.chain, prior.nonce) == (key.key_id, name, replay_key)
            if not (
                same_slot
                and chain.family.replacement_allowed(chain.config, prior.signed_tx, request.unsigned_tx)
            ):
                raise ConflictingSignature(
                    f"{subject} was already signed over another payload",
                    details={"record_id": prior.record_id},
                )
            window = chain.family.replacement_window
            if window is not None and now - prior.created_at > window:
                raise ConflictingSignature(
                    f"{subject} was signed at {prior.created_at:%Y-%m-%d %H:%M:%S} UTC: a replacement comes"
                    f" within {int(window.total_seconds()) // 60} minutes of the signature it replaces",
                    details={"record_id": prior.record_id},
                )
            if prior.attempt + 1 >= MAX_ATTEMPTS:
                raise ConflictingSignature(
                    f"{subject} was signed {MAX_ATTEMPTS} times already: no further replacement",
                    details={"record_id": prior.record_id},
                )
            attempt, replaces = prior.attempt + 1, prior.record_id
        elif by_nonce is not None:
            raise NonceReused(
                f"nonce {replay_key} of key {key.key_id} on {name} is already signed",
                details={"record_id": by_nonce.record_id},
            )

        to_sign = chain.family.signing_payload(chain.config, request.unsigned_tx)
        sig = self._hsm.sign(key.hsm_id, to_sign)
        try:
            signed = chain.family.assemble(chain.config, request.unsigned_tx, sig, key.public_key)
        except FamilyError as e:
            raise HsmOperationFailed(f"the HSM's signature does not assemble: {e.message}") from None
        record = SigningRecord(
            record_id="sig_" + secrets.token_hex(12),
            intent_id=request.intent_id,
            step=request.step,
            attempt=attempt,
            key_id=key.key_id,
            chain=name,
            nonce=replay_key,
            intent_digest=approved,
            payload_digest=payload_digest,
            signing_digest=to_sign.data,
            signature=sig,
            signed_tx=signed.signed_tx,
            tx_hash=signed.tx_id,
            replacement=attempt > 0,
            replaces_id=replaces,
            created_at=now.replace(microsecond=now.microsecond // 1000 * 1000),
            vault_id=request.spec.vault_id,
            action=request.spec.action.value,
            amount=str(request.spec.amount),
        )

        outcome = "replaced" if record.replacement else "signed"
        payload = {**_record_payload(record), **grant.audit_fields()}
        authorization = request.authorization()

        def work(s: Session) -> None:
            ledger = self._ledger
            ledger.lock(s)  # the whole ledger, as of now, and nobody else appends until we commit
            if ledger.taken(s, record):
                raise LedgerRace(f"{subject} step {record.step} or its nonce was signed meanwhile")
            if attempt == 0:  # a replacement moves nothing more than what it replaces
                since = now - timedelta(seconds=max((lim.window_seconds for lim in grant.limits), default=0))
                amounts = ledger.signed_amounts(
                    record.vault_id, record.chain, since
                ) + ledger.pending_amounts(s, record.vault_id, record.chain)
                Authorizer.guard(amounts, authorization, grant.limits, now)
            repository.insert_record(s, ledger.chain(s, record))
            self._write_audit(s, actor, ACTION_SIGN, subject, outcome, payload)

        return _Write(work, _output(record, replayed=False), record, grant)

    def _after_race(self, lost: _Write, actor: str, subject: str) -> _Write:
        """Another call stored its record first: that signature is the one, ours never leaves."""
        record = lost.record
        assert record is not None
        with self._read_engine.connect() as conn:
            self._ledger.sync(conn)
            by_step, by_nonce = self._ledger.conflicts(
                intent_id=record.intent_id,
                step=record.step,
                key_id=record.key_id,
                chain=record.chain,
                nonce=record.nonce,
            )
            won = by_step if by_step is not None and by_step.attempt >= record.attempt else None
            if won is None and by_nonce is not None and by_nonce.attempt >= record.attempt:
                raise NonceReused(
                    f"nonce {record.nonce} of key {record.key_id} on {record.chain} is already signed",
                    details={"record_id": by_nonce.record_id},
                )
            if won is None:
                raise AuditUnavailable("the signing record could not be stored")
            winner = self._ledger.fetch(conn, won.record_id)
        if winner.payload_digest != record.payload_digest:
            raise ConflictingSignature(
                f"{subject} was already signed over another payload", details={"record_id": winner.record_id}
            )
        return self._replay(winner, actor, subject, lost.grant)

    def _replay(self, record: SigningRecord, actor: str, subject: str, grant: Grant | None) -> _Write:
        payload = {**_record_payload(record), **(grant.audit_fields() if grant is not None else {})}
        return _Write(
            lambda s: self._write_audit(s, actor, ACTION_SIGN, subject, "replayed", payload),
            _output(record, replayed=True),
        )


@dataclass(frozen=True)
class _Write:
    """What a Sign commits before it answers: the unit of work, and the answer it then gives."""

    work: Callable[[Session], None]
    output: SignOutput
    #: The new signing record ``work`` inserts (None for a replay, which only audits).
    record: SigningRecord | None = None
    #: What the checks granted (the approvals accepted), for the record of a lost race.
    grant: Grant | None = None


def _key_id(hsm_id: bytes) -> str:
    """The signer's name for the HSM key with CKA_ID ``hsm_id``."""
    return "key_" + hsm_id.hex()


def _hsm_id(key_id: str) -> bytes | None:
    """The CKA_ID a key name stands for (None when it is no such name)."""
    if not key_id.startswith("key_"):
        return None
    try:
        return bytes.fromhex(key_id[4:])
    except ValueError:
        return None


def _record_payload(r: SigningRecord) -> dict[str, Any]:
    return {
        "record_id": r.record_id,
        "intent_id": r.intent_id,
        "step": r.step,
        "attempt": r.attempt,
        "key_id": r.key_id,
        "chain": r.chain,
        "nonce": r.nonce,
        "tx_hash": r.tx_hash,
        "payload_digest": r.payload_digest.hex(),
        "intent_digest": r.intent_digest.hex(),
        "replaces": r.replaces_id,
    }


def _safe(details: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in details.items() if isinstance(v, (str, int, bool, list)) or v is None}


def _output(r: SigningRecord, *, replayed: bool) -> SignOutput:
    return SignOutput(
        signature=r.signature,
        signed_tx=r.signed_tx,
        tx_hash=r.tx_hash,
        replayed=replayed,
        replacement=r.replacement,
        signing_record_id=r.record_id,
    )
