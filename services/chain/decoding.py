"""The chain service's view of unsigned bytes, read by the chain's family (shared by the adapters)."""

from __future__ import annotations

from services.chain.types import DecodedTransaction
from services.families.base import Family
from services.families.config import ChainConfig
from services.runtime.intent import PolicyChangeTarget


def decoded_transaction(
    config: ChainConfig, family: Family, unsigned_tx: bytes, *, sender: str | None = None
) -> DecodedTransaction:
    """What ``unsigned_tx`` does on ``config``'s chain, as the family decodes it strictly; ``sender``
    when known (unsigned bytes name no sender on every family)."""
    decoded = family.decode(config, unsigned_tx)
    target = decoded.target
    assert not isinstance(target, PolicyChangeTarget)  # no family decodes a policy change
    return DecodedTransaction(
        chain=config.name,
        action=decoded.action,
        from_address=sender or "",
        to_address="",
        value=decoded.value,
        amount=decoded.amount,
        target=target,
        nonce=decoded.replay_key,
        fee_ceiling=decoded.fee_ceiling,
        signing_digest=family.signing_payload(config, unsigned_tx).data,
        summary=decoded.summary,
        step=decoded.step,
    )
