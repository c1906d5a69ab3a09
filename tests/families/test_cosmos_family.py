"""What the Cosmos family refuses beyond the conformance suite: every field custos does not
build, non-canonical protobuf, another signer or delegator, and intents it cannot carry out.

Variants are made with cosmpy's protos (an independent writer) and, for encodings no
protobuf library writes, by hand.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import bech32
import pytest
from coincurve import PrivateKey

from services.families.base import Step, StepKind
from services.families.cosmos.family import CosmosFamily, build_unsigned
from services.families.errors import (
    AddressInvalid,
    FeeAboveCap,
    IntentInvalid,
    TransactionInvalid,
    TransactionMismatch,
)
from services.runtime.intent import (
    Action,
    ClaimRewardsTarget,
    IntentSpec,
    PolicyChangeTarget,
    RestakeTarget,
    StakeTarget,
    TargetParams,
    UnstakeTarget,
    VoteOption,
    VoteTarget,
)
from tests.families import cosmpy_reference as ref
from tests.families.cases import OTHER_KEY, VAULT_KEY, cosmos_chain, cosmos_validator

CHAIN = cosmos_chain()
FAMILY = CosmosFamily()
PUBLIC_KEY = bytes(VAULT_KEY.public_key.format(compressed=False))
COMPRESSED = bytes(VAULT_KEY.public_key.format(compressed=True))
OTHER_COMPRESSED = bytes(OTHER_KEY.public_key.format(compressed=True))
VAULT = FAMILY.address(CHAIN, PUBLIC_KEY)
OTHER = FAMILY.address(CHAIN, OTHER_COMPRESSED)
V1, V2 = cosmos_validator(1), cosmos_validator(2)
STAKE = IntentSpec(Action.STAKE, CHAIN.name, "vault-1", 5_000_000, StakeTarget(V1))
CLAIM = IntentSpec(Action.CLAIM_REWARDS, CHAIN.name, "vault-1", 0, ClaimRewardsTarget(V1))
VOTE = IntentSpec(Action.VOTE, CHAIN.name, "vault-1", 0, VoteTarget(3, VoteOption.YES))
ACCOUNT = 7


def parts(
    *, delegator: str = VAULT, key: bytes = COMPRESSED, denom: str = CHAIN.denom, fee_denom: str = CHAIN.denom
) -> tuple[Any, Any]:
    """(TxBody, AuthInfo) of STAKE, made by cosmpy, for a test to change."""
    body = ref.tx_pb2.TxBody(
        messages=[ref.staking_message("STAKE", delegator, (V1, V2), denom, STAKE.amount)]
    )
    auth = ref.auth_info(key, sequence=3, denom=fee_denom, fee_amount=5_000, gas_limit=200_000)
    return body, auth


def doc(body: Any, auth: Any, *, chain_id: str = str(CHAIN.chain_id), account_number: int = ACCOUNT) -> bytes:
    return ref.sign_doc(body, auth, chain_id=chain_id, account_number=account_number)


def valid() -> bytes:
    return doc(*parts())


def test_the_reference_variant_is_accepted() -> None:
    assert FAMILY.check(CHAIN, STAKE, "stake", valid(), VAULT).replay_key == 3


# -- fields custos never builds ----------------------------------------------------------------------


def _set_timeout_height(body: Any, auth: Any) -> None:
    body.timeout_height = 100


def _set_unordered(body: Any, auth: Any) -> None:
    body.unordered = True


def _set_timeout_timestamp(body: Any, auth: Any) -> None:
    body.timeout_timestamp.seconds = 1


def _add_extension(body: Any, auth: Any) -> None:
    body.extension_options.add(type_url="/x", value=b"")


def _add_non_critical_extension(body: Any, auth: Any) -> None:
    body.non_critical_extension_options.add(type_url="/x", value=b"")


def _set_granter(body: Any, auth: Any) -> None:
    auth.fee.granter = OTHER


def _set_payer(body: Any, auth: Any) -> None:
    auth.fee.payer = OTHER


def _set_tip(body: Any, auth: Any) -> None:
    auth.tip.tipper = OTHER


def _second_message(body: Any, auth: Any) -> None:
    body.messages.append(body.messages[0])


def _no_message(body: Any, auth: Any) -> None:
    del body.messages[:]


def _second_signer(body: Any, auth: Any) -> None:
    auth.signer_infos.append(auth.signer_infos[0])


def _multisig_mode(body: Any, auth: Any) -> None:
    auth.signer_infos[0].mode_info.multi.bitarray.extra_bits_stored = 1


def _amino_mode(body: Any, auth: Any) -> None:
    auth.signer_infos[0].mode_info.single.mode = ref.signing_pb2.SIGN_MODE_LEGACY_AMINO_JSON


def _eth_key(body: Any, auth: Any) -> None:
    auth.signer_infos[0].public_key.type_url = "/injective.crypto.v1beta1.ethsecp256k1.PubKey"


def _uncompressed_key(body: Any, auth: Any) -> None:
    auth.signer_infos[0].public_key.value = ref.keys_pb2.PubKey(key=PUBLIC_KEY).SerializeToString()


def _key_off_the_curve(body: Any, auth: Any) -> None:
    auth.signer_infos[0].public_key.value = ref.keys_pb2.PubKey(
        key=b"\x02" + b"\xff" * 32
    ).SerializeToString()


def _second_fee_coin(body: Any, auth: Any) -> None:
    auth.fee.amount.add(denom="uosmo", amount="1")


def _zero_gas(body: Any, auth: Any) -> None:
    auth.fee.gas_limit = 0


def _google_type_url(body: Any, auth: Any) -> None:
    body.messages[0].type_url = "type.googleapis.com/cosmos.staking.v1beta1.MsgDelegate"


def _send_message(body: Any, auth: Any) -> None:
    body.messages[0].type_url = "/cosmos.bank.v1beta1.MsgSend"


def _long_memo(body: Any, auth: Any) -> None:
    body.memo = "x" * 257


def _memo_with_newline(body: Any, auth: Any) -> None:
    body.memo = "line\nbreak"


def _unicode_memo(body: Any, auth: Any) -> None:
    body.memo = "caf\u00e9"


def _amount(text: str) -> Callable[[Any, Any], None]:
    def change(body: Any, auth: Any) -> None:
        msg = ref.staking_pb2.MsgDelegate.FromString(body.messages[0].value)
        msg.amount.amount = text
        body.messages[0].value = msg.SerializeToString()

    return change


def _unknown_message_field(body: Any, auth: Any) -> None:
    body.messages[0].value += b"\x48\x01"  # field 9, varint 1


REFUSED = {
    "timeout_height": _set_timeout_height,
    "unordered": _set_unordered,
    "timeout_timestamp": _set_timeout_timestamp,
    "extension_options": _add_extension,
    "non_critical_extension_options": _add_non_critical_extension,
    "granter": _set_granter,
    "payer": _set_payer,
    "tip": _set_tip,
    "two messages": _second_message,
    "no message": _no_message,
    "two signers": _second_signer,
    "multi": _multisig_mode,
    "amino mode": _amino_mode,
    "eth key": _eth_key,
    "uncompressed key": _uncompressed_key,
    "key off the curve": _key_off_the_curve,
    "two fee coins": _second_fee_coin,
    "zero gas": _zero_gas,
    "google type url": _google_type_url,
    "MsgSend": _send_message,
    "long memo": _long_memo,
    "memo with newline": _memo_with_newline,
    "unicode memo": _unicode_memo,
    "amount 0": _amount("0"),
    "amount 007": _amount("007"),
    "amount -5": _amount("-5"),
    "amount 1.5": _amount("1.5"),
    "amount above 2**256": _amount(str(2**256)),
    "amount of 5000 digits": _amount("9" * 5000),
    "unknown field": _unknown_message_field,
}


@pytest.mark.parametrize("change", REFUSED.values(), ids=REFUSED.keys())
def test_decode_refuses_what_custos_never_builds(change: Callable[[Any, Any], None]) -> None:
    body, auth = parts()
    change(body, auth)
    data = doc(body, auth)
    with pytest.raises(TransactionInvalid):
        FAMILY.decode(CHAIN, data)
    with pytest.raises(TransactionMismatch):
        FAMILY.check(CHAIN, STAKE, "stake", data, VAULT)


def test_a_refused_field_is_named() -> None:
    body, auth = parts()
    body.timeout_height = 100
    with pytest.raises(TransactionInvalid, match="timeout_height"):
        FAMILY.decode(CHAIN, doc(body, auth))


# -- non-canonical protobuf, by hand ----------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def _len(number: int, data: bytes) -> bytes:
    """A length-delimited field (numbers below 16: a one-byte key)."""
    return bytes([number << 3 | 2]) + _varint(len(data)) + data


def test_non_canonical_encodings_are_refused() -> None:
    body, auth = parts()
    b, a = body.SerializeToString(), auth.SerializeToString()
    chain_id = str(CHAIN.chain_id).encode()
    refused = {
        "account number as a padded varint": _len(1, b) + _len(2, a) + _len(3, chain_id) + b"\x20\x87\x00",
        "account number written as 0": _len(1, b) + _len(2, a) + _len(3, chain_id) + b"\x20\x00",
        "fields out of order": _len(2, a) + _len(1, b) + _len(3, chain_id) + b"\x20\x07",
        "a field twice": _len(1, b) + _len(2, a) + _len(3, chain_id) + b"\x20\x07\x20\x07",
        "wrong wire type": _len(1, b) + _len(2, a) + _len(3, chain_id) + b"\x22\x01\x07",
        "an 11-byte varint": _len(1, b) + _len(2, a) + _len(3, chain_id) + b"\x20" + b"\xff" * 10 + b"\x01",
        "a varint above 2**64": _len(1, b) + _len(2, a) + _len(3, chain_id) + b"\x20" + b"\xff" * 9 + b"\x7f",
        "an empty memo written out": doc(body, auth).replace(_len(1, b), _len(1, b + b"\x12\x00"), 1),
        "a length past the end": _len(1, b) + _len(2, a) + b"\x1a\x7f" + chain_id,
        "invalid UTF-8": _len(1, b) + _len(2, a) + _len(3, b"\xff\xfe") + b"\x20\x07",
    }
    assert doc(body, auth) == _len(1, b) + _len(2, a) + _len(3, chain_id) + b"\x20\x07"
    for what, data in refused.items():
        with pytest.raises(TransactionInvalid):
            FAMILY.decode(CHAIN, data)
            pytest.fail(what)


def test_only_cutting_the_account_number_leaves_a_transaction() -> None:
    """Protobuf has no outer length: without its trailing ``account_number`` a SignDoc is one for
    account 0, with the same effects (and a signature the chain would refuse for our account)."""
    data = valid()
    decodable = []
    for end in range(len(data)):
        try:
            FAMILY.decode(CHAIN, data[:end])
        except TransactionInvalid:
            continue
        decodable.append(end)
    assert decodable == [len(data) - 2]
    assert FAMILY.parse(CHAIN, data[:-2]).account_number == 0


# -- what check compares --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (doc(*parts(), chain_id="cosmoshub-3"), "chain id"),
        (doc(*parts(delegator=OTHER)), "delegator"),
        (doc(*parts(key=OTHER_COMPRESSED)), "signer key"),
        (doc(*parts(denom="uosmo")), "amount denomination"),
        (doc(*parts(fee_denom="uosmo")), "fee denomination"),
    ],
    ids=["chain id", "delegator", "signer key", "amount denom", "fee denom"],
)
def test_check_names_what_differs(data: bytes, named: str) -> None:
    with pytest.raises(TransactionMismatch, match=named):
        FAMILY.check(CHAIN, STAKE, "stake", data, VAULT)


def test_check_names_every_difference() -> None:
    unstake = IntentSpec(Action.UNSTAKE, CHAIN.name, "vault-1", 1, UnstakeTarget(V2))
    with pytest.raises(TransactionMismatch, match="message type, step, validator, amount"):
        FAMILY.check(CHAIN, unstake, "stake", valid(), VAULT)


def test_check_refuses_the_transaction_for_another_sender() -> None:
    with pytest.raises(TransactionMismatch, match="delegator, signer key"):
        FAMILY.check(CHAIN, STAKE, "stake", valid(), OTHER)


def test_check_refuses_the_unbonding_wait_as_a_step() -> None:
    unstake = IntentSpec(Action.UNSTAKE, CHAIN.name, "vault-1", 1, UnstakeTarget(V1))
    tx = build_unsigned(
        CHAIN, unstake, public_key=PUBLIC_KEY, account_number=1, sequence=1, gas_limit=1, fee_amount=1
    )
    assert FAMILY.check(CHAIN, unstake, "unstake", tx, VAULT).step == "unstake"
    with pytest.raises(TransactionMismatch, match="step"):
        FAMILY.check(CHAIN, unstake, "unbonding", tx, VAULT)


def test_a_transaction_without_fee_coin_has_a_zero_fee() -> None:
    tx = build_unsigned(
        CHAIN, STAKE, public_key=PUBLIC_KEY, account_number=1, sequence=0, gas_limit=1, fee_amount=0
    )
    assert FAMILY.check(CHAIN, STAKE, "stake", tx, VAULT).fee_ceiling == 0


# -- signing -------------------------------------------------------------------------------------------


def test_assemble_refuses_a_key_that_is_not_the_signer() -> None:
    data = valid()
    digest = FAMILY.signing_payload(CHAIN, data).data
    other_sig = bytes(OTHER_KEY.sign_recoverable(digest, hasher=None))[:64]
    with pytest.raises(TransactionInvalid, match="signer"):
        FAMILY.assemble(CHAIN, data, other_sig, bytes(OTHER_KEY.public_key.format(compressed=False)))


def test_assemble_refuses_malformed_signatures() -> None:
    data = valid()
    sig = bytes(VAULT_KEY.sign_recoverable(FAMILY.signing_payload(CHAIN, data).data, hasher=None))
    for bad in (sig, sig[:63], b"\x00" * 64, b"\xff" * 64):
        with pytest.raises(TransactionInvalid):
            FAMILY.assemble(CHAIN, data, bad, PUBLIC_KEY)


def test_signing_payload_refuses_malformed_bytes() -> None:
    with pytest.raises(TransactionInvalid):
        FAMILY.signing_payload(CHAIN, valid() + b"\x00")


def test_a_replacement_changes_only_the_fee_the_gas_or_the_account_number() -> None:
    """One transaction per sequence can land: another fee, gas limit or account number replaces a
    signed step no node took; anything that changes what it does, or its sequence, does not."""
    data = valid()
    sig = bytes(VAULT_KEY.sign_recoverable(FAMILY.signing_payload(CHAIN, data).data, hasher=None))[:64]
    signed = FAMILY.assemble(CHAIN, data, sig, PUBLIC_KEY).signed_tx

    def changed(edit: Any, **kw: Any) -> bytes:
        body, auth = parts()
        edit(body, auth)
        return doc(body, auth, **kw)

    def fee(body: Any, auth: Any) -> None:
        auth.fee.amount[0].amount = "10000"

    def gas(body: Any, auth: Any) -> None:
        auth.fee.gas_limit = 300_000

    def sequence(body: Any, auth: Any) -> None:
        auth.signer_infos[0].sequence = 4

    def memo(body: Any, auth: Any) -> None:
        body.memo = "another"

    def amount(body: Any, auth: Any) -> None:
        body.messages[0].CopyFrom(
            ref.staking_message("STAKE", VAULT, (V1, V2), CHAIN.denom, STAKE.amount + 1)
        )

    for allowed in (changed(fee), changed(gas), changed(lambda b, a: None, account_number=ACCOUNT + 1)):
        assert FAMILY.replacement_allowed(CHAIN, signed, allowed) is True
    for refused in (changed(sequence), changed(memo), changed(amount), b"", signed):
        assert FAMILY.replacement_allowed(CHAIN, signed, refused) is False
    assert FAMILY.replacement_allowed(CHAIN, signed[:-1], changed(fee)) is False


# -- intents, keys and spellings ---------------------------------------------------------------------


def test_unstake_waits_for_unbonding() -> None:
    assert FAMILY.steps(Action.UNSTAKE) == (Step("unstake"), Step("unbonding", StepKind.WAIT, "unbonding"))
    assert FAMILY.steps(Action.STAKE) == (Step("stake"),)
    assert FAMILY.steps(Action.RESTAKE) == (Step("restake"),)


INVALID_INTENTS = {
    "zero amount": dataclasses.replace(STAKE, amount=0),
    "another chain": dataclasses.replace(STAKE, chain="ethereum-test"),
    "upper-case validator": dataclasses.replace(STAKE, target=StakeTarget(V1.upper())),
    "osmosis validator": dataclasses.replace(
        STAKE, target=StakeTarget(ref.address("osmovaloper", COMPRESSED))
    ),
    "account as validator": dataclasses.replace(STAKE, target=StakeTarget(VAULT)),
    "bad checksum": dataclasses.replace(STAKE, target=StakeTarget(V1[:-1] + ("q" if V1[-1] != "q" else "p"))),
    "stake params": dataclasses.replace(STAKE, target=StakeTarget(V1, TargetParams.of({"memo": b"x"}))),
    "empty params": dataclasses.replace(STAKE, target=StakeTarget(V1, TargetParams())),
    "unstake params": IntentSpec(
        Action.UNSTAKE, CHAIN.name, "vault-1", 1, UnstakeTarget(V1, TargetParams.of({"x": b""}))
    ),
    "restake to itself": IntentSpec(Action.RESTAKE, CHAIN.name, "vault-1", 1, RestakeTarget(V1, V1)),
    "policy change": IntentSpec(Action.POLICY_CHANGE, CHAIN.name, "vault-1", 0, PolicyChangeTarget("v2")),
}


@pytest.mark.parametrize("spec", INVALID_INTENTS.values(), ids=INVALID_INTENTS.keys())
def test_validate_intent_refuses(spec: IntentSpec) -> None:
    with pytest.raises(IntentInvalid):
        FAMILY.validate_intent(CHAIN, spec, VAULT)
    with pytest.raises(IntentInvalid):
        build_unsigned(
            CHAIN, spec, public_key=PUBLIC_KEY, account_number=1, sequence=1, gas_limit=1, fee_amount=1
        )


def test_validate_intent_wants_the_vault_in_canonical_spelling() -> None:
    with pytest.raises(IntentInvalid):
        FAMILY.validate_intent(CHAIN, STAKE, VAULT.upper())


def test_normalise_lower_cases_and_checks_prefix_checksum_and_length() -> None:
    assert FAMILY.normalise_address(CHAIN, VAULT.upper()) == VAULT
    assert FAMILY.normalise_validator(CHAIN, V1.upper()) == V1
    long_payload = bech32.convertbits(b"\x01" * 32, 8, 5)
    assert long_payload is not None
    refused = [
        V1,  # a validator is no account
        VAULT[:-1] + ("q" if VAULT[-1] != "q" else "p"),
        VAULT[:10] + VAULT[10:].upper(),
        ref.address("osmo", COMPRESSED),
        bech32.bech32_encode("cosmos", long_payload),
        "",
        "cosmos1",
    ]
    for text in refused:
        with pytest.raises(AddressInvalid):
            FAMILY.normalise_address(CHAIN, text)
    with pytest.raises(AddressInvalid):
        FAMILY.normalise_validator(CHAIN, VAULT)
    with pytest.raises(AddressInvalid):
        FAMILY.normalise_address(CHAIN, 42)  # type: ignore[arg-type]


def test_address_refuses_a_key_that_is_no_point() -> None:
    for key in (b"", b"\x04" + b"\x00" * 64, b"\x02" + b"\xff" * 32, PUBLIC_KEY[:33]):
        with pytest.raises(TransactionInvalid):
            FAMILY.address(CHAIN, key)


def test_facts_are_the_validators_and_the_denomination() -> None:
    facts = FAMILY.facts(CHAIN, IntentSpec(Action.RESTAKE, CHAIN.name, "v", 1, RestakeTarget(V1.upper(), V2)))
    assert facts.validators == frozenset({V1, V2})
    assert facts.payout_addresses == frozenset()
    assert facts.denomination == "uatom"


# -- the builder -------------------------------------------------------------------------------------


def test_build_unsigned_refuses_what_check_would_refuse() -> None:
    def build(**changes: Any) -> bytes:
        args: dict[str, Any] = {
            "public_key": PUBLIC_KEY,
            "account_number": 1,
            "sequence": 1,
            "gas_limit": 200_000,
            "fee_amount": 5_000,
        }
        return build_unsigned(CHAIN, STAKE, **(args | changes))

    build()
    with pytest.raises(FeeAboveCap):
        build(fee_amount=CHAIN.max_fee_wei + 1)
    for changes in (
        {"gas_limit": 0},
        {"sequence": 2**64},
        {"account_number": -1},
        {"fee_amount": -1},
        {"memo": "x" * 257},
        {"memo": "tab\t"},
        {"public_key": PUBLIC_KEY[:64]},
    ):
        with pytest.raises(TransactionInvalid):
            build(**changes)


def test_a_random_key_round_trips() -> None:
    key = PrivateKey()
    point = bytes(key.public_key.format(compressed=False))
    vault = FAMILY.address(CHAIN, point)
    tx = build_unsigned(
        CHAIN, STAKE, public_key=point, account_number=3, sequence=9, gas_limit=100_000, fee_amount=2_500
    )
    sig = bytes(key.sign_recoverable(FAMILY.signing_payload(CHAIN, tx).data, hasher=None))[:64]
    signed = FAMILY.assemble(CHAIN, tx, sig, point)
    assert (
        ref.signer_of(signed.signed_tx, chain_id=str(CHAIN.chain_id), account_number=3, prefix="cosmos")
        == vault
    )


# -- reward claims and votes ---------------------------------------------------------------------------


def claim_doc(*, delegator: str = VAULT, validator: str = V1) -> bytes:
    """A MsgWithdrawDelegatorReward SignDoc made by cosmpy."""
    _, auth = parts()
    return doc(ref.tx_pb2.TxBody(messages=[ref.withdraw_reward_message(delegator, validator)]), auth)


def vote_body(*, proposal_id: int = 3, voter: str = VAULT, option: str = "YES", metadata: str = "") -> Any:
    return ref.tx_pb2.TxBody(messages=[ref.vote_message(proposal_id, voter, option, metadata)])


def vote_doc(**changes: Any) -> bytes:
    """A gov v1 MsgVote SignDoc made by cosmpy (by default VOTE's: YES on proposal 3)."""
    _, auth = parts()
    return doc(vote_body(**changes), auth)


def vote_value(value: bytes) -> bytes:
    """VOTE's SignDoc with the MsgVote's bytes replaced by ``value`` (encodings cosmpy never writes)."""
    body, auth = vote_body(), parts()[1]
    body.messages[0].value = value
    return doc(body, auth)


def forced(spec: IntentSpec, *, amount: int | None = None, **target_fields: Any) -> IntentSpec:
    """``spec`` with values the intent model refuses (an amount on a claim, proposal 0): what a
    family must still refuse if such a spec ever got past ``IntentSpec``'s own checks."""
    out = copy.copy(spec)
    if amount is not None:
        object.__setattr__(out, "amount", amount)
    if target_fields:
        target = copy.copy(spec.target)
        for name, value in target_fields.items():
            object.__setattr__(target, name, value)
        object.__setattr__(out, "target", target)
    return out


def test_a_claim_and_a_vote_made_by_cosmpy_are_accepted() -> None:
    claim = FAMILY.check(CHAIN, CLAIM, "claim_rewards", claim_doc(), VAULT)
    assert (claim.action, claim.step, claim.amount, claim.value, claim.target) == (
        Action.CLAIM_REWARDS,
        "claim_rewards",
        0,
        0,
        ClaimRewardsTarget(V1),
    )
    vote = FAMILY.check(CHAIN, VOTE, "vote", vote_doc(), VAULT)
    assert (vote.action, vote.step, vote.amount, vote.value, vote.target) == (
        Action.VOTE,
        "vote",
        0,
        0,
        VoteTarget(3, VoteOption.YES),
    )
    assert (vote.fee_ceiling, vote.replay_key) == (5_000, 3)
    assert vote.summary.startswith(f"vote YES on proposal 3 (voter {VAULT}; fee 5000 uatom, gas 200000")


def test_the_steps_of_a_claim_and_a_vote() -> None:
    assert FAMILY.steps(Action.CLAIM_REWARDS) == (Step("claim_rewards"),)
    assert FAMILY.steps(Action.VOTE) == (Step("vote"),)


@pytest.mark.parametrize(
    ("spec", "step", "data", "named"),
    [
        (VOTE, "vote", vote_doc(proposal_id=4), "proposal"),
        (VOTE, "vote", vote_doc(proposal_id=2**64 - 1), "proposal"),
        (VOTE, "vote", vote_doc(option="NO"), "vote option"),
        (VOTE, "vote", vote_doc(option="ABSTAIN"), "vote option"),
        (VOTE, "vote", vote_doc(option="NO_WITH_VETO"), "vote option"),
        (VOTE, "vote", vote_doc(voter=OTHER), "voter"),
        (VOTE, "vote", doc(vote_body(), parts(key=OTHER_COMPRESSED)[1]), "signer key"),
        (VOTE, "vote", doc(vote_body(), parts()[1], chain_id="cosmoshub-3"), "chain id"),
        (CLAIM, "claim_rewards", claim_doc(validator=V2), "validator"),
        (CLAIM, "claim_rewards", claim_doc(delegator=OTHER), "delegator"),
        (CLAIM, "claim_rewards", vote_doc(), "message type, validator, proposal, vote option"),
        (VOTE, "vote", claim_doc(), "message type, validator, proposal, vote option"),
        (STAKE, "stake", claim_doc(), "message type, amount"),
        (STAKE, "stake", vote_doc(), "message type, validator, amount, proposal, vote option"),
        (CLAIM, "claim_rewards", valid(), "message type, amount"),
        (VOTE, "vote", valid(), "message type, validator, amount, proposal, vote option"),
        (CLAIM, "vote", claim_doc(), "step"),
        (VOTE, "claim_rewards", vote_doc(), "step"),
    ],
    ids=[
        "another proposal",
        "the last proposal id",
        "NO instead of YES",
        "ABSTAIN instead of YES",
        "NO_WITH_VETO instead of YES",
        "voter not the vault",
        "signer key not the vault's",
        "chain id",
        "claim from another validator",
        "claim for another delegator",
        "a vote under a claim",
        "a claim under a vote",
        "a claim under a stake",
        "a vote under a stake",
        "a stake under a claim",
        "a stake under a vote",
        "a claim as the vote step",
        "a vote as the claim step",
    ],
)
def test_check_names_what_differs_from_a_claim_or_a_vote(
    spec: IntentSpec, step: str, data: bytes, named: str
) -> None:
    with pytest.raises(TransactionMismatch, match=f"differs from the intent in: {named}$"):
        FAMILY.check(CHAIN, spec, step, data, VAULT)


def _varint_field(number: int, value: int) -> bytes:
    return bytes([number << 3]) + _varint(value)


_VOTER = _len(2, VAULT.encode())
REFUSED_VOTES = {
    "non-empty metadata": (vote_doc(metadata="ipfs://x"), "metadata is set"),
    "empty metadata written out": (
        vote_value(_varint_field(1, 3) + _VOTER + b"\x18\x01\x22\x00"),
        "metadata",
    ),
    "proposal id 0": (vote_doc(proposal_id=0), "proposal_id is 0"),
    "option unspecified": (vote_doc(option="UNSPECIFIED"), "option 0"),
    "option 5": (vote_value(_varint_field(1, 3) + _VOTER + _varint_field(3, 5)), "option 5"),
    "proposal id padded": (vote_value(b"\x08\x83\x00" + _VOTER + b"\x18\x01"), "padded"),
    "voter before proposal": (vote_value(_VOTER + _varint_field(1, 3) + b"\x18\x01"), "out of field order"),
    "proposal id twice": (vote_value(b"\x08\x03\x08\x03" + _VOTER + b"\x18\x01"), "twice"),
    "proposal id as a string": (vote_value(_len(1, b"3") + _VOTER + b"\x18\x01"), "wire type"),
    "unknown field": (vote_value(vote_body().messages[0].value + b"\x48\x01"), "unknown field 9"),
    "no voter": (vote_doc(voter=""), "voter address is invalid"),
    "upper-case voter": (vote_doc(voter=VAULT.upper()), "voter address is not in lower-case"),
    "validator as voter": (vote_doc(voter=V1), "voter address is invalid"),
    "gov v1beta1 type url": (
        doc(
            ref.tx_pb2.TxBody(
                messages=[ref.any_pb2.Any(type_url="/cosmos.gov.v1beta1.MsgVote", value=b"\x08\x03")]
            ),
            parts()[1],
        ),
        "no staking message, reward withdrawal or vote",
    ),
}
REFUSED_CLAIMS = {
    "no validator": (claim_doc(validator=""), "validator address is invalid"),
    "account as validator": (claim_doc(validator=OTHER), "validator address is invalid"),
    "upper-case validator": (claim_doc(validator=V1.upper()), "validator address is not in lower-case"),
    "an amount field": (
        doc(
            ref.tx_pb2.TxBody(
                messages=[
                    ref.any_pb2.Any(
                        type_url=ref.MESSAGE_TYPES["CLAIM_REWARDS"],
                        value=ref.withdraw_reward_message(VAULT, V1).value
                        + _len(3, ref.coin_pb2.Coin(denom="uatom", amount="1").SerializeToString()),
                    )
                ]
            ),
            parts()[1],
        ),
        "unknown field 3",
    ),
}


@pytest.mark.parametrize(("data", "said"), REFUSED_VOTES.values(), ids=REFUSED_VOTES.keys())
def test_decode_refuses_a_vote_custos_never_builds(data: bytes, said: str) -> None:
    with pytest.raises(TransactionInvalid, match=said):
        FAMILY.decode(CHAIN, data)
    with pytest.raises(TransactionMismatch):
        FAMILY.check(CHAIN, VOTE, "vote", data, VAULT)


@pytest.mark.parametrize(("data", "said"), REFUSED_CLAIMS.values(), ids=REFUSED_CLAIMS.keys())
def test_decode_refuses_a_claim_custos_never_builds(data: bytes, said: str) -> None:
    with pytest.raises(TransactionInvalid, match=said):
        FAMILY.decode(CHAIN, data)
    with pytest.raises(TransactionMismatch):
        FAMILY.check(CHAIN, CLAIM, "claim_rewards", data, VAULT)


def test_the_hand_made_vote_encoding_is_cosmpys() -> None:
    """The refused variants above differ from this one encoding only where they say."""
    assert vote_value(_varint_field(1, 3) + _VOTER + b"\x18\x01") == vote_doc()


def test_an_amount_on_a_claim_or_a_vote_is_refused() -> None:
    for spec in (CLAIM, VOTE):
        with pytest.raises(ValueError, match="moves no amount"):
            dataclasses.replace(spec, amount=1)
    for spec, step, data in ((CLAIM, "claim_rewards", claim_doc()), (VOTE, "vote", vote_doc())):
        with_amount = forced(spec, amount=1)
        with pytest.raises(IntentInvalid, match="moves no amount"):
            FAMILY.validate_intent(CHAIN, with_amount, VAULT)
        with pytest.raises(TransactionMismatch, match="moves no amount"):
            FAMILY.check(CHAIN, with_amount, step, data, VAULT)
        with pytest.raises(IntentInvalid):
            build_unsigned(
                CHAIN,
                with_amount,
                public_key=PUBLIC_KEY,
                account_number=1,
                sequence=1,
                gas_limit=1,
                fee_amount=1,
            )


INVALID_CLAIMS_AND_VOTES = {
    "upper-case claim validator": dataclasses.replace(CLAIM, target=ClaimRewardsTarget(V1.upper())),
    "account as claim validator": dataclasses.replace(CLAIM, target=ClaimRewardsTarget(VAULT)),
    "claim on another chain": dataclasses.replace(CLAIM, chain="ethereum-test"),
    "vote on another chain": dataclasses.replace(VOTE, chain="ethereum-test"),
    "vote on proposal 0": forced(VOTE, proposal_id=0),
    "vote on proposal 2**64": forced(VOTE, proposal_id=2**64),
    "vote with a bool proposal": forced(VOTE, proposal_id=True),
    "vote with a string option": forced(VOTE, option="YES"),
}


@pytest.mark.parametrize("spec", INVALID_CLAIMS_AND_VOTES.values(), ids=INVALID_CLAIMS_AND_VOTES.keys())
def test_validate_intent_refuses_a_claim_or_vote(spec: IntentSpec) -> None:
    with pytest.raises(IntentInvalid):
        FAMILY.validate_intent(CHAIN, spec, VAULT)
    with pytest.raises(IntentInvalid):
        build_unsigned(
            CHAIN, spec, public_key=PUBLIC_KEY, account_number=1, sequence=1, gas_limit=1, fee_amount=1
        )


def test_facts_of_a_claim_name_its_validator_and_a_vote_none() -> None:
    claim = dataclasses.replace(CLAIM, target=ClaimRewardsTarget(V2.upper()))
    assert FAMILY.facts(CHAIN, claim).validators == frozenset({V2})
    vote = FAMILY.facts(CHAIN, VOTE)
    assert (vote.validators, vote.payout_addresses, vote.denomination) == (frozenset(), frozenset(), "uatom")


@pytest.mark.parametrize("option", list(VoteOption))
def test_build_unsigned_votes_every_option(option: VoteOption) -> None:
    spec = dataclasses.replace(VOTE, target=VoteTarget(2**64 - 1, option))
    tx = build_unsigned(
        CHAIN,
        spec,
        public_key=PUBLIC_KEY,
        account_number=ACCOUNT,
        sequence=3,
        gas_limit=200_000,
        fee_amount=5_000,
    )
    assert tx == vote_doc(proposal_id=2**64 - 1, option=option.value)
    assert FAMILY.check(CHAIN, spec, "vote", tx, VAULT).target == spec.target


def test_a_vote_or_claim_replacement_changes_only_the_fee() -> None:
    for data, other in ((vote_doc(), vote_doc(option="NO")), (claim_doc(), claim_doc(validator=V2))):
        sig = bytes(VAULT_KEY.sign_recoverable(FAMILY.signing_payload(CHAIN, data).data, hasher=None))[:64]
        signed = FAMILY.assemble(CHAIN, data, sig, PUBLIC_KEY).signed_tx
        assert FAMILY.replacement_allowed(CHAIN, signed, doc(*_with_fee(data, "10000"))) is True
        assert FAMILY.replacement_allowed(CHAIN, signed, other) is False


def _with_fee(data: bytes, amount: str) -> tuple[Any, Any]:
    """(TxBody, AuthInfo) of ``data`` with another fee amount."""
    sign_doc = ref.tx_pb2.SignDoc.FromString(data)
    body = ref.tx_pb2.TxBody.FromString(sign_doc.body_bytes)
    auth = ref.tx_pb2.AuthInfo.FromString(sign_doc.auth_info_bytes)
    auth.fee.amount[0].amount = amount
    return body, auth
