"""Which family a chain belongs to, and the family objects (one per process)."""

from __future__ import annotations

from functools import cache

from services.families.base import Family
from services.families.config import ChainConfig, ChainFamily
from services.families.errors import UnknownFamily


@cache
def family(name: ChainFamily | str) -> Family:
    """The family called ``name`` (``ethereum``, ``cosmos``, ``solana``)."""
    match str(name).lower():
        case ChainFamily.ETHEREUM:
            from services.families.ethereum.family import EthereumFamily

            return EthereumFamily()
        case ChainFamily.COSMOS:
            from services.families.cosmos.family import CosmosFamily

            return CosmosFamily()
        case ChainFamily.SOLANA:
            from services.families.solana.family import SolanaFamily

            return SolanaFamily()
    raise UnknownFamily(f"no chain family {name!r} is built in (ethereum, cosmos, solana)")


def family_of(chain: ChainConfig) -> Family:
    return family(chain.family)
