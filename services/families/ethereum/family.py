"""The Ethereum family: stake = deposit, unstake = EIP-7002 request, restake = EIP-7251 request.

Transactions are EIP-1559 (type 2); the HSM signs ``keccak256(unsigned_tx)`` with
``CKM_ECDSA``; the signed transaction carries low-S ``(r, s)`` and the recovery id.
A signed step may be replaced only by a fee bump: the same transaction, nonce and key,
with both fee fields strictly higher.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

import rlp
from eth_utils import is_hex_address, keccak, to_checksum_address

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
)
from services.families.checks import fee_within_cap
from services.families.config import ChainConfig
from services.families.errors import (
    AddressInvalid,
    FamilyError,
    FeeAboveCap,
    IntentInvalid,
    TransactionInvalid,
    TransactionMismatch,
)
from services.families.ethereum import contracts as c
from services.families.ethereum.deposit import (
    GWEI,
    MAX_UINT64,
    DepositData,
    deposit_of,
    parse_pubkey,
    stake_target,
    verify_deposit_data,
)
from services.families.ethereum.transactions import TX_TYPE_DYNAMIC_FEE, UnsignedTransaction, parse_unsigned
from services.runtime.intent import (
    Action,
    IntentSpec,
    RestakeTarget,
    StakeTarget,
    Target,
    UnstakeTarget,
)

_WITHDRAWALS = bytes.fromhex(c.WITHDRAWAL_REQUEST_CONTRACT[2:])
_CONSOLIDATIONS = bytes.fromhex(c.CONSOLIDATION_REQUEST_CONTRACT[2:])
_STEPS: dict[Action, tuple[Step, ...]] = {
    Action.STAKE: (Step("stake"),),
    Action.UNSTAKE: (Step("unstake"),),
    Action.RESTAKE: (Step("restake"),),
}
#: Actions of other families, and why Ethereum has no transaction for them: said at submission,
#: so an initiator learns it before any approver is asked.
_UNSUPPORTED: dict[Action, str] = {
    Action.CLAIM_REWARDS: "the consensus layer pays a validator's rewards to its withdrawal address "
    "on its own: there is nothing to claim",
    Action.VOTE: "a vote is a Cosmos x/gov action (an on-chain Governor vote is not built yet)",
}


@dataclass(frozen=True)
class PlannedCall:
    """The contract call an intent turns into, before fees, gas and nonce."""

    to: bytes
    data: bytes
    value: int
    pays_request_fee: bool


def parse_address(text: str, field: str = "vault_address") -> bytes:
    if not isinstance(text, str) or not is_hex_address(text):
        raise AddressInvalid(f"{field} must be a 0x-hex 20-byte address")
    return bytes.fromhex(text[2:])


def _canonical_pubkey(text: str, field: str) -> bytes:
    raw = parse_pubkey(text, field)
    if text != "0x" + raw.hex():
        raise IntentInvalid(f"{field} must be written in lowercase 0x-hex")
    return raw


def address_of(public_key: bytes) -> str:
    """EIP-55 checksum address of a secp256k1 key: the last 20 bytes of keccak256 of the 64-byte point."""
    secp256k1.check_point(public_key)
    return str(to_checksum_address(keccak(public_key[1:])[-20:]))


def withdrawal_address(spec: IntentSpec) -> str | None:
    """The execution address 0x01/0x02 withdrawal credentials pay out to (lowercase 0x-hex)."""
    t = spec.target
    try:
        deposit = deposit_of(t) if isinstance(t, StakeTarget) else None
    except IntentInvalid:
        return None
    if deposit is None:
        return None
    wc = deposit.withdrawal_credentials
    if len(wc) != 32 or wc[0] not in (1, 2) or any(wc[1:12]):
        return None
    return "0x" + wc[12:].hex()


class EthereumFamily:
    """EIP-1559 transactions to the beacon deposit contract and the EIP-7002/7251 system contracts."""

    name = FamilyName("ethereum")
    replay_per_intent = False
    replacement_window: timedelta | None = None
    key_algorithm = KeyAlgorithm.SECP256K1
    mechanism = Mechanism.ECDSA_SECP256K1

    def __init__(self, *, plan_cache: int = 1024) -> None:
        # Planning an intent verifies its BLS deposit data (milliseconds); it is a pure function
        # of (chain, intent, sender), so each is planned once, not once per signature.
        self._plan = lru_cache(maxsize=plan_cache)(self._plan_uncached)

    # -- keys and spellings -----------------------------------------------------------------

    def address(self, chain: ChainConfig, public_key: bytes) -> str:
        return address_of(public_key)

    def normalise_address(self, chain: ChainConfig, text: str) -> str:
        return str(to_checksum_address(parse_address(text, "address")))

    def normalise_validator(self, chain: ChainConfig, text: str) -> str:
        """A validator is its BLS public key, in lowercase 0x-hex."""
        if not isinstance(text, str):
            raise AddressInvalid("a validator is a 0x-hex 48-byte BLS public key")
        try:
            return "0x" + parse_pubkey(text.lower(), "validator").hex()
        except IntentInvalid as e:
            raise AddressInvalid(e.message) from None

    def steps(self, action: Action) -> tuple[Step, ...]:
        return _STEPS.get(action, ())

    # -- intents -------------------------------------------------------------------------------

    def validate_intent(self, chain: ChainConfig, spec: IntentSpec, vault_address: str) -> None:
        self.plan(chain, spec, vault_address)

    def facts(self, chain: ChainConfig, spec: IntentSpec) -> PolicyFacts:
        t = spec.target
        if isinstance(t, StakeTarget | UnstakeTarget):
            validators = {t.validator}
        elif isinstance(t, RestakeTarget):
            validators = {t.source_validator, t.target_validator}
        else:
            validators = set()
        payout = withdrawal_address(spec)
        return PolicyFacts(
            validators=frozenset(v.lower() for v in validators if v),
            payout_addresses=frozenset({payout} if payout else ()),
            denomination=chain.denom,
        )

    def plan(self, chain: ChainConfig, spec: IntentSpec, vault_address: str) -> PlannedCall:
        """Checks the intent's chain-specific data and returns the call that carries it out."""
        return self._plan(chain, spec, vault_address)

    def _plan_uncached(self, chain: ChainConfig, spec: IntentSpec, vault_address: str) -> PlannedCall:
        if spec.action in _UNSUPPORTED:
            raise IntentInvalid(f"{spec.action} is not supported on Ethereum: {_UNSUPPORTED[spec.action]}")
        vault = parse_address(vault_address)
        target = spec.target
        if spec.chain != chain.name:
            raise IntentInvalid(f"the intent is for chain {spec.chain!r}, not {chain.name!r}")
        if spec.action is Action.STAKE and isinstance(target, StakeTarget):
            deposit = deposit_of(target)
            if deposit is None:
                raise IntentInvalid("an Ethereum stake needs deposit data")
            pubkey = _canonical_pubkey(target.validator, "stake.validator")
            if pubkey != deposit.pubkey:
                raise IntentInvalid("stake.validator differs from the deposit data's pubkey")
            verify_deposit_data(
                deposit,
                amount_wei=spec.amount,
                vault_address=vault,
                genesis_fork_version=chain.fork_version_bytes,
            )
            d = deposit
            data = c.deposit_calldata(
                c.DepositCall(d.pubkey, d.withdrawal_credentials, d.signature, d.deposit_data_root)
            )
            contract = bytes.fromhex(chain.deposit_contract[2:])
            return PlannedCall(to=contract, data=data, value=spec.amount, pays_request_fee=False)
        if isinstance(target, UnstakeTarget | RestakeTarget) and target.params is not None:
            raise IntentInvalid(f"an Ethereum {spec.action.lower()} takes no params")
        if spec.action is Action.UNSTAKE and isinstance(target, UnstakeTarget):
            pubkey = _canonical_pubkey(target.validator, "unstake.validator")
            if spec.amount % GWEI or spec.amount // GWEI > MAX_UINT64:
                raise IntentInvalid("unstake amount must be whole gwei within uint64 (0 = full exit)")
            data = c.withdrawal_request_calldata(pubkey, spec.amount // GWEI)
            return PlannedCall(to=_WITHDRAWALS, data=data, value=0, pays_request_fee=True)
        if spec.action is Action.RESTAKE and isinstance(target, RestakeTarget):
            source = _canonical_pubkey(target.source_validator, "restake.source_validator")
            dest = _canonical_pubkey(target.target_validator, "restake.target_validator")
            if spec.amount != 0:
                raise IntentInvalid(
                    "an Ethereum consolidation moves the whole source balance: amount must be 0"
                )
            data = c.consolidation_request_calldata(source, dest)
            return PlannedCall(to=_CONSOLIDATIONS, data=data, value=0, pays_request_fee=True)
        raise IntentInvalid(f"{spec.action} is not supported on Ethereum")

    # -- transactions ----------------------------------------------------------------------------

    def parse(self, chain: ChainConfig, unsigned_tx: bytes) -> UnsignedTransaction:
        """The EIP-1559 fields of ``unsigned_tx``, for ``chain`` and within its fee caps."""
        tx = parse_unsigned(unsigned_tx)
        if tx.chain_id != chain.evm_chain_id:
            raise TransactionInvalid(f"transaction is for chain id {tx.chain_id}, not {chain.evm_chain_id}")
        if tx.max_fee_per_gas > chain.max_fee_per_gas_cap:
            raise TransactionInvalid("max fee per gas above the chain's cap")
        if tx.max_priority_fee_per_gas > min(tx.max_fee_per_gas, chain.max_priority_fee_cap):
            raise TransactionInvalid("priority fee above the chain's cap or the max fee")
        return tx

    def decode(self, chain: ChainConfig, unsigned_tx: bytes) -> Decoded:
        return self.read(chain, unsigned_tx)[1]

    def read(self, chain: ChainConfig, unsigned_tx: bytes) -> tuple[UnsignedTransaction, Decoded]:
        """The EIP-1559 fields of ``unsigned_tx`` and what they do, from one parse."""
        tx = self.parse(chain, unsigned_tx)
        target: Target
        if tx.to == bytes.fromhex(chain.deposit_contract[2:]):
            d = c.decode_deposit_calldata(tx.data)
            action, amount = Action.STAKE, tx.value
            target = stake_target(
                DepositData(d.pubkey, d.withdrawal_credentials, d.signature, d.deposit_data_root)
            )
            summary = f"deposit {amount} wei to validator 0x{d.pubkey.hex()[:16]}..."
        elif tx.to == _WITHDRAWALS:
            if len(tx.data) != c.WITHDRAWAL_REQUEST_LENGTH:
                raise TransactionInvalid("an EIP-7002 request is 56 bytes: pubkey || amount")
            action, amount = Action.UNSTAKE, int.from_bytes(tx.data[48:], "big") * GWEI
            target = UnstakeTarget(validator="0x" + tx.data[:48].hex())
            kind = "full exit" if amount == 0 else f"withdrawal of {amount} wei"
            summary = f"{kind} of validator 0x{tx.data[:8].hex()}... (fee {tx.value} wei)"
        elif tx.to == _CONSOLIDATIONS:
            if len(tx.data) != c.CONSOLIDATION_REQUEST_LENGTH:
                raise TransactionInvalid("an EIP-7251 request is 96 bytes: source || target pubkey")
            action, amount = Action.RESTAKE, 0
            target = RestakeTarget(
                source_validator="0x" + tx.data[:48].hex(), target_validator="0x" + tx.data[48:].hex()
            )
            summary = (
                f"consolidate validator 0x{tx.data[:8].hex()}... into 0x{tx.data[48:56].hex()}..."
                f" (fee {tx.value} wei)"
            )
        else:
            raise TransactionInvalid(
                f"transaction calls 0x{tx.to.hex()}, which is no staking contract custos uses"
            )
        return tx, Decoded(
            action=action,
            step=_STEPS[action][0].name,
            amount=amount,
            target=target,
            value=tx.value,
            fee_ceiling=tx.max_fee_per_gas * tx.gas,
            replay_key=ReplayKey(tx.nonce),
            summary=summary,
        )

    def check(
        self, chain: ChainConfig, spec: IntentSpec, step: str, unsigned_tx: bytes, sender: str
    ) -> Decoded:
        """Decodes the bytes independently of whoever built them, re-plans the call the intent
        turns into (which re-verifies deposit data), and compares contract, action, amount,
        target and value: a deposit sends exactly its amount; an exit or a consolidation sends
        only the system contract's request fee, bounded by the chain's ``max_request_fee_wei``
        (nobody approved more). The network fee is bounded by the chain's ``max_fee_wei``."""
        try:
            tx, decoded = self.read(chain, unsigned_tx)
            planned = self.plan(chain, spec, sender)
        except FamilyError as e:
            if isinstance(e, TransactionMismatch | FeeAboveCap):
                raise
            raise TransactionMismatch(f"transaction is not the approved intent: {e.message}") from None
        differences = []
        if tx.to != planned.to:
            differences.append("recipient contract")
        if decoded.action != spec.action:
            differences.append("action")
        if decoded.step != step:
            differences.append("step")
        if decoded.amount != spec.amount:
            differences.append("amount")
        if decoded.target != spec.target:
            differences.append("validator or deposit data")
        if not planned.pays_request_fee and decoded.value != planned.value:
            differences.append("value")
        if differences:
            raise TransactionMismatch(f"transaction differs from the intent in: {', '.join(differences)}")
        if planned.pays_request_fee and decoded.value > chain.max_request_fee_wei:
            raise TransactionMismatch(
                f"the transaction sends {decoded.value} wei as a request fee, above the chain's cap of "
                f"{chain.max_request_fee_wei}",
                details={"value": str(decoded.value), "cap": str(chain.max_request_fee_wei)},
            )
        return fee_within_cap(chain, decoded)

    def signing_payload(self, chain: ChainConfig, unsigned_tx: bytes) -> SigningPayload:
        return SigningPayload(Mechanism.ECDSA_SECP256K1, keccak(unsigned_tx))

    def assemble(self, chain: ChainConfig, unsigned_tx: bytes, signature: bytes, public_key: bytes) -> Signed:
        tx = self.parse(chain, unsigned_tx)
        sig = secp256k1.low_s(signature)
        if sig != signature:
            raise TransactionInvalid("high-S signature: Ethereum takes low-S only (EIP-2)")
        v = secp256k1.recovery_id(keccak(unsigned_tx), sig, public_key)
        r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
        items = [
            tx.chain_id,
            tx.nonce,
            tx.max_priority_fee_per_gas,
            tx.max_fee_per_gas,
            tx.gas,
            tx.to,
            tx.value,
            tx.data,
            [],
        ]
        signed = bytes([TX_TYPE_DYNAMIC_FEE]) + rlp.encode([*items, v, r, s])
        return Signed(signed_tx=signed, tx_id="0x" + keccak(signed).hex())

    def replacement_allowed(self, chain: ChainConfig, signed_before: bytes, unsigned_tx: bytes) -> bool:
        """A fee bump: the same call and nonce, both fee fields strictly higher, and any gas limit
        (one transaction per nonce can land, so another gas limit only replaces a step no node
        took, which would otherwise hold the vault's nonce for good). ``check`` bounds its fee."""
        try:
            old = self._unsigned_of(signed_before)
            new = parse_unsigned(unsigned_tx)
        except (TransactionInvalid, rlp.exceptions.DecodingError):
            return False
        same = (old.chain_id, old.nonce, old.to, old.value, old.data) == (
            new.chain_id,
            new.nonce,
            new.to,
            new.value,
            new.data,
        )
        return (
            same
            and new.max_fee_per_gas > old.max_fee_per_gas
            and new.max_priority_fee_per_gas > old.max_priority_fee_per_gas
        )

    @staticmethod
    def _unsigned_of(signed_tx: bytes) -> UnsignedTransaction:
        if not signed_tx or signed_tx[0] != TX_TYPE_DYNAMIC_FEE:
            raise TransactionInvalid("not a signed EIP-1559 transaction")
        items = rlp.decode(signed_tx[1:])
        if not isinstance(items, list) or len(items) != 12:
            raise TransactionInvalid("a signed EIP-1559 transaction has 12 fields")
        return parse_unsigned(bytes([TX_TYPE_DYNAMIC_FEE]) + rlp.encode(items[:9]))
