"""The worker host against the Cosmos family's amountless actions: reward claims and votes.

``CLAIM_REWARDS`` signs one ``MsgWithdrawDelegatorReward`` and ``VOTE`` one gov v1 ``MsgVote``,
both with amount 0: the policy counts them against no velocity limit, a validator allowlist does
not refuse a vote, and the chain service (which the worker host controls) now builds them with the
vault's public key it carries. The worker host holds the ``svc:worker`` certificate (``Sign`` with
any bytes and any approvals it read from Temporal history), the database and the chain service.
Each attack tries to turn a claim's or a vote's approvals into something the approvers did not
approve: another proposal or option, another message, a value-moving transaction, a fee or payer
of its choosing, another signer key, or room under the vault's velocity limit.

A refused attack asserts the typed refusal, its audit record and that nothing was signed
(``refused``). An attack that works is a strict xfail naming its finding (README, findings).
Every test plays against ``SignerService`` on the real SoftHSM token and database (``families_rig``)
under a policy with rules for claims and votes and a velocity limit on the Cosmos chain.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from services.families.cosmos import addresses
from services.families.cosmos import tx as cosmos_tx
from services.families.cosmos.tx import (
    MSG_DELEGATE,
    MSG_VOTE,
    MSG_WITHDRAW_DELEGATOR_REWARD,
    Coin,
    UnsignedTx,
)
from services.families.cosmos.wire import Writer
from services.policy.document import parse_policy
from services.runtime.intent import IntentSpec, VoteOption
from services.signer.errors import (
    ApprovalsInsufficient,
    BadSignRequest,
    FeeAboveCap,
    PolicyRefuses,
    SignerError,
    TransactionMismatch,
)
from services.signer.hsm import Hsm
from tests.families.cases import OTHER_KEY
from tests.security.families_rig import (
    ATOM,
    ATTACKER_VALIDATOR,
    COSMOS_HUB,
    ETH_CHAIN,
    OTHER_VALIDATOR,
    VALIDATOR,
    FamilyRig,
    family_rig,
)
from tests.security.test_families import MSG_SEND, SMUGGLED, _any, _smuggled, refused
from tests.signer.conftest import SUBMITTED

#: The vault's velocity on the Cosmos chain: 10 ATOM a day over every rule.
VELOCITY = 10 * ATOM
_REQUIRE = "{groups: [{name: ops, threshold: 2, approver_groups: [ops]}], expiry: 1h}"
_LIMIT = f'velocity: {{window: 24h, max: "{VELOCITY} uatom"}}'
#: The rig's policy with rules for claims (from the vault's two validators) and votes, each
#: limited as an operator would write it: a velocity limit (which amountless actions neither count
#: against nor meet) and, on votes, a validator allowlist (which names nothing a vote has).
ACTIONS_POLICY = parse_policy(
    f"""
format: custos.policy/v1
default: deny
rules:
  - id: eth
    match: {{action: [STAKE, UNSTAKE, RESTAKE], chain: [{ETH_CHAIN.name}]}}
    require: {_REQUIRE}
  - id: atom
    match: {{action: [STAKE, UNSTAKE, RESTAKE], chain: [{COSMOS_HUB.name}]}}
    limits: {{{_LIMIT}}}
    require: {_REQUIRE}
  - id: atom-claims
    match: {{action: [CLAIM_REWARDS], chain: [{COSMOS_HUB.name}]}}
    limits: {{validators: [{VALIDATOR}, {OTHER_VALIDATOR}], {_LIMIT}}}
    require: {_REQUIRE}
  - id: atom-votes
    match: {{action: [VOTE], chain: [{COSMOS_HUB.name}]}}
    limits: {{validators: [{VALIDATOR}], {_LIMIT}}}
    require: {_REQUIRE}
"""
)


@pytest.fixture
def fam(hsm: Hsm, session_factory: sessionmaker[Session]) -> Iterator[FamilyRig]:
    yield from family_rig(hsm, session_factory, policy_doc=ACTIONS_POLICY)


# --- bytes an attacker writes by hand -------------------------------------------------------------


def _doc(fam: FamilyRig, spec: IntentSpec) -> UnsignedTx:
    """The model of the SignDoc the chain service builds for ``spec``, every field replaceable."""
    return cosmos_tx.parse(fam.cosmos_tx(spec))


def _with_messages(doc: UnsignedTx, *messages: bytes, memo: str = "") -> bytes:
    """``doc``'s SignDoc with its body's messages (``Any``s) replaced by ``messages``."""
    body = Writer()
    for message in messages:
        body.message(1, message)
    body.string(2, memo)
    return (
        Writer()
        .bytes_(1, body.finish())
        .bytes_(2, doc.auth_info_bytes())
        .string(3, doc.chain_id)
        .uint(4, doc.account_number)
        .finish()
    )


def _vote_value(voter: str, *, proposal: int = 7, option: int = 1, metadata: str = "") -> bytes:
    """A ``cosmos.gov.v1.MsgVote`` as protobuf, ``metadata`` included when set."""
    return Writer().uint(1, proposal).string(2, voter).uint(3, option).string(4, metadata).finish()


def _claim_value(delegator: str, validator: str) -> bytes:
    return Writer().string(1, delegator).string(2, validator).finish()


def _message_of(doc: UnsignedTx) -> bytes:
    return _any(doc.message.type_url, doc.message.encode())


# --- 1. a vote's approvals for another vote ---------------------------------------------------------


def _vote_changed(fam: FamilyRig, doc: UnsignedTx, change: str) -> bytes:
    voter, msg = fam.cosmos_address, doc.message
    return {
        "option NO": lambda: replace(doc, message=replace(msg, option=VoteOption.NO)).sign_doc(),
        "option NO_WITH_VETO": lambda: replace(
            doc, message=replace(msg, option=VoteOption.NO_WITH_VETO)
        ).sign_doc(),
        "option ABSTAIN": lambda: replace(doc, message=replace(msg, option=VoteOption.ABSTAIN)).sign_doc(),
        "proposal 8": lambda: replace(doc, message=replace(msg, proposal_id=8)).sign_doc(),
        "proposal 2**64-1": lambda: replace(doc, message=replace(msg, proposal_id=2**64 - 1)).sign_doc(),
        "metadata set": lambda: _with_messages(doc, _any(MSG_VOTE, _vote_value(voter, metadata="ipfs://Qm"))),
        "option unspecified": lambda: _with_messages(doc, _any(MSG_VOTE, _vote_value(voter, option=0))),
        "option 5": lambda: _with_messages(doc, _any(MSG_VOTE, _vote_value(voter, option=5))),
        "a weighted vote": lambda: _with_messages(doc, _any("/cosmos.gov.v1.MsgVoteWeighted", msg.encode())),
        "a gov v1beta1 vote": lambda: _with_messages(doc, _any("/cosmos.gov.v1beta1.MsgVote", msg.encode())),
        "another voter": lambda: replace(
            doc,
            message=replace(msg, delegator=addresses.account_address(COSMOS_HUB.bech32_prefix, _other_key())),
        ).sign_doc(),
    }[change]()


#: Each change to an approved vote YES on proposal 7, and what the refusal names.
VOTE_CHANGES = {
    "option NO": "vote option",
    "option NO_WITH_VETO": "vote option",
    "option ABSTAIN": "vote option",
    "proposal 8": "proposal",
    "proposal 2**64-1": "proposal",
    "metadata set": "MsgVote.metadata is set",
    "option unspecified": "option 0 is not",
    "option 5": "option 5 is not",
    "a weighted vote": "no staking message, reward withdrawal or vote",
    "a gov v1beta1 vote": "no staking message, reward withdrawal or vote",
    "another voter": "voter",
}


def _other_key() -> addresses.CompressedKey:
    return addresses.compressed_key(bytes(OTHER_KEY.public_key.format(compressed=False)))


@pytest.mark.parametrize("change", list(VOTE_CHANGES))
def test_a_votes_approvals_for_another_vote(fam: FamilyRig, change: str) -> None:
    """The approvals of a vote YES on proposal 7, with bytes built by hand: another option, another
    proposal, free-form metadata nobody read, option 0 or 5, a weighted or v1beta1 vote (other
    messages the chain executes), another voter."""
    spec = fam.vote(7, VoteOption.YES)
    tx = _vote_changed(fam, _doc(fam, spec), change)
    e = refused(fam, fam.request(spec, tx, intent_id="i-vote"), TransactionMismatch)
    assert VOTE_CHANGES[change] in str(e), str(e)


@pytest.mark.parametrize("other", ["option NO", "proposal 8"])
def test_a_votes_approvals_under_another_vote_spec(fam: FamilyRig, other: str) -> None:
    """The approvals of a vote YES on proposal 7 sent with the spec of a vote NO on 7 (or YES on 8)
    and that vote's honest bytes: the option and the proposal are in the digest approvers signed."""
    approved = fam.vote(7, VoteOption.YES)
    spec = fam.vote(7, VoteOption.NO) if other == "option NO" else fam.vote(8, VoteOption.YES)
    request = fam.request(
        spec, fam.cosmos_tx(spec), intent_id="i-vote", approvals=fam.approvals(approved, "i-vote")
    )
    e = refused(fam, request, ApprovalsInsufficient)
    assert "another intent" in str(e.details["not_counted"])  # type: ignore[attr-defined]


# --- 2. one action's approvals for another action --------------------------------------------------


def _cross(fam: FamilyRig, case: str) -> tuple[IntentSpec, bytes, str]:
    """(approved spec, bytes the worker host sends, what the refusal names)."""
    vote, claim = fam.vote(), fam.claim()
    return {
        "vote -> delegation": (vote, fam.cosmos_tx(fam.delegate()), "message type"),
        "vote -> undelegation": (vote, fam.cosmos_tx(fam.undelegate()), "message type"),
        "vote -> claim": (vote, fam.cosmos_tx(claim), "message type"),
        "claim -> delegation": (claim, fam.cosmos_tx(fam.delegate()), "message type"),
        "claim -> undelegation": (claim, fam.cosmos_tx(fam.undelegate()), "message type"),
        "claim -> vote": (claim, fam.cosmos_tx(vote), "message type"),
        "delegation -> vote": (fam.delegate(), fam.cosmos_tx(vote), "message type"),
        "undelegation -> claim": (fam.undelegate(), fam.cosmos_tx(claim), "message type"),
        "claim A -> claim B": (claim, fam.cosmos_tx(fam.claim(OTHER_VALIDATOR)), "validator"),
        "claim A -> the attacker's validator": (
            claim,
            _with_messages(
                _doc(fam, claim),
                _any(MSG_WITHDRAW_DELEGATOR_REWARD, _claim_value(fam.cosmos_address, ATTACKER_VALIDATOR)),
            ),
            "validator",
        ),
    }[case]


CROSS = [
    "vote -> delegation",
    "vote -> undelegation",
    "vote -> claim",
    "claim -> delegation",
    "claim -> undelegation",
    "claim -> vote",
    "delegation -> vote",
    "undelegation -> claim",
    "claim A -> claim B",
    "claim A -> the attacker's validator",
]


@pytest.mark.parametrize("case", CROSS)
def test_one_actions_approvals_for_another_actions_bytes(fam: FamilyRig, case: str) -> None:
    """A vote's approvals with a delegation's, an undelegation's or a claim's bytes (the
    vote's step name), a claim's with a delegation's, an undelegation's or a vote's, a
    delegation's or undelegation's with a vote's or claim's, and a claim from validator A's
    with a claim from B, or from the attacker's validator."""
    spec, tx, reason = _cross(fam, case)
    e = refused(fam, fam.request(spec, tx, intent_id="i-cross-action"), TransactionMismatch)
    assert reason in str(e), str(e)


def test_a_claim_whose_delegator_is_not_the_vault(fam: FamilyRig) -> None:
    """An approved claim from the vault's validator whose message names another delegator (the
    signer key still the vault's): the rewards of someone else's delegation, paid to their
    withdraw address, with the vault's signature on it."""
    spec = fam.claim()
    other = addresses.account_address(COSMOS_HUB.bech32_prefix, _other_key())
    tx = _with_messages(_doc(fam, spec), _any(MSG_WITHDRAW_DELEGATOR_REWARD, _claim_value(other, VALIDATOR)))
    e = refused(fam, fam.request(spec, tx, intent_id="i-claim-other"), TransactionMismatch)
    assert "delegator" in str(e)


def test_an_approved_claim_from_a_validator_off_the_allowlist(fam: FamilyRig) -> None:
    """Guard: both approvers approved a claim from the attacker's validator; the claims rule's
    validator allowlist refuses it at the signer (a claim's validator is a fact rules check)."""
    spec = fam.claim(ATTACKER_VALIDATOR)
    e = refused(fam, fam.request(spec, fam.cosmos_tx(spec), intent_id="i-claim-attacker"), PolicyRefuses)
    assert ATTACKER_VALIDATOR in str(e)


@pytest.mark.parametrize(
    ("action", "step"),
    [
        ("vote", "claim_rewards"),
        ("vote", "stake"),
        ("claim", "vote"),
        ("claim", "unstake"),
        ("delegate", "vote"),
    ],
)
def test_an_amountless_step_name_for_another_step(fam: FamilyRig, action: str, step: str) -> None:
    """An approved vote's or claim's bytes under another action's step name (a second signature of
    one approval set), and a delegation's under the vote's step."""
    spec = {"vote": fam.vote(), "claim": fam.claim(), "delegate": fam.delegate()}[action]
    e = refused(fam, fam.request(spec, fam.cosmos_tx(spec), intent_id="i-step", step=step), BadSignRequest)
    assert "is not a step of" in str(e)


# --- 3. a claim or a vote that moves value -----------------------------------------------------------


@pytest.mark.parametrize("action", ["claim", "vote"])
def test_a_claim_or_vote_with_something_smuggled(fam: FamilyRig, action: str) -> None:
    """The approved claim's or vote's SignDoc with each thing custos never builds (a MsgSend
    beside or instead, timeouts, unordered, extension options, two signers, multisig, amino mode,
    an ethsecp256k1 key, fee granter, tip, unknown or default fields, trailing bytes)."""
    spec = fam.claim() if action == "claim" else fam.vote()
    doc = _doc(fam, spec)
    for how, reason in SMUGGLED.items():
        e = refused(fam, fam.request(spec, _smuggled(doc, how), intent_id="i-smuggled"), TransactionMismatch)
        assert reason in str(e), (how, str(e))


def _signer_info_of(doc: UnsignedTx) -> bytes:
    """``doc``'s one SignerInfo, as custos writes it."""
    any_key = _any("/cosmos.crypto.secp256k1.PubKey", Writer().bytes_(1, doc.public_key).finish())
    mode_info = Writer().message(1, Writer().uint(1, cosmos_tx.SIGN_MODE_DIRECT).finish()).finish()
    return Writer().message(1, any_key).message(2, mode_info).uint(3, doc.sequence).finish()


def _with_fee(doc: UnsignedTx, fee: bytes) -> bytes:
    """``doc``'s SignDoc with its auth info's ``Fee`` replaced by ``fee``."""
    auth = Writer().message(1, _signer_info_of(doc)).message(2, fee).finish()
    return (
        Writer()
        .bytes_(1, doc.body_bytes())
        .bytes_(2, auth)
        .string(3, doc.chain_id)
        .uint(4, doc.account_number)
        .finish()
    )


def _moving(fam: FamilyRig, doc: UnsignedTx, how: str) -> bytes:
    """``doc`` (an approved claim's or vote's SignDoc) made to move value, to have another account
    pay, or to read two ways."""
    vault, msg = fam.cosmos_address, doc.message
    coin = Coin("uatom", ATOM).encode()
    fee_coin = Coin("uatom", 5_000).encode()
    if how == "an amount on the message":
        return _with_messages(doc, _any(msg.type_url, msg.encode() + Writer().message(3, coin).finish()))
    if how == "a delegation beside it":
        delegation = Writer().string(1, vault).string(2, ATTACKER_VALIDATOR).message(3, coin).finish()
        return _with_messages(doc, _message_of(doc), _any(MSG_DELEGATE, delegation))
    if how == "the same message twice":
        return _with_messages(doc, _message_of(doc), _message_of(doc))
    if how == "a MsgSend of the vault's beside it":
        send = Writer().string(1, vault).string(2, vault).message(3, coin).finish()
        return _with_messages(doc, _message_of(doc), _any(MSG_SEND, send))
    if how == "an Any with a third field":
        return _with_messages(doc, _message_of(doc) + Writer().string(3, "x").finish())
    if how == "an Any whose value has a trailing field":
        return _with_messages(doc, _any(msg.type_url, msg.encode() + Writer().uint(9, 1).finish()))
    if how == "an Any whose value has a trailing zero byte":
        return _with_messages(doc, _any(msg.type_url, msg.encode() + b"\x00"))
    if how == "a type URL with a host":
        return _with_messages(doc, _any("type.googleapis.com" + msg.type_url, msg.encode()))
    if how == "a fee payer":
        return _with_fee(doc, Writer().message(1, fee_coin).uint(2, doc.gas_limit).string(3, vault).finish())
    if how == "two fee coins":
        fee = Writer().message(1, fee_coin).message(1, Coin("uatom", 1).encode()).uint(2, doc.gas_limit)
        return _with_fee(doc, fee.finish())
    if how == "a memo of 257 characters":
        return _with_messages(doc, _message_of(doc), memo="x" * 257)
    if how == "a memo with a line break":
        return _with_messages(doc, _message_of(doc), memo="ok\nsend 5 ATOM to cosmos1...")
    if how == "a memo outside ASCII":
        return _with_messages(doc, _message_of(doc), memo="\u202eMOTA 5")
    raise AssertionError(how)


#: Each way to make an approved claim or vote move value (or read two ways), and the refusal's
#: words for it (a claim's message has 2 fields, a vote's 4: field 3 is a vote's option).
MOVING = {
    "an amount on the message": ("has unknown field 3", "option has wire type 2"),
    "a delegation beside it": ("2 messages", "2 messages"),
    "the same message twice": ("2 messages", "2 messages"),
    "a MsgSend of the vault's beside it": ("2 messages", "2 messages"),
    "an Any with a third field": (
        "TxBody.messages has unknown field 3",
        "TxBody.messages has unknown field 3",
    ),
    "an Any whose value has a trailing field": ("has unknown field 9", "has unknown field 9"),
    "an Any whose value has a trailing zero byte": ("unknown field 0", "unknown field 0"),
    "a type URL with a host": ("no staking message", "no staking message"),
    "a fee payer": ("Fee.payer is set", "Fee.payer is set"),
    "two fee coins": ("more than one coin", "more than one coin"),
    "a memo of 257 characters": ("memo is not at most 256", "memo is not at most 256"),
    "a memo with a line break": ("printable ASCII", "printable ASCII"),
    "a memo outside ASCII": ("printable ASCII", "printable ASCII"),
}


@pytest.mark.parametrize("how", list(MOVING))
@pytest.mark.parametrize("action", ["claim", "vote"])
def test_a_claim_or_vote_that_moves_value(fam: FamilyRig, action: str, how: str) -> None:
    """The approved claim's or vote's SignDoc carrying an amount on its message, a delegation to the
    attacker's validator, its own message again or a MsgSend beside it; an ``Any`` with a third
    field, a value with a trailing field or byte, a type URL with a host; a fee payer, two fee
    coins; a memo that is too long, spans lines or hides text outside ASCII."""
    spec = fam.claim() if action == "claim" else fam.vote()
    tx = _moving(fam, _doc(fam, spec), how)
    e = refused(fam, fam.request(spec, tx, intent_id="i-moving"), TransactionMismatch)
    reason = MOVING[how][0 if action == "claim" else 1]
    assert reason in str(e), str(e)


@pytest.mark.parametrize("action", ["claim", "vote"])
def test_a_claim_or_vote_paying_above_the_chains_fee_cap(fam: FamilyRig, action: str) -> None:
    """A claim or a vote moves no amount, but its fee leaves the vault: 1 uatom above the chain's
    cap (1 ATOM) is refused, as for a delegation."""
    spec = fam.claim() if action == "claim" else fam.vote()
    tx = replace(_doc(fam, spec), fee=Coin("uatom", COSMOS_HUB.max_fee_wei + 1)).sign_doc()
    refused(fam, fam.request(spec, tx, intent_id="i-fee"), FeeAboveCap)


# --- 4. velocity and amountless actions ---------------------------------------------------------------


def _force_amount(spec: IntentSpec, amount: int) -> IntentSpec:
    """``spec`` with an amount its constructor would refuse (the worker host sends any spec; the
    approvers were shown it): a vote or claim "of" ``amount``."""
    forced = replace(spec)
    object.__setattr__(forced, "amount", amount)
    return forced


def test_amountless_approvals_do_not_move_value_past_a_full_velocity(fam: FamilyRig) -> None:
    """The vault's 10 ATOM a day is signed (a further uatom is refused). A vote and a claim still
    sign (they count against no velocity), but their approvals get nothing that moves value: not a
    delegation's bytes, not an undelegation's, not under a vote whose spec carries an amount (which
    the approvers would have signed, and which the policy does not count), and afterwards the
    window is as full as before."""
    full = fam.delegate(VELOCITY)
    fam.sign(fam.request(full, fam.cosmos_tx(full, sequence=0), intent_id="i-full"))
    one_more = fam.delegate(1)
    e = refused(
        fam, fam.request(one_more, fam.cosmos_tx(one_more, sequence=1), intent_id="i-over"), PolicyRefuses
    )
    assert "velocity" in str(e)
    vote, claim = fam.vote(), fam.claim()
    fam.sign(fam.request(vote, fam.cosmos_tx(vote, sequence=1), intent_id="i-vote"))
    fam.sign(fam.request(claim, fam.cosmos_tx(claim, sequence=2), intent_id="i-claim"))
    five = fam.delegate(5 * ATOM)
    for spec, tx, intent_id in (
        (vote, fam.cosmos_tx(five, sequence=3), "i-vote-2"),
        (claim, fam.cosmos_tx(fam.undelegate(), sequence=3), "i-claim-2"),
        (_force_amount(vote, 5 * ATOM), fam.cosmos_tx(five, sequence=3), "i-vote-amount"),
        (_force_amount(claim, 5 * ATOM), fam.cosmos_tx(five, sequence=3), "i-claim-amount"),
        (_force_amount(vote, 5 * ATOM), fam.cosmos_tx(vote, sequence=3), "i-vote-amount-2"),
    ):
        refused(fam, fam.request(spec, tx, intent_id=intent_id), TransactionMismatch)
    refused(
        fam, fam.request(one_more, fam.cosmos_tx(one_more, sequence=3), intent_id="i-over-2"), PolicyRefuses
    )
    assert fam.records() == 3


def test_amountless_signatures_leave_the_velocity_room_as_it_was(fam: FamilyRig) -> None:
    """6 ATOM delegated, then a vote and a claim signed: 4 ATOM of room are left, not a uatom more
    (a signed vote or claim frees no room and takes none)."""
    six, vote, claim = fam.delegate(6 * ATOM), fam.vote(), fam.claim()
    fam.sign(fam.request(six, fam.cosmos_tx(six, sequence=0), intent_id="i-six"))
    fam.sign(fam.request(vote, fam.cosmos_tx(vote, sequence=1), intent_id="i-vote"))
    fam.sign(fam.request(claim, fam.cosmos_tx(claim, sequence=2), intent_id="i-claim"))
    over = fam.delegate(4 * ATOM + 1)
    refused(fam, fam.request(over, fam.cosmos_tx(over, sequence=3), intent_id="i-over"), PolicyRefuses)
    rest = fam.delegate(4 * ATOM)
    assert fam.sign(fam.request(rest, fam.cosmos_tx(rest, sequence=3), intent_id="i-rest")).signed_tx


# --- 5. the signer key the chain service now writes ---------------------------------------------------


def _other_parity(key: bytes) -> addresses.CompressedKey:
    """The vault key's x with the other y: another valid point (the key's negation)."""
    return addresses.compressed_key(bytes([key[0] ^ 1]) + key[1:])


@pytest.mark.parametrize("key", ["another key", "the vault key negated"])
@pytest.mark.parametrize("action", ["claim", "vote"])
def test_a_signer_key_the_chain_service_chose(fam: FamilyRig, action: str, key: str) -> None:
    """The chain service builds with the vault public key it was handed (``BuildTransaction``); a
    compromised one writes another key into the SignerInfo, or the vault key's x with the other
    parity, the message's voter or delegator still the vault. The signer derives the sender from
    its own HSM key, and refuses (a SignDoc naming another key never verifies on chain, and would
    hold the vault's sequence: finding 8)."""
    spec = fam.claim() if action == "claim" else fam.vote()
    doc = _doc(fam, spec)
    other = _other_key() if key == "another key" else _other_parity(doc.public_key)
    e = refused(
        fam,
        fam.request(spec, replace(doc, public_key=other).sign_doc(), intent_id="i-key"),
        TransactionMismatch,
    )
    assert "signer key" in str(e)


@pytest.mark.parametrize("key", ["65 bytes", "33 bytes off the curve", "a 0x04 prefix on 33 bytes"])
def test_a_signer_key_custos_never_writes(fam: FamilyRig, key: str) -> None:
    """The vote's SignerInfo with the vault key uncompressed (65 bytes: the SDK reads no such
    secp256k1 key), 33 bytes that are no point, or a 0x04 prefix: refused as unreadable."""
    spec = fam.vote()
    doc = _doc(fam, spec)
    raw = {
        "65 bytes": bytes(fam.vault.public_key),
        "33 bytes off the curve": b"\x02" + b"\xff" * 32,
        "a 0x04 prefix on 33 bytes": b"\x04" + doc.public_key[1:],
    }[key]
    pubkey = _any("/cosmos.crypto.secp256k1.PubKey", Writer().bytes_(1, raw).finish())
    mode_info = Writer().message(1, Writer().uint(1, cosmos_tx.SIGN_MODE_DIRECT).finish()).finish()
    signer = Writer().message(1, pubkey).message(2, mode_info).uint(3, doc.sequence).finish()
    fee = Writer().message(1, Coin("uatom", 5_000).encode()).uint(2, doc.gas_limit).finish()
    auth = Writer().message(1, signer).message(2, fee).finish()
    tx = (
        Writer()
        .bytes_(1, doc.body_bytes())
        .bytes_(2, auth)
        .string(3, doc.chain_id)
        .uint(4, doc.account_number)
        .finish()
    )
    e = refused(fam, fam.request(spec, tx, intent_id="i-raw-key"), TransactionMismatch)
    assert "key" in str(e)


# --- findings ----------------------------------------------------------------------------------------


@pytest.mark.xfail(
    strict=True,
    reason="finding 17: an older approved vote is signed after a newer one on the same proposal, "
    "at a later sequence: the chain counts the vote the approvers replaced",
)
def test_a_superseded_vote_signed_after_the_vote_that_replaced_it(fam: FamilyRig) -> None:
    """Intent A, a vote YES on proposal 7, is approved; later the approvers change their minds and
    approve intent B, a vote NO on 7 (the chain counts an account's last vote). The worker host
    holds A back (it runs the workflows), has B signed at sequence 0, then A, with the approvals it
    read from A's history, at sequence 1, within A's approval window: B lands, then A, and the
    vault votes YES. Safe outcome: the signer refuses a vote on a proposal whose later-submitted
    vote it has already signed (at any sequence), and (not played here) signs a newer vote only at
    a sequence after the older one's."""
    yes, no = fam.vote(7, VoteOption.YES), fam.vote(7, VoteOption.NO)
    a_at, b_at = SUBMITTED - timedelta(minutes=20), SUBMITTED
    fam.sign(fam.request(no, fam.cosmos_tx(no, sequence=0), intent_id="i-vote-b", submitted_at=b_at))
    with pytest.raises(SignerError):
        fam.sign(fam.request(yes, fam.cosmos_tx(yes, sequence=1), intent_id="i-vote-a", submitted_at=a_at))
