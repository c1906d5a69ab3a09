"""No nonce gaps on a real anvil: a build that cannot succeed reserves nothing, a failed intent's
nonce goes to the vault's next build, and a nonce a signed transaction was sent with never does.

A gap holds every later transaction of the vault in the node's queue: each test sends the later
transaction first and checks that it confirms once the gap is filled the way the fix fills it.
"""

from __future__ import annotations

import secrets

import pytest

from services.chain.devnet import Devnet
from services.chain.errors import BroadcastRejected, InsufficientFunds, NodeError
from services.chain.service import ChainService
from services.chain.types import TxState
from services.families.config import ChainConfig
from services.families.ethereum.deposit import ETHER
from services.families.ethereum.family import address_of as ethereum_address
from services.signer.hsm import Hsm
from services.signer.types import KeyAlgorithm
from tests.chain.conftest import HsmVaultSigner, deposit_for, stake_spec, wait_final


@pytest.fixture
def unfunded(hsm: Hsm, chain_config: ChainConfig) -> HsmVaultSigner:
    """A fresh vault whose key lives in SoftHSM, holding nothing on the devnet."""
    key_id = secrets.token_bytes(16)
    point = hsm.generate_keypair(KeyAlgorithm.SECP256K1, "chain-test-unfunded", key_id)
    return HsmVaultSigner(hsm, key_id, str(ethereum_address(point)), chain_config)


async def test_a_build_the_vault_cannot_pay_reserves_nothing(
    service: ChainService, chain_config: ChainConfig, unfunded: HsmVaultSigner, devnet: Devnet
) -> None:
    """The reported sequence: a STAKE from an unfunded vault fails, the vault is funded, the next
    STAKE confirms at once (it used to take nonce 1 and wait behind the failed build's nonce 0)."""
    with pytest.raises(NodeError, match="gas estimation failed"):
        await service.build_transaction(
            "intent-unfunded", stake_spec(chain_config, deposit_for(unfunded, chain_config)), unfunded.address
        )
    devnet.fund(unfunded.address, 40 * ETHER)
    built = await service.build_transaction(
        "intent-funded", stake_spec(chain_config, deposit_for(unfunded, chain_config)), unfunded.address
    )
    assert built.decoded.nonce == 0
    sent = await service.broadcast(chain_config.name, unfunded.sign(built.unsigned_tx))
    assert (await wait_final(service, chain_config.name, sent.tx_hash)).state is TxState.CONFIRMED


async def test_a_vault_that_can_pay_the_value_but_not_the_fee_is_refused_before_any_nonce(
    service: ChainService, chain_config: ChainConfig, unfunded: HsmVaultSigner, devnet: Devnet
) -> None:
    """The node would refuse such a transaction outright, after it was signed: refused at the build."""
    spec = stake_spec(chain_config, deposit_for(unfunded, chain_config))
    devnet.fund(unfunded.address, 32 * ETHER)
    with pytest.raises(InsufficientFunds, match="may cost"):
        await service.build_transaction("intent-short", spec, unfunded.address)
    devnet.fund(unfunded.address, 33 * ETHER)
    built = await service.build_transaction("intent-enough", spec, unfunded.address)
    assert built.decoded.nonce == 0


async def test_a_released_nonce_fills_the_gap_and_the_transaction_behind_it_confirms(
    service: ChainService, chain_config: ChainConfig, vault: HsmVaultSigner
) -> None:
    failed, behind, next_one = (stake_spec(chain_config, deposit_for(vault, chain_config)) for _ in range(3))
    assert (await service.build_transaction("intent-failed", failed, vault.address)).decoded.nonce == 0
    waiting = await service.build_transaction("intent-behind", behind, vault.address)
    assert waiting.decoded.nonce == 1
    sent = await service.broadcast(chain_config.name, vault.sign(waiting.unsigned_tx))
    assert (await service.transaction_status(chain_config.name, sent.tx_hash)).state is TxState.PENDING

    # the first intent failed before it signed (say, the signer refused it): its nonce goes back
    released = await service.release_nonces(chain_config.name, "intent-failed", "failed: signer refused")
    assert (released.released, released.kept) == ((0,), ())
    filler = await service.build_transaction("intent-next", next_one, vault.address)
    assert filler.decoded.nonce == 0
    first = await service.broadcast(chain_config.name, vault.sign(filler.unsigned_tx))
    for tx_hash in (first.tx_hash, sent.tx_hash):
        assert (await wait_final(service, chain_config.name, tx_hash)).state is TxState.CONFIRMED


async def test_a_nonce_whose_signed_transaction_the_node_refused_is_kept(
    service: ChainService, chain_config: ChainConfig, vault: HsmVaultSigner, devnet: Devnet
) -> None:
    """That transaction stays valid until its nonce is used, and the signer would refuse any other
    intent's transaction for the nonce: handing it on would only fail the next intent instead."""
    built = await service.build_transaction(
        "intent-refused", stake_spec(chain_config, deposit_for(vault, chain_config)), vault.address
    )
    devnet.fund(vault.address, ETHER)  # drained between the build and the broadcast
    with pytest.raises(BroadcastRejected, match=r"(?i)insufficient funds"):
        await service.broadcast(chain_config.name, vault.sign(built.unsigned_tx))
    devnet.fund(vault.address, 1000 * ETHER)
    released = await service.release_nonces(chain_config.name, "intent-refused", "failed: broadcast refused")
    assert (released.released, released.kept) == ((), (0,))
    other = await service.build_transaction(
        "intent-other", stake_spec(chain_config, deposit_for(vault, chain_config)), vault.address
    )
    assert other.decoded.nonce == 1
    # the refused step itself may still send its transaction (or a replacement) with it
    again = await service.broadcast(chain_config.name, vault.sign(built.unsigned_tx))
    assert (await wait_final(service, chain_config.name, again.tx_hash)).state is TxState.CONFIRMED


async def test_validation_at_submission_refuses_a_vault_that_does_not_hold_the_value(
    service: ChainService, chain_config: ChainConfig, unfunded: HsmVaultSigner, devnet: Devnet
) -> None:
    """Approvers are never asked about what cannot be paid: checked when the intent is submitted."""
    spec = stake_spec(chain_config, deposit_for(unfunded, chain_config))
    with pytest.raises(InsufficientFunds, match=r"holds 0 ETH on .*; the intent needs 32 ETH plus fees"):
        await service.validate_intent(spec, unfunded.address)
    devnet.fund(unfunded.address, 32 * ETHER)
    await service.validate_intent(spec, unfunded.address)  # the fees are the build's to check
