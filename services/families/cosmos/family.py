"""The Cosmos SDK family: stake = MsgDelegate, unstake = MsgUndelegate, restake = MsgBeginRedelegate,
claim rewards = MsgWithdrawDelegatorReward, vote = gov v1 MsgVote.

The generic Cosmos SDK path, which every Cosmos chain accepts: the vault key is a
``/cosmos.crypto.secp256k1.PubKey`` and its account is bech32(``bech32_prefix``,
ripemd160(sha256(compressed key))). Unsigned transaction bytes are the serialized
``SignDoc`` of SIGN_MODE_DIRECT (:mod:`services.families.cosmos.tx`); the HSM signs
``sha256(unsigned_tx)`` with ``CKM_ECDSA``; the signed transaction is a ``TxRaw`` carrying
the low-S ``r || s``, and its id is the upper-case hex sha256 of those bytes (the tx hash
nodes report). The replay key is the account sequence, which one transaction spends for
good: a signed step is never replaced, not even by a fee bump.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from services.families import secp256k1
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
from services.families.cosmos import addresses, wire
from services.families.cosmos import tx as cosmos_tx
from services.families.cosmos.addresses import AccountAddress, compressed_key
from services.families.cosmos.tx import (
    MSG_BEGIN_REDELEGATE,
    MSG_DELEGATE,
    MSG_UNDELEGATE,
    MSG_VOTE,
    MSG_WITHDRAW_DELEGATOR_REWARD,
    Coin,
    Message,
    UnsignedTx,
)
from services.families.errors import (
    AddressInvalid,
    FamilyError,
    IntentInvalid,
    TransactionInvalid,
    TransactionMismatch,
)
from services.runtime.intent import (
    MAX_PROPOSAL_ID,
    Action,
    ClaimRewardsTarget,
    IntentSpec,
    RestakeTarget,
    StakeTarget,
    Target,
    UnstakeTarget,
    VoteOption,
    VoteTarget,
)

_MAX_UINT64 = 2**64 - 1
_STEPS: dict[Action, tuple[Step, ...]] = {
    Action.STAKE: (Step("stake"),),
    Action.UNSTAKE: (Step("unstake"), Step("unbonding", StepKind.WAIT, "unbonding")),
    Action.RESTAKE: (Step("restake"),),
    Action.CLAIM_REWARDS: (Step("claim_rewards"),),
    Action.VOTE: (Step("vote"),),
}
_MESSAGE_OF: dict[Action, str] = {
    Action.STAKE: MSG_DELEGATE,
    Action.UNSTAKE: MSG_UNDELEGATE,
    Action.RESTAKE: MSG_BEGIN_REDELEGATE,
    Action.CLAIM_REWARDS: MSG_WITHDRAW_DELEGATOR_REWARD,
    Action.VOTE: MSG_VOTE,
}
_ACTION_OF: dict[str, Action] = {url: action for action, url in _MESSAGE_OF.items()}
#: Actions that move no amount (the intent's amount is 0): their messages carry none.
_AMOUNTLESS = frozenset({Action.CLAIM_REWARDS, Action.VOTE})


def _signed_step(action: Action) -> str:
    return next(s.name for s in _STEPS[action] if s.kind is StepKind.SIGN)


def _validators(target: Target) -> tuple[str, str]:
    """(validator, destination) of a target, as its message names them ("" where it names none)."""
    if isinstance(target, StakeTarget | UnstakeTarget | ClaimRewardsTarget):
        return target.validator, ""
    if isinstance(target, RestakeTarget):
        return target.source_validator, target.target_validator
    return "", ""


def _message(chain: ChainConfig, spec: IntentSpec, sender: str) -> Message:
    """The one message that carries out ``spec`` from ``sender``: what custos builds, and what
    :meth:`CosmosFamily.check` compares a transaction's message with."""
    validator, destination = _validators(spec.target)
    target = spec.target
    return Message(
        type_url=_MESSAGE_OF[spec.action],
        delegator=sender,
        validator=validator,
        destination=destination,
        amount=None if spec.action in _AMOUNTLESS else Coin(denom=chain.denom, amount=spec.amount),
        proposal_id=target.proposal_id if isinstance(target, VoteTarget) else 0,
        option=target.option if isinstance(target, VoteTarget) else None,
    )


def _summary(chain: ChainConfig, tx: UnsignedTx) -> str:
    """What a person reads before approving a signature: the effect, then who, fee, gas, sequence."""
    msg = tx.message
    coin = chain.amount_text(msg.amount.amount) if msg.amount is not None else ""
    what = {
        MSG_DELEGATE: f"delegate {coin} to {msg.validator}",
        MSG_UNDELEGATE: f"undelegate {coin} from {msg.validator}",
        MSG_BEGIN_REDELEGATE: f"redelegate {coin} from {msg.validator} to {msg.destination}",
        MSG_WITHDRAW_DELEGATOR_REWARD: f"withdraw rewards from {msg.validator}",
        MSG_VOTE: f"vote {msg.option} on proposal {msg.proposal_id}",
    }[msg.type_url]
    who = "voter" if msg.type_url == MSG_VOTE else "delegator"
    fee = tx.fee.amount if tx.fee is not None else 0
    memo = f", memo {tx.memo!r}" if tx.memo else ""
    return (
        f"{what} ({who} {msg.delegator}; fee {chain.amount_text(fee)}, gas {tx.gas_limit},"
        f" sequence {tx.sequence}{memo})"
    )


def _target(msg: Message) -> Target:
    """The intent target a message carries out (``msg`` as :func:`cosmos_tx.parse` read it)."""
    if msg.type_url == MSG_DELEGATE:
        return StakeTarget(validator=msg.validator)
    if msg.type_url == MSG_UNDELEGATE:
        return UnstakeTarget(validator=msg.validator)
    if msg.type_url == MSG_BEGIN_REDELEGATE:
        return RestakeTarget(source_validator=msg.validator, target_validator=msg.destination)
    if msg.type_url == MSG_WITHDRAW_DELEGATOR_REWARD:
        return ClaimRewardsTarget(validator=msg.validator)
    assert msg.option is not None  # the parser reads every vote with one of the four options
    return VoteTarget(proposal_id=msg.proposal_id, option=msg.option)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class CosmosFamily:
    """x/staking, reward-withdrawal and vote messages in SIGN_MODE_DIRECT transactions, signed by a
    generic secp256k1 key."""

    name = FamilyName("cosmos")
    replay_per_intent = False
    replacement_window: timedelta | None = None
    key_algorithm = KeyAlgorithm.SECP256K1
    mechanism = Mechanism.ECDSA_SECP256K1

    # -- keys and spellings -----------------------------------------------------------------

    def address(self, chain: ChainConfig, public_key: bytes) -> AccountAddress:
        """bech32(prefix, ripemd160(sha256(compressed key))) of a 65-byte (or compressed) key."""
        return addresses.account_address(chain.bech32_prefix, compressed_key(public_key))

    def normalise_address(self, chain: ChainConfig, text: str) -> str:
        return addresses.normalise_account(chain.bech32_prefix, text)

    def normalise_validator(self, chain: ChainConfig, text: str) -> str:
        """A validator is its operator address, ``<prefix>valoper1...``."""
        return addresses.normalise_validator(chain.bech32_prefix, text)

    def steps(self, action: Action) -> tuple[Step, ...]:
        return _STEPS.get(action, ())

    # -- intents -------------------------------------------------------------------------------

    def validate_intent(self, chain: ChainConfig, spec: IntentSpec, vault_address: str) -> None:
        """Checks chain, vault, action, amount and validators; all must be in canonical spelling,
        so that the intent's target compares equal to what a transaction decodes to."""
        if spec.chain != chain.name:
            raise IntentInvalid(f"the intent is for chain {spec.chain!r}, not {chain.name!r}")
        if self.normalise_address(chain, vault_address) != vault_address:
            raise IntentInvalid("the vault address must be in lower-case bech32")
        if spec.action not in _MESSAGE_OF:
            raise IntentInvalid(f"{spec.action} is not supported on Cosmos")
        if spec.action in _AMOUNTLESS:
            if spec.amount != 0:
                raise IntentInvalid(f"a Cosmos {spec.action.lower()} moves no amount: its amount must be 0")
        elif spec.amount <= 0:
            raise IntentInvalid(f"a Cosmos {spec.action.lower()} moves a positive amount of {chain.denom}")
        if getattr(spec.target, "params", None) is not None:
            raise IntentInvalid("a Cosmos target takes no params: its validators and amount say it all")
        if isinstance(spec.target, VoteTarget):
            _validate_vote(spec.target)
            return
        validator, destination = _validators(spec.target)
        named = [("validator", validator)]
        if isinstance(spec.target, RestakeTarget):
            named = [("source_validator", validator), ("target_validator", destination)]
        for field, text in named:
            if self.normalise_validator(chain, text) != text:
                raise IntentInvalid(f"{field} must be in lower-case bech32")
        if isinstance(spec.target, RestakeTarget) and validator == destination:
            raise IntentInvalid("a redelegation needs two different validators")

    def facts(self, chain: ChainConfig, spec: IntentSpec) -> PolicyFacts:
        """The validators a stake, unstake, restake or reward claim names; a vote names none."""
        return validator_facts(self, chain, _validators(spec.target))

    # -- transactions ----------------------------------------------------------------------------

    def parse(self, chain: ChainConfig, unsigned_tx: bytes) -> UnsignedTx:
        """The fields of ``unsigned_tx`` (a SignDoc), for ``chain``: its chain id, its denomination
        and its prefixes, every address in canonical spelling."""
        tx = cosmos_tx.parse(unsigned_tx)
        if tx.chain_id != str(chain.chain_id):
            raise TransactionInvalid(f"transaction is for chain id {tx.chain_id!r}, not {chain.chain_id!r}")
        msg = tx.message
        if msg.amount is not None and msg.amount.denom != chain.denom:
            raise TransactionInvalid(f"the amount is in {msg.amount.denom!r}, not {chain.denom!r}")
        if tx.fee is not None and tx.fee.denom != chain.denom:
            raise TransactionInvalid(f"the fee is in {tx.fee.denom!r}, not {chain.denom!r}")
        spellings = [
            (self.normalise_address, msg.delegator, "voter" if msg.type_url == MSG_VOTE else "delegator")
        ]
        if msg.type_url != MSG_VOTE:
            spellings.append((self.normalise_validator, msg.validator, "validator"))
        if msg.type_url == MSG_BEGIN_REDELEGATE:
            spellings.append((self.normalise_validator, msg.destination, "destination validator"))
        for normalise, text, what in spellings:
            try:
                canonical = normalise(chain, text)
            except AddressInvalid as e:
                raise TransactionInvalid(f"the {what} address is invalid: {e.message}") from None
            if canonical != text:
                raise TransactionInvalid(f"the {what} address is not in lower-case bech32")
        return tx

    def decode(self, chain: ChainConfig, unsigned_tx: bytes) -> Decoded:
        """``value`` is what leaves the liquid balance: the amount of a delegation, else 0 (a
        reward claim and a vote move no amount)."""
        tx = self.parse(chain, unsigned_tx)
        msg = tx.message
        action = _ACTION_OF[msg.type_url]
        amount = msg.amount.amount if msg.amount is not None else 0
        return Decoded(
            action=action,
            step=_signed_step(action),
            amount=amount,
            target=_target(msg),
            value=amount if action is Action.STAKE else 0,
            fee_ceiling=tx.fee.amount if tx.fee is not None else 0,
            replay_key=ReplayKey(tx.sequence),
            summary=_summary(chain, tx),
        )

    def check(
        self, chain: ChainConfig, spec: IntentSpec, step: str, unsigned_tx: bytes, sender: str
    ) -> Decoded:
        """Reads the bytes independently of whoever built them and compares chain id, message
        type, step, delegator (or voter), signer key, validators, amount and denominations,
        proposal and vote option with the intent sent from ``sender`` (the vault's address).
        The whole fee is bounded by ``max_fee_wei``."""
        try:
            self.validate_intent(chain, spec, sender)
            tx = cosmos_tx.parse(unsigned_tx)
        except FamilyError as e:
            raise TransactionMismatch(f"transaction is not the approved intent: {e.message}") from None
        msg, expected = tx.message, _message(chain, spec, sender)
        differences = []
        if tx.chain_id != str(chain.chain_id):
            differences.append("chain id")
        if msg.type_url != expected.type_url:
            differences.append("message type")
        if step != _signed_step(spec.action):
            differences.append("step")
        if msg.delegator != sender:
            differences.append("voter" if spec.action is Action.VOTE else "delegator")
        if addresses.account_address(chain.bech32_prefix, tx.public_key) != sender:
            differences.append("signer key")
        if msg.validator != expected.validator:
            differences.append("source validator" if expected.destination else "validator")
        if msg.destination != expected.destination:
            differences.append("destination validator")
        differences += _amount_differences(msg.amount, expected.amount)
        if msg.proposal_id != expected.proposal_id:
            differences.append("proposal")
        if msg.option != expected.option:
            differences.append("vote option")
        if tx.fee is not None and tx.fee.denom != chain.denom:
            differences.append("fee denomination")
        if not differences and msg != expected:
            differences.append("message")  # a field the comparisons above do not name
        if differences:
            raise TransactionMismatch(f"transaction differs from the intent in: {', '.join(differences)}")
        return decoded_within_cap(self, chain, unsigned_tx)

    def signing_payload(self, chain: ChainConfig, unsigned_tx: bytes) -> SigningPayload:
        self.parse(chain, unsigned_tx)
        return SigningPayload(Mechanism.ECDSA_SECP256K1, _sha256(unsigned_tx))

    def assemble(self, chain: ChainConfig, unsigned_tx: bytes, signature: bytes, public_key: bytes) -> Signed:
        """``TxRaw`` with the signature, which must be low-S and verify for the transaction's
        signer key (``public_key``) over sha256 of the SignDoc."""
        tx = self.parse(chain, unsigned_tx)
        if compressed_key(public_key) != tx.public_key:
            raise TransactionInvalid("the key is not the transaction's signer")
        if secp256k1.low_s(signature) != signature:
            raise TransactionInvalid("high-S signature: Cosmos SDK nodes take low-S only")
        if not secp256k1.verify(_sha256(unsigned_tx), signature, tx.public_key):
            raise TransactionInvalid("the signature was not made by the vault's key over this transaction")
        signed = tx.tx_raw(signature)
        return Signed(signed_tx=signed, tx_id=_sha256(signed).hex().upper())

    def replacement_allowed(self, chain: ChainConfig, signed_before: bytes, unsigned_tx: bytes) -> bool:
        """The same message, memo, signer key and sequence, with another fee, gas limit or account
        number: one transaction per sequence can ever land, so this only replaces a signed step
        that no node would take (a fee below the validators' minimum, too little gas, a wrong
        account number), which would otherwise hold the vault's sequence on this chain for good.
        Its fee is bounded by ``check`` like any other."""
        try:
            new = self.parse(chain, unsigned_tx)
            old = _unsigned_of_tx_raw(signed_before, new.chain_id, new.account_number)
        except TransactionInvalid:
            return False
        same = (old.message, old.memo, old.public_key, old.sequence) == (
            new.message,
            new.memo,
            new.public_key,
            new.sequence,
        )
        # (A TxRaw does not carry the account number: it is read as the new one's. Whatever
        # differs, since the payloads do, is the fee, the gas limit or the account number.)
        return same


def _validate_vote(target: VoteTarget) -> None:
    """A vote names a proposal (a uint64 above 0) and one of the four options; no validator."""
    if isinstance(target.proposal_id, bool) or not 1 <= target.proposal_id <= MAX_PROPOSAL_ID:
        raise IntentInvalid("a vote's proposal id is a whole number from 1 to 2**64-1")
    if not isinstance(target.option, VoteOption):
        raise IntentInvalid("a vote's option is YES, ABSTAIN, NO or NO_WITH_VETO")


def _amount_differences(found: Coin | None, expected: Coin | None) -> list[str]:
    """How a message's amount differs from the intent's: none where none is expected."""
    if found is None or expected is None:
        return [] if found == expected else ["amount"]
    differences = []
    if found.denom != expected.denom:
        differences.append("amount denomination")
    if found.amount != expected.amount:
        differences.append("amount")
    return differences


def _unsigned_of_tx_raw(tx_raw: bytes, chain_id: str, account_number: int) -> UnsignedTx:
    """The transaction a ``TxRaw`` custos assembled carries, read as the SignDoc it was made from
    with ``chain_id`` and ``account_number`` (which a TxRaw does not carry)."""
    # custos's TxRaw is body (1), auth info (2) and one 64-byte signature (3), in this order:
    # without the signature it is the SignDoc's first two fields, byte for byte.
    if len(tx_raw) < 66 or tx_raw[-66:-64] != b"\x1a\x40":
        raise TransactionInvalid("not a TxRaw with one 64-byte signature")
    tail = wire.Writer().string(3, chain_id).uint(4, account_number).finish()
    return cosmos_tx.parse(tx_raw[:-66] + tail)


def build_unsigned(
    chain: ChainConfig,
    spec: IntentSpec,
    *,
    public_key: bytes,
    account_number: int,
    sequence: int,
    gas_limit: int,
    fee_amount: int,
    memo: str = "",
) -> bytes:
    """The unsigned transaction (SignDoc bytes) that carries out ``spec`` from the vault key
    ``public_key``. ``fee_amount`` is in ``chain.denom`` (0 for none); the result passes
    :meth:`CosmosFamily.check`, so a fee above the chain's cap raises ``FeeAboveCap``."""
    family = CosmosFamily()
    key = compressed_key(public_key)
    vault = addresses.account_address(chain.bech32_prefix, key)
    family.validate_intent(chain, spec, vault)
    for name, value in (("account_number", account_number), ("sequence", sequence), ("gas_limit", gas_limit)):
        if not 0 <= value <= _MAX_UINT64:
            raise TransactionInvalid(f"{name} must be a uint64")
    if gas_limit == 0 or fee_amount < 0:
        raise TransactionInvalid("the gas limit must be positive and the fee not negative")
    if not cosmos_tx.memo_allowed(memo):
        raise TransactionInvalid(f"a memo is at most {cosmos_tx.MAX_MEMO_BYTES} printable ASCII characters")
    tx = UnsignedTx(
        message=_message(chain, spec, vault),
        memo=memo,
        public_key=key,
        sequence=sequence,
        fee=Coin(denom=chain.denom, amount=fee_amount) if fee_amount else None,
        gas_limit=gas_limit,
        chain_id=str(chain.chain_id),
        account_number=account_number,
    )
    unsigned = tx.sign_doc()
    family.check(chain, spec, _signed_step(spec.action), unsigned, vault)
    return unsigned
