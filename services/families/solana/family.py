"""The Solana family: native staking through one stake account per intent, derived from the vault.

The vault key is Ed25519; its address is the base58 of the 32-byte public key. It pays the
fees, is the base of the intent's stake account (``create_with_seed(vault, seed, Stake
program)``, ``seed`` in the target's params) and its staker and withdrawer. Transactions are
legacy messages with the vault as their one signer and no ComputeBudget instruction, so the
fee is 5000 lamports a signature:

- STAKE, step ``stake``: CreateAccountWithSeed (funded with the intent's amount),
  Initialize (staker = withdrawer = vault, no lockup) and DelegateStake to the vote account;
- UNSTAKE: ``deactivate`` (Deactivate), wait a ``cooldown epoch``, ``withdraw`` (Withdraw of
  the stake account's whole balance to the vault);
- RESTAKE: ``deactivate``, wait a ``cooldown epoch``, ``redelegate`` (DelegateStake to the
  target vote account).

Unsigned transaction bytes are the serialized message; the HSM signs them with CKM_EDDSA; the
signed transaction is the signature count, the signature and the message; its id is the
base58 of the signature. Solana has no account nonce: the replay key of a step is derived from
its stake account and its name, and the one allowed replacement of a signed step is the same
message with another recent blockhash (the first one expired unprocessed); a withdrawal's may also
take another amount (it pays the vault).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.families.base import (
    Decoded,
    FamilyName,
    KeyAlgorithm,
    Mechanism,
    PolicyFacts,
    ReplayKey,
    Signed,
    SigningPayload,
    Step,
    StepKind,
)
from services.families.checks import decoded_within_cap, validator_facts
from services.families.config import ChainConfig
from services.families.errors import (
    AddressInvalid,
    FamilyError,
    IntentInvalid,
    TransactionInvalid,
    TransactionMismatch,
)
from services.families.solana import instructions as ix
from services.families.solana import keys
from services.families.solana.instructions import Built, DataInvalid
from services.families.solana.keys import KNOWN, STAKE_PROGRAM, Pubkey, b58
from services.families.solana.message import (
    BLOCKHASH_LENGTH,
    SIGNATURE_LENGTH,
    Instruction,
    Message,
    compile_message,
    parse_message,
    parse_transaction,
    transaction,
)
from services.runtime.intent import (
    Action,
    IntentSpec,
    RestakeTarget,
    StakeTarget,
    Target,
    TargetParams,
    UnstakeTarget,
)

LAMPORTS_PER_SIGNATURE = 5000
_MAX_U64 = 2**64 - 1
_COOLDOWN = Step("cooldown", StepKind.WAIT, "cooldown epoch")
_STEPS: dict[Action, tuple[Step, ...]] = {
    Action.STAKE: (Step("stake"),),
    Action.UNSTAKE: (Step("deactivate"), _COOLDOWN, Step("withdraw")),
    Action.RESTAKE: (Step("deactivate"), _COOLDOWN, Step("redelegate")),
}
#: The instructions of each signed step, by name: how :meth:`SolanaFamily.decode` knows a step.
_SHAPES: dict[tuple[str, ...], str] = {
    ("CreateAccountWithSeed", "Initialize", "DelegateStake"): "stake",
    ("Deactivate",): "deactivate",
    ("Withdraw",): "withdraw",
    ("DelegateStake",): "redelegate",
}
#: What a step's bytes alone say the intent is: a deactivation starts an UNSTAKE and a RESTAKE
#: alike (the same transaction); it reads as an UNSTAKE.
_ACTION_OF_STEP = {
    "stake": Action.STAKE,
    "deactivate": Action.UNSTAKE,
    "withdraw": Action.UNSTAKE,
    "redelegate": Action.RESTAKE,
}
SEED = "seed"
#: The params name under which a decoded step reports its stake account (32 bytes).
STAKE_ACCOUNT = "stake_account"


def stake_account(vault: bytes, seed: bytes) -> Pubkey:
    """The intent's stake account: ``create_with_seed(vault, seed, Stake program)``."""
    return keys.create_with_seed(vault, seed, STAKE_PROGRAM)


def replay_key(stake: bytes, step: str) -> ReplayKey:
    """One signature slot per (stake account, step): Solana has no nonce to spend. 63 bits, so
    it fits the signer ledger's signed 64-bit column."""
    digest = hashlib.sha256(b"custos.solana.step" + stake + step.encode("ascii")).digest()
    return ReplayKey(int.from_bytes(digest[:8], "big") >> 1)


def _validators(target: Target) -> tuple[str, ...]:
    if isinstance(target, StakeTarget | UnstakeTarget):
        return (target.validator,)
    if isinstance(target, RestakeTarget):
        return (target.source_validator, target.target_validator)
    return ()


def _vote_of_step(spec: IntentSpec, step: str) -> str:
    """The vote account a step delegates to ("" for a step that names none)."""
    target = spec.target
    if step == "stake" and isinstance(target, StakeTarget):
        return target.validator
    if step == "redelegate" and isinstance(target, RestakeTarget):
        return target.target_validator
    return ""


def _seed_of(spec: IntentSpec) -> bytes:
    params = getattr(spec.target, "params", None)
    seed = params.get(SEED) if isinstance(params, TargetParams) else None
    if seed is None:
        raise IntentInvalid("a Solana target carries its stake account's seed in params['seed']")
    return seed


def _step_instructions(
    step: str, vault: Pubkey, seed: bytes, stake: Pubkey, vote: Pubkey, lamports: int
) -> tuple[Built, ...]:
    """The instructions of ``step``; ``lamports`` is the funding (stake) or the withdrawal."""
    if step == "stake":
        return (
            ix.create_account_with_seed(vault, stake, seed, lamports),
            ix.initialize(stake, vault),
            ix.delegate(stake, vote, vault),
        )
    if step == "deactivate":
        return (ix.deactivate(stake, vault),)
    if step == "withdraw":
        return (ix.withdraw(stake, vault, vault, lamports),)
    if step == "redelegate":
        return (ix.delegate(stake, vote, vault),)
    raise ValueError(f"no Solana step {step!r}")


def _message(built: Sequence[Built], vault: Pubkey, blockhash: bytes) -> Message:
    return compile_message((b.instruction() for b in built), vault, blockhash)


def _name(key: bytes) -> str:
    return KNOWN.get(Pubkey(key), b58(key))


def _fields(instruction: Instruction) -> tuple[str, tuple[tuple[str, object], ...]] | None:
    try:
        return ix.read_fields(instruction.program, instruction.data)
    except DataInvalid:
        return None


def _instruction_differences(found: Instruction, expected: Built) -> list[str]:
    """What differs between one instruction and the one custos builds, by role and field."""
    if found.program != expected.program:
        return [f"{expected.name} program ({_name(found.program)})"]
    differences = []
    read = _fields(found)
    if read is None or read[0] != expected.name:
        differences.append(f"{expected.name} data")
    else:
        differences += [
            name for (name, value), (_, want) in zip(read[1], expected.fields, strict=True) if value != want
        ]
    if len(found.accounts) != len(expected.roles):
        differences.append(
            f"{expected.name} accounts ({len(found.accounts)}, custos builds {len(expected.roles)})"
        )
        return differences
    for meta, role in zip(found.accounts, expected.roles, strict=True):
        if meta.key != role.key:
            differences.append(role.name)
    return differences


def _differences(found: Message, expected: Message, built: Sequence[Built]) -> list[str]:
    """What a message does differently from the one custos builds, in words a person can act on."""
    differences = []
    if found.fee_payer != expected.fee_payer:
        differences.append("fee payer")
    if found.header[0] != 1:
        differences.append(f"signers ({found.header[0]}; custos signs with the vault alone)")
    want = expected.resolved()
    ixs = found.resolved()
    for i, (have, make) in enumerate(zip(ixs, built, strict=False)):
        differences += _instruction_differences(have, make)
        if have.program == make.program and len(have.accounts) == len(make.roles):
            for meta, role, flags in zip(have.accounts, make.roles, want[i].accounts, strict=True):
                if meta.key == role.key and (meta.signer, meta.writable) != (flags.signer, flags.writable):
                    differences.append(f"{role.name} signer/writable flags")
    differences += [f"extra instruction ({_name(extra.program)})" for extra in ixs[len(built) :]]
    if len(ixs) < len(built):
        differences.append(f"missing {', '.join(b.name for b in built[len(ixs) :])}")
    if not differences and found.serialize() != expected.serialize():
        extra = set(found.keys) - set(expected.keys)
        differences.append("extra account" if extra else "account order or header")
    return list(dict.fromkeys(differences))


@dataclass(frozen=True)
class _Reading:
    """What the bytes of a step say, before they are compared with what custos builds."""

    step: str
    message: Message
    stake: Pubkey
    #: The seed (the ``stake`` step only: the others name the stake account alone).
    seed: bytes
    #: The vote account delegated to (``stake`` and ``redelegate``), else the zero key.
    vote: Pubkey
    #: The stake account's funding (``stake``) or the withdrawal (``withdraw``), else 0.
    lamports: int

    @property
    def vault(self) -> Pubkey:
        return self.message.fee_payer

    def built(self) -> tuple[Built, ...]:
        return _step_instructions(self.step, self.vault, self.seed, self.stake, self.vote, self.lamports)


_NO_KEY = Pubkey(bytes(32))
_T = TypeVar("_T")


def _field(read: tuple[str, tuple[tuple[str, object], ...]] | None, name: str, kind: type[_T]) -> _T:
    """Field ``name`` of instruction data :func:`ix.read_fields` read (of the kind it writes)."""
    value = dict(read[1]).get(name) if read is not None else None
    if not isinstance(value, kind):
        raise TransactionInvalid(f"the instruction carries no {name}")
    return value


def _read(data: bytes) -> _Reading:
    """Which step ``data`` is and its variable parts; raises ``TransactionInvalid`` unless it is,
    byte for byte, the message custos builds for that step from them."""
    message = parse_message(data)
    resolved = message.resolved()
    read = [_fields(i) for i in resolved]
    names = tuple(r[0] if r is not None else "?" for r in read)
    step = _SHAPES.get(names)
    if step is None:
        raise TransactionInvalid(
            f"not a transaction custos builds (instructions: {', '.join(names) or 'none'})"
        )
    first = resolved[0]
    if not first.accounts or (step == "stake" and len(first.accounts) < 2):
        raise TransactionInvalid(f"the {names[0]} instruction names too few accounts")
    stake, seed, vote, lamports = first.accounts[0].key, b"", _NO_KEY, 0
    if step == "stake":
        seed, lamports, stake = (
            _field(read[0], "seed", bytes),
            _field(read[0], "amount", int),
            first.accounts[1].key,
        )
        if not keys.seed_valid(seed):
            raise TransactionInvalid("the stake account's seed is not 1 to 32 printable ASCII characters")
        if stake != stake_account(message.fee_payer, seed):
            raise TransactionInvalid("the new account is not the stake account of the fee payer and the seed")
    if step == "withdraw":
        lamports = _field(read[0], "withdraw amount", int)
    delegation = resolved[-1]
    if step in ("stake", "redelegate") and len(delegation.accounts) > 1:
        vote = delegation.accounts[1].key
    reading = _Reading(step, message, stake, seed, vote, lamports)
    if lamports == 0 and step in ("stake", "withdraw"):
        raise TransactionInvalid(f"the {step} moves no lamports")
    expected = _message(reading.built(), reading.vault, message.blockhash)
    if expected.serialize() != data:
        differences = _differences(message, expected, reading.built())
        raise TransactionInvalid(
            f"not the {step} transaction custos builds: it differs in {', '.join(differences)}"
        )
    return reading


def _target(reading: _Reading) -> Target:
    """The target the bytes of a step carry out, as far as they say: the stake step names its
    vote account and seed; the others their stake account (and a redelegation its vote account)."""
    if reading.step == "stake":
        return StakeTarget(b58(reading.vote), TargetParams.of({SEED: reading.seed}))
    params = TargetParams.of({STAKE_ACCOUNT: reading.stake})
    if reading.step == "redelegate":
        return RestakeTarget("", b58(reading.vote), params)
    return UnstakeTarget("", params)


def _summary(chain: ChainConfig, reading: _Reading) -> str:
    """What a person reads before a signature: the effect, the accounts, fee and blockhash."""
    vault, stake, message = b58(reading.vault), b58(reading.stake), reading.message
    fee = chain.amount_text(LAMPORTS_PER_SIGNATURE * message.header[0])
    tail = f"fee {fee}, blockhash {b58(message.blockhash)}"
    amount = chain.amount_text(reading.lamports)
    if reading.step == "stake":
        return (
            f"create stake account {stake} (seed {reading.seed.decode('ascii')!r}) with {amount} from {vault}"
            f" and delegate it to vote account {b58(reading.vote)} (staker and withdrawer {vault}; {tail})"
        )
    if reading.step == "deactivate":
        return f"deactivate stake account {stake} (stake authority {vault}; {tail})"
    if reading.step == "withdraw":
        return f"withdraw {amount} from stake account {stake} to {vault} (withdraw authority {vault}; {tail})"
    vote = b58(reading.vote)
    return f"delegate stake account {stake} to vote account {vote} (stake authority {vault}; {tail})"


def _ed25519_valid(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Pure Ed25519 (RFC 8032, as OpenSSL checks it: a non-canonical S is refused)."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


class SolanaFamily:
    """Native staking with a stake account per intent, signed by an Ed25519 vault key."""

    name = FamilyName("solana")
    replay_per_intent = True
    replacement_window: timedelta | None = timedelta(minutes=30)
    key_algorithm = KeyAlgorithm.ED25519
    mechanism = Mechanism.EDDSA_ED25519

    # -- keys and spellings -----------------------------------------------------------------

    def address(self, chain: ChainConfig, public_key: bytes) -> str:
        """The base58 of the 32-byte Ed25519 public key."""
        if len(public_key) != keys.PUBKEY_LENGTH:
            raise AddressInvalid("an Ed25519 public key is 32 bytes")
        return b58(public_key)

    def normalise_address(self, chain: ChainConfig, text: str) -> str:
        return keys.normalise(text, "address")

    def normalise_validator(self, chain: ChainConfig, text: str) -> str:
        """A validator is its vote account's address."""
        return keys.normalise(text, "vote account")

    def steps(self, action: Action) -> tuple[Step, ...]:
        return _STEPS.get(action, ())

    # -- intents -------------------------------------------------------------------------------

    def validate_intent(self, chain: ChainConfig, spec: IntentSpec, vault_address: str) -> None:
        """Checks chain, vault, action, amount, the seed and the vote accounts (canonical base58)."""
        if spec.chain != chain.name:
            raise IntentInvalid(f"the intent is for chain {spec.chain!r}, not {chain.name!r}")
        if self.normalise_address(chain, vault_address) != vault_address:
            raise IntentInvalid("the vault address must be base58 of its 32-byte key")
        if spec.action not in _STEPS:
            raise IntentInvalid(f"{spec.action} is not supported on Solana")
        _validate_amount(chain, spec)
        params = getattr(spec.target, "params", None)
        if not isinstance(params, TargetParams) or params.names() != {SEED}:
            raise IntentInvalid("a Solana target's params are exactly 'seed', its stake account's seed")
        if not keys.seed_valid(_seed_of(spec)):
            raise IntentInvalid("the seed must be 1 to 32 printable ASCII characters")
        validators = _validators(spec.target)
        for text in validators:
            if self.normalise_validator(chain, text) != text:
                raise IntentInvalid(f"vote account {text!r} is not base58 of 32 bytes")
            if text == vault_address:
                raise IntentInvalid("the vote account cannot be the vault itself")
        if len(validators) == 2 and validators[0] == validators[1]:
            raise IntentInvalid("a restake needs two different vote accounts")

    def facts(self, chain: ChainConfig, spec: IntentSpec) -> PolicyFacts:
        """The vote accounts the intent names; withdrawals go back to the vault itself."""
        return validator_facts(self, chain, _validators(spec.target))

    # -- transactions ----------------------------------------------------------------------------

    def decode(self, chain: ChainConfig, unsigned_tx: bytes) -> Decoded:
        """Reads one of the four step transactions custos builds, byte for byte.

        ``amount`` is the stake account's funding (``stake``) or what the withdrawal returns
        (``withdraw``), else 0; ``value`` the lamports leaving the vault: the funding. A
        ``deactivate`` reads as an UNSTAKE (a RESTAKE's is the same transaction), and the
        targets of the later steps name their stake account, not the seed (see :func:`_target`).
        """
        reading = _read(unsigned_tx)
        action = _ACTION_OF_STEP[reading.step]
        return Decoded(
            action=action,
            step=reading.step,
            amount=reading.lamports,
            target=_target(reading),
            value=reading.lamports if reading.step == "stake" else 0,
            fee_ceiling=LAMPORTS_PER_SIGNATURE * reading.message.header[0],
            replay_key=replay_key(reading.stake, reading.step),
            summary=_summary(chain, reading),
        )

    def expected(
        self, spec: IntentSpec, step: str, vault: Pubkey, blockhash: bytes, withdraw_lamports: int
    ) -> tuple[Built, ...]:
        """The instructions of step ``step`` of ``spec`` from ``vault`` (a valid intent)."""
        seed = _seed_of(spec)
        vote = _vote_of_step(spec, step)
        lamports = spec.amount if step == "stake" else withdraw_lamports if step == "withdraw" else 0
        return _step_instructions(
            step,
            vault,
            seed,
            stake_account(vault, seed),
            keys.parse(vote, "vote") if vote else _NO_KEY,
            lamports,
        )

    def check(
        self, chain: ChainConfig, spec: IntentSpec, step: str, unsigned_tx: bytes, sender: str
    ) -> Decoded:
        """Reads the message independently of whoever built it and compares it, instruction by
        instruction, with step ``step`` of ``spec`` from ``sender`` (the vault): programs, data,
        accounts and their flags, the fee payer and the one signer; then the whole message byte
        for byte (no extra instruction, account or signer). Only the blockhash, and the amount
        of a withdrawal (the stake account's balance, which the intent cannot say), are taken
        from the transaction. The fee is bounded by ``max_fee_wei``."""
        try:
            self.validate_intent(chain, spec, sender)
            message = parse_message(unsigned_tx)
        except FamilyError as e:
            raise TransactionMismatch(f"transaction is not the approved intent: {e.message}") from None
        if step not in {s.name for s in _STEPS[spec.action] if s.kind is StepKind.SIGN}:
            raise TransactionMismatch(f"{step!r} is not a signed step of a Solana {spec.action.lower()}")
        vault = keys.parse(sender, "vault")
        built = self.expected(spec, step, vault, message.blockhash, _withdrawn(message))
        expected = _message(built, vault, message.blockhash)
        if expected.serialize() != unsigned_tx:
            differences = _differences(message, expected, built)
            raise TransactionMismatch(
                f"transaction differs from step {step} of the intent in: {', '.join(differences)}"
            )
        if step == "withdraw" and _withdrawn(message) == 0:
            raise TransactionMismatch(
                "transaction differs from step withdraw of the intent in: withdraw amount (0)"
            )
        return decoded_within_cap(self, chain, unsigned_tx)

    def signing_payload(self, chain: ChainConfig, unsigned_tx: bytes) -> SigningPayload:
        """The message itself: CKM_EDDSA signs it whole."""
        _read(unsigned_tx)
        return SigningPayload(Mechanism.EDDSA_ED25519, unsigned_tx)

    def assemble(self, chain: ChainConfig, unsigned_tx: bytes, signature: bytes, public_key: bytes) -> Signed:
        """The wire transaction with the vault's signature, which must verify for ``public_key``
        (the fee payer) over the message; its id is the base58 of the signature."""
        reading = _read(unsigned_tx)
        if public_key != reading.vault:
            raise TransactionInvalid("the key is not the transaction's fee payer")
        if len(signature) != SIGNATURE_LENGTH or not _ed25519_valid(public_key, signature, unsigned_tx):
            raise TransactionInvalid("the signature was not made by the vault's key over this transaction")
        return Signed(signed_tx=transaction([signature], unsigned_tx), tx_id=b58(signature))

    def replacement_allowed(self, chain: ChainConfig, signed_before: bytes, unsigned_tx: bytes) -> bool:
        """The same step with another recent blockhash: the step rebuilt after the first one's
        blockhash expired. A withdrawal may also take another amount (the stake account's balance
        changed, or a signature of the wrong amount holds the step: finding 18): it pays the vault
        whatever it takes. Anything else differing is another transaction."""
        try:
            _, _, old_bytes = parse_transaction(signed_before)
            before, after = _read(old_bytes), _read(unsigned_tx)
        except TransactionInvalid:
            return False
        if after.step != before.step or unsigned_tx == old_bytes:
            return False
        kept = replace(before, lamports=after.lamports) if before.step == "withdraw" else before
        return _message(kept.built(), kept.vault, after.message.blockhash).serialize() == unsigned_tx


def _validate_amount(chain: ChainConfig, spec: IntentSpec) -> None:
    """A stake funds its account with more than the rent-exempt reserve (the rest is staked);
    an unstake takes everything back and a restake moves the whole account: their amount is 0."""
    if spec.action is Action.STAKE:
        reserve = ix.STAKE_ACCOUNT_RENT_EXEMPT
        if not reserve < spec.amount <= _MAX_U64:
            raise IntentInvalid(
                f"a Solana stake funds its stake account with more than its rent-exempt reserve "
                f"{chain.amount_text(reserve)} (and at most 2**64-1 lamports)"
            )
    elif spec.amount != 0:
        raise IntentInvalid(
            f"a Solana {spec.action.lower()} moves the whole stake account: its amount must be 0"
        )


def _withdrawn(message: Message) -> int:
    """The lamports of a message's one Withdraw instruction (0 when it is not one)."""
    resolved = message.resolved()
    if len(resolved) != 1:
        return 0
    read = _fields(resolved[0])
    if read is None or read[0] != "Withdraw":
        return 0
    return _field(read, "withdraw amount", int)


def build_unsigned(
    chain: ChainConfig,
    spec: IntentSpec,
    step: str,
    *,
    public_key: bytes,
    recent_blockhash: bytes,
    withdraw_lamports: int = 0,
) -> bytes:
    """The unsigned transaction (message bytes) of step ``step`` of ``spec`` from the vault key
    ``public_key``. ``withdraw_lamports`` is the stake account's whole balance, read from the
    chain by the caller (``withdraw`` only). The result passes :meth:`SolanaFamily.check`."""
    family = SolanaFamily()
    vault = family.address(chain, public_key)
    family.validate_intent(chain, spec, vault)
    if step not in {s.name for s in _STEPS[spec.action] if s.kind is StepKind.SIGN}:
        raise IntentInvalid(f"{step!r} is not a signed step of a Solana {spec.action.lower()}")
    if len(recent_blockhash) != BLOCKHASH_LENGTH:
        raise TransactionInvalid("a recent blockhash is 32 bytes")
    if step == "withdraw" and not 0 < withdraw_lamports <= _MAX_U64:
        raise TransactionInvalid("a withdrawal takes the stake account's balance: a positive u64 of lamports")
    built = family.expected(spec, step, Pubkey(public_key), recent_blockhash, withdraw_lamports)
    unsigned = _message(built, Pubkey(public_key), recent_blockhash).serialize()
    family.check(chain, spec, step, unsigned, vault)
    return unsigned
