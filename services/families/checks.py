"""What every family's ``check`` ends with, once the bytes compared field by field with the intent."""

from __future__ import annotations

from collections.abc import Iterable

from services.families.base import Decoded, Family, PolicyFacts
from services.families.config import ChainConfig
from services.families.errors import AddressInvalid, FamilyError, FeeAboveCap, TransactionMismatch


def validator_facts(family: Family, chain: ChainConfig, texts: Iterable[str]) -> PolicyFacts:
    """Facts naming the validators ``texts`` (in the family's spelling where it accepts them: facts
    do not validate, ``validate_intent`` refuses what is wrong), no payout address, the chain's unit."""
    validators = set()
    for text in texts:
        if not text:
            continue
        try:
            validators.add(family.normalise_validator(chain, text))
        except AddressInvalid:
            validators.add(text)
    return PolicyFacts(
        validators=frozenset(validators), payout_addresses=frozenset(), denomination=chain.denom
    )


def decoded_within_cap(family: Family, chain: ChainConfig, unsigned_tx: bytes) -> Decoded:
    """The family's strict decoding of ``unsigned_tx`` (anything it would not build is a mismatch),
    its fee bounded by the chain's cap."""
    try:
        decoded = family.decode(chain, unsigned_tx)
    except FamilyError as e:
        raise TransactionMismatch(f"transaction is not the approved intent: {e.message}") from None
    return fee_within_cap(chain, decoded)


def fee_within_cap(chain: ChainConfig, decoded: Decoded) -> Decoded:
    """``decoded`` when the most it can pay in network fees is within ``chain.max_fee_wei``."""
    if decoded.fee_ceiling > chain.max_fee_wei:
        raise FeeAboveCap(
            f"the transaction may pay {chain.amount_text(decoded.fee_ceiling)} in fees, above the chain's"
            f" cap {chain.amount_text(chain.max_fee_wei)}",
            details={"fee_ceiling": str(decoded.fee_ceiling), "cap": str(chain.max_fee_wei)},
        )
    return decoded
