"""Amounts in each chain's own units, and CLAIM_REWARDS / VOTE intents, without a running stack:
the parsing and printing functions, and the one-line refusals of ``intents submit`` and
``policy simulate`` that come before any call."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from services.cli.commands.intents import (
    _inbox_lines,
    _list_lines,
    build_spec,
    describe,
    intent_lines,
    target_text,
)
from services.cli.commands.policy import _hypothetical_spec
from services.cli.context import CliContext, amount_text, chain_amount, to_json, unit_named, units_of
from services.cli.main import cli
from services.families.config import ChainConfig, ChainFamily
from services.families.cosmos.addresses import encode
from services.pb.custos.staking.v1 import staking_pb2
from services.runtime.convert import spec_to_pb
from services.runtime.errors import InvalidArgument
from services.runtime.intent import (
    Action,
    ClaimRewardsTarget,
    IntentSpec,
    StakeTarget,
    VoteOption,
    VoteTarget,
)

INJ = ChainConfig(
    name="injective-devnet",
    family=ChainFamily.COSMOS,
    chain_id="injective-777",
    rpc_url="http://127.0.0.1:1",
    denom="inj",
    display_unit="INJ",
    display_exponent=18,
    bech32_prefix="inj",
    max_fee_wei=10**17,
)
ATOM = ChainConfig(
    name="cosmoshub",
    family=ChainFamily.COSMOS,
    chain_id="cosmoshub-4",
    rpc_url="http://127.0.0.1:1",
    denom="uatom",
    display_unit="ATOM",
    display_exponent=6,
    max_fee_wei=10**6,
)
ETH_CHAIN = ChainConfig(name="ethereum-devnet", chain_id=31337, rpc_url="http://127.0.0.1:1")
VALOPER = encode("injvaloper", bytes(range(20)))
SETTINGS = """\
chains:
  - name: ethereum-devnet
    family: ethereum
    chain_id: 31337
    rpc_url: http://127.0.0.1:1
  - name: injective-devnet
    family: cosmos
    chain_id: injective-777
    rpc_url: http://127.0.0.1:1
    denom: inj
    display_unit: INJ
    display_exponent: 18
    bech32_prefix: inj
    max_fee_wei: 100000000000000000
"""
UNITS = {INJ.name: INJ.display(), ATOM.name: ATOM.display(), ETH_CHAIN.name: ETH_CHAIN.display()}


# --- reading amounts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chain", "text", "base"),
    [
        (INJ, "2.5INJ", 25 * 10**17),
        (INJ, "2.5 INJ", 25 * 10**17),
        (INJ, "2500inj", 2500),
        (INJ, "2500", 2500),
        (INJ, "1_000_000inj", 1_000_000),
        (INJ, "0.000000000000000001INJ", 1),
        (INJ, "2.50INJ", 25 * 10**17),
        (ATOM, "1.5ATOM", 1_500_000),
        (ATOM, "1.5atom", 1_500_000),  # no other unit differs from ATOM by case only
        (ATOM, "7UATOM", 7),
        (ETH_CHAIN, "32ETH", 32 * 10**18),
        (ETH_CHAIN, "32 eth", 32 * 10**18),
        (ETH_CHAIN, "1.5gwei", 1_500_000_000),
        (ETH_CHAIN, "7wei", 7),
        (ETH_CHAIN, "7", 7),
    ],
)
def test_an_amount_is_read_exactly_in_the_chains_own_units(chain: ChainConfig, text: str, base: int) -> None:
    assert chain_amount(text, chain) == base


def test_a_bare_number_in_simulate_counts_the_display_unit() -> None:
    assert chain_amount("2.5", INJ, bare="display") == 25 * 10**17
    assert chain_amount("2000", ETH_CHAIN, bare="display") == 2000 * 10**18
    assert chain_amount("2000", ATOM, bare="display") == 2000 * 10**6
    assert chain_amount("2500inj", INJ, bare="display") == 2500


@pytest.mark.parametrize("spelling", ["Inj", "iNJ", "InJ"])
def test_a_unit_that_could_be_the_display_unit_or_the_denom_is_refused_naming_both(spelling: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        chain_amount(f"2{spelling}", INJ)
    assert str(e.value) == (
        f"'2{spelling}' is ambiguous on injective-devnet: {spelling!r} could be INJ (10**18 inj) or inj; "
        "write INJ or inj exactly"
    )


def test_units_differing_only_by_case_match_only_as_spelled() -> None:
    assert unit_named("INJ", INJ, "x").exponent == 18
    assert unit_named("inj", INJ, "x").exponent == 0
    assert [u.name for u in units_of(INJ)] == ["INJ", "inj"]
    assert [u.name for u in units_of(ETH_CHAIN)] == ["ETH", "wei", "gwei"]


@pytest.mark.parametrize(
    ("chain", "text", "message"),
    [
        (INJ, "2.5inj", "'2.5inj' is not a whole number of base units (inj has no decimals)"),
        (INJ, "1.5", "'1.5' is not a whole number of base units (inj has no decimals)"),
        (
            INJ,
            "0.0000000000000000001INJ",
            "'0.0000000000000000001INJ' has more than 18 decimals (finer than 1 inj): "
            "not a whole number of base units",
        ),
        (
            INJ,
            "2ATOM",
            "'2ATOM' is not an amount on injective-devnet: 'ATOM' is none of its units (INJ, inj)",
        ),
        (INJ, "2ETH", "'2ETH' is not an amount on injective-devnet: 'ETH' is none of its units (INJ, inj)"),
        (
            INJ,
            "lots",
            "'lots' is not an amount on injective-devnet: give base units (inj, e.g. 2500) or a number "
            "with a unit (INJ, inj)",
        ),
        (INJ, "-5", "'-5' is negative: give base units (inj, e.g. 2500)"),
        (INJ, "1e18", "'1e18' is not an amount on injective-devnet"),
        (INJ, "2.5 INJ extra", "is not an amount on injective-devnet"),
        (INJ, f"{2**256}", "is more than any amount an intent can carry"),
        (INJ, "9" * 300, "is not an amount on injective-devnet"),
        (ETH_CHAIN, "32.5wei", "'32.5wei' is not a whole number of base units (wei has no decimals)"),
        (ETH_CHAIN, "2INJ", "'INJ' is none of its units (ETH, wei, gwei)"),
    ],
)
def test_what_is_no_amount_on_the_chain_is_refused_in_one_line(
    chain: ChainConfig, text: str, message: str
) -> None:
    with pytest.raises(InvalidArgument) as e:
        chain_amount(text, chain)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_simulate_errors_name_the_display_unit() -> None:
    with pytest.raises(
        InvalidArgument, match=r"'lots' is not an amount in ETH: give an amount in ETH, e\.g\. 2000"
    ):
        chain_amount("lots", ETH_CHAIN, bare="display")
    with pytest.raises(InvalidArgument, match=r"'-5' is negative: give an amount in INJ"):
        chain_amount("-5", INJ, bare="display")
    with pytest.raises(InvalidArgument, match=r"has more than 18 decimals \(finer than 1 wei\)"):
        chain_amount("0.0000000000000000001", ETH_CHAIN, bare="display")


def test_on_a_chain_the_settings_do_not_name_only_base_units_are_read() -> None:
    assert chain_amount("2500", None, name="nochain") == 2500
    for text in ("2.5INJ", "32ETH", "1.5"):
        with pytest.raises(InvalidArgument, match="chain 'nochain' is not in the chain registry"):
            chain_amount(text, None, name="nochain")
    with pytest.raises(InvalidArgument, match="its units are unknown"):
        chain_amount("2000", None, name="nochain", bare="display")


# --- printing -----------------------------------------------------------------------------------


def test_amounts_are_shown_exactly_in_the_display_unit_trailing_zeros_trimmed() -> None:
    assert amount_text(str(25 * 10**17), INJ.display()) == "2.5 INJ"
    assert amount_text(str(10**18 + 1), INJ.display()) == "1.000000000000000001 INJ"
    assert amount_text(str(3 * 10**18), INJ.display()) == "3 INJ"
    assert amount_text("1", ATOM.display()) == "0.000001 ATOM"


def _spec_json(spec: IntentSpec) -> dict[str, Any]:
    return to_json(spec_to_pb(spec))


VOTE = IntentSpec(Action.VOTE, INJ.name, "vault-1", 0, VoteTarget(3, VoteOption.NO_WITH_VETO))
CLAIM = IntentSpec(Action.CLAIM_REWARDS, INJ.name, "vault-1", 0, ClaimRewardsTarget(VALOPER))
DELEGATE = IntentSpec(Action.STAKE, INJ.name, "vault-1", 25 * 10**17, StakeTarget(VALOPER))


def test_votes_claims_and_delegations_are_described_readably() -> None:
    assert (
        describe(_spec_json(VOTE), UNITS)
        == "VOTE NO_WITH_VETO on proposal 3 on injective-devnet from vault-1"
    )
    assert (
        describe(_spec_json(CLAIM), UNITS) == f"CLAIM_REWARDS from {VALOPER} on injective-devnet for vault-1"
    )
    assert describe(_spec_json(DELEGATE), UNITS) == "STAKE 2.5 INJ on injective-devnet from vault-1"
    assert (
        describe(_spec_json(DELEGATE)) == f"STAKE {25 * 10**17} base units on injective-devnet from vault-1"
    )
    assert target_text(_spec_json(VOTE)) == "proposal 3, option NO_WITH_VETO"
    assert target_text(_spec_json(CLAIM)) == f"validator {VALOPER}"


def _intent(spec: IntentSpec, intent_id: str) -> dict[str, Any]:
    intent = staking_pb2.Intent(
        intent_id=intent_id, spec=spec_to_pb(spec), state=staking_pb2.INTENT_STATE_AWAITING_APPROVALS
    )
    intent.created_at.FromSeconds(1_700_000_000)
    return to_json(intent)


def test_show_list_and_the_inbox_print_votes_and_claims() -> None:
    vote, claim = _intent(VOTE, "int-v"), _intent(CLAIM, "int-c")
    shown = intent_lines(vote, UNITS)
    assert "what     VOTE NO_WITH_VETO on proposal 3 on injective-devnet from vault-1" in shown
    assert "target   proposal 3, option NO_WITH_VETO" in shown
    listed = _list_lines({"intents": [vote, claim], "next_page_token": ""}, UNITS)
    assert "VOTE NO_WITH_VETO on proposal 3 on injective-devnet from vault-1" in listed[1]
    assert f"CLAIM_REWARDS from {VALOPER} on injective-devnet for vault-1" in listed[2]
    for i in (vote, claim):
        i["progress"], i["short"] = "0 of 1 ops", "ops 1 more of olivia"
    inbox = _inbox_lines({"approver": "olivia", "intents": [vote, claim]}, UNITS)
    assert "VOTE NO_WITH_VETO on proposal 3" in inbox[1] and "CLAIM_REWARDS from" in inbox[2]


# --- building intents from options ---------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A settings file naming an Ethereum and an Injective chain; no CUSTOS_* from the caller."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("CUSTOS_")]:
        monkeypatch.delenv(name)
    path = tmp_path / "custos.yaml"
    path.write_text(SETTINGS)
    return path


def _options(**given: Any) -> dict[str, Any]:
    names = (
        "chain vault amount validator deposit_data generate_deposit withdrawal_address compounding "
        "source_validator target_validator proposal option"
    ).split()
    o: dict[str, Any] = dict.fromkeys(names)
    o.update(generate_deposit=False, compounding=False, chain=INJ.name, vault="vault-1")
    o.update(given)
    return o


def _build(settings: Path, action: Action, **given: Any) -> IntentSpec:
    return asyncio.run(build_spec(CliContext(config=settings), action, _options(**given)))


@pytest.mark.parametrize("option", ["yes", "YES", "Yes", " no ", "abstain", "no_with_veto", "NO-WITH-VETO"])
def test_a_vote_is_built_with_its_option_in_any_case(settings: Path, option: str) -> None:
    spec = _build(settings, Action.VOTE, proposal=3, option=option)
    expected = VoteOption[option.strip().upper().replace("-", "_")]
    assert spec == IntentSpec(Action.VOTE, INJ.name, "vault-1", 0, VoteTarget(3, expected))


def test_a_claim_and_a_delegation_are_built_in_the_chains_units(settings: Path) -> None:
    assert _build(settings, Action.CLAIM_REWARDS, validator=VALOPER) == CLAIM
    assert _build(settings, Action.STAKE, validator=VALOPER, amount="2.5INJ") == DELEGATE
    assert _build(settings, Action.STAKE, validator=VALOPER, amount="2500inj").amount == 2500
    assert _build(settings, Action.UNSTAKE, validator=VALOPER, amount="1INJ").amount == 10**18


@pytest.mark.parametrize(
    ("action", "given", "message"),
    [
        (
            Action.VOTE,
            {"proposal": 3, "option": "yes", "amount": "1INJ"},
            "a VOTE moves no amount: drop --amount",
        ),
        (
            Action.CLAIM_REWARDS,
            {"validator": VALOPER, "amount": "0"},
            "a CLAIM_REWARDS moves no amount: drop --amount",
        ),
        (Action.VOTE, {"option": "yes"}, "VOTE needs --proposal (the proposal id)"),
        (Action.VOTE, {"proposal": 3}, "VOTE needs --option"),
        (
            Action.VOTE,
            {"proposal": 3, "option": "maybe"},
            "--option must be yes, no, abstain or no_with_veto, not 'maybe'",
        ),
        (
            Action.VOTE,
            {"proposal": 3, "option": "yes", "validator": VALOPER},
            "--validator is not an option of a VOTE (it takes --proposal, --option)",
        ),
        (Action.CLAIM_REWARDS, {}, "CLAIM_REWARDS needs --validator"),
        (
            Action.STAKE,
            {"validator": VALOPER, "amount": "1INJ", "proposal": 3},
            "--proposal is not an option of a STAKE",
        ),
        (
            Action.UNSTAKE,
            {"validator": VALOPER, "source_validator": VALOPER},
            "--source-validator is not an option of an UNSTAKE (it takes --amount, --validator)",
        ),
        (Action.STAKE, {"validator": VALOPER, "amount": "2Inj"}, "'2Inj' is ambiguous on injective-devnet"),
    ],
)
def test_missing_and_extra_options_are_refused_in_one_line(
    settings: Path, action: Action, given: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument) as e:
        _build(settings, action, **given)
    assert str(e.value) == message or str(e.value).startswith(message), str(e.value)


def _one_line(args: list[str]) -> str:
    result = CliRunner().invoke(cli, ["--config", "custos.yaml", *args])
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stdout == "" and "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("error: INVALID_ARGUMENT: "), line
    return line


def test_submit_refuses_in_one_line_before_any_call(settings: Path) -> None:
    def submit(action: str, *more: str) -> str:
        return _one_line(["intents", "submit", action, "--chain", INJ.name, "--vault", "vault-1", *more])

    vote = ("--proposal", "3", "--option", "yes")
    assert submit("VOTE", *vote, "--amount", "1INJ").endswith("a VOTE moves no amount: drop --amount")
    for bad in ("0", "-1", "3.5", "x", str(2**64)):
        assert submit("VOTE", "--proposal", bad, "--option", "yes").endswith(
            f"--proposal must be a proposal id (a whole number from 1), not {bad!r}"
        )
    assert submit("vote", "--option", "yes").endswith("VOTE needs --proposal (the proposal id)")
    line = submit("STAKE", "--validator", VALOPER, "--amount", "2iNJ")
    assert "could be INJ (10**18 inj) or inj" in line
    assert "'SWAP' is not one of" in submit("SWAP")


def test_simulate_builds_hypothetical_votes_and_claims(settings: Path) -> None:
    ctx = CliContext(config=settings)
    o = _options(chain=INJ.name, initiator=None, at=None)
    assert _hypothetical_spec(ctx, Action.VOTE, {**o, "proposal": 3, "option": "Abstain"}) == IntentSpec(
        Action.VOTE, INJ.name, "vault-1", 0, VoteTarget(3, VoteOption.ABSTAIN)
    )
    assert _hypothetical_spec(ctx, Action.CLAIM_REWARDS, {**o, "validator": VALOPER}) == CLAIM
    staked = _hypothetical_spec(ctx, Action.STAKE, {**o, "validator": VALOPER, "amount": "2.5"})
    assert staked.amount == 25 * 10**17  # a bare number is the display unit here, as before (ETH)
    on_eth = _hypothetical_spec(ctx, Action.STAKE, {**o, "chain": None, "amount": "1024.000000000000000001"})
    assert on_eth.chain == "ethereum-devnet" and on_eth.amount == 1024 * 10**18 + 1
    with pytest.raises(InvalidArgument, match="a VOTE moves no amount: drop --amount"):
        _hypothetical_spec(ctx, Action.VOTE, {**o, "proposal": 3, "option": "yes", "amount": "1"})


def test_simulate_refuses_an_amount_on_a_vote_in_one_line(settings: Path, tmp_path: Path) -> None:
    proposal = tmp_path / "p.yaml"
    proposal.write_text("format: custos.policy/v1\ndefault: deny\nrules: []\n")
    args = ["policy", "simulate", str(proposal), "--action", "VOTE", "--vault", "v1", "--chain", INJ.name]
    assert _one_line([*args, "--proposal", "3", "--option", "yes", "--amount", "5"]).endswith(
        "a VOTE moves no amount: drop --amount"
    )
    assert _one_line([*args, "--proposal", "3", "--option", "nope"]).endswith(
        "--option must be yes, no, abstain or no_with_veto, not 'nope'"
    )
    stake = ["policy", "simulate", str(proposal), "--action", "STAKE", "--vault", "v1", "--amount", "1"]
    assert _one_line([*stake, "--source-validator", VALOPER]).endswith(
        "--source-validator is not an option of a STAKE (it takes --amount, --validator, --deposit-data)"
    )
