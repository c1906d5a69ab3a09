"""One suite for every chain family, through the ``Family`` interface only.

Each family (see :mod:`tests.families.cases`) must: give a key one stable, canonical address;
read back what was built for every signed step of an intent; accept exactly the approved step
and refuse any change of amount, validator, params, step or a fee above the cap; assemble only
canonical signatures (low-S, S below the group order) by the vault key over its own signing
payload; never let a different transaction replace a signed one; and refuse malformed bytes
with ``TransactionInvalid`` and nothing else.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator

import pytest

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
from tests.families.cases import ACTIONS, CASES, FamilyCase

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


def signed_steps(case: FamilyCase, action: Action) -> list[str]:
    return [s.name for s in case.family.steps(action) if s.kind is StepKind.SIGN]


def built_steps(case: FamilyCase, spec: IntentSpec, variant: int = REPLAY_KEY) -> list[tuple[str, bytes]]:
    """(step, unsigned transaction) of every signed step of ``spec``."""
    return [(step, case.build(spec, step, variant)) for step in signed_steps(case, spec.action)]


def other_validators(case: FamilyCase, spec: IntentSpec) -> list[Target]:
    """Targets naming another validator (or another proposal or option), the rest unchanged."""
    t = spec.target
    if isinstance(t, StakeTarget | UnstakeTarget | ClaimRewardsTarget):
        return [dataclasses.replace(t, validator=case.other_validator)]
    if isinstance(t, VoteTarget):
        others: list[Target] = [VoteTarget(t.proposal_id + 1, t.option)]
        return others + [VoteTarget(t.proposal_id, o) for o in VoteOption if o is not t.option]
    assert isinstance(t, RestakeTarget)
    return [dataclasses.replace(t, target_validator=case.other_validator)]


def other_params(case: FamilyCase, spec: IntentSpec) -> list[Target]:
    """The target with the case's other params (another Solana seed), where the family has any."""
    t = spec.target
    if case.other_params is None or not isinstance(t, StakeTarget | UnstakeTarget | RestakeTarget):
        return []
    if t.params is None:
        return []
    return [dataclasses.replace(t, params=case.other_params)]


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


def sign(case: FamilyCase, unsigned_tx: bytes, *, other: bool = False) -> bytes:
    """The signature over the family's signing payload, as the HSM returns it for its
    mechanism (``r || s`` low-S for ``CKM_ECDSA``, 64 bytes for ``CKM_EDDSA``)."""
    payload = case.family.signing_payload(case.chain, unsigned_tx)
    assert payload.mechanism is case.family.mechanism
    return case.keys.sign(payload.data, other)


# -- keys and spellings ------------------------------------------------------------------------


def test_address_of_a_key_is_stable_and_canonical(case: FamilyCase) -> None:
    first = case.family.address(case.chain, case.public_key)
    assert case.family.address(case.chain, case.public_key) == first
    assert case.family.normalise_address(case.chain, first) == first
    other = case.family.address(case.chain, case.keys.other_public_key)
    assert other != first


def test_the_cases_cover_every_action_the_family_takes(case: FamilyCase) -> None:
    assert set(case.specs) == {a for a in Action if case.family.steps(a)}


def test_validators_of_the_specs_are_canonical(case: FamilyCase, spec: IntentSpec) -> None:
    facts = case.family.facts(case.chain, spec)
    assert bool(facts.validators) is not isinstance(spec.target, VoteTarget)
    for validator in facts.validators:
        assert case.family.normalise_validator(case.chain, validator) == validator
    case.family.validate_intent(case.chain, spec, case.vault)


def test_every_action_has_signed_steps_each_named_once(case: FamilyCase) -> None:
    for action in actions(case):
        names = [s.name for s in case.family.steps(action)]
        assert signed_steps(case, action)
        assert len(set(names)) == len(names)
        assert case.family.steps(action)[0].kind is StepKind.SIGN
    assert case.family.steps(Action.POLICY_CHANGE) == ()


# -- build, decode, check ------------------------------------------------------------------------


def test_decode_reads_back_what_was_built(case: FamilyCase, spec: IntentSpec) -> None:
    for step, tx in built_steps(case, spec):
        decoded = case.family.decode(case.chain, tx)
        assert (decoded.action, decoded.amount, decoded.target) == case.reads_back(spec, step)
        assert decoded.step == step
        assert decoded.replay_key == case.replay_key(spec, step, REPLAY_KEY)
        assert 0 < decoded.fee_ceiling <= case.chain.max_fee_wei
        assert decoded.summary


def test_check_accepts_exactly_the_approved_step(case: FamilyCase, spec: IntentSpec) -> None:
    for step, tx in built_steps(case, spec):
        decoded = case.family.check(case.chain, spec, step, tx, case.vault)
        assert decoded == case.family.decode(case.chain, tx)


def test_check_refuses_a_changed_amount(case: FamilyCase, spec: IntentSpec) -> None:
    changed = with_amount(spec, spec.amount + case.amount_unit)
    for step, tx in built_steps(case, spec):
        with pytest.raises(TransactionMismatch):
            case.family.check(case.chain, changed, step, tx, case.vault)


def test_check_refuses_a_changed_target(case: FamilyCase, spec: IntentSpec) -> None:
    for step, tx in built_steps(case, spec):
        for target in other_params(case, spec):
            with pytest.raises(TransactionMismatch):
                case.family.check(case.chain, dataclasses.replace(spec, target=target), step, tx, case.vault)
        for target in other_validators(case, spec):
            changed = dataclasses.replace(spec, target=target)
            if step in case.validator_blind_steps:
                # the bytes name no validator: the same transaction (the chain service checks
                # the stake account's delegation before it builds one)
                case.family.check(case.chain, changed, step, tx, case.vault)
                continue
            with pytest.raises(TransactionMismatch):
                case.family.check(case.chain, changed, step, tx, case.vault)


def test_check_refuses_another_action_of_the_same_vault(case: FamilyCase, spec: IntentSpec) -> None:
    for action in actions(case):
        if action is spec.action:
            continue
        for _, tx in built_steps(case, case.specs[action]):
            for step in signed_steps(case, spec.action):
                with pytest.raises(TransactionMismatch):
                    case.family.check(case.chain, spec, step, tx, case.vault)


def test_check_refuses_any_other_step_name(case: FamilyCase, spec: IntentSpec) -> None:
    names = {s.name for a in actions(case) for s in case.family.steps(a)} | {"", "STAKE", "stake2"}
    for step, tx in built_steps(case, spec):
        for name in names - {step}:
            with pytest.raises(TransactionMismatch):
                case.family.check(case.chain, spec, name, tx, case.vault)


def test_check_refuses_a_fee_above_the_cap(case: FamilyCase, spec: IntentSpec) -> None:
    for step, tx in built_steps(case, spec):
        fee = case.family.decode(case.chain, tx).fee_ceiling
        at_cap = case.chain.model_copy(update={"max_fee_wei": fee})
        case.family.check(at_cap, spec, step, tx, case.vault)
        below = case.chain.model_copy(update={"max_fee_wei": fee - 1})
        with pytest.raises(FeeAboveCap):
            case.family.check(below, spec, step, tx, case.vault)


# -- signing -------------------------------------------------------------------------------------


def test_assemble_gives_a_transaction_signed_by_the_vault_key(case: FamilyCase, spec: IntentSpec) -> None:
    for _, tx in built_steps(case, spec):
        signed = case.family.assemble(case.chain, tx, sign(case, tx), case.public_key)
        assert case.signer_of(signed.signed_tx) == case.vault
        assert signed.tx_id == case.tx_id(signed.signed_tx)


def test_assemble_refuses_a_malleated_signature(case: FamilyCase, spec: IntentSpec) -> None:
    for _, tx in built_steps(case, spec):
        sig = sign(case, tx)
        malleated = case.keys.malleate(sig)
        assert malleated != sig
        with pytest.raises(TransactionInvalid):
            case.family.assemble(case.chain, tx, malleated, case.public_key)


def test_assemble_refuses_a_signature_by_another_key(case: FamilyCase, spec: IntentSpec) -> None:
    for _, tx in built_steps(case, spec):
        with pytest.raises(TransactionInvalid):
            case.family.assemble(case.chain, tx, sign(case, tx, other=True), case.public_key)


def test_assemble_refuses_a_signature_of_another_transaction(case: FamilyCase, spec: IntentSpec) -> None:
    for (_, tx), (_, other) in zip(
        built_steps(case, spec), built_steps(case, spec, REPLAY_KEY + 1), strict=True
    ):
        with pytest.raises(TransactionInvalid):
            case.family.assemble(case.chain, tx, sign(case, other), case.public_key)


def test_a_different_transaction_never_replaces_a_signed_one(case: FamilyCase, spec: IntentSpec) -> None:
    rebuilt = dict(built_steps(case, spec, REPLAY_KEY + 1))
    for step, tx in built_steps(case, spec):
        signed = case.family.assemble(case.chain, tx, sign(case, tx), case.public_key).signed_tx
        # another variant: a fee bump or another nonce elsewhere, a fresh blockhash on Solana
        assert case.family.replacement_allowed(case.chain, signed, rebuilt[step]) is case.variant_replaces
        others = [other for name, other in built_steps(case, spec) if name != step]
        others += [
            other
            for a in actions(case)
            if a is not spec.action
            for _, other in built_steps(case, case.specs[a])
        ]
        for other in others:
            assert case.family.replacement_allowed(case.chain, signed, other) is False


# -- malformed bytes -------------------------------------------------------------------------------


def assert_refused_or_same_effects(case: FamilyCase, spec: IntentSpec, step: str, data: bytes) -> None:
    """``data`` decodes to ``TransactionInvalid`` and nothing else, unless it is itself a well-formed
    transaction; then ``check`` raises only family errors, and accepts only the approved effects."""
    try:
        decoded = case.family.decode(case.chain, data)
    except TransactionInvalid:
        return
    try:
        accepted = case.family.check(case.chain, spec, step, data, case.vault)
    except (TransactionMismatch, FeeAboveCap):
        return
    action, amount, target = case.reads_back(spec, step)
    assert (accepted.action, accepted.target) == (action, target)
    assert accepted.amount == amount or step in case.chain_amount_steps
    assert decoded == accepted


def test_truncated_bytes_are_refused(case: FamilyCase, spec: IntentSpec) -> None:
    for _, tx in built_steps(case, spec):
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
    for _, tx in built_steps(case, spec):
        for data in (tx + garbage, tx + tx):
            with pytest.raises(TransactionInvalid):
                case.family.decode(case.chain, data)


def test_every_single_bit_flip_is_refused_or_harmless(case: FamilyCase, spec: IntentSpec) -> None:
    for step, tx in built_steps(case, spec):
        for i in range(len(tx)):
            for bit in range(8):
                flipped = bytearray(tx)
                flipped[i] ^= 1 << bit
                assert_refused_or_same_effects(case, spec, step, bytes(flipped))


@pytest.mark.parametrize(
    "data", [b"", b"\x00", b"\xff" * 64, bytes(range(256))], ids=["empty", "zero", "ff", "seq"]
)
def test_arbitrary_bytes_are_refused(case: FamilyCase, data: bytes) -> None:
    with pytest.raises(TransactionInvalid):
        case.family.decode(case.chain, data)


def test_check_turns_malformed_bytes_into_a_mismatch(case: FamilyCase, spec: IntentSpec) -> None:
    for step, tx in built_steps(case, spec):
        with pytest.raises(TransactionMismatch):
            case.family.check(case.chain, spec, step, tx[:-3], case.vault)
