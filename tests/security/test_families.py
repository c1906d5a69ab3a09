"""The worker host against the signer's chain families (Ethereum and a Cosmos SDK chain).

The signer decodes and checks every transaction through the family of the intent's chain,
as it configures it; one secp256k1 vault key has an address on each chain. The worker host
holds the ``svc:worker`` certificate (it calls ``Sign`` with any request), the database URL
and every approval that reaches a workflow it runs. Each attack asks for a signature the
approvals do not grant, or one that harms the vault: one family's bytes under the other's
approvals, Cosmos fields the family does not bind, smuggled target params, steps the family
does not define, a second signature for a step, a forged ledger record, a replay key beyond
what the database holds.

A refused attack asserts the typed refusal, its audit record, and that nothing was signed.
An attack that works is a strict xfail that plays it and asserts the safe outcome (findings
8 to 10 in this directory's README).

Most play against ``SignerService`` itself (``families_rig``: the real SoftHSM token, the real
database on SQLite and PostgreSQL, the real audit trail), because the security stack configures
no Cosmos chain; the one played over gRPC uses the stack and its world (``u``'s approvals).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace

import pytest
from eth_account import Account
from eth_utils import keccak
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.chain.devnet import Devnet
from services.chain.ethereum.rpc import RpcError
from services.families import secp256k1
from services.families.config import ChainConfig, ChainFamily
from services.families.cosmos import addresses, wire
from services.families.cosmos.tx import SIGN_MODE_DIRECT, Coin, UnsignedTx
from services.families.cosmos.wire import FieldSpec, Wire, Writer
from services.families.ethereum import contracts
from services.families.ethereum.deposit import ETHER, generate_deposit_data, stake_target
from services.families.ethereum.transactions import UnsignedTransaction
from services.runtime.intent import (
    Action,
    IntentSpec,
    StakeTarget,
    TargetParams,
    UnstakeTarget,
    spec_from_plain,
    spec_to_plain,
)
from services.signer.errors import (
    ApprovalsInsufficient,
    BadSignRequest,
    ConflictingSignature,
    FeeAboveCap,
    LedgerUnverified,
    TransactionMismatch,
)
from services.signer.hsm import Hsm
from services.signer.ledger import record_hash, replace_record
from services.signer.models import SigningRecord
from services.signer.service import SignerService, SignInput
from tests.families.cases import OTHER_KEY
from tests.security.families_rig import (
    ATOM,
    ATTACKER_VALIDATOR,
    COSMOS_HUB,
    ETH_CHAIN,
    ETH_VALIDATOR,
    OTHER_VALIDATOR,
    VALIDATOR,
    FamilyRig,
    family_rig,
)
from tests.security.insiders import WorkerHost, assert_refused
from tests.security.stack import SecurityStack
from tests.security.world import World
from tests.signer.conftest import GWEI

MSG_SEND = "/cosmos.bank.v1beta1.MsgSend"
_SIGN_DOC = {
    1: FieldSpec("body", Wire.LEN),
    2: FieldSpec("auth", Wire.LEN),
    3: FieldSpec("chain_id", Wire.LEN),
    4: FieldSpec("account_number", Wire.VARINT),
}
_TX_RAW = {
    1: FieldSpec("body", Wire.LEN),
    2: FieldSpec("auth", Wire.LEN),
    3: FieldSpec("sigs", Wire.LEN, True),
}


@pytest.fixture
def fam(hsm: Hsm, session_factory: sessionmaker[Session]) -> Iterator[FamilyRig]:
    yield from family_rig(hsm, session_factory)


def refused(fam: FamilyRig, request: SignInput, error: type[Exception]) -> Exception:
    """``request`` is refused with ``error``, audited as such, and nothing is signed."""
    records, audited = fam.records(), len(fam.refusals())
    with pytest.raises(error) as caught:
        fam.sign(request)
    assert fam.records() == records, "a signing record was written"
    refusals = fam.refusals()
    assert len(refusals) == audited + 1, "the refusal was not audited"
    assert refusals[-1]["error"] == error.__name__
    return caught.value


# --- one key, two families -------------------------------------------------------------------


@pytest.mark.parametrize("intent", ["cosmos", "ethereum"])
def test_one_familys_bytes_under_the_other_familys_approvals(fam: FamilyRig, intent: str) -> None:
    """An approved delegation with the bytes of an Ethereum exit of the same key, or an approved
    exit with a Cosmos delegation's SignDoc: the intent's chain's family reads them, and refuses."""
    if intent == "cosmos":
        spec, tx = fam.delegate(), fam.eth_tx(nonce=0)
    else:
        spec, tx = fam.exit(), fam.cosmos_tx(fam.delegate())
    e = refused(fam, fam.request(spec, tx, intent_id="i-cross"), TransactionMismatch)
    assert "not the approved intent" in str(e)


def test_an_approval_set_moved_to_the_other_chain(fam: FamilyRig) -> None:
    """A delegation's approvals for the same intent moved to the Ethereum chain, an exit's moved to
    the Cosmos chain: the chain is in the digest the approvers signed."""
    delegate, exit_ = fam.delegate(), fam.exit()
    cases = [
        (replace(delegate, chain=ETH_CHAIN.name), fam.approvals(delegate, "i-moved"), fam.eth_tx()),
        (replace(exit_, chain=COSMOS_HUB.name), fam.approvals(exit_, "i-moved"), fam.cosmos_tx(delegate)),
    ]
    for spec, approvals, tx in cases:
        request = fam.request(spec, tx, intent_id="i-moved", approvals=approvals)
        e = refused(fam, request, ApprovalsInsufficient)
        assert "another intent" in str(e.details["not_counted"])  # type: ignore[attr-defined]


def test_an_ethereum_validator_on_the_cosmos_chain(fam: FamilyRig) -> None:
    """An approved undelegation on the Cosmos chain naming an Ethereum validator (a BLS pubkey),
    and a SignDoc naming it too: the Cosmos family refuses the intent before the bytes."""
    validator = "0x" + ETH_VALIDATOR.hex()
    spec = fam.undelegate(validator=validator)
    doc = fam.cosmos_doc(fam.undelegate())
    tx = replace(doc, message=replace(doc.message, validator=validator)).sign_doc()
    e = refused(fam, fam.request(spec, tx, intent_id="i-eth-validator"), TransactionMismatch)
    assert "bech32" in str(e)


def test_one_keys_nonce_and_sequence_stay_apart_and_the_txraw_is_what_was_signed(fam: FamilyRig) -> None:
    """Guard. The vault key signs Ethereum nonce 0 and Cosmos sequence 0, neither blocking the other
    (the ledger keys conflicts by chain); each signature is over its own family's digest, and the
    TxRaw carries exactly the body and auth info of the SignDoc signed: no other bytes go out."""
    exit_, delegate = fam.exit(), fam.delegate()
    eth_tx, cosmos_tx = fam.eth_tx(nonce=0), fam.cosmos_tx(delegate, sequence=0)
    eth = fam.sign(fam.request(exit_, eth_tx, intent_id="i-eth"))
    atom = fam.sign(fam.request(delegate, cosmos_tx, intent_id="i-atom"))
    assert Account.recover_transaction(eth.signed_tx) == fam.address(ETH_CHAIN.name)
    assert secp256k1.verify(keccak(eth_tx), eth.signature, fam.vault.public_key)
    assert secp256k1.verify(hashlib.sha256(cosmos_tx).digest(), atom.signature, fam.vault.public_key)
    doc, raw = wire.read(cosmos_tx, _SIGN_DOC, "SignDoc"), wire.read(atom.signed_tx, _TX_RAW, "TxRaw")
    assert (raw["body"], raw["auth"], raw["sigs"]) == (doc["body"], doc["auth"], [atom.signature])
    assert atom.tx_hash == hashlib.sha256(atom.signed_tx).hexdigest().upper()
    assert fam.records() == 2


# --- Cosmos bytes ------------------------------------------------------------------------------


@pytest.mark.parametrize("chain_id", ["cosmoshub-5", "31337", ""])
def test_a_cosmos_signdoc_for_another_chain(fam: FamilyRig, chain_id: str) -> None:
    """The approved delegation in a SignDoc for another chain id (another Cosmos chain, the
    Ethereum chain's id, none): a signature there would be valid on that chain."""
    spec = fam.delegate()
    tx = fam.cosmos_doc(spec, chain_id=chain_id).sign_doc()
    e = refused(fam, fam.request(spec, tx, intent_id="i-chain-id"), TransactionMismatch)
    assert "chain id" in str(e)


def test_a_cosmos_signdoc_whose_signer_or_delegator_is_not_the_vault(fam: FamilyRig) -> None:
    """The delegation with another key in its SignerInfo (the delegator still the vault), and
    with another delegator (the signer key still the vault's)."""
    spec = fam.delegate()
    other_key = addresses.compressed_key(bytes(OTHER_KEY.public_key.format(compressed=False)))
    other = addresses.account_address(COSMOS_HUB.bech32_prefix, other_key)
    doc = fam.cosmos_doc(spec)
    for tx, what in (
        (replace(doc, public_key=other_key).sign_doc(), "signer key"),
        (replace(doc, message=replace(doc.message, delegator=other)).sign_doc(), "delegator"),
    ):
        e = refused(fam, fam.request(spec, tx, intent_id="i-signer"), TransactionMismatch)
        assert what in str(e)


@pytest.mark.parametrize(
    "change",
    ["validator", "amount", "undelegate", "redelegate", "amount denom", "fee denom"],
)
def test_a_cosmos_signdoc_doing_more_than_the_approved_delegation(fam: FamilyRig, change: str) -> None:
    """The approved 5 ATOM delegation to the vault's validator, signed as: a delegation to the
    attacker's validator, one more uatom, an undelegation, a redelegation to the attacker's
    validator, an amount or a fee in another denomination."""
    spec = fam.delegate()
    doc = fam.cosmos_doc(spec)
    msg = doc.message
    changed = {
        "validator": replace(doc, message=replace(msg, validator=ATTACKER_VALIDATOR)),
        "amount": replace(doc, message=replace(msg, amount=Coin("uatom", spec.amount + 1))),
        "undelegate": replace(doc, message=replace(msg, type_url="/cosmos.staking.v1beta1.MsgUndelegate")),
        "redelegate": replace(
            doc,
            message=replace(
                msg, type_url="/cosmos.staking.v1beta1.MsgBeginRedelegate", destination=ATTACKER_VALIDATOR
            ),
        ),
        "amount denom": replace(doc, message=replace(msg, amount=Coin("stake", spec.amount))),
        "fee denom": replace(
            doc, fee=Coin("ibc/27394FB092D2ECCD56123C74F36E4C1F926001CEADA9CA97EA622B25F41E5EB2", 1)
        ),
    }[change]
    refused(fam, fam.request(spec, changed.sign_doc(), intent_id="i-more"), TransactionMismatch)


def test_a_cosmos_fee_above_the_chains_cap(fam: FamilyRig) -> None:
    """The approved delegation paying 1 uatom more than the chain's fee cap (1 ATOM)."""
    spec = fam.delegate()
    tx = fam.cosmos_doc(spec, fee=Coin("uatom", COSMOS_HUB.max_fee_wei + 1)).sign_doc()
    refused(fam, fam.request(spec, tx, intent_id="i-fee"), FeeAboveCap)


def _any(type_url: str, value: bytes) -> bytes:
    return Writer().string(1, type_url).bytes_(2, value).finish()


def _signer_info(
    key: bytes,
    *,
    mode: int = SIGN_MODE_DIRECT,
    key_type: str = "/cosmos.crypto.secp256k1.PubKey",
    multi: bool = False,
) -> bytes:
    any_key = _any(key_type, Writer().bytes_(1, key).finish())
    if multi:
        mode_info = Writer().message(2, Writer().finish()).finish()
    else:
        mode_info = Writer().message(1, Writer().uint(1, mode).finish()).finish()
    return Writer().message(1, any_key).message(2, mode_info).finish()


def _smuggled(doc: UnsignedTx, how: str) -> bytes:
    """``doc``'s SignDoc with something custos never builds, encoded as a chain would read it."""
    body, auth = doc.body_bytes(), doc.auth_info_bytes()
    message = _any(doc.message.type_url, doc.message.encode())
    send = _any(MSG_SEND, Writer().string(1, doc.message.delegator).string(2, doc.message.delegator).finish())
    fee = Writer().message(1, Coin("uatom", 5_000).encode()).uint(2, doc.gas_limit)
    key = doc.public_key
    if how == "a MsgSend beside the delegation":
        body = Writer().message(1, message).message(1, send).finish()
    elif how == "a MsgSend instead":
        body = Writer().message(1, send).finish()
    elif how == "a timeout height":
        body = Writer().message(1, message).uint(3, 10**7).finish()
    elif how == "unordered":
        body = Writer().message(1, message).uint(4, 1).finish()
    elif how == "an extension option":
        body = Writer().message(1, message).message(1023, _any(MSG_SEND, b"")).finish()
    elif how == "a non-critical extension option":
        body = Writer().message(1, message).message(2047, _any(MSG_SEND, b"")).finish()
    elif how == "a second signer":
        auth = (
            Writer()
            .message(1, _signer_info(key))
            .message(1, _signer_info(key))
            .message(2, fee.finish())
            .finish()
        )
    elif how == "a multisig signer":
        auth = Writer().message(1, _signer_info(key, multi=True)).message(2, fee.finish()).finish()
    elif how == "amino JSON sign mode":
        auth = Writer().message(1, _signer_info(key, mode=127)).message(2, fee.finish()).finish()
    elif how == "an ethsecp256k1 signer key":
        info = _signer_info(key, key_type="/ethermint.crypto.v1.ethsecp256k1.PubKey")
        auth = Writer().message(1, info).message(2, fee.finish()).finish()
    elif how == "a fee granter":
        auth = (
            Writer()
            .message(1, _signer_info(key))
            .message(2, fee.string(4, doc.message.delegator).finish())
            .finish()
        )
    elif how == "a tip":
        auth = auth + Writer().message(3, Coin("uatom", 1).encode()).finish()
    signed = (
        Writer().bytes_(1, body).bytes_(2, auth).string(3, doc.chain_id).uint(4, doc.account_number).finish()
    )
    if how == "an unknown SignDoc field":
        signed += Writer().uint(5, 1).finish()
    elif how == "a default value written out":
        signed = replace(doc, account_number=0).sign_doc() + b"\x20\x00"  # account_number = 0, written
    elif how == "trailing garbage":
        signed += b"\x00"
    return signed


#: Each smuggled thing, and what the family's reader says of it (the refusal names it).
SMUGGLED = {
    "a MsgSend beside the delegation": "2 messages",
    "a MsgSend instead": "no staking message",
    "a timeout height": "timeout_height is set",
    "unordered": "unordered is set",
    "an extension option": "extension_options is set",
    "a non-critical extension option": "non_critical_extension_options is set",
    "a second signer": "2 signers",
    "a multisig signer": "ModeInfo.multi is set",
    "amino JSON sign mode": "not SIGN_MODE_DIRECT",
    "an ethsecp256k1 signer key": "is not a /cosmos.crypto.secp256k1.PubKey",
    "a fee granter": "Fee.granter is set",
    "a tip": "AuthInfo.tip is set",
    "an unknown SignDoc field": "unknown field 5",
    "a default value written out": "not canonically encoded",
    "trailing garbage": "unknown field 0",
}


def test_a_cosmos_signdoc_with_something_smuggled(fam: FamilyRig) -> None:
    """The approved delegation's SignDoc with one thing custos never builds (each a way to send
    funds, to change who pays or signs, or to read the same bytes two ways): all refused."""
    spec = fam.delegate()
    doc = fam.cosmos_doc(spec)
    for how, reason in SMUGGLED.items():
        e = refused(fam, fam.request(spec, _smuggled(doc, how), intent_id="i-smuggled"), TransactionMismatch)
        assert reason in str(e), (how, str(e))


def test_a_signed_cosmos_step_asked_again_at_another_sequence(fam: FamilyRig) -> None:
    """Guard against a second spend: the delegation, signed at sequence 0, asked again at sequence 1
    (both could land: two delegations), is refused; the same bytes replay the one signature."""
    spec = fam.delegate()
    first = fam.sign(fam.request(spec, fam.cosmos_tx(spec, sequence=0), intent_id="i-once"))
    again = fam.sign(fam.request(spec, fam.cosmos_tx(spec, sequence=0), intent_id="i-once"))
    assert again.replayed and again.signature == first.signature
    refused(fam, fam.request(spec, fam.cosmos_tx(spec, sequence=1), intent_id="i-once"), ConflictingSignature)
    assert fam.records() == 1


# --- steps -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "step"),
    [
        ("undelegate", "unbonding"),
        ("undelegate", "stake"),
        ("delegate", "unstake"),
        ("delegate", "restake"),
        ("exit", "unbonding"),
        ("exit", "stake"),
    ],
)
def test_a_step_the_family_does_not_sign(fam: FamilyRig, action: str, step: str) -> None:
    """The approved intent's bytes under another step name (the WAIT step of a Cosmos undelegation,
    another action's step): one approval set, one signature per step the family defines."""
    spec = {"undelegate": fam.undelegate(), "delegate": fam.delegate(), "exit": fam.exit()}[action]
    tx = fam.eth_tx() if action == "exit" else fam.cosmos_tx(spec)
    e = refused(fam, fam.request(spec, tx, intent_id="i-step", step=step), BadSignRequest)
    assert "is not a step of" in str(e)


# --- target params -------------------------------------------------------------------------------


def test_params_on_a_cosmos_target(fam: FamilyRig) -> None:
    """An approved delegation whose target carries params (nothing on Cosmos reads them): refused,
    so approvers never approve data that is silently dropped."""
    spec = replace(fam.delegate(), target=StakeTarget(VALIDATOR, TargetParams.of({"memo": b"x"})))
    e = refused(
        fam, fam.request(spec, fam.cosmos_tx(fam.delegate()), intent_id="i-params"), TransactionMismatch
    )
    assert "takes no params" in str(e)


def test_ethereum_params_missing_or_smuggled(fam: FamilyRig) -> None:
    """A 32 ETH deposit approved without its deposit data, with a fifth param beside it, and an exit
    approved with params: the deposit transaction (or exit) is refused under each."""
    vault = fam.address(ETH_CHAIN.name)
    deposit = generate_deposit_data(
        withdrawal_address=bytes.fromhex(vault[2:]),
        amount_wei=32 * ETHER,
        genesis_fork_version=ETH_CHAIN.fork_version_bytes,
    ).data
    target = stake_target(deposit)
    assert target.params is not None
    d = deposit
    calldata = contracts.deposit_calldata(
        contracts.DepositCall(d.pubkey, d.withdrawal_credentials, d.signature, d.deposit_data_root)
    )
    tx = UnsignedTransaction(
        chain_id=ETH_CHAIN.evm_chain_id,
        nonce=0,
        max_priority_fee_per_gas=GWEI,
        max_fee_per_gas=2 * GWEI,
        gas=200_000,
        to=bytes.fromhex(ETH_CHAIN.deposit_contract[2:]),
        value=32 * ETHER,
        data=calldata,
    ).encode()
    vault_id = fam.vault.vault_id
    bare = IntentSpec(Action.STAKE, ETH_CHAIN.name, vault_id, 32 * ETHER, StakeTarget(target.validator))
    extra = replace(
        bare,
        target=StakeTarget(
            target.validator, TargetParams(tuple(sorted((*target.params.fields, ("note", b"\x01")))))
        ),
    )
    for spec in (bare, extra):
        refused(fam, fam.request(spec, tx, intent_id="i-deposit"), TransactionMismatch)
    exit_ = fam.exit()
    params = TargetParams.of({"amount": b"\x00"})
    with_params = replace(exit_, target=UnstakeTarget("0x" + ETH_VALIDATOR.hex(), params))
    refused(fam, fam.request(with_params, fam.eth_tx(), intent_id="i-exit-params"), TransactionMismatch)
    # and the honest deposit signs: what was refused was the params, not the transaction
    assert fam.sign(fam.request(replace(bare, target=target), tx, intent_id="i-deposit-ok")).signed_tx


def test_two_spellings_of_params_are_two_intents(fam: FamilyRig) -> None:
    """No params and empty params, and a stored plain spec read through the pre-v3 reader with a
    nested object under a key it does not know: each is another spec, so another digest, and the
    approvals of the first count for none of the others."""
    spec = fam.exit()
    approvals = fam.approvals(spec, "i-spelling")
    plain = spec_to_plain(spec)
    legacy = spec_from_plain({**plain, "target": {**plain["target"], "params": None, "extra": {"a": "00"}}})
    assert legacy.target.params == TargetParams.of({"a": b"\x00"})  # type: ignore[union-attr]
    empty = replace(spec, target=UnstakeTarget("0x" + ETH_VALIDATOR.hex(), TargetParams()))
    for other in (empty, legacy):
        request = fam.request(other, fam.eth_tx(), intent_id="i-spelling", approvals=approvals)
        refused(fam, request, ApprovalsInsufficient)


# --- the ledger --------------------------------------------------------------------------------------


@pytest.mark.parametrize("signature", ["a 65th byte", "another digest"])
def test_a_record_appended_with_a_signature_the_hsm_made(
    fam: FamilyRig, hsm: Hsm, session_factory: sessionmaker[Session], signature: str
) -> None:
    """The worker host appends a well-linked record claiming another delegation at sequence 1, with
    the Cosmos record's real signature plus a 65th byte (``verify`` ignores it: the digest is one the
    ledger holds), or with the Ethereum record's signature claimed over a new digest (not the HSM key's
    signature of it). A signer process that reads it signs nothing (LedgerUnverified, naming why).
    Only a signature the HSM made over a digest no record holds would pass, and the signer releases
    each one once, recorded; with the head anchored on the token, any append is refused too."""
    delegate = fam.delegate()
    fam.sign(fam.request(fam.exit(), fam.eth_tx(), intent_id="i-eth"))
    fam.sign(fam.request(delegate, fam.cosmos_tx(delegate), intent_id="i-atom"))
    with session_factory() as s:
        eth, atom = s.scalars(select(SigningRecord).order_by(SigningRecord.ledger_seq)).all()
        if signature == "a 65th byte":  # the Cosmos record's own signature, as a legacy record carries it
            sig, digest = bytes(atom.signature) + b"\x01", bytes(atom.signing_digest)
        else:  # the Ethereum record's signature, claimed over a digest the ledger does not hold
            sig, digest = bytes(eth.signature), hashlib.sha256(b"a transaction nobody approved").digest()
        forged = replace_record(
            atom,
            record_id="sig_forged",
            intent_id="i-forged",
            nonce=1,
            signature=sig,
            signing_digest=digest,
            ledger_seq=atom.ledger_seq + 1,
            prev_hash=atom.record_hash,
        )
        forged.record_hash = record_hash(forged)
        s.add(forged)
        s.commit()
    second = SignerService(
        hsm=hsm,
        sessions=session_factory,
        policy=fam.policy,
        audit=fam.audit,
        chains=[ETH_CHAIN, COSMOS_HUB],
    )
    try:
        other = fam.delegate(3 * ATOM, OTHER_VALIDATOR)
        why = "repeats a signature" if signature == "a 65th byte" else "is not the signer's"
        with pytest.raises(LedgerUnverified, match=why):
            second.sign_blocking(
                fam.request(other, fam.cosmos_tx(other, sequence=2), intent_id="i-next"), "svc:worker"
            )
    finally:
        second.close()


# --- findings ----------------------------------------------------------------------------------------


def _still_moves(fam: FamilyRig, spec: IntentSpec, good_tx: bytes, intent_id: str, next_tx: bytes) -> None:
    """The safe outcome after a step was signed as a transaction no node will include: the vault can
    still move on that chain, either by the step's valid transaction at the same replay key (only one
    of the two can land) or by the next approved intent there."""
    try:
        fam.sign(fam.request(spec, good_tx, intent_id=intent_id))
        return
    except ConflictingSignature:
        pass
    other = replace(spec, amount=spec.amount // 2)
    fam.sign(fam.request(other, next_tx, intent_id=intent_id + "-next"))


@pytest.mark.parametrize("invalid", ["another account number", "gas limit 1", "no fee"])
def test_a_never_valid_cosmos_signature_freezes_the_vault(fam: FamilyRig, invalid: str) -> None:
    """The worker host, holding an approved delegation's approvals, has its step signed with the
    vault's sequence but an account number that is not the vault's (the signature can never verify
    on chain), a gas limit below what the ante handler spends, or no fee (below every validator's
    minimum gas price). No node accepts it, so the sequence is never spent; the step is bound to it
    (no Cosmos replacement) and the sequence too (NonceReused): nothing signs for the vault there."""
    spec = fam.delegate()
    bad = {
        "another account number": {"account_number": 999_999},
        "gas limit 1": {"gas_limit": 1},
        "no fee": {"fee": 0},
    }[invalid]
    out = fam.sign(fam.request(spec, fam.cosmos_tx(spec, sequence=0, **bad), intent_id="i-frozen"))  # type: ignore[arg-type]
    assert out.signed_tx and not out.replayed
    other = replace(spec, amount=spec.amount // 2)
    _still_moves(fam, spec, fam.cosmos_tx(spec, sequence=0), "i-frozen", fam.cosmos_tx(other, sequence=0))


def test_an_ethereum_gas_limit_no_node_accepts_freezes_the_vault(fam: FamilyRig, devnet: Devnet) -> None:
    """The approved exit signed with gas 1 (the fee ceiling is tiny, so no cap objects). anvil refuses
    it (intrinsic gas too low): the nonce is never spent, a bump must keep the gas, and the next
    intent at that nonce is NonceReused."""
    spec = fam.exit()
    out = fam.sign(fam.request(spec, fam.eth_tx(nonce=0, gas=1), intent_id="i-gas"))
    vault = fam.address(ETH_CHAIN.name)
    devnet.fund(vault, ETHER)
    with pytest.raises(RpcError) as caught:
        devnet.rpc.call_sync("eth_sendRawTransaction", ["0x" + out.signed_tx.hex()])
    assert "gas" in caught.value.message.lower()
    bumped = fam.eth_tx(nonce=0, max_fee=3 * GWEI, tip=2 * GWEI)
    _still_moves(fam, spec, bumped, "i-gas", fam.eth_tx(nonce=0, amount_gwei=16 * 10**9))


def test_a_cosmos_chain_left_at_the_default_fee_cap(hsm: Hsm, session_factory: sessionmaker[Session]) -> None:
    """An operator configures the Cosmos chain without a fee cap (as ``tests/signer``'s own
    ``COSMOS_HUB`` does; the example policy sets no ``fee_cap``). The worker host has the approved
    5 ATOM delegation signed paying 1,000,000 ATOM in fees: the vault's liquid balance goes to
    the chain's fee collector, which nobody approved. Safe: the configuration is refused, or the
    fee is (FeeAboveCap)."""
    try:
        defaulted = ChainConfig(
            name=COSMOS_HUB.name,
            family=ChainFamily.COSMOS,
            chain_id="cosmoshub-4",
            rpc_url="http://127.0.0.1:1",
            denom="uatom",
        )
    except ValidationError:
        return
    for rig in family_rig(hsm, session_factory, (ETH_CHAIN, defaulted)):
        spec = rig.delegate()
        tx = rig.cosmos_tx(spec, chain=defaulted, fee=10**6 * ATOM)
        refused(rig, rig.request(spec, tx, intent_id="i-fee-cap"), FeeAboveCap)


@pytest.mark.parametrize("family", ["ethereum nonce 2**63", "cosmos sequence 2**64-1"])
def test_a_replay_key_beyond_the_database(fam: FamilyRig, family: str) -> None:
    """An approved step at a replay key the signing records cannot hold (the code before families
    refused an Ethereum nonce of 2**63 or more as BadSignRequest; Cosmos sequences are uint64)."""
    if family.startswith("ethereum"):
        spec, tx = fam.exit(), fam.eth_tx(nonce=2**63)
    else:
        spec = fam.delegate()
        tx = fam.cosmos_tx(spec, sequence=2**64 - 1)
    refused(fam, fam.request(spec, tx, intent_id="i-huge"), BadSignRequest)


async def test_a_nonce_beyond_the_database_over_grpc(
    stack: SecurityStack, world: World, worker_host: WorkerHost
) -> None:
    """u's approvals and u's exit at nonce 2**63, through the real servicer as ``svc:worker``."""
    u = world.u
    before = await stack.evidence()
    error = await worker_host.refused(u, tx=worker_host.tx(u.spec, nonce=2**63))
    await assert_refused(
        stack, before, error, status="INVALID_ARGUMENT", error_type="BadSignRequest", subject=f"intent:{u.id}"
    )
