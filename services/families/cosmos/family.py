"""The Cosmos SDK family: stake = MsgDelegate, unstake = MsgUndelegate, restake = MsgBeginRedelegate.

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
from services.families.config import ChainConfig
from services.families.cosmos import addresses, wire
from services.families.cosmos import tx as cosmos_tx
from services.families.cosmos.addresses import AccountAddress, compressed_key
from services.families.cosmos.tx import (
    MSG_BEGIN_REDELEGATE,
    MSG_DELEGATE,
    MSG_UNDELEGATE,
    Coin,
    StakingMessage,
    UnsignedTx,
)
from services.families.errors import (
    AddressInvalid,
    FamilyError,
    FeeAboveCap,
    IntentInvalid,
    TransactionInvalid,
    TransactionMismatch,
)
from services.runtime.intent import (
    Action,
    IntentSpec,
    RestakeTarget,
    StakeTarget,
    Target,
    UnstakeTarget,
)

_MAX_UINT64 = 2**64 - 1
_STEPS: dict[Action, tuple[Step, ...]] = {
    Action.STAKE: (Step("stake"),),
    Action.UNSTAKE: (Step("unstake"), Step("unbonding", StepKind.WAIT, "unbonding")),
    Action.RESTAKE: (Step("restake"),),
}
_MESSAGE_OF: dict[Action, str] = {
    Action.STAKE: MSG_DELEGATE,
    Action.UNSTAKE: MSG_UNDELEGATE,
    Action.RESTAKE: MSG_BEGIN_REDELEGATE,
}
_ACTION_OF: dict[str, Action] = {url: action for action, url in _MESSAGE_OF.items()}


def _signed_step(action: Action) -> str:
    return next(s.name for s in _STEPS[action] if s.kind is StepKind.SIGN)


def _validators(target: Target) -> tuple[str, str]:
    """(validator, destination) of a target, as a staking message names them."""
    if isinstance(target, StakeTarget | UnstakeTarget):
        return target.validator, ""
    if isinstance(target, RestakeTarget):
        return target.source_validator, target.target_validator
    return "", ""


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class CosmosFamily:
    """x/staking messages in SIGN_MODE_DIRECT transactions, signed by a generic secp256k1 key."""

    name = FamilyName("cosmos")
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
        if spec.amount <= 0:
            raise IntentInvalid(f"a Cosmos {spec.action.lower()} moves a positive amount of {chain.denom}")
        if getattr(spec.target, "params", None) is not None:
            raise IntentInvalid("a Cosmos target takes no params: its validators and amount say it all")
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
        validators = set()
        for text in _validators(spec.target):
            if not text:
                continue
            try:
                validators.add(self.normalise_validator(chain, text))
            except AddressInvalid:
                validators.add(text)  # facts do not validate: validate_intent refuses it
        return PolicyFacts(
            validators=frozenset(validators), payout_addresses=frozenset(), denomination=chain.denom
        )

    # -- transactions ----------------------------------------------------------------------------

    def parse(self, chain: ChainConfig, unsigned_tx: bytes) -> UnsignedTx:
        """The fields of ``unsigned_tx`` (a SignDoc), for ``chain``: its chain id, its denomination
        and its prefixes, every address in canonical spelling."""
        tx = cosmos_tx.parse(unsigned_tx)
        if tx.chain_id != str(chain.chain_id):
            raise TransactionInvalid(f"transaction is for chain id {tx.chain_id!r}, not {chain.chain_id!r}")
        if tx.message.amount.denom != chain.denom:
            raise TransactionInvalid(f"the amount is in {tx.message.amount.denom!r}, not {chain.denom!r}")
        if tx.fee is not None and tx.fee.denom != chain.denom:
            raise TransactionInvalid(f"the fee is in {tx.fee.denom!r}, not {chain.denom!r}")
        msg = tx.message
        spellings = [
            (self.normalise_address, msg.delegator, "delegator"),
            (self.normalise_validator, msg.validator, "validator"),
        ]
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
        """``value`` is what leaves the liquid balance: the amount of a delegation, else 0."""
        tx = self.parse(chain, unsigned_tx)
        msg = tx.message
        action = _ACTION_OF[msg.type_url]
        target: Target
        if action is Action.STAKE:
            target = StakeTarget(validator=msg.validator)
        elif action is Action.UNSTAKE:
            target = UnstakeTarget(validator=msg.validator)
        else:
            target = RestakeTarget(source_validator=msg.validator, target_validator=msg.destination)
        fee = tx.fee.amount if tx.fee is not None else 0
        coin = f"{msg.amount.amount} {msg.amount.denom}"
        what = {
            Action.STAKE: f"delegate {coin} to {msg.validator}",
            Action.UNSTAKE: f"undelegate {coin} from {msg.validator}",
            Action.RESTAKE: f"redelegate {coin} from {msg.validator} to {msg.destination}",
        }[action]
        memo = f", memo {tx.memo!r}" if tx.memo else ""
        summary = (
            f"{what} (delegator {msg.delegator}; fee {fee} {chain.denom}, gas {tx.gas_limit},"
            f" sequence {tx.sequence}{memo})"
        )
        return Decoded(
            action=action,
            step=_signed_step(action),
            amount=msg.amount.amount,
            target=target,
            value=msg.amount.amount if action is Action.STAKE else 0,
            fee_ceiling=fee,
            replay_key=ReplayKey(tx.sequence),
            summary=summary,
        )

    def check(
        self, chain: ChainConfig, spec: IntentSpec, step: str, unsigned_tx: bytes, sender: str
    ) -> Decoded:
        """Reads the bytes independently of whoever built them and compares chain id, message
        type, step, delegator, signer key, validators, amount and denominations with the intent
        sent from ``sender`` (the vault's address). The whole fee is bounded by ``max_fee_wei``."""
        try:
            self.validate_intent(chain, spec, sender)
            tx = cosmos_tx.parse(unsigned_tx)
        except FamilyError as e:
            raise TransactionMismatch(f"transaction is not the approved intent: {e.message}") from None
        msg = tx.message
        validator, destination = _validators(spec.target)
        differences = []
        if tx.chain_id != str(chain.chain_id):
            differences.append("chain id")
        if msg.type_url != _MESSAGE_OF[spec.action]:
            differences.append("message type")
        if step != _signed_step(spec.action):
            differences.append("step")
        if msg.delegator != sender:
            differences.append("delegator")
        if addresses.account_address(chain.bech32_prefix, tx.public_key) != sender:
            differences.append("signer key")
        if msg.validator != validator:
            differences.append("source validator" if destination else "validator")
        if msg.destination != destination:
            differences.append("destination validator")
        if msg.amount.denom != chain.denom:
            differences.append("amount denomination")
        if msg.amount.amount != spec.amount:
            differences.append("amount")
        if tx.fee is not None and tx.fee.denom != chain.denom:
            differences.append("fee denomination")
        if differences:
            raise TransactionMismatch(f"transaction differs from the intent in: {', '.join(differences)}")
        try:
            decoded = self.decode(chain, unsigned_tx)
        except FamilyError as e:
            raise TransactionMismatch(f"transaction is not the approved intent: {e.message}") from None
        if decoded.fee_ceiling > chain.max_fee_wei:
            raise FeeAboveCap(
                f"the transaction pays {decoded.fee_ceiling} {chain.denom} in fees, above the chain's cap "
                f"{chain.max_fee_wei}",
                details={"fee_ceiling": str(decoded.fee_ceiling), "cap": str(chain.max_fee_wei)},
            )
        return decoded

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
    validator, destination = _validators(spec.target)
    tx = UnsignedTx(
        message=StakingMessage(
            type_url=_MESSAGE_OF[spec.action],
            delegator=vault,
            validator=validator,
            destination=destination,
            amount=Coin(denom=chain.denom, amount=spec.amount),
        ),
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
