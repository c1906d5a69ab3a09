"""The Cosmos family's hand-written protobuf against an independent library: cosmpy's generated
protos (upb) and coincurve, byte for byte, for every message it builds (x/staking's three,
x/distribution's MsgWithdrawDelegatorReward, x/gov v1's MsgVote); and a published address
vector (cosmjs)."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

import pytest
from coincurve import PrivateKey, PublicKey

from services.families.base import Family
from services.families.cosmos.family import CosmosFamily, build_unsigned
from services.families.registry import family
from services.runtime.intent import (
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
    #: A vote's proposal and option (other actions ignore them).
    proposal_id: int = 1
    option: VoteOption = VoteOption.YES


STEPS = {
    Action.STAKE: "stake",
    Action.UNSTAKE: "unstake",
    Action.RESTAKE: "restake",
    Action.CLAIM_REWARDS: "claim_rewards",
    Action.VOTE: "vote",
}
VECTORS = [
    Vector(Action.STAKE, 5_000_000, 7, 0, 200_000, 5_000),
    Vector(Action.STAKE, 1, 0, 1, 1, 0, memo="custos intent 01HZX"),
    Vector(Action.UNSTAKE, 2**255, 2**64 - 1, 2**64 - 1, 2**64 - 1, 999_999),
    Vector(Action.UNSTAKE, 123_456_789, 300, 42, 180_000, 4_500, memo="~" * 256),
    Vector(Action.RESTAKE, 1_000_000, 12_345, 128, 350_000, 8_750),
    Vector(Action.RESTAKE, 10**30, 1, 16_384, 2**32, 1, memo=" "),
    Vector(Action.CLAIM_REWARDS, 0, 7, 3, 200_000, 5_000),
    Vector(Action.CLAIM_REWARDS, 0, 2**64 - 1, 2**64 - 1, 2**64 - 1, 0, memo="custos claim"),
    Vector(Action.VOTE, 0, 7, 4, 150_000, 3_750, proposal_id=1, option=VoteOption.YES),
    Vector(Action.VOTE, 0, 0, 0, 1, 1, proposal_id=127, option=VoteOption.ABSTAIN),
    Vector(Action.VOTE, 0, 300, 128, 180_000, 4_500, memo="~" * 256, proposal_id=128, option=VoteOption.NO),
    Vector(
        Action.VOTE,
        0,
        2**64 - 1,
        2**64 - 1,
        2**64 - 1,
        999_999,
        proposal_id=2**64 - 1,
        option=VoteOption.NO_WITH_VETO,
    ),
]


def spec_of(v: Vector) -> IntentSpec:
    target: dict[Action, Target] = {
        Action.STAKE: StakeTarget(V1),
        Action.UNSTAKE: UnstakeTarget(V1),
        Action.RESTAKE: RestakeTarget(V1, V2),
        Action.CLAIM_REWARDS: ClaimRewardsTarget(V1),
        Action.VOTE: VoteTarget(v.proposal_id, v.option),
    }
    return IntentSpec(v.action, CHAIN.name, "vault-1", v.amount, target[v.action])


def reference_message(v: Vector) -> Any:
    """The vector's message as cosmpy's protos write it."""
    if v.action is Action.CLAIM_REWARDS:
        return ref.withdraw_reward_message(VAULT, V1)
    if v.action is Action.VOTE:
        return ref.vote_message(v.proposal_id, VAULT, v.option.value)
    return ref.staking_message(v.action.value, VAULT, (V1, V2), CHAIN.denom, v.amount)


def reference_sign_doc(v: Vector) -> bytes:
    body = ref.tx_pb2.TxBody(messages=[reference_message(v)], memo=v.memo)
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
    assert decoded.step == STEPS[v.action]
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


AMOUNTLESS = [v for v in VECTORS if v.action in (Action.CLAIM_REWARDS, Action.VOTE)]


@pytest.mark.parametrize("v", AMOUNTLESS, ids=lambda v: f"{v.action}-{v.sequence}")
def test_cosmpy_reads_the_new_messages_as_built(v: Vector) -> None:
    """The other direction at the message level: cosmpy parses the family's body bytes and finds
    exactly the intent's fields (and an empty vote metadata)."""
    doc = ref.tx_pb2.SignDoc.FromString(built(v))
    (message,) = ref.tx_pb2.TxBody.FromString(doc.body_bytes).messages
    assert message.type_url == ref.MESSAGE_TYPES[v.action.value]
    if v.action is Action.CLAIM_REWARDS:
        claim = ref.distribution_pb2.MsgWithdrawDelegatorReward.FromString(message.value)
        assert (claim.delegator_address, claim.validator_address) == (VAULT, V1)
    else:
        vote = ref.gov_pb2.MsgVote.FromString(message.value)
        option = ref.gov_types_pb2.VoteOption.Name(vote.option)
        assert (vote.proposal_id, vote.voter, option, vote.metadata) == (
            v.proposal_id,
            VAULT,
            f"VOTE_OPTION_{v.option.value}",
            "",
        )


def test_decoded_summaries_say_what_a_claim_and_a_vote_do() -> None:
    claim, vote = AMOUNTLESS[0], AMOUNTLESS[2]
    assert FAMILY.decode(CHAIN, built(claim)).summary == (
        f"withdraw rewards from {V1} (delegator {VAULT}; fee 5000 uatom, gas 200000, sequence 3)"
    )
    assert FAMILY.decode(CHAIN, built(vote)).summary == (
        f"vote YES on proposal 1 (voter {VAULT}; fee 3750 uatom, gas 150000, sequence 4)"
    )


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
