"""The ``custos`` command line driven as people drive it, each command its own process,
against the real stack (Temporal, every service, SoftHSM, anvil, mTLS) set up like the demo."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.audit.verify import verify_export
from services.cli import devstack
from services.cli.commands.intents import devnet_deposit
from services.cli.scenario import CHAIN, ETH, POLICY, CliRun, Demo, demo_policy
from services.families.config import HOODI_GENESIS_FORK_VERSION
from tests.cli.helpers import write_deposit_file

FLOW = ["SUBMITTED", "AWAITING_POLICY", "AWAITING_APPROVALS", "APPROVED", "SIGNING", "BROADCAST", "CONFIRMED"]


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """A running stack with the demo's approvers, policy and funded vault key."""
    stack = devstack.Stack.named(tmp_path_factory.mktemp("cli-stack"), "cli")
    devstack.up(stack)
    started = stack.running()
    try:
        demo = Demo(stack, say=lambda _: None)
        asyncio.run(demo.setup())
        yield demo
    finally:
        devstack.down(stack)
        assert devstack.leftover(started) == [], "dev down left processes behind"


def one_error(run: CliRun, code: str) -> str:
    """The single stderr line of a refused command (exit 2, nothing on stdout, no traceback)."""
    assert run.code == 2, run
    assert run.out == "" and "Traceback" not in run.err, run
    lines = run.err.splitlines()
    assert len(lines) == 1, run
    if "-o" in run.shown.split():  # --output json: the same error as a JSON object
        error = json.loads(lines[0])["error"]
        assert error["code"] == code, run
        return str(error["message"])
    assert lines[0].startswith(f"error: {code}: "), run
    return lines[0]


def stake_args(desk: Demo, key: str) -> tuple[str, ...]:
    """``intents submit`` of a 32 ETH STAKE to a new devnet validator, as JSON."""
    return (
        *("-o", "json", "intents", "submit", "STAKE", "--chain", CHAIN, "--vault", "vault-1"),
        *("--amount", "32ETH", "--generate-deposit", "--withdrawal-address", desk.vault_address),
        *("--idempotency-key", key),
    )


async def submit_stake(desk: Demo, key: str) -> str:
    """Submits as alice; returns the intent id once it awaits approvals."""
    run = await desk.custos("alice", *stake_args(desk, key))
    assert run.code == 0, run
    intent_id = str(json.loads(run.out)["intent"]["intent_id"])
    await desk.wait_for(intent_id, {"AWAITING_APPROVALS"})
    return intent_id


async def test_submit_approve_twice_watch_to_confirmed_and_verify_the_audit(
    desk: Demo, tmp_path: Path
) -> None:
    # the deposit data a staking provider hands over, as a file
    fork = bytes.fromhex(HOODI_GENESIS_FORK_VERSION[2:])
    deposit = write_deposit_file(
        tmp_path / "deposit_data.json", devnet_deposit(desk.vault_address, 32 * ETH, fork)
    )
    submit = (
        *("-o", "json", "intents", "submit", "STAKE", "--chain", CHAIN, "--vault", "vault-1"),
        *("--deposit-data", str(deposit), "--idempotency-key", "cli-stake-1"),
    )
    submitted = await desk.custos("alice", *submit)
    assert submitted.code == 0, submitted
    intent = json.loads(submitted.out)["intent"]
    iid = intent["intent_id"]
    assert intent["spec"]["amount"] == str(32 * ETH) and intent["initiator"] == "alice"
    again = json.loads((await desk.custos("alice", *submit)).out)
    assert again["intent"]["intent_id"] == iid and again["created"] is False
    reused = await desk.custos("alice", *stake_args(desk, "cli-stake-1"))
    assert "was used for a different request" in one_error(reused, "ALREADY_EXISTS")
    await desk.wait_for(iid, {"AWAITING_APPROVALS"})

    # separation of duties refuses the caller (PERMISSION_DENIED); the validator's refusals of
    # the decision itself (already decided, a key not theirs) stay FAILED_PRECONDITION
    own = await desk.approve(iid, "alice")
    assert one_error(own, "PERMISSION_DENIED").endswith(": the initiator cannot approve their own intent")
    first = await desk.approve(iid, "olivia")
    assert first.code == 0, first
    assert first.out.startswith(f"olivia approved {iid}: STAKE 32 ETH on {CHAIN} from vault-1")
    assert "quorum met: no" in first.out
    twice = await desk.approve(iid, "olivia")  # re-signed: answered with her recorded decision, counted once
    assert twice.code == 0 and "quorum met: no; approvals: olivia" in twice.out, twice
    key = str(desk.person("oscar").key_file)
    second = await desk.custos("oscar", "-o", "json", "approve", iid, "--key", key)
    assert second.code == 0, second
    assert json.loads(second.out)["quorum_met"] is True

    watch = await desk.custos("alice", "intents", "watch", iid, "--timeout", "120")
    assert watch.code == 0, watch
    transitions = [line for line in watch.out.splitlines() if line.split()[0].isdigit()]
    assert [line.split()[2] for line in transitions] == FLOW
    # the decisions, between the transitions they came between, each with the count it brought
    decisions = [line.split()[1:] for line in watch.out.splitlines() if not line.split()[0].isdigit()]
    assert [d for d in decisions if d[1] in ("approved:", "rejected:")] == [
        ["olivia", "approved:", "1", "of", "2", "operations"],
        ["oscar", "approved:", "2", "of", "2", "operations"],
    ]
    resumed = await desk.custos("alice", "-o", "json", "intents", "watch", iid, "--from-sequence", "6")
    assert [json.loads(line)["state"] for line in resumed.out.splitlines()] == ["BROADCAST", "CONFIRMED"]

    show = await desk.custos("olivia", "intents", "show", iid)
    assert show.code == 0, show
    timeline = show.out.split("\ntimeline\n")[1].splitlines()
    assert [line.split()[2] for line in timeline] == FLOW
    assert "approvals  olivia APPROVE, oscar APPROVE" in show.out
    got = json.loads((await desk.custos("olivia", "-o", "json", "intents", "show", iid)).out)
    assert [e["sequence"] for e in got["events"]] == list(range(1, 8))
    assert got["intent"]["state"] == "CONFIRMED" and got["intent"]["tx_hash"].startswith("0x")
    listed = json.loads(
        (await desk.custos("alice", "-o", "json", "intents", "list", "--state", "CONFIRMED")).out
    )
    assert iid in [i["intent_id"] for i in listed["intents"]]

    verified = await desk.custos("carol", "audit", "verify")
    assert verified.code == 0 and verified.out.startswith("OK: "), verified
    story = await desk.custos("carol", "-o", "json", "audit", "query", "--intent", iid)
    events = json.loads(story.out)["events"]
    actions = [e["action"] for e in events]
    assert actions.count("intent.approved_by") == 2 and actions[-1] == "intent.confirmed"
    refusals = [
        (e["actor"], e["outcome"], json.loads(e["payload_json"])["reason"])
        for e in events
        if e["action"] == "approve.refused"
    ]
    assert refusals == [("alice", "refused", "the initiator cannot approve their own intent")]
    export = tmp_path / "audit.jsonl"
    exported = await desk.custos("carol", "audit", "export", "--out", str(export))
    assert exported.code == 0, exported
    assert not (tmp_path / "audit.jsonl.partial").exists()
    offline = await desk.custos("carol", "audit", "verify", str(export))
    assert offline.code == 0 and "OK: " in offline.out, offline
    assert verify_export(export).ok
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text(export.read_text().replace('"actor":"oscar"', '"actor":"otto"', 1))
    refused = await desk.custos("carol", "audit", "verify", str(tampered))
    assert refused.code == 1 and "FAILED" in refused.out, refused


async def test_a_reject_ends_the_intent_and_watch_exits_non_zero(desk: Demo) -> None:
    iid = await submit_stake(desk, "cli-stake-rejected")
    own = await desk.custos("alice", "reject", iid, "--key", str(desk.person("alice").key_file))
    assert "the initiator cannot reject their own intent (cancel it instead)" in one_error(
        own, "PERMISSION_DENIED"
    )
    key = str(desk.person("otto").key_file)
    rejected = await desk.custos("otto", "reject", iid, "--key", key, "--reason", "wrong validator")
    assert rejected.code == 0 and rejected.out.startswith(f"otto rejected {iid}"), rejected
    assert "(now REJECTED)" in rejected.out, rejected  # the state after the rejection, not before
    shown = await desk.custos("alice", "intents", "show", iid)
    assert "otto REJECT (wrong validator)" in shown.out and "rejected by otto: wrong validator" in shown.out
    watch = await desk.custos("alice", "intents", "watch", iid, "--timeout", "60")
    assert watch.code == 1, watch
    assert watch.out.splitlines()[-1].split()[2] == "REJECTED"
    late = await desk.approve(iid, "olivia")
    assert "is REJECTED" in one_error(late, "FAILED_PRECONDITION")


async def test_bad_input_gives_one_line_and_a_non_zero_exit(desk: Demo) -> None:
    assert "int-nope" in one_error(await desk.custos("alice", "intents", "show", "int-nope"), "NOT_FOUND")
    malformed = await desk.custos(
        "alice", "intents", "submit", "STAKE", "--chain", CHAIN, "--vault", "vault-1", "--amount", "32.5wei"
    )
    assert "not a whole number of base units" in one_error(malformed, "INVALID_ARGUMENT")
    no_target = await desk.custos(
        "alice", "intents", "submit", "UNSTAKE", "--chain", CHAIN, "--vault", "vault-1"
    )
    assert "UNSTAKE needs --validator" in one_error(no_target, "INVALID_ARGUMENT")
    assert "no certificate for mallory" in one_error(
        await desk.custos("mallory", "intents", "list"), "INVALID_ARGUMENT"
    )
    assert "may not call CreateKey" in one_error(
        await desk.custos("alice", "keys", "create", "--vault", "vault-9", "--chain", CHAIN),
        "PERMISSION_DENIED",
    )
    iid = await submit_stake(desk, "cli-stake-wrong-key")
    wrong_key = await desk.custos("olivia", "approve", iid, "--key", str(desk.person("oscar").key_file))
    assert "not registered to olivia" in one_error(wrong_key, "FAILED_PRECONDITION")


async def test_policy_and_keys(desk: Demo, tmp_path: Path) -> None:
    active = json.loads((await desk.custos("dave", "-o", "json", "policy", "show")).out)["policy"]
    assert active["status"] == "ACTIVE" and active["document"] == demo_policy(desk.stack)
    keys = await desk.custos("ops", "keys", "list", "--vault", "vault-1")
    assert keys.code == 0 and desk.vault_address in keys.out, keys
    iid = await submit_stake(desk, "cli-stake-simulated")
    stricter = tmp_path / "stricter.yaml"
    stricter.write_text(
        POLICY.replace("- {name: operations, threshold: 2,", "- {name: operations, threshold: 3,")
    )
    simulated = await desk.custos("dave", "-o", "json", "policy", "simulate", str(stricter), "--intent", iid)
    assert simulated.code == 0, simulated
    result = json.loads(simulated.out)["results"][0]
    assert result["changed"] and result["intent_id"] == iid
    assert result["proposed"]["requirement"]["groups"][0]["threshold"] == 3


async def test_policy_simulate_a_hypothetical_intent(desk: Demo, tmp_path: Path) -> None:
    raised = tmp_path / "raised.yaml"
    raised.write_text(
        POLICY.replace('min: "1_024_000_000_000_000_000_001"', 'min: "4_096_000_000_000_000_000_001"')
    )
    ask = ("policy", "simulate", str(raised), "--action", "STAKE", "--vault", "v1", "--initiator", "alice")

    over = await desk.custos("dave", "-o", "json", *ask, "--amount", "2000")
    assert over.code == 0, over
    got = json.loads(over.out)
    assert got["intent"]["spec"]["amount"] == str(2000 * ETH) and got["intent"]["spec"]["chain"] == CHAIN
    assert got["intent"]["initiator"] == "alice" and got["changed_count"] == 1
    [result] = got["results"]
    assert result["intent_id"] == "" and result["changed"] is True
    assert result["current"]["outcome"] == "DENY" and result["current"]["rule_id"] == "deny-above-1024-eth"
    assert result["proposed"]["outcome"] == "ALLOW" and result["proposed"]["rule_id"] == "eth-large"
    groups = result["proposed"]["requirement"]["groups"]
    assert [(g["name"], g["threshold"]) for g in groups] == [("operations", 2), ("risk", 1)]

    table_ = await desk.custos("dave", *ask, "--amount", "2000ETH")
    assert table_.code == 0, table_
    assert table_.out.splitlines()[0] == f"hypothetical STAKE 2000 ETH on {CHAIN} from v1 by alice  CHANGED"
    assert table_.out.splitlines()[1].startswith("  now       DENY: amount above the 1024 ETH cap")
    assert "(rule eth-large)" in table_.out.splitlines()[2]
    assert table_.out.splitlines()[-1] == "1 of 1 intents would be decided differently"

    # exact wei: one wei over the cap is denied, the cap itself is not
    for amount, outcome in (("1024.000000000000000001", "DENY"), ("1024", "ALLOW")):
        edge = json.loads((await desk.custos("dave", "-o", "json", *ask, "--amount", amount)).out)
        assert edge["results"][0]["current"]["outcome"] == outcome, (amount, edge)
    assert edge["intent"]["spec"]["amount"] == str(1024 * ETH)

    # the initiator defaults to the caller, the time to now (the server's clock) unless given
    mine = await desk.custos(
        "dave", "-o", "json", "policy", "simulate", str(raised), "--action", "unstake", "--vault", "v1",
        "--validator", "0xabc", "--at", "2025-01-31T12:00:00Z",
    )  # fmt: skip
    assert mine.code == 0, mine
    mine_got = json.loads(mine.out)
    assert (
        mine_got["intent"]["initiator"] == "dave" and mine_got["intent"]["at"] == "2025-01-31T12:00:00.000Z"
    )
    assert (
        mine_got["intent"]["spec"]["amount"] == "0" and mine_got["results"][0]["current"]["outcome"] == "DENY"
    )

    # nothing was recorded
    listed = json.loads((await desk.custos("alice", "-o", "json", "intents", "list", "--vault", "v1")).out)
    assert listed["intents"] == []


async def test_policy_simulate_refuses_unclear_subjects_in_one_line(desk: Demo, tmp_path: Path) -> None:
    proposal = tmp_path / "same.yaml"
    proposal.write_text(POLICY)
    base = ("policy", "simulate", str(proposal))
    stake = ("--action", "STAKE", "--vault", "v1")
    cases = {
        "give what to simulate: --intent ID, --since TIME, or a hypothetical intent": (),
        "give one of --intent, --since and --action, not --intent and --action": (
            "--intent", "int-x", *stake, "--amount", "1",
        ),
        "not --since and --action": ("--since", "1d", *stake, "--amount", "1"),
        "--amount describes a hypothetical intent: give --action too": ("--intent", "int-x", "--amount", "5"),
        "--until goes with --since": (*stake, "--amount", "1", "--until", "1h"),
        "'-5' is negative": (*stake, "--amount", "-5"),
        "'lots' is not an amount in ETH": (*stake, "--amount", "lots"),
        "has more than 18 decimals (finer than 1 wei)": (*stake, "--amount", "0.0000000000000000001"),
        "a hypothetical STAKE needs --amount": stake,
        "a hypothetical intent needs --vault": ("--action", "STAKE", "--amount", "5"),
        "UNSTAKE needs --validator": ("--action", "UNSTAKE", "--vault", "v1"),
        "'SWAP' is not one of": ("--action", "SWAP", "--vault", "v1"),
    }  # fmt: skip
    runs = await asyncio.gather(*(desk.custos("dave", *base, *args) for args in cases.values()))
    for expected, run in zip(cases, runs, strict=True):
        assert expected in one_error(run, "INVALID_ARGUMENT"), (expected, run)
    as_json = await desk.custos("dave", "-o", "json", *base, *stake, "--amount", "-5")
    assert "is negative" in one_error(as_json, "INVALID_ARGUMENT")


async def test_governed_changes_through_the_cli(desk: Demo, tmp_path: Path) -> None:
    """An admin proposes, another approves; one admin alone changes nothing; a revocation is at once."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    trust = json.loads((await desk.custos("carol", "-o", "json", "admin", "trust")).out)
    assert trust["quorum"] == 1 and {a["admin_id"] for a in trust["admins"]} == {"dave", "erin"}
    dave, erin = (str(desk.person(n).key_file) for n in ("dave", "erin"))
    paula = ed25519.Ed25519PrivateKey.generate()
    pub = tmp_path / "paula.pub"
    pub.write_bytes(
        paula.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    args = ("admin", "register-approver", "paula", "--group", "operations", "--public-key", str(pub))
    proposed = await desk.custos("dave", "-o", "json", *args, "--key", dave)
    assert proposed.code == 0, proposed
    change = json.loads(proposed.out)["change"]
    cid = change["request"]["change_id"]
    assert change["state"] == "PROPOSED" and change["missing"] == 1
    alone = await desk.custos("dave", "admin", "approve", cid, "--key", dave)
    assert "already decided" in one_error(alone, "FAILED_PRECONDITION")
    applied = await desk.custos("erin", "admin", "approve", cid, "--key", erin)
    assert applied.code == 0 and "applied as governance entry" in applied.out, applied
    assert "anchored in the signer: yes: the signer holds the log through entry" in applied.out, applied
    listed = json.loads(
        (await desk.custos("carol", "-o", "json", "admin", "changes", "--state", "applied")).out
    )
    assert cid in [c["request"]["change_id"] for c in listed["changes"]]
    from services.policy.domain import key_id_for
    from services.policy.evidence import public_key_der

    key_id = key_id_for(public_key_der(paula))
    revoked = await desk.custos(
        "erin", "admin", "revoke-key", "paula", key_id, "--reason", "left", "--key", erin
    )
    assert revoked.code == 0 and "applied" in revoked.out, revoked
    assert "anchored in the signer: yes" in revoked.out, revoked
    anchored = json.loads((await desk.custos("dave", "-o", "json", "admin", "anchor")).out)
    assert anchored["anchored"] and anchored["signer_head_sequence"] == anchored["head_sequence"], anchored
    stricter = tmp_path / "stricter.yaml"
    stricter.write_text(POLICY.replace("description: >-", "description: >-\n  stricter:"))
    opened = await desk.custos("dave", "-o", "json", "policy", "propose", str(stricter), "--key", dave)
    assert opened.code == 0, opened
    activation = json.loads(opened.out)["change"]["request"]["change_id"]
    rejected = await desk.custos("erin", "admin", "reject", activation, "--key", erin)
    assert rejected.code == 0 and "REJECTED" in rejected.out, rejected
    trust_file = desk.stack.root / "trust.yaml"
    verified = await desk.custos("carol", "admin", "verify-log", "--trust", str(trust_file))
    assert verified.code == 0 and "governance log OK" in verified.out, verified
    stranger = tmp_path / "stranger-trust.yaml"  # a trust root of other admins: nothing verifies
    from services.policy.domain import SignatureScheme
    from services.policy.governance import AdminKey, trust_root_yaml

    others = [
        AdminKey(n, SignatureScheme.ED25519, public_key_der(ed25519.Ed25519PrivateKey.generate()))
        for n in ("dave", "erin")
    ]
    stranger.write_text(trust_root_yaml(others, 1))
    refused = await desk.custos("carol", "admin", "verify-log", "--trust", str(stranger))
    assert refused.code == 1 and "FAILED verification" in refused.out, refused
    no_key = await desk.custos(
        "olivia", "admin", "approve", activation, "--key", str(desk.person("olivia").key_file)
    )
    assert one_error(no_key, "PERMISSION_DENIED")


async def test_reconcile_shows_a_transaction_sent_outside_custos_until_acknowledged(desk: Demo) -> None:
    """The chain service reads the signer's records over mTLS as svc:chain; people see the result."""
    from services.chain.ethereum.rpc import JsonRpcClient

    clean = await desk.custos("ops", "-o", "json", "reconcile", "run", "--vault", "vault-1")
    assert clean.code == 0, clean
    rows = {v["chain"]: v for v in json.loads(clean.out)["vaults"]}
    assert set(rows) == {CHAIN, "cosmos-devnet"}  # the vault key's account on each chain
    vault = rows[CHAIN]
    assert (vault["status"], vault["address"], vault["alerts"]) == (
        "CLEAN",
        desk.vault_address,
        [],
    )
    assert (rows["cosmos-devnet"]["status"], rows["cosmos-devnet"]["address"]) == (
        "CLEAN",
        desk.cosmos_address,
    )

    # A transaction from the vault that custos never signed: anvil sends it without the HSM.
    rpc = JsonRpcClient(next(c["rpc_url"] for c in desk.stack.settings()["chains"] if c["name"] == CHAIN))
    rpc.call_sync("anvil_impersonateAccount", [desk.vault_address])
    sent = {"from": desk.vault_address, "to": "0x000000000000000000000000000000000000dEaD", "value": "0x1"}
    stolen = str(rpc.call_sync("eth_sendTransaction", [sent])).lower()
    rpc.call_sync("anvil_stopImpersonatingAccount", [desk.vault_address])
    for _ in range(100):
        if rpc.call_sync("eth_getTransactionReceipt", [stolen]) is not None:
            break
        await asyncio.sleep(0.05)

    alerted = await desk.custos("ops", "reconcile", "run", "--vault", "vault-1")
    assert alerted.code == 1 and "ALERT" in alerted.out and stolen in alerted.out, alerted
    got = json.loads((await desk.custos("carol", "-o", "json", "reconcile", "run", "--vault", "vault-1")).out)
    (alert,) = next(v for v in got["vaults"] if v["chain"] == CHAIN)["alerts"]
    assert alert["kind"] == "UNSIGNED_NONCE" and alert["seen"]["tx_hash"] == stolen
    assert str(alert["nonce"]) == str(vault["confirmed_nonce"])

    one_error(
        await desk.custos("carol", "reconcile", "ack", alert["alert_id"], "--reason", "seen"),
        "PERMISSION_DENIED",
    )
    done = await desk.custos(
        "ops", "reconcile", "ack", alert["alert_id"], "--reason", "test: anvil impersonation"
    )
    assert done.code == 0 and "acknowledged by ops" in done.out, done
    assert (await desk.custos("ops", "reconcile", "run", "--vault", "vault-1")).code == 0

    query = ("-o", "json", "audit", "query", "--action", "chain.reconcile")
    trail = json.loads((await desk.custos("carol", *query)).out)["events"]
    assert [(e["actor"], e["outcome"], e["subject"]) for e in trail] == [
        ("svc:chain", "alert", "vault:vault-1"),
        ("ops", "cleared", "vault:vault-1"),
    ]


async def test_errors_of_the_first_hour_are_one_clear_line(desk: Demo, tmp_path: Path) -> None:
    """Each reproduced on the landed code (issue 15, item 7): a refusal read as a write error, a YAML
    error cut to its first line (no line number), an unknown chain, a policy version prefix."""
    refused = await desk.custos("alice", "audit", "export", "--out", str(tmp_path / "x.jsonl"))
    assert "may not call ExportEvents" in one_error(refused, "PERMISSION_DENIED")
    assert not list(tmp_path.iterdir())  # noqa: ASYNC240 - a test's folder, read once

    broken = tmp_path / "broken.yaml"
    broken.write_text("format: custos.policy/v1\nrules:\n  - id: x\n   match: {}\n")
    proposed = await desk.custos(
        "dave", "policy", "propose", str(broken), "--key", str(desk.person("dave").key_file)
    )
    assert "not valid YAML: line 4, column 4: expected <block end>" in one_error(proposed, "INVALID_ARGUMENT")

    nochain = await desk.custos(
        "alice",
        "intents",
        "submit",
        "UNSTAKE",
        "--chain",
        "nochain",
        "--vault",
        "vault-1",
        "--validator",
        "0x01",
    )
    assert f"unknown chain 'nochain': the chains are cosmos-devnet, {CHAIN}, solana-devnet" in one_error(
        nochain, "INVALID_ARGUMENT"
    )

    listed = await desk.custos("dave", "policy", "list")
    prefix = listed.out.splitlines()[1].split()[0]  # as the VERSION column shows it
    shown = await desk.custos("dave", "-o", "json", "policy", "show", "--version", prefix)
    assert shown.code == 0, shown
    assert json.loads(shown.out)["policy"]["version"].startswith(prefix)
    unknown = await desk.custos("dave", "policy", "show", "--version", "ffffffffffffffff")
    assert "no policy version starts with ffffffffffffffff" in one_error(unknown, "NOT_FOUND")
