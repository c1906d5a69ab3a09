"""cosmpy's generated Cosmos SDK protos: the independent reference the Cosmos family is tested against.

cosmpy ships them under ``cosmpy/protos`` and puts that folder on ``sys.path`` when
``cosmpy.protos`` is imported; they are loaded by name here so that import order is explicit
(an import sorter would otherwise move ``cosmos...`` above ``cosmpy``).
"""

from __future__ import annotations

import hashlib
import importlib
from typing import Any

import bech32
import cosmpy.protos  # noqa: F401  (puts cosmpy's top-level proto packages on sys.path)
from coincurve import PublicKey
from coincurve.ecdsa import cdata_to_der, deserialize_compact
from Crypto.Hash import RIPEMD160

tx_pb2: Any = importlib.import_module("cosmos.tx.v1beta1.tx_pb2")
staking_pb2: Any = importlib.import_module("cosmos.staking.v1beta1.tx_pb2")
distribution_pb2: Any = importlib.import_module("cosmos.distribution.v1beta1.tx_pb2")
gov_pb2: Any = importlib.import_module("cosmos.gov.v1.tx_pb2")
gov_types_pb2: Any = importlib.import_module("cosmos.gov.v1.gov_pb2")
keys_pb2: Any = importlib.import_module("cosmos.crypto.secp256k1.keys_pb2")
coin_pb2: Any = importlib.import_module("cosmos.base.v1beta1.coin_pb2")
signing_pb2: Any = importlib.import_module("cosmos.tx.signing.v1beta1.signing_pb2")
any_pb2: Any = importlib.import_module("google.protobuf.any_pb2")


def address(prefix: str, compressed_key: bytes) -> str:
    """bech32(prefix, ripemd160(sha256(key))), computed here rather than by the family."""
    digest = RIPEMD160.new(hashlib.sha256(compressed_key).digest()).digest()
    data = bech32.convertbits(digest, 8, 5)
    assert data is not None
    return bech32.bech32_encode(prefix, data)


def signer_of(signed_tx: bytes, *, chain_id: str, account_number: int, prefix: str) -> str:
    """The account whose key signed a ``TxRaw``: its one signature must verify for the
    AuthInfo's key over sha256 of the SignDoc rebuilt here."""
    raw = tx_pb2.TxRaw.FromString(signed_tx)
    assert len(raw.signatures) == 1 and len(raw.signatures[0]) == 64
    auth = tx_pb2.AuthInfo.FromString(raw.auth_info_bytes)
    (info,) = auth.signer_infos
    assert info.public_key.type_url == "/cosmos.crypto.secp256k1.PubKey"
    key = keys_pb2.PubKey.FromString(info.public_key.value).key
    doc = tx_pb2.SignDoc(
        body_bytes=raw.body_bytes,
        auth_info_bytes=raw.auth_info_bytes,
        chain_id=chain_id,
        account_number=account_number,
    ).SerializeToString()
    der = cdata_to_der(deserialize_compact(raw.signatures[0]))
    assert PublicKey(key).verify(der, hashlib.sha256(doc).digest(), hasher=None)
    return address(prefix, key)


MESSAGE_TYPES = {
    "STAKE": "/cosmos.staking.v1beta1.MsgDelegate",
    "UNSTAKE": "/cosmos.staking.v1beta1.MsgUndelegate",
    "RESTAKE": "/cosmos.staking.v1beta1.MsgBeginRedelegate",
    "CLAIM_REWARDS": "/cosmos.distribution.v1beta1.MsgWithdrawDelegatorReward",
    "VOTE": "/cosmos.gov.v1.MsgVote",
}


def staking_message(action: str, delegator: str, validators: tuple[str, str], denom: str, amount: int) -> Any:
    """The x/staking message of ``action``, as a protobuf ``Any`` with the SDK's ``/`` type URL."""
    coin = coin_pb2.Coin(denom=denom, amount=str(amount))
    if action == "RESTAKE":
        msg = staking_pb2.MsgBeginRedelegate(
            delegator_address=delegator,
            validator_src_address=validators[0],
            validator_dst_address=validators[1],
            amount=coin,
        )
    else:
        cls = staking_pb2.MsgDelegate if action == "STAKE" else staking_pb2.MsgUndelegate
        msg = cls(delegator_address=delegator, validator_address=validators[0], amount=coin)
    return any_pb2.Any(type_url=MESSAGE_TYPES[action], value=msg.SerializeToString())


def withdraw_reward_message(delegator: str, validator: str) -> Any:
    """``MsgWithdrawDelegatorReward`` as an ``Any``."""
    msg = distribution_pb2.MsgWithdrawDelegatorReward(
        delegator_address=delegator, validator_address=validator
    )
    return any_pb2.Any(type_url=MESSAGE_TYPES["CLAIM_REWARDS"], value=msg.SerializeToString())


def vote_message(proposal_id: int, voter: str, option: str, metadata: str = "") -> Any:
    """gov v1 ``MsgVote`` as an ``Any``; ``option`` is the enum's suffix ("YES", "NO_WITH_VETO"...),
    looked up in cosmpy's own ``VoteOption`` rather than numbered here."""
    number = gov_types_pb2.VoteOption.Value(f"VOTE_OPTION_{option}")
    msg = gov_pb2.MsgVote(proposal_id=proposal_id, voter=voter, option=number, metadata=metadata)
    return any_pb2.Any(type_url=MESSAGE_TYPES["VOTE"], value=msg.SerializeToString())


def auth_info(compressed_key: bytes, *, sequence: int, denom: str, fee_amount: int, gas_limit: int) -> Any:
    """One SIGN_MODE_DIRECT signer with the generic secp256k1 key, and the fee."""
    key = any_pb2.Any(
        type_url="/cosmos.crypto.secp256k1.PubKey",
        value=keys_pb2.PubKey(key=compressed_key).SerializeToString(),
    )
    signer = tx_pb2.SignerInfo(
        public_key=key,
        mode_info=tx_pb2.ModeInfo(single=tx_pb2.ModeInfo.Single(mode=signing_pb2.SIGN_MODE_DIRECT)),
        sequence=sequence,
    )
    coins = [coin_pb2.Coin(denom=denom, amount=str(fee_amount))] if fee_amount else []
    return tx_pb2.AuthInfo(signer_infos=[signer], fee=tx_pb2.Fee(amount=coins, gas_limit=gas_limit))


def sign_doc(body: Any, auth: Any, *, chain_id: str, account_number: int) -> bytes:
    return bytes(
        tx_pb2.SignDoc(
            body_bytes=body.SerializeToString(),
            auth_info_bytes=auth.SerializeToString(),
            chain_id=chain_id,
            account_number=account_number,
        ).SerializeToString()
    )
