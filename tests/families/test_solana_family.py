"""The Solana family against independent encoders, its refusals, a SoftHSM signature and LiteSVM.

solders (Rust's own ``Message``, ``Transaction``, ``create_account_with_seed`` and
``Pubkey.create_with_seed``) checks the message and transaction bytes; the npm clients
(``@solana-program/stake`` 0.9.1 and ``@solana/web3.js`` 1.x, see ``solana_reference.mjs``)
check the stake instructions; tampered transactions are composed with solders, not with
the family's own writer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import struct
from collections.abc import Sequence
from typing import Any

import pytest
import solders.system_program as sp
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import Transaction

from services.families.base import KeyAlgorithm, Mechanism, Step, StepKind
from services.families.errors import FeeAboveCap, IntentInvalid, TransactionInvalid, TransactionMismatch
from services.families.registry import family
from services.families.solana import family as solana
from services.families.solana.message import compact_u16, parse_message
from services.runtime.intent import (
    Action,
    ClaimRewardsTarget,
    IntentSpec,
    RestakeTarget,
    StakeTarget,
    TargetParams,
    UnstakeTarget,
)
from services.signer.hsm import Hsm
from tests.families import solana_reference
from tests.families.cases import (
    ED25519_VAULT_KEY,
    SOLANA_PUBLIC_KEY,
    SOLANA_WITHDRAW_LAMPORTS,
    solana_blockhash,
    solana_chain,
    solana_key,
    solana_seed,
)

CHAIN = solana_chain()
FAMILY = solana.SolanaFamily()
VAULT = Pubkey(SOLANA_PUBLIC_KEY)
VOTE, OTHER_VOTE = solana_key("vote 1"), solana_key("vote 2")
SEED = "stake-1"
BLOCKHASH = solana_blockhash(1)
STAKE_PROGRAM = Pubkey.from_string("Stake11111111111111111111111111111111111111")
COMPUTE_BUDGET = Pubkey.from_string("ComputeBudget111111111111111111111111111111")
CLOCK = Pubkey.from_string("SysvarC1ock11111111111111111111111111111111")
RENT = Pubkey.from_string("SysvarRent111111111111111111111111111111111")
HISTORY = Pubkey.from_string("SysvarStakeHistory1111111111111111111111111")
CONFIG = Pubkey.from_string("StakeConfig11111111111111111111111111111111")
SYSVARS = {str(k) for k in (CLOCK, RENT, HISTORY, CONFIG)}
AMOUNT = 3 * 10**9


def stake_spec(seed: str = SEED, vote: str = VOTE, amount: int = AMOUNT) -> IntentSpec:
    return IntentSpec(Action.STAKE, CHAIN.name, "vault-1", amount, StakeTarget(vote, solana_seed(seed)))


def unstake_spec(seed: str = SEED) -> IntentSpec:
    return IntentSpec(Action.UNSTAKE, CHAIN.name, "vault-1", 0, UnstakeTarget(VOTE, solana_seed(seed)))


def restake_spec(seed: str = SEED, target: str = OTHER_VOTE) -> IntentSpec:
    return IntentSpec(
        Action.RESTAKE, CHAIN.name, "vault-1", 0, RestakeTarget(VOTE, target, solana_seed(seed))
    )


def build(
    spec: IntentSpec, step: str, *, public_key: bytes = SOLANA_PUBLIC_KEY, blockhash: bytes = BLOCKHASH
) -> bytes:
    return solana.build_unsigned(
        CHAIN,
        spec,
        step,
        public_key=public_key,
        recent_blockhash=blockhash,
        withdraw_lamports=SOLANA_WITHDRAW_LAMPORTS,
    )


def stake_account(seed: str = SEED, base: Pubkey = VAULT) -> Pubkey:
    return Pubkey.create_with_seed(base, seed, STAKE_PROGRAM)


# -- stake instructions composed here (anchored to the npm references in the vector tests) ----------


def initialize(stake: Pubkey, staker: Pubkey = VAULT, withdrawer: Pubkey = VAULT) -> Instruction:
    data = struct.pack("<I", 0) + bytes(staker) + bytes(withdrawer) + struct.pack("<qQ", 0, 0) + bytes(32)
    return Instruction(
        STAKE_PROGRAM, data, [AccountMeta(stake, False, True), AccountMeta(RENT, False, False)]
    )


def delegate(stake: Pubkey, vote: str = VOTE, authority: Pubkey = VAULT) -> Instruction:
    accounts = [
        AccountMeta(stake, False, True),
        AccountMeta(Pubkey.from_string(vote), False, False),
        AccountMeta(CLOCK, False, False),
        AccountMeta(HISTORY, False, False),
        AccountMeta(CONFIG, False, False),
        AccountMeta(authority, True, False),
    ]
    return Instruction(STAKE_PROGRAM, struct.pack("<I", 2), accounts)


def deactivate(stake: Pubkey, authority: Pubkey = VAULT) -> Instruction:
    accounts = [
        AccountMeta(stake, False, True),
        AccountMeta(CLOCK, False, False),
        AccountMeta(authority, True, False),
    ]
    return Instruction(STAKE_PROGRAM, struct.pack("<I", 5), accounts)


def withdraw(
    stake: Pubkey, recipient: Pubkey = VAULT, lamports: int = SOLANA_WITHDRAW_LAMPORTS
) -> Instruction:
    accounts = [
        AccountMeta(stake, False, True),
        AccountMeta(recipient, False, True),
        AccountMeta(CLOCK, False, False),
        AccountMeta(HISTORY, False, False),
        AccountMeta(VAULT, True, False),
    ]
    return Instruction(STAKE_PROGRAM, struct.pack("<IQ", 4, lamports), accounts)


def create(
    seed: str = SEED, lamports: int = AMOUNT, base: Pubkey = VAULT, payer: Pubkey = VAULT
) -> Instruction:
    params = sp.CreateAccountWithSeedParams(
        from_pubkey=payer,
        to_pubkey=stake_account(seed, base),
        base=base,
        seed=seed,
        lamports=lamports,
        space=200,
        owner=STAKE_PROGRAM,
    )
    return sp.create_account_with_seed(params)


def stake_instructions(seed: str = SEED, vote: str = VOTE) -> list[Instruction]:
    account = stake_account(seed)
    return [create(seed), initialize(account), delegate(account, vote)]


def message(
    instructions: Sequence[Instruction], payer: Pubkey = VAULT, blockhash: bytes = BLOCKHASH
) -> bytes:
    """The legacy message solders compiles (Rust's ``Message::new_with_blockhash``)."""
    return bytes(Message.new_with_blockhash(list(instructions), payer, Hash(blockhash)))


# -- solders: messages, seeds, transactions ------------------------------------------------------------


def test_stake_account_is_create_with_seed_of_the_vault() -> None:
    assert Pubkey(solana.stake_account(SOLANA_PUBLIC_KEY, SEED.encode())) == stake_account()
    assert FAMILY.address(CHAIN, SOLANA_PUBLIC_KEY) == str(VAULT)


@pytest.mark.parametrize(
    ("spec", "step", "expected"),
    [
        (stake_spec(), "stake", stake_instructions()),
        (unstake_spec(), "deactivate", [deactivate(stake_account())]),
        (unstake_spec(), "withdraw", [withdraw(stake_account())]),
        (restake_spec(), "deactivate", [deactivate(stake_account())]),
        (restake_spec(), "redelegate", [delegate(stake_account(), OTHER_VOTE)]),
    ],
    ids=["stake", "unstake-deactivate", "unstake-withdraw", "restake-deactivate", "restake-redelegate"],
)
def test_messages_are_what_solders_compiles(spec: IntentSpec, step: str, expected: list[Instruction]) -> None:
    unsigned = build(spec, step)
    assert unsigned == message(expected)
    assert bytes(Message.from_bytes(unsigned)) == unsigned


def test_the_signed_transaction_is_solders_with_the_signature() -> None:
    unsigned = build(stake_spec(), "stake")
    payload = FAMILY.signing_payload(CHAIN, unsigned)
    assert payload == solana.SigningPayload(Mechanism.EDDSA_ED25519, unsigned)
    signature = ED25519_VAULT_KEY.sign(unsigned)
    signed = FAMILY.assemble(CHAIN, unsigned, signature, SOLANA_PUBLIC_KEY)
    reference = Transaction.populate(Message.from_bytes(unsigned), [Signature(signature)])
    reference.verify()
    assert signed.signed_tx == bytes(reference)
    assert signed.tx_id == str(reference.signatures[0])


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "8001"),
        (255, "ff01"),
        (16383, "ff7f"),
        (16384, "808001"),
        (65535, "ffff03"),
    ],
)
def test_compact_u16(value: int, encoded: str) -> None:
    assert compact_u16(value).hex() == encoded


@pytest.mark.parametrize("bad", ["8000", "ff8000", "808004", "80808001"], ids=str)
def test_compact_u16_refuses_non_minimal_and_oversized_lengths(bad: str) -> None:
    tx = build(unstake_spec(), "deactivate")
    # the account count follows the 3-byte header; respell it
    count = tx[3]
    assert count < 0x80
    with pytest.raises(TransactionInvalid):
        parse_message(tx[:3] + bytes.fromhex(bad) + tx[4:])
    with pytest.raises(TransactionInvalid):
        FAMILY.decode(CHAIN, tx[:3] + bytes([count | 0x80, 0]) + tx[4:])


def test_a_versioned_message_is_refused() -> None:
    tx = build(unstake_spec(), "deactivate")
    with pytest.raises(TransactionInvalid, match="versioned"):
        FAMILY.decode(CHAIN, b"\x80" + tx + b"\x00")


# -- the npm stake clients -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    return solana_reference.stake_instructions(
        vault=str(VAULT), stake=str(stake_account()), vote=VOTE, lamports=SOLANA_WITHDRAW_LAMPORTS
    )


def ours(instruction: Instruction) -> dict[str, Any]:
    return {
        "program": str(instruction.program_id),
        "data": bytes(instruction.data).hex(),
        "accounts": [[str(a.pubkey), a.is_signer, a.is_writable] for a in instruction.accounts],
    }


def family_instructions() -> dict[str, Instruction]:
    """The family's own stake instructions, read back from its messages with solders."""
    out = {}
    for spec, step, index, name in [
        (stake_spec(), "stake", 1, "initialize"),
        (stake_spec(), "stake", 2, "delegate"),
        (unstake_spec(), "deactivate", 0, "deactivate"),
        (unstake_spec(), "withdraw", 0, "withdraw"),
    ]:
        compiled = Message.from_bytes(build(spec, step))
        ix = compiled.instructions[index]
        keys = compiled.account_keys
        accounts = [
            AccountMeta(keys[i], compiled.is_signer(i), _declared_writable(compiled, i)) for i in ix.accounts
        ]
        out[name] = Instruction(keys[ix.program_id_index], bytes(ix.data), accounts)
    return out


def _declared_writable(compiled: Message, index: int) -> bool:
    """Writable as the instruction declares it: the vault is writable only as fee payer (and recipient)."""
    if compiled.account_keys[index] == VAULT:
        return False
    header = compiled.header
    signed, keys = header.num_required_signatures, len(compiled.account_keys)
    if index < signed:
        return index < signed - header.num_readonly_signed_accounts
    return index < keys - header.num_readonly_unsigned_accounts


def test_stake_instruction_data_is_the_reference(reference: dict[str, Any]) -> None:
    mine = family_instructions()
    for name, instruction in mine.items():
        assert ours(instruction)["data"] == reference["kit"][name]["data"], name
        assert ours(instruction)["data"] == reference["web3"][name]["data"], name
        assert ours(instruction)["program"] == reference["kit"][name]["program"] == str(STAKE_PROGRAM)


def test_stake_account_lists_are_the_references(reference: dict[str, Any]) -> None:
    """web3.js 1.x lists every account the native Stake program took (sysvars, stake config):
    exactly ours. @solana-program/stake (the core BPF program's client) leaves those out: ours
    without them, in the same order with the same flags (the program accepts both)."""
    mine = family_instructions()
    for name, instruction in mine.items():
        accounts = ours(instruction)["accounts"]
        if name == "withdraw":  # the vault is the recipient (writable) and the authority (signer)
            assert accounts[1][0] == str(VAULT)
            accounts[1] = [str(VAULT), False, True]
        assert accounts == reference["web3"][name]["accounts"], name
        assert [a for a in accounts if a[0] not in SYSVARS] == reference["kit"][name]["accounts"], name


def test_the_compose_helpers_of_this_file_are_the_reference(reference: dict[str, Any]) -> None:
    account = stake_account()
    for name, instruction in {
        "initialize": initialize(account),
        "delegate": delegate(account),
        "deactivate": deactivate(account),
        "withdraw": withdraw(account),
    }.items():
        assert ours(instruction) == reference["web3"][name], name


# -- refusals ----------------------------------------------------------------------------------------------


def refused(spec: IntentSpec, step: str, unsigned: bytes, *named: str) -> str:
    with pytest.raises(TransactionMismatch) as e:
        FAMILY.check(CHAIN, spec, step, unsigned, str(VAULT))
    for name in named:
        assert name in e.value.message, e.value.message
    return e.value.message


def test_the_built_transactions_pass_as_built() -> None:
    for spec, step in [
        (stake_spec(), "stake"),
        (unstake_spec(), "deactivate"),
        (unstake_spec(), "withdraw"),
        (restake_spec(), "deactivate"),
        (restake_spec(), "redelegate"),
    ]:
        assert FAMILY.check(CHAIN, spec, step, build(spec, step), str(VAULT)).step == step


def test_another_vote_account_is_refused() -> None:
    refused(stake_spec(), "stake", message(stake_instructions(vote=OTHER_VOTE)), "vote account")
    refused(restake_spec(), "redelegate", message([delegate(stake_account(), VOTE)]), "vote account")


def test_another_seed_or_stake_account_is_refused() -> None:
    refused(stake_spec(), "stake", message(stake_instructions(seed="stake-2")), "seed", "stake account")
    other = stake_account("stake-2")
    refused(unstake_spec(), "deactivate", message([deactivate(other)]), "stake account")
    refused(unstake_spec(), "withdraw", message([withdraw(other)]), "stake account")
    refused(restake_spec(), "redelegate", message([delegate(other, OTHER_VOTE)]), "stake account")
    # a stake account of another base: the seed is the same, the account is not
    foreign = Keypair().pubkey()
    ixs = [
        create(base=foreign),
        initialize(stake_account(SEED, foreign)),
        delegate(stake_account(SEED, foreign)),
    ]
    refused(stake_spec(), "stake", message(ixs), "stake account")


def test_a_second_instruction_is_refused() -> None:
    account = stake_account()
    refused(
        unstake_spec(), "deactivate", message([deactivate(account), deactivate(account)]), "extra instruction"
    )
    transfer = sp.transfer(sp.TransferParams(from_pubkey=VAULT, to_pubkey=Keypair().pubkey(), lamports=1))
    refused(
        stake_spec(),
        "stake",
        message([*stake_instructions(), transfer]),
        "extra instruction (System program)",
    )
    refused(unstake_spec(), "withdraw", message([withdraw(account), transfer]), "extra instruction")


def test_a_compute_budget_instruction_is_refused() -> None:
    price = Instruction(COMPUTE_BUDGET, bytes([3]) + struct.pack("<Q", 1_000_000), [])
    refused(
        unstake_spec(),
        "deactivate",
        message([price, deactivate(stake_account())]),
        "Deactivate program (ComputeBudget program)",
    )
    refused(
        stake_spec(),
        "stake",
        message([*stake_instructions(), price]),
        "extra instruction (ComputeBudget program)",
    )


def test_a_withdrawal_to_another_recipient_is_refused() -> None:
    refused(unstake_spec(), "withdraw", message([withdraw(stake_account(), Keypair().pubkey())]), "recipient")


def test_a_withdrawal_of_nothing_is_refused() -> None:
    refused(unstake_spec(), "withdraw", message([withdraw(stake_account(), lamports=0)]), "withdraw amount")


def test_staker_or_withdrawer_not_the_vault_is_refused() -> None:
    account, other = stake_account(), Keypair().pubkey()
    for ix, name in [
        (initialize(account, staker=other), "staker"),
        (initialize(account, withdrawer=other), "withdrawer"),
    ]:
        refused(stake_spec(), "stake", message([create(), ix, delegate(account)]), name)


def test_another_fee_payer_is_refused() -> None:
    payer = Keypair().pubkey()
    refused(stake_spec(), "stake", message(stake_instructions(), payer=payer), "fee payer")
    refused(unstake_spec(), "deactivate", message([deactivate(stake_account())], payer=payer), "fee payer")


def test_a_second_signer_is_refused() -> None:
    account, cosigner = stake_account(), Keypair().pubkey()
    ix = deactivate(account)
    ix = Instruction(ix.program_id, bytes(ix.data), [*ix.accounts, AccountMeta(cosigner, True, False)])
    refused(unstake_spec(), "deactivate", message([ix]), "signers (2", "Deactivate accounts")
    # the stake account made a signer: a key custos does not hold would have to sign
    flagged = Instruction(
        STAKE_PROGRAM,
        struct.pack("<I", 5),
        [AccountMeta(account, True, True), *deactivate(account).accounts[1:]],
    )
    refused(
        unstake_spec(), "deactivate", message([flagged]), "signers (2", "stake account signer/writable flags"
    )


def test_a_vote_account_made_writable_is_refused() -> None:
    account = stake_account()
    ix = delegate(account, OTHER_VOTE)
    metas = list(ix.accounts)
    metas[1] = AccountMeta(metas[1].pubkey, False, True)
    refused(
        restake_spec(),
        "redelegate",
        message([Instruction(STAKE_PROGRAM, bytes(ix.data), metas)]),
        "vote account signer/writable flags",
    )


def test_an_unused_account_is_refused() -> None:
    tx = bytearray(build(unstake_spec(), "deactivate"))
    extra = bytes(Keypair().pubkey())
    # append a read-only unsigned key nothing uses: count + 1, header's read-only unsigned + 1
    count = tx[3]
    keys_end = 4 + 32 * count
    tampered = (
        bytes([tx[0], tx[1], tx[2] + 1, count + 1]) + bytes(tx[4:keys_end]) + extra + bytes(tx[keys_end:])
    )
    refused(unstake_spec(), "deactivate", tampered, "extra account")


def test_a_fee_above_the_cap_is_refused() -> None:
    tx = build(stake_spec(), "stake")
    assert FAMILY.decode(CHAIN, tx).fee_ceiling == 5000
    with pytest.raises(FeeAboveCap):
        FAMILY.check(CHAIN.model_copy(update={"max_fee_wei": 4999}), stake_spec(), "stake", tx, str(VAULT))


def test_trailing_bytes_are_refused() -> None:
    tx = build(stake_spec(), "stake")
    with pytest.raises(TransactionInvalid, match="follow"):
        FAMILY.decode(CHAIN, tx + b"\x00")
    refused(stake_spec(), "stake", tx + b"\x00", "follow")


def test_another_step_of_the_same_intent_is_refused() -> None:
    spec = unstake_spec()
    refused(spec, "withdraw", build(spec, "deactivate"), "Withdraw")
    refused(spec, "cooldown", build(spec, "deactivate"), "not a signed step")
    refused(restake_spec(), "redelegate", build(restake_spec(), "deactivate"), "DelegateStake")


# -- intents -------------------------------------------------------------------------------------------


def test_the_steps() -> None:
    cooldown = Step("cooldown", StepKind.WAIT, "cooldown epoch")
    assert FAMILY.steps(Action.STAKE) == (Step("stake"),)
    assert FAMILY.steps(Action.UNSTAKE) == (Step("deactivate"), cooldown, Step("withdraw"))
    assert FAMILY.steps(Action.RESTAKE) == (Step("deactivate"), cooldown, Step("redelegate"))
    assert FAMILY.steps(Action.CLAIM_REWARDS) == FAMILY.steps(Action.VOTE) == ()
    assert family("solana").name == family("SOLANA").name == "solana"
    assert isinstance(family("solana"), solana.SolanaFamily)


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (stake_spec(seed=""), "seed"),
        (stake_spec(seed="x" * 33), "seed"),
        (stake_spec(seed="tab\there"), "seed"),
        (stake_spec(seed="é"), "seed"),
        (stake_spec(vote="0OIl"), "vote account"),
        (stake_spec(vote=str(Pubkey.default())[:-1]), "32-byte"),
        (stake_spec(vote=str(VAULT)), "vault"),
        (stake_spec(amount=2_282_880), "rent-exempt"),
        (stake_spec(amount=2**64), "rent-exempt"),
        (dataclasses.replace(unstake_spec(), amount=1), "amount must be 0"),
        (dataclasses.replace(restake_spec(), amount=1), "amount must be 0"),
        (restake_spec(target=VOTE), "two different vote accounts"),
        (IntentSpec(Action.UNSTAKE, CHAIN.name, "vault-1", 0, UnstakeTarget(VOTE)), "params"),
        (
            IntentSpec(
                Action.UNSTAKE,
                CHAIN.name,
                "vault-1",
                0,
                UnstakeTarget(VOTE, TargetParams.of({"seed": b"a", "x": b"b"})),
            ),
            "params",
        ),
        (
            IntentSpec(Action.CLAIM_REWARDS, CHAIN.name, "vault-1", 0, ClaimRewardsTarget(VOTE)),
            "not supported",
        ),
        (dataclasses.replace(stake_spec(), chain="solana-other"), "chain"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_validate_intent_refuses(spec: IntentSpec, reason: str) -> None:
    with pytest.raises(IntentInvalid, match=reason):
        FAMILY.validate_intent(CHAIN, spec, str(VAULT))


def test_seeds_of_32_printable_characters_and_spaces_are_valid() -> None:
    FAMILY.validate_intent(CHAIN, stake_spec(seed="~" * 32), str(VAULT))
    FAMILY.validate_intent(CHAIN, stake_spec(seed="a b"), str(VAULT))
    FAMILY.validate_intent(CHAIN, stake_spec(amount=2_282_881), str(VAULT))


def test_facts() -> None:
    facts = FAMILY.facts(CHAIN, restake_spec())
    assert facts.validators == {VOTE, OTHER_VOTE}
    assert facts.payout_addresses == frozenset()
    assert facts.denomination == "lamports"


def test_addresses_are_base58_of_32_bytes() -> None:
    assert FAMILY.normalise_address(CHAIN, str(VAULT)) == str(VAULT)
    assert (
        FAMILY.normalise_validator(CHAIN, "11111111111111111111111111111111")
        == "11111111111111111111111111111111"
    )
    for bad in ["", "0x00", "1" * 31, "1" * 33, "l" * 44, 5]:
        with pytest.raises(IntentInvalid):
            FAMILY.normalise_address(CHAIN, bad)  # type: ignore[arg-type]
    with pytest.raises(IntentInvalid):
        FAMILY.address(CHAIN, bytes(33))


# -- decode, replay keys, replacement -----------------------------------------------------------------------


def test_decode_reads_value_fee_and_replay_key() -> None:
    decoded = FAMILY.decode(CHAIN, build(stake_spec(), "stake"))
    assert (decoded.value, decoded.amount, decoded.fee_ceiling) == (AMOUNT, AMOUNT, 5000)
    assert "3 SOL" in decoded.summary and str(stake_account()) in decoded.summary and VOTE in decoded.summary
    withdrawal = FAMILY.decode(CHAIN, build(unstake_spec(), "withdraw"))
    assert (withdrawal.value, withdrawal.amount) == (0, SOLANA_WITHDRAW_LAMPORTS)
    expected = hashlib.sha256(b"custos.solana.step" + bytes(stake_account()) + b"withdraw").digest()
    assert withdrawal.replay_key == int.from_bytes(expected[:8], "big") >> 1 < 2**63


def test_an_unstake_and_a_restake_of_one_stake_account_deactivate_alike() -> None:
    """The same transaction, the same replay key: the signer signs it for one intent only."""
    unstake, restake = build(unstake_spec(), "deactivate"), build(restake_spec(), "deactivate")
    assert unstake == restake
    FAMILY.check(CHAIN, restake_spec(), "deactivate", unstake, str(VAULT))
    steps = {
        FAMILY.decode(CHAIN, build(s, step)).replay_key
        for s, step in [
            (stake_spec(), "stake"),
            (unstake_spec(), "deactivate"),
            (unstake_spec(), "withdraw"),
            (restake_spec(), "redelegate"),
        ]
    }
    assert len(steps) == 4


def signed(unsigned: bytes) -> bytes:
    return FAMILY.assemble(CHAIN, unsigned, ED25519_VAULT_KEY.sign(unsigned), SOLANA_PUBLIC_KEY).signed_tx


def test_only_a_fresh_blockhash_replaces_a_signed_step() -> None:
    for spec, step in [(stake_spec(), "stake"), (unstake_spec(), "withdraw")]:
        before = signed(build(spec, step))
        assert FAMILY.replacement_allowed(CHAIN, before, build(spec, step, blockhash=solana_blockhash(2)))
        assert not FAMILY.replacement_allowed(CHAIN, before, build(spec, step))  # the same payload: a replay
    before = signed(build(unstake_spec(), "withdraw"))
    more = solana.build_unsigned(
        CHAIN,
        unstake_spec(),
        "withdraw",
        public_key=SOLANA_PUBLIC_KEY,
        recent_blockhash=solana_blockhash(2),
        withdraw_lamports=SOLANA_WITHDRAW_LAMPORTS + 1,
    )
    assert FAMILY.replacement_allowed(CHAIN, before, more)  # it pays the vault (finding 18)
    assert not FAMILY.replacement_allowed(CHAIN, before, build(unstake_spec(), "deactivate"))
    staked = signed(build(stake_spec(), "stake"))
    assert not FAMILY.replacement_allowed(
        CHAIN, staked, build(stake_spec(amount=AMOUNT + 1), "stake", blockhash=solana_blockhash(2))
    )
    assert not FAMILY.replacement_allowed(CHAIN, b"\x01" + bytes(64), build(unstake_spec(), "withdraw"))
    assert not FAMILY.replacement_allowed(CHAIN, before[:-1], build(unstake_spec(), "withdraw"))


def test_assemble_refuses_another_key_than_the_fee_payer() -> None:
    tx = build(stake_spec(), "stake")
    other = Keypair()
    with pytest.raises(TransactionInvalid, match="fee payer"):
        FAMILY.assemble(CHAIN, tx, bytes(other.sign_message(tx)), bytes(other.pubkey()))
    with pytest.raises(TransactionInvalid):
        FAMILY.assemble(CHAIN, tx, ED25519_VAULT_KEY.sign(tx)[:63], SOLANA_PUBLIC_KEY)


# -- SoftHSM and LiteSVM ---------------------------------------------------------------------------------


def test_a_softhsm_ed25519_signature_assembles_into_a_transaction_solders_verifies(hsm: Hsm) -> None:
    key_id = secrets.token_bytes(16)
    public_key = hsm.generate_keypair(KeyAlgorithm.ED25519, f"t-solana-{key_id.hex()}", key_id)
    assert len(public_key) == 32
    vault = FAMILY.address(CHAIN, public_key)
    for spec, step in [(stake_spec(), "stake"), (unstake_spec(), "withdraw")]:
        unsigned = build(spec, step, public_key=public_key)
        FAMILY.check(CHAIN, spec, step, unsigned, vault)
        signature = hsm.sign(key_id, FAMILY.signing_payload(CHAIN, unsigned))
        result = FAMILY.assemble(CHAIN, unsigned, signature, public_key)
        tx = Transaction.from_bytes(result.signed_tx)
        tx.verify()
        assert str(tx.message.account_keys[0]) == vault
        assert result.tx_id == str(tx.signatures[0])


class Chain:
    """LiteSVM with a vote account: the stake program and sysvars of today's clusters."""

    def __init__(self) -> None:
        self.svm = LiteSVM()
        self.svm.airdrop(VAULT, 100 * 10**9)

    def vote_account(self) -> str:
        """A vote account made with the Vote program (InitializeAccount; 3762 bytes)."""
        node, vote, payer = Keypair(), Keypair(), Keypair()
        self.svm.airdrop(payer.pubkey(), 10**9)
        program = Pubkey.from_string("Vote111111111111111111111111111111111111111")
        size = 3762
        make = sp.create_account(
            sp.CreateAccountParams(
                from_pubkey=payer.pubkey(),
                to_pubkey=vote.pubkey(),
                lamports=self.svm.minimum_balance_for_rent_exemption(size),
                space=size,
                owner=program,
            )
        )
        node_key = bytes(node.pubkey())
        init = Instruction(
            program,
            struct.pack("<I", 0) + node_key * 3 + bytes([10]),
            [
                AccountMeta(vote.pubkey(), False, True),
                AccountMeta(RENT, False, False),
                AccountMeta(CLOCK, False, False),
                AccountMeta(node.pubkey(), True, False),
            ],
        )
        msg = Message.new_with_blockhash([make, init], payer.pubkey(), self.svm.latest_blockhash())
        result = self.svm.send_transaction(Transaction([payer, vote, node], msg, self.svm.latest_blockhash()))
        assert type(result).__name__ == "TransactionMetadata", result
        return str(vote.pubkey())

    def send(self, spec: IntentSpec, step: str, withdraw_lamports: int = 0) -> None:
        unsigned = solana.build_unsigned(
            CHAIN,
            spec,
            step,
            public_key=SOLANA_PUBLIC_KEY,
            recent_blockhash=bytes(self.svm.latest_blockhash()),
            withdraw_lamports=withdraw_lamports,
        )
        signature = ED25519_VAULT_KEY.sign(FAMILY.signing_payload(CHAIN, unsigned).data)
        tx = Transaction.from_bytes(FAMILY.assemble(CHAIN, unsigned, signature, SOLANA_PUBLIC_KEY).signed_tx)
        result = self.svm.send_transaction(tx)
        assert type(result).__name__ == "TransactionMetadata", result
        self.svm.expire_blockhash()

    def next_epoch(self) -> None:
        clock = self.svm.get_clock()
        clock.epoch += 1
        clock.slot += 432_000
        self.svm.set_clock(clock)


def test_the_steps_run_on_litesvm() -> None:
    """Stake, deactivate, cooldown, withdraw; and stake, deactivate, cooldown, redelegate."""
    chain = Chain()
    first, second = chain.vote_account(), chain.vote_account()
    stake = IntentSpec(Action.STAKE, CHAIN.name, "vault-1", AMOUNT, StakeTarget(first, solana_seed("a")))
    chain.send(stake, "stake")
    account = stake_account("a")
    assert chain.svm.get_balance(account) == AMOUNT
    unstake = IntentSpec(Action.UNSTAKE, CHAIN.name, "vault-1", 0, UnstakeTarget(first, solana_seed("a")))
    chain.next_epoch()
    chain.send(unstake, "deactivate")
    chain.next_epoch()
    before = chain.svm.get_balance(VAULT)
    assert before is not None
    chain.send(unstake, "withdraw", withdraw_lamports=AMOUNT)
    assert chain.svm.get_account(account) is None
    assert chain.svm.get_balance(VAULT) == before + AMOUNT - 5000

    chain.send(dataclasses.replace(stake, target=StakeTarget(first, solana_seed("b"))), "stake")
    restake = IntentSpec(
        Action.RESTAKE, CHAIN.name, "vault-1", 0, RestakeTarget(first, second, solana_seed("b"))
    )
    chain.next_epoch()
    chain.send(restake, "deactivate")
    chain.next_epoch()
    chain.send(restake, "redelegate")
    data = bytes(chain.svm.get_account(stake_account("b")).data)  # type: ignore[union-attr]
    assert struct.unpack_from("<I", data)[0] == 2  # StakeStateV2::Stake
    assert data[124:156] == bytes(Pubkey.from_string(second))  # the delegation's voter
