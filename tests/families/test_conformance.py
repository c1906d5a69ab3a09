"""One suite for every chain family, through the ``Family`` interface only.

Each family (see :mod:`tests.families.cases`) must: give a key one stable, canonical address;
read back what was built for an intent; accept exactly the approved step and refuse any change
of amount, validator, step or a fee above the cap; assemble only low-S signatures by the
vault key over its own signing payload; never let a different transaction replace a signed
one; and refuse malformed bytes with ``TransactionInvalid`` and nothing else.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator

import pytest
from coincurve import PrivateKey

from services.families import secp256k1
from services.families.base import StepKind
from services.families.errors import (
    FeeAboveCap,
    TransactionInvalid,
    TransactionMismatch,
)
from services.runtime.intent import (
    AMOUNTLESS,
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
from tests.families.cases import ACTIONS, CASES, OTHER_KEY, VAULT_KEY, FamilyCase

REPLAY_KEY = 7


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test runs for every case; a test of a ``spec`` for every action that case has."""
    if "spec" in metafunc.fixturenames:
        pairs = [(name, action) for name in sorted(CASES) for action in ACTIONS[name]]
        metafunc.parametrize(
            ("case", "action"), pairs, indirect=["case"], ids=[f"{n}-{a}" for n, a in pairs], scope="module"
        )
    elif "case" in metafunc.fixturenames:
        metafunc.parametrize("case", sorted(CASES), indirect=True, scope="module")


@pytest.fixture(scope="module")
def case(request: pytest.FixtureRequest) -> Iterator[FamilyCase]:
    yield CASES[request.param]()


@pytest.fixture
def spec(case: FamilyCase, action: Action) -> IntentSpec:
    return case.specs[action]


def actions(case: FamilyCase) -> list[Action]:
    return list(case.specs)


def signed_step(case: FamilyCase, action: Action) -> str:
    (name,) = [s.name for s in case.family.steps(action) if s.kind is StepKind.SIGN]
    return name


def other_targets(case: FamilyCase, spec: IntentSpec) -> list[Target]:
    """Targets one change away from ``spec``'s: another validator, or another proposal or option."""
    t = spec.target
    if isinstance(t, StakeTarget):
        return [dataclasses.replace(t, validator=case.other_validator)]
    if isinstance(t, UnstakeTarget):
        return [UnstakeTarget(case.other_validator)]
    if isinstance(t, ClaimRewardsTarget):
        return [ClaimRewardsTarget(case.other_validator)]
    if isinstance(t, VoteTarget):
        others: list[Target] = [VoteTarget(t.proposal_id + 1, t.option)]
        return others + [VoteTarget(t.proposal_id, o) for o in VoteOption if o is not t.option]
    assert isinstance(t, RestakeTarget)
    return [RestakeTarget(t.source_validator, case.other_validator)]


def with_amount(spec: IntentSpec, amount: int) -> IntentSpec:
    """``spec`` moving ``amount``, even where the intent model refuses one (a claim, a vote): a
    family must not rely on ``IntentSpec`` alone to keep an amount off an amountless action."""
    if spec.action not in AMOUNTLESS:
        return dataclasses.replace(spec, amount=amount)
    with pytest.raises(ValueError, match="moves no amount"):
        dataclasses.replace(spec, amount=amount)
    forced = copy.copy(spec)
    object.__setattr__(forced, "amount", amount)
    return forced


def sign(case: FamilyCase, unsigned_tx: bytes, key: PrivateKey = VAULT_KEY) -> bytes:
    """``r || s`` over the family's signing payload, as the HSM's ``CKM_ECDSA`` returns it
    (libsecp256k1 always gives low-S)."""
    payload = case.family.signing_payload(case.chain, unsigned_tx)
    assert payload.mechanism is case.family.mechanism
    return bytes(key.sign_recoverable(payload.data, hasher=None))[:64]


# -- keys and spellings ------------------------------------------------------------------------


def test_address_of_a_key_is_stable_and_canonical(case: FamilyCase) -> None:
    first = case.family.address(case.chain, case.public_key)
    assert case.family.address(case.chain, case.public_key) == first
    assert case.family.normalise_address(case.chain, first) == first
    other = case.family.address(case.chain, bytes(OTHER_KEY.public_key.format(compressed=False)))
    assert other != first


def test_the_cases_cover_every_action_the_family_takes(case: FamilyCase) -> None:
    assert set(case.specs) == {a for a in Action if case.family.steps(a)}


def test_validators_of_the_specs_are_canonical(case: FamilyCase, spec: IntentSpec) -> None:
    facts = case.family.facts(case.chain, spec)
    assert bool(facts.validators) is not isinstance(spec.target, VoteTarget)
    for validator in facts.validators:
        assert case.family.normalise_validator(case.chain, validator) == validator
    case.family.validate_intent(case.chain, spec, case.vault)


def test_every_action_has_exactly_one_signed_step(case: FamilyCase) -> None:
    for action in actions(case):
        assert signed_step(case, action)
    assert case.family.steps(Action.POLICY_CHANGE) == ()


# -- build, decode, check ------------------------------------------------------------------------


def test_decode_reads_back_what_was_built(case: FamilyCase, spec: IntentSpec) -> None:
    decoded = case.family.decode(case.chain, case.build(spec, REPLAY_KEY))
    assert decoded.action is spec.action
    assert decoded.step == signed_step(case, spec.action)
    assert decoded.amount == spec.amount
    assert decoded.target == spec.target
    assert decoded.replay_key == REPLAY_KEY
    assert 0 < decoded.fee_ceiling <= case.chain.max_fee_wei
    assert decoded.summary


def test_check_accepts_exactly_the_approved_step(case: FamilyCase, spec: IntentSpec) -> None:
    tx = case.build(spec, REPLAY_KEY)
    decoded = case.family.check(case.chain, spec, signed_step(case, spec.action), tx, case.vault)
    assert decoded == case.family.decode(case.chain, tx)


def test_check_refuses_a_changed_amount(case: FamilyCase, spec: IntentSpec) -> None:
    tx = case.build(spec, REPLAY_KEY)
    changed = with_amount(spec, spec.amount + case.amount_unit)
    with pytest.raises(TransactionMismatch):
        case.family.check(case.chain, changed, signed_step(case, spec.action), tx, case.vault)


def test_check_refuses_a_changed_target(case: FamilyCase, spec: IntentSpec) -> None:
    tx = case.build(spec, REPLAY_KEY)
    for target in other_targets(case, spec):
        changed = dataclasses.replace(spec, target=target)
        with pytest.raises(TransactionMismatch):
            case.family.check(case.chain, changed, signed_step(case, spec.action), tx, case.vault)


def test_check_refuses_another_action_of_the_same_vault(case: FamilyCase, spec: IntentSpec) -> None:
    for action in actions(case):
        if action is not spec.action:
            tx = case.build(case.specs[action], REPLAY_KEY)
            with pytest.raises(TransactionMismatch):
                case.family.check(case.chain, spec, signed_step(case, spec.action), tx, case.vault)


def test_check_refuses_any_other_step_name(case: FamilyCase, spec: IntentSpec) -> None:
    tx = case.build(spec, REPLAY_KEY)
    names = {s.name for a in actions(case) for s in case.family.steps(a)} | {"", "STAKE", "stake2"}
    for name in names - {signed_step(case, spec.action)}:
        with pytest.raises(TransactionMismatch):
            case.family.check(case.chain, spec, name, tx, case.vault)


def test_check_refuses_a_fee_above_the_cap(case: FamilyCase, spec: IntentSpec) -> None:
    tx = case.build(spec, REPLAY_KEY)
    step = signed_step(case, spec.action)
    fee = case.family.decode(case.chain, tx).fee_ceiling
    at_cap = case.chain.model_copy(update={"max_fee_wei": fee})
    case.family.check(at_cap, spec, step, tx, case.vault)
    below = case.chain.model_copy(update={"max_fee_wei": fee - 1})
    with pytest.raises(FeeAboveCap):
        case.family.check(below, spec, step, tx, case.vault)


# -- signing -------------------------------------------------------------------------------------


def test_assemble_gives_a_transaction_signed_by_the_vault_key(case: FamilyCase, spec: IntentSpec) -> None:
    tx = case.build(spec, REPLAY_KEY)
    signed = case.family.assemble(case.chain, tx, sign(case, tx), case.public_key)
    assert case.signer_of(signed.signed_tx) == case.vault
    assert signed.tx_id == case.tx_id(signed.signed_tx)


def test_assemble_refuses_a_high_s_signature(case: FamilyCase, spec: IntentSpec) -> None:
    tx = case.build(spec, REPLAY_KEY)
    sig = sign(case, tx)
    high = sig[:32] + (secp256k1.N - int.from_bytes(sig[32:], "big")).to_bytes(32, "big")
    assert secp256k1.low_s(high) == sig
    with pytest.raises(TransactionInvalid):
        case.family.assemble(case.chain, tx, high, case.public_key)


def test_assemble_refuses_a_signature_by_another_key(case: FamilyCase, spec: IntentSpec) -> None:
    tx = case.build(spec, REPLAY_KEY)
    with pytest.raises(TransactionInvalid):
        case.family.assemble(case.chain, tx, sign(case, tx, OTHER_KEY), case.public_key)


def test_assemble_refuses_a_signature_of_another_transaction(case: FamilyCase, spec: IntentSpec) -> None:
    tx, other = case.build(spec, REPLAY_KEY), case.build(spec, REPLAY_KEY + 1)
    with pytest.raises(TransactionInvalid):
        case.family.assemble(case.chain, tx, sign(case, other), case.public_key)


def test_a_different_transaction_never_replaces_a_signed_one(case: FamilyCase, spec: IntentSpec) -> None:
    tx = case.build(spec, REPLAY_KEY)
    signed = case.family.assemble(case.chain, tx, sign(case, tx), case.public_key).signed_tx
    others = [case.build(spec, REPLAY_KEY + 1)]
    others += [case.build(case.specs[a], REPLAY_KEY) for a in actions(case) if a is not spec.action]
    for other in others:
        assert case.family.replacement_allowed(case.chain, signed, other) is False


# -- malformed bytes -------------------------------------------------------------------------------


def assert_refused_or_same_effects(case: FamilyCase, spec: IntentSpec, data: bytes) -> None:
    """``data`` decodes to ``TransactionInvalid`` and nothing else, unless it is itself a well-formed
    transaction; then ``check`` raises only family errors, and accepts only the approved effects."""
    try:
        decoded = case.family.decode(case.chain, data)
    except TransactionInvalid:
        return
    try:
        accepted = case.family.check(case.chain, spec, signed_step(case, spec.action), data, case.vault)
    except (TransactionMismatch, FeeAboveCap):
        return
    assert (accepted.action, accepted.amount, accepted.target) == (spec.action, spec.amount, spec.target)
    assert decoded == accepted


def test_truncated_bytes_are_refused(case: FamilyCase, spec: IntentSpec) -> None:
    tx = case.build(spec, REPLAY_KEY)
    whole = case.family.decode(case.chain, tx)
    for end in range(len(tx)):
        try:
            decoded = case.family.decode(case.chain, tx[:end])
        except TransactionInvalid:
            continue
        # A protobuf message has no outer length: cutting a trailing optional field can leave
        # another valid transaction (see the Cosmos tests); it must still do the same thing.
        assert (decoded.action, decoded.amount, decoded.target, decoded.replay_key) == (
            whole.action,
            whole.amount,
            whole.target,
            whole.replay_key,
        )


@pytest.mark.parametrize("garbage", [b"\x00", b"\x01", b"\xff", b"\x20\x01", b"\x0a\x00"], ids=bytes.hex)
def test_trailing_garbage_is_refused(case: FamilyCase, spec: IntentSpec, garbage: bytes) -> None:
    tx = case.build(spec, REPLAY_KEY)
    for data in (tx + garbage, tx + tx):
        with pytest.raises(TransactionInvalid):
            case.family.decode(case.chain, data)


def test_every_single_bit_flip_is_refused_or_harmless(case: FamilyCase, spec: IntentSpec) -> None:
    tx = case.build(spec, REPLAY_KEY)
    for i in range(len(tx)):
        for bit in range(8):
            flipped = bytearray(tx)
            flipped[i] ^= 1 << bit
            assert_refused_or_same_effects(case, spec, bytes(flipped))


@pytest.mark.parametrize(
    "data", [b"", b"\x00", b"\xff" * 64, bytes(range(256))], ids=["empty", "zero", "ff", "seq"]
)
def test_arbitrary_bytes_are_refused(case: FamilyCase, data: bytes) -> None:
    with pytest.raises(TransactionInvalid):
        case.family.decode(case.chain, data)


def test_check_turns_malformed_bytes_into_a_mismatch(case: FamilyCase, spec: IntentSpec) -> None:
    tx = case.build(spec, REPLAY_KEY)
    with pytest.raises(TransactionMismatch):
        case.family.check(case.chain, spec, signed_step(case, spec.action), tx[:-3], case.vault)
