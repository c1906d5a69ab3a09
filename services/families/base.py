"""The one interface every component uses for what is chain-specific.

A chain *family* (Ethereum, Cosmos SDK, Solana) is a pure package under
``services/families/<name>/``: no grpc, database, HSM or network code, so the signer
embeds it as its own independent check of what it signs, the chain service builds
with it, the policy reads its facts from it and the workflow asks it for an action's
steps. Everything that differs between chains is answered here:

- the key algorithm of a vault key and its address on a chain (:meth:`Family.address`);
- whether an intent's targets are well formed (:meth:`Family.validate_intent`), and the
  spelling of addresses and validators (:meth:`Family.normalise_address`, ...);
- the **steps** an action takes, signed transactions and durable waits (:meth:`Family.steps`);
- the facts policy rules see (:meth:`Family.facts`);
- what unsigned bytes do (:meth:`Family.decode`) and whether they are exactly an approved
  intent's step, every value and fee bounded (:meth:`Family.check`);
- what the HSM signs and with which mechanism (:meth:`Family.signing_payload`), and the
  signed transaction and its id in the chain's own spelling (:meth:`Family.assemble`);
- which replacement of a signed step is allowed (:meth:`Family.replacement_allowed`).

Families raise :mod:`services.families.errors`; they never log and never do I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import NewType, Protocol

from services.families.config import ChainConfig
from services.runtime.intent import Action, IntentSpec, Target

FamilyName = NewType("FamilyName", str)
#: What makes two signatures of one key on one chain conflict: an Ethereum account nonce, a
#: Cosmos account sequence. The signer signs one transaction per replay key (and attempt).
ReplayKey = NewType("ReplayKey", int)


class KeyAlgorithm(StrEnum):
    """The algorithm of a key the HSM holds."""

    SECP256K1 = "SECP256K1"
    ED25519 = "ED25519"


class Mechanism(StrEnum):
    """How the HSM signs a family's :class:`SigningPayload`."""

    #: ``CKM_ECDSA`` over a 32-byte digest the family computed (keccak256, sha256...), then low-S.
    ECDSA_SECP256K1 = "ECDSA_SECP256K1"
    #: ``CKM_EDDSA`` (pure Ed25519) over the whole message.
    EDDSA_ED25519 = "EDDSA_ED25519"


@dataclass(frozen=True)
class SigningPayload:
    mechanism: Mechanism
    #: The digest (ECDSA) or the message (EdDSA) the HSM signs.
    data: bytes


class StepKind(StrEnum):
    #: A transaction to build, sign once, broadcast and confirm.
    SIGN = "SIGN"
    #: A durable wait for the chain (unbonding, an epoch) before the next step.
    WAIT = "WAIT"


@dataclass(frozen=True)
class Step:
    """One step of an action on a family, in order (see :meth:`Family.steps`)."""

    name: str
    kind: StepKind = StepKind.SIGN
    #: What a WAIT waits for, in words ("unbonding", "cooldown epoch").
    waits_for: str = ""


@dataclass(frozen=True)
class PolicyFacts:
    """What a policy rule may look at of an intent, in the family's canonical spelling."""

    #: Validators the intent stakes to, leaves or moves between.
    validators: frozenset[str]
    #: Where funds the intent locks may be paid out (an Ethereum withdrawal address).
    payout_addresses: frozenset[str]
    #: The base unit of ``IntentSpec.amount`` on this chain ("wei", "uatom", "lamports").
    denomination: str


@dataclass(frozen=True)
class Decoded:
    """What unsigned transaction bytes do, read back strictly.

    ``target`` uses the intent's own target types, so it compares with ``==``; ``amount``
    is what the intent moves, in base units; ``value`` the native amount the transaction
    itself sends (a deposit, a request fee), besides network fees.
    """

    action: Action
    step: str
    amount: int
    target: Target
    value: int
    #: The most the transaction can pay in network fees, in base units.
    fee_ceiling: int
    replay_key: ReplayKey
    summary: str


@dataclass(frozen=True)
class Signed:
    signed_tx: bytes
    #: The transaction's id in the chain's own spelling (``0x``-hex hash, upper-case hex...).
    tx_id: str


class Family(Protocol):
    """One chain family. Implementations are stateless; ``chain`` carries a chain's parameters."""

    name: FamilyName
    key_algorithm: KeyAlgorithm
    mechanism: Mechanism
    #: Whether a replay key belongs to one intent (the signer mixes the intent in): a family whose
    #: chain spends no account nonce (Solana) derives it from the step's own accounts, which later
    #: intents reuse (an unstake after a restake deactivates the same stake account again).
    replay_per_intent: bool
    #: How long after a signature a replacement of it may still be signed (None: any time). A Solana
    #: rebuild follows its expired blockhash within minutes; later, the step's transaction may have
    #: landed and its effect since been undone (a stake account closed), and a "replacement" would
    #: do it again.
    replacement_window: timedelta | None

    def address(self, chain: ChainConfig, public_key: bytes) -> str:
        """The account address of a vault key (its raw public key) on ``chain``."""
        ...

    def normalise_address(self, chain: ChainConfig, text: str) -> str:
        """``text`` in the canonical spelling of an account address; raises ``AddressInvalid``."""
        ...

    def normalise_validator(self, chain: ChainConfig, text: str) -> str:
        """``text`` in the canonical spelling of a validator id; raises ``AddressInvalid``."""
        ...

    def steps(self, action: Action) -> tuple[Step, ...]:
        """The steps of ``action``, in order; () when the family cannot do it."""
        ...

    def validate_intent(self, chain: ChainConfig, spec: IntentSpec, vault_address: str) -> None:
        """Raises ``IntentInvalid`` unless ``spec`` can be carried out on ``chain`` from the vault."""
        ...

    def facts(self, chain: ChainConfig, spec: IntentSpec) -> PolicyFacts:
        """The facts policy rules see of ``spec`` (pure; does not validate it)."""
        ...

    def decode(self, chain: ChainConfig, unsigned_tx: bytes) -> Decoded:
        """What ``unsigned_tx`` does; raises ``TransactionInvalid`` for anything custos would not build."""
        ...

    def check(
        self, chain: ChainConfig, spec: IntentSpec, step: str, unsigned_tx: bytes, sender: str
    ) -> Decoded:
        """Returns when ``unsigned_tx``, sent by ``sender``, is exactly step ``step`` of ``spec``.

        Raises ``TransactionMismatch`` naming what differs (or what it sends beyond what was
        approved) and ``FeeAboveCap`` when its network fee may exceed the chain's cap.
        """
        ...

    def signing_payload(self, chain: ChainConfig, unsigned_tx: bytes) -> SigningPayload:
        """What the HSM signs for ``unsigned_tx``, and how."""
        ...

    def assemble(self, chain: ChainConfig, unsigned_tx: bytes, signature: bytes, public_key: bytes) -> Signed:
        """The signed transaction and its id, from the HSM's signature (``r || s`` low-S, or Ed25519)."""
        ...

    def replacement_allowed(self, chain: ChainConfig, signed_before: bytes, unsigned_tx: bytes) -> bool:
        """Whether ``unsigned_tx`` may replace the step already signed as ``signed_before``
        (same effects, same replay key: an Ethereum fee bump; never on Cosmos)."""
        ...
