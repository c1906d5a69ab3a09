"""The CLI's parts that need no running stack: parsing, formatting, identity, one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.cli.commands.approvals import decision_line
from services.cli.commands.intents import (
    deposit_from_file,
    devnet_deposit,
    event_line,
    show_lines,
)
from services.cli.context import CliContext, Duration, amount_text, chain_amount, error_line, table, to_json
from services.cli.main import cli
from services.cli.people import load_key, load_or_create_key
from services.families.config import HOODI_GENESIS_FORK_VERSION, ChainConfig, ChainFamily
from services.families.ethereum.deposit import deposit_of
from services.pb.custos.common.v1 import common_pb2
from services.pb.custos.staking.v1 import staking_pb2
from services.runtime.errors import InvalidArgument, NotFound
from services.runtime.settings import ServiceSettings
from tests.cli.helpers import write_deposit_file

VAULT = "0x256A674b0677d0E6BfbDB5d092BD57994aCcfE4e"
FORK = bytes.fromhex(HOODI_GENESIS_FORK_VERSION[2:])


@pytest.fixture
def nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory without a dev stack, and no CUSTOS_* settings from the caller."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("CUSTOS_")]:
        monkeypatch.delenv(name)
    return tmp_path


@pytest.mark.parametrize(
    ("text", "wei"),
    [
        ("32ETH", 32 * 10**18),
        ("32 eth", 32 * 10**18),
        ("1.5gwei", 1_500_000_000),
        ("0.000000000000000001ETH", 1),
        ("32000000000000000000", 32 * 10**18),
        ("1_000", 1000),
        ("0", 0),
    ],
)
def test_amounts_are_exact_integers_of_base_units(text: str, wei: int) -> None:
    assert chain_amount(text, ChainConfig(name="ethereum-devnet", chain_id=1, rpc_url="x")) == wei


@pytest.mark.parametrize("text", ["1.5wei", "abc", "-1", "1e18", "32 BTC", "0.0000000000000000001ETH", ""])
def test_malformed_amounts_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgument):
        chain_amount(text, ChainConfig(name="ethereum-devnet", chain_id=1, rpc_url="x"))


def test_durations() -> None:
    assert Duration().convert("90s", None, None).total_seconds() == 90
    assert Duration().convert("2d", None, None).total_seconds() == 2 * 86400
    with pytest.raises(click.BadParameter):
        Duration().convert("1 hour", None, None)


def test_amounts_read_as_people_read_them_in_the_chains_display_unit() -> None:
    eth = ChainConfig(name="ethereum-devnet", chain_id=1, rpc_url="x").display()
    assert amount_text(str(32 * 10**18), eth) == "32 ETH"
    assert amount_text(str(15 * 10**17), eth) == "1.5 ETH"
    assert amount_text("0", eth) == "0 ETH"
    assert amount_text(str(2**256 - 1), eth).startswith(
        "115792089237316195423570985008687907853269984665640564039457"
    )
    atom = ChainConfig(
        name="cosmoshub",
        family=ChainFamily.COSMOS,
        chain_id="cosmoshub-4",
        rpc_url="x",
        denom="uatom",
        display_unit="ATOM",
        display_exponent=6,
        max_fee_wei=10**6,
    )
    assert amount_text("1500001", atom.display()) == "1.500001 ATOM"
    assert amount_text("5", atom.model_copy(update={"display_unit": ""}).display()) == "5 uatom"
    assert amount_text("5", None) == "5 base units"


def _intent() -> staking_pb2.Intent:
    spec = common_pb2.IntentSpec(
        action=common_pb2.ACTION_STAKE, chain="ethereum-devnet", vault_id="vault-1", amount=str(32 * 10**18)
    )
    spec.stake.validator = "0x" + "ab" * 48
    intent = staking_pb2.Intent(
        intent_id="int-1", spec=spec, state=staking_pb2.INTENT_STATE_AWAITING_APPROVALS, digest=b"\x01\x02"
    )
    intent.approvals.add(approver_id="olivia", decision=common_pb2.DECISION_APPROVE)
    intent.created_at.FromSeconds(1_700_000_000)
    return intent


def test_json_has_every_field_with_hex_bytes_short_enums_and_one_oneof_member() -> None:
    got = to_json(_intent())
    assert set(got) == {f.name for f in staking_pb2.Intent.DESCRIPTOR.fields}
    assert got["state"] == "AWAITING_APPROVALS"
    assert got["digest"] == "0102"
    assert got["spec"]["action"] == "STAKE"
    assert "stake" in got["spec"] and "unstake" not in got["spec"] and "restake" not in got["spec"]
    assert got["spec"]["stake"]["params"] is None
    assert got["requirement"] is None and got["approval_deadline"] is None
    assert got["approvals"][0]["decision"] == "APPROVE"
    assert got["created_at"] == "2023-11-14T22:13:20.000Z"
    json.dumps(got)  # plain JSON all the way down


def test_show_and_timeline_lines() -> None:
    event = staking_pb2.IntentEvent(
        intent_id="int-1",
        sequence=4,
        state=staking_pb2.INTENT_STATE_APPROVED,
        detail="quorum met: olivia, oscar",
    )
    event.time.FromSeconds(1_700_000_000)
    assert event_line(to_json(event)) == " 4 22:13:20.000 APPROVED            quorum met: olivia, oscar"
    lines = show_lines(
        {"intent": to_json(_intent()), "events": [to_json(event)]}, {"ethereum-devnet": ("ETH", 18)}
    )
    assert lines[0].split() == ["intent", "int-1"]
    assert "what       STAKE 32 ETH on ethereum-devnet from vault-1" in lines
    assert lines[-2:] == ["timeline", "   4 22:13:20.000 APPROVED            quorum met: olivia, oscar"]


def test_decision_line() -> None:
    data = {"approver": "olivia", "decision": "APPROVE", "intent": to_json(_intent()), "quorum_met": False}
    assert decision_line(data, {"ethereum-devnet": ("ETH", 18)}) == (
        "olivia approved int-1: STAKE 32 ETH on ethereum-devnet from vault-1 "
        "(quorum met: no; approvals: olivia)"
    )


def test_tables_align_their_columns() -> None:
    assert table([("a", "long value", 1), ("bbb", "v", 22)], ("X", "Y", "Z")) == [
        "X    Y           Z",
        "a    long value  1",
        "bbb  v           22",
    ]


def test_errors_are_one_line_with_their_code() -> None:
    assert error_line(NotFound("intent int-x not found")) == "error: NOT_FOUND: intent int-x not found"
    assert json.loads(error_line(InvalidArgument("bad"), as_json=True)) == {
        "error": {"code": "INVALID_ARGUMENT", "message": "bad"}
    }


def test_deposit_data_files_from_the_staking_deposit_cli(tmp_path: Path) -> None:
    one, two = (devnet_deposit(VAULT, 32 * 10**18, FORK) for _ in range(2))
    path = tmp_path / "deposit_data.json"
    write_deposit_file(path, one)
    assert deposit_from_file(path, None) == (one, 32 * 10**18)
    write_deposit_file(path, one, two)
    with pytest.raises(InvalidArgument, match="pick one with --validator"):
        deposit_from_file(path, None)
    assert deposit_from_file(path, two.validator)[0] == two
    path.write_text("[{}]")
    with pytest.raises(InvalidArgument, match="lacks"):
        deposit_from_file(path, None)


def test_generated_deposits_pay_out_to_the_vault_and_compound_above_32_eth() -> None:
    plain = devnet_deposit(VAULT, 32 * 10**18, FORK)
    big = devnet_deposit(VAULT, 64 * 10**18, FORK)
    plain_data, big_data = deposit_of(plain), deposit_of(big)
    assert plain_data is not None and big_data is not None
    assert plain_data.withdrawal_credentials == b"\x01" + bytes(11) + bytes.fromhex(VAULT[2:])
    assert big_data.withdrawal_credentials[0] == 2
    with pytest.raises(InvalidArgument, match="20-byte address"):
        devnet_deposit("0x1234", 32 * 10**18, FORK)


def test_approver_key_files(tmp_path: Path) -> None:
    made = load_or_create_key(tmp_path / "olivia.pem")
    assert (tmp_path / "olivia.pem").stat().st_mode & 0o077 == 0
    assert load_key(tmp_path / "olivia.pem").public_key() == made.public_key()
    p256 = ec.generate_private_key(ec.SECP256R1())
    secp = ec.generate_private_key(ec.SECP256K1())
    for name, key in (("p256.pem", p256), ("k1.pem", secp)):
        (tmp_path / name).write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    assert isinstance(load_key(tmp_path / "p256.pem"), ec.EllipticCurvePrivateKey)
    with pytest.raises(InvalidArgument, match="neither an Ed25519 nor an ECDSA P-256"):
        load_key(tmp_path / "k1.pem")
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(InvalidArgument, match="not a PEM private key"):
        load_key(tmp_path / "junk.pem")


def test_an_encrypted_approver_key_opens_with_its_passphrase_from_a_file_or_the_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A passphrase-protected key file is used, not refused; a wrong or missing passphrase is one
    typed line (stdin is no terminal under pytest: no prompt)."""
    from services.cli.people import PASSPHRASE_ENV, write_new_key

    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    made = write_new_key(tmp_path / "paula.pem", b"correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "paula.pem").read_bytes()
    assert (tmp_path / "paula.pem").stat().st_mode & 0o077 == 0
    assert b"PUBLIC KEY" in (tmp_path / "paula.pub").read_bytes()
    (tmp_path / "pass").write_text("correct horse\n")
    opened = load_key(tmp_path / "paula.pem", tmp_path / "pass")
    assert opened.public_key() == made.public_key()
    with pytest.raises(InvalidArgument, match="protected by a passphrase: give --passphrase-file"):
        load_key(tmp_path / "paula.pem")
    monkeypatch.setenv(PASSPHRASE_ENV, "wrong")
    with pytest.raises(InvalidArgument, match="wrong passphrase for"):
        load_key(tmp_path / "paula.pem")
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse")
    assert load_key(tmp_path / "paula.pem").public_key() == made.public_key()
    with pytest.raises(InvalidArgument, match="never overwritten"):
        write_new_key(tmp_path / "paula.pem", None)


def test_approval_progress_and_the_inbox() -> None:
    from services.cli.progress import needs, progress_text, short_text, waiting_text

    ops = {"name": "operations", "threshold": 2, "members": ["alice", "olivia", "oscar", "paula"]}
    risk = {"name": "risk", "threshold": 1, "members": ["rita"]}
    intent = {
        "state": "AWAITING_APPROVALS",
        "initiator": "alice",
        "requirement": {"groups": [ops, risk]},
        "approvals": [{"approver_id": "olivia", "decision": "APPROVE"}],
    }
    assert progress_text(intent) == "1 of 2 operations; 0 of 1 risk"
    assert short_text(intent) == "operations 1 more of oscar, paula; risk 1 more of rita"
    assert waiting_text(intent).startswith("waiting for approvals: 1 of 2 operations; 0 of 1 risk (needs ")
    assert [n for n in ("alice", "olivia", "oscar", "rita", "carol") if needs(intent, n)] == ["oscar", "rita"]
    met = {**intent, "approvals": [*intent["approvals"], {"approver_id": "oscar", "decision": "APPROVE"}]}
    assert not needs(met, "paula") and needs(met, "rita")
    assert not needs({**intent, "state": "APPROVED"}, "oscar")
    assert waiting_text({"state": "SIGNING"}).startswith("waiting for the signer")


def test_identity_is_the_certificate_cn(pki_dir: Path, nowhere: Path) -> None:
    settings = nowhere / "custos.yaml"
    settings.write_text(f"tls:\n  pki_dir: {pki_dir}\n")
    assert CliContext(config=settings, person="carol").identity() == "carol"
    by_file = CliContext(config=settings, cert=pki_dir / "dave.crt", key_file=pki_dir / "dave.key")
    assert by_file.identity() == "dave"
    with pytest.raises(InvalidArgument, match="no certificate for zed"):
        CliContext(config=settings, person="zed").identity()
    with pytest.raises(InvalidArgument, match="give both --cert and --key-file"):
        CliContext(config=settings, cert=pki_dir / "dave.crt").identity()
    with pytest.raises(InvalidArgument, match="who is calling"):
        CliContext(config=settings).identity()


def test_a_stack_pins_its_own_state_folder(nowhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = nowhere / "stacks" / "s1"
    root.mkdir(parents=True)
    (root / "custos.yaml").write_text(f"state_dir: {root}\nendpoints:\n  staking: 127.0.0.1:1\n")
    monkeypatch.setenv("CUSTOS_STATE_DIR", str(nowhere / "stacks"))
    got = CliContext(stack="s1").settings_as(ServiceSettings)
    assert got.tls.pki_dir == root / "pki"
    assert got.endpoints.staking == "127.0.0.1:1"
    with pytest.raises(InvalidArgument, match="stack s2 is not set up"):
        CliContext(stack="s2").settings()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["intents", "submit", "STAKE", "--chain", "c", "--vault", "v", "--amount", "12abc"],
            "INVALID_ARGUMENT",
            "cannot read '12abc': chain 'c' is not in the chain registry of the settings",
        ),
        (["intents", "show", "int-1"], "INVALID_ARGUMENT", "who is calling?"),
        (
            ["--stack", "nope", "--as", "alice", "intents", "list"],
            "INVALID_ARGUMENT",
            "stack nope is not set up",
        ),
        (["intents", "lst"], "INVALID_ARGUMENT", "No such command 'lst'"),
        (["--output", "xml", "intents", "list"], "INVALID_ARGUMENT", "'xml' is not one of"),
        (["approve", "int-1", "--key", "/no/such.pem"], "INVALID_ARGUMENT", "does not exist"),
        (
            ["audit", "verify", "--trust", "k=zz", "/dev/null"],
            "INVALID_ARGUMENT",
            "--trust expects KEY_ID=HEX",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(nowhere: Path, args: list[str], code: str, message: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {code}: ") and message in lines[0], result.stderr
    if "--output" not in args:
        as_json = CliRunner().invoke(cli, ["-o", "json", *args])
        assert as_json.exit_code == 2
        assert json.loads(as_json.stderr)["error"]["code"] == code


def test_offline_verification_needs_no_stack(nowhere: Path) -> None:
    bad = nowhere / "audit.jsonl"
    bad.write_text('{"type":"header"}\n')
    result = CliRunner().invoke(cli, ["audit", "verify", str(bad)])
    assert result.exit_code == 1
    assert "FAILED" in result.stdout
    as_json = CliRunner().invoke(cli, ["-o", "json", "audit", "verify", str(bad)])
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["ok"] is False


def test_json_of_a_targets_params_is_an_object_of_hex_strings() -> None:
    spec = common_pb2.IntentSpec(action=common_pb2.ACTION_STAKE, chain="c", vault_id="v", amount="1")
    spec.stake.validator = "x"
    spec.stake.params.fields["pubkey"] = b"\x01\x02"
    spec.stake.params.fields["a"] = b""
    assert to_json(spec)["stake"]["params"] == {"fields": {"a": "", "pubkey": "0102"}}


# --- errors that used to be INTERNAL, cut short, or silent (issue 15, item 7) ----------------------

DEVNET_SETTINGS = f"""\
chains:
  - name: ethereum-devnet
    family: ethereum
    chain_id: 31337
    rpc_url: http://127.0.0.1:1
    genesis_fork_version: "{HOODI_GENESIS_FORK_VERSION}"
"""


def one_line(result: Any, code: str) -> str:
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {code}: "), result.stderr
    return str(lines[0])


def test_a_deposit_amount_the_contract_cannot_hold_is_refused_not_internal(nowhere: Path) -> None:
    (nowhere / "custos.yaml").write_text(DEVNET_SETTINGS)
    args = ["--config", "custos.yaml", "intents", "submit", "STAKE", "--chain", "ethereum-devnet"]
    args += ["--vault", "vault-1", "--generate-deposit", "--withdrawal-address", VAULT]
    line = one_line(CliRunner().invoke(cli, [*args, "--amount", "20000000000ETH"]), "INVALID_ARGUMENT")
    assert "does not fit the contract's uint64 gwei" in line
    line = one_line(CliRunner().invoke(cli, [*args, "--amount", "0.5ETH"]), "INVALID_ARGUMENT")
    assert "below the 1 ETH minimum" in line


def test_an_unknown_chain_is_named_with_the_chains_there_are(nowhere: Path) -> None:
    (nowhere / "custos.yaml").write_text(DEVNET_SETTINGS)
    args = ["--config", "custos.yaml", "intents", "submit", "UNSTAKE", "--chain", "nochain"]
    line = one_line(
        CliRunner().invoke(cli, [*args, "--vault", "vault-1", "--validator", "0x01"]), "INVALID_ARGUMENT"
    )
    assert line.endswith("unknown chain 'nochain': the chains are ethereum-devnet"), line


def test_a_missing_ca_file_is_one_clear_line(nowhere: Path, pki_dir: Path) -> None:
    (nowhere / "custos.yaml").write_text(f"tls:\n  ca_cert: {nowhere / 'no-ca.crt'}\n")
    args = [
        "--config",
        "custos.yaml",
        "--cert",
        str(pki_dir / "dave.crt"),
        "--key-file",
        str(pki_dir / "dave.key"),
    ]
    line = one_line(CliRunner().invoke(cli, [*args, "intents", "list"]), "INVALID_ARGUMENT")
    assert line.endswith(
        f"cannot read the CA certificate (tls.ca_cert) {nowhere / 'no-ca.crt'}: No such file or directory"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("endpoint:\n  staking: 127.0.0.1:1\n", "unknown key 'endpoint' (did you mean 'endpoints'?)"),
        ("endpoints:\n  stakng: 127.0.0.1:1\n", "unknown setting endpoints.stakng (a typo?)"),
        (
            "endpoints:\n  staking: 127.0.0.1:1\n - x\n",
            "is not valid YAML: line 3, column 2: expected <block end>",
        ),
    ],
)
def test_a_settings_file_with_a_typo_is_refused_saying_where(nowhere: Path, text: str, message: str) -> None:
    (nowhere / "custos.yaml").write_text(text)
    line = one_line(
        CliRunner().invoke(cli, ["--config", "custos.yaml", "--as", "alice", "intents", "list"]),
        "INVALID_ARGUMENT",
    )
    assert message in line, line


def test_every_settings_key_a_process_reads_is_known_in_the_file() -> None:
    from services.audit.main import AuditSettings
    from services.chain.main import ChainSettings
    from services.policy.main import PolicySettings
    from services.runtime.settings import FILE_KEYS
    from services.signer.main import SignerSettings
    from services.staking.main import StakingSettings
    from workflows.staking.worker import WorkerSettings

    classes = (
        ServiceSettings,
        AuditSettings,
        ChainSettings,
        PolicySettings,
        SignerSettings,
        StakingSettings,
        WorkerSettings,
    )
    read = {name for cls in classes for name in cls.model_fields}
    assert read <= FILE_KEYS, f"add to settings.FILE_KEYS: {sorted(read - FILE_KEYS)}"


def test_a_multi_line_error_is_kept_whole_on_one_line() -> None:
    e = InvalidArgument("document: not valid YAML\n  in line 3\n   ^")
    assert error_line(e) == "error: INVALID_ARGUMENT: document: not valid YAML in line 3 ^"


def test_a_policy_yaml_error_says_what_and_where() -> None:
    from services.policy.document import parse_policy
    from services.policy.errors import PolicyDocumentInvalid

    with pytest.raises(PolicyDocumentInvalid) as e:
        parse_policy("format: custos.policy/v1\nrules:\n  - id: x\n   match: {}\n")
    assert str(e.value) == (
        "document: not valid YAML: line 4, column 4: expected <block end>, but found '<block mapping start>'"
        " (while parsing a block collection)"
    )
