"""The Cosmos family's hand-written protobuf against an independent library: cosmpy's generated
protos (upb) and coincurve, byte for byte; and a published address vector (cosmjs)."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

import pytest
from coincurve import PrivateKey, PublicKey

from services.families.base import Family
from services.families.cosmos.family import CosmosFamily, build_unsigned
from services.families.registry import family
from services.runtime.intent import Action, IntentSpec, RestakeTarget, StakeTarget, Target, UnstakeTarget
from tests.families import cosmpy_reference as ref
from tests.families.cases import VAULT_KEY, cosmos_chain, cosmos_validator

CHAIN = cosmos_chain()
FAMILY = CosmosFamily()
PUBLIC_KEY = bytes(VAULT_KEY.public_key.format(compressed=False))
COMPRESSED = bytes(VAULT_KEY.public_key.format(compressed=True))
VAULT = FAMILY.address(CHAIN, PUBLIC_KEY)
V1, V2 = cosmos_validator(1), cosmos_validator(2)

#: cosmjs' published vector (``@cosmjs/amino`` addresses.spec.ts, pubkeyToAddress for Secp256k1).
COSMJS_KEY = base64.b64decode("AtQaCqFnshaZQp6rIkvAPyzThvCvXSDO+9AzbxVErqJP")
COSMJS_ADDRESS = "cosmos1h806c7khnvmjlywdrkdgk2vrayy2mmvf9rxk2r"


@dataclass(frozen=True)
class Vector:
    action: Action
    amount: int
    account_number: int
    sequence: int
    gas_limit: int
    fee_amount: int
    memo: str = ""


VECTORS = [
    Vector(Action.STAKE, 5_000_000, 7, 0, 200_000, 5_000),
    Vector(Action.STAKE, 1, 0, 1, 1, 0, memo="custos intent 01HZX"),
    Vector(Action.UNSTAKE, 2**255, 2**64 - 1, 2**64 - 1, 2**64 - 1, 999_999),
    Vector(Action.UNSTAKE, 123_456_789, 300, 42, 180_000, 4_500, memo="~" * 256),
    Vector(Action.RESTAKE, 1_000_000, 12_345, 128, 350_000, 8_750),
    Vector(Action.RESTAKE, 10**30, 1, 16_384, 2**32, 1, memo=" "),
]


def spec_of(v: Vector) -> IntentSpec:
    target: dict[Action, Target] = {
        Action.STAKE: StakeTarget(V1),
        Action.UNSTAKE: UnstakeTarget(V1),
        Action.RESTAKE: RestakeTarget(V1, V2),
    }
    return IntentSpec(v.action, CHAIN.name, "vault-1", v.amount, target[v.action])


def reference_sign_doc(v: Vector) -> bytes:
    body = ref.tx_pb2.TxBody(
        messages=[ref.staking_message(v.action.value, VAULT, (V1, V2), CHAIN.denom, v.amount)], memo=v.memo
    )
    auth = ref.auth_info(
        COMPRESSED, sequence=v.sequence, denom=CHAIN.denom, fee_amount=v.fee_amount, gas_limit=v.gas_limit
    )
    return ref.sign_doc(body, auth, chain_id=str(CHAIN.chain_id), account_number=v.account_number)


def built(v: Vector) -> bytes:
    return build_unsigned(
        CHAIN,
        spec_of(v),
        public_key=PUBLIC_KEY,
        account_number=v.account_number,
        sequence=v.sequence,
        gas_limit=v.gas_limit,
        fee_amount=v.fee_amount,
        memo=v.memo,
    )


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: f"{v.action}-{v.sequence}")
def test_sign_doc_is_byte_equal_to_cosmpy(v: Vector) -> None:
    assert built(v) == reference_sign_doc(v)


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: f"{v.action}-{v.sequence}")
def test_tx_raw_and_its_hash_are_byte_equal_to_cosmpy(v: Vector) -> None:
    unsigned = built(v)
    payload = FAMILY.signing_payload(CHAIN, unsigned)
    assert payload.data == hashlib.sha256(reference_sign_doc(v)).digest()
    signature = bytes(VAULT_KEY.sign_recoverable(payload.data, hasher=None))[:64]
    signed = FAMILY.assemble(CHAIN, unsigned, signature, PUBLIC_KEY)
    doc = ref.tx_pb2.SignDoc.FromString(reference_sign_doc(v))
    expected = ref.tx_pb2.TxRaw(
        body_bytes=doc.body_bytes, auth_info_bytes=doc.auth_info_bytes, signatures=[signature]
    ).SerializeToString()
    assert signed.signed_tx == expected
    assert signed.tx_id == hashlib.sha256(expected).hexdigest().upper()
    assert len(signed.tx_id) == 64 and signed.tx_id == signed.tx_id.upper()
    assert (
        ref.signer_of(
            expected, chain_id=str(CHAIN.chain_id), account_number=v.account_number, prefix="cosmos"
        )
        == VAULT
    )


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: f"{v.action}-{v.sequence}")
def test_decode_reads_cosmpy_made_bytes(v: Vector) -> None:
    decoded = FAMILY.decode(CHAIN, reference_sign_doc(v))
    spec = spec_of(v)
    assert decoded.action is v.action
    assert (
        decoded.step
        == {Action.STAKE: "stake", Action.UNSTAKE: "unstake", Action.RESTAKE: "restake"}[v.action]
    )
    assert decoded.amount == v.amount
    assert decoded.target == spec.target
    assert decoded.value == (v.amount if v.action is Action.STAKE else 0)
    assert decoded.fee_ceiling == v.fee_amount
    assert decoded.replay_key == v.sequence
    parsed = FAMILY.parse(CHAIN, reference_sign_doc(v))
    assert (parsed.account_number, parsed.gas_limit, parsed.memo) == (v.account_number, v.gas_limit, v.memo)
    assert parsed.public_key == COMPRESSED
    assert parsed.message.delegator == VAULT
    assert FAMILY.check(CHAIN, spec, decoded.step, reference_sign_doc(v), VAULT) == decoded


def test_address_matches_the_cosmjs_vector() -> None:
    uncompressed = bytes(PublicKey(COSMJS_KEY).format(compressed=False))
    assert FAMILY.address(CHAIN, uncompressed) == COSMJS_ADDRESS
    assert FAMILY.address(CHAIN, COSMJS_KEY) == COSMJS_ADDRESS
    assert ref.address("cosmos", COSMJS_KEY) == COSMJS_ADDRESS


@pytest.mark.parametrize("prefix", ["cosmos", "osmo", "inj", "celestia"])
def test_address_matches_an_independent_derivation(prefix: str) -> None:
    chain = CHAIN.model_copy(update={"bech32_prefix": prefix})
    for seed in range(1, 20):
        key = PrivateKey(hashlib.sha256(bytes([seed])).digest()).public_key
        point = bytes(key.format(compressed=False))
        assert FAMILY.address(chain, point) == ref.address(prefix, bytes(key.format(compressed=True)))


def test_the_registry_gives_the_cosmos_family() -> None:
    cosmos: Family = family("cosmos")
    assert isinstance(cosmos, CosmosFamily)
    assert cosmos.address(CHAIN, PUBLIC_KEY) == VAULT
