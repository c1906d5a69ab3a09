"""What the policy sees of an intent, through its chain's family (:mod:`services.families`).

The policy knows no chain family: the caller passes the chain registry, and the family of
the intent's chain gives the facts rules look at (validators, payout addresses, the unit the
amount counts in) and the spelling allowlists are compared in. Both sides are normalised by
the family: a rule's entries and the intent's facts, so ``0xABC...`` and ``0xabc...`` match
on Ethereum, and bech32 in either case on Cosmos. An entry the family does not accept for
the chain matches nothing there.

Pure: the families do no I/O, so the engine stays a function of its arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from services.families.base import Family
from services.families.config import ChainConfig
from services.families.errors import FamilyError
from services.families.registry import family_of
from services.policy.errors import UnknownChain
from services.runtime.intent import IntentSpec

#: Chain name -> its configuration: the chain registry of the calling service.
ChainRegistry = Mapping[str, ChainConfig]


class Entry(StrEnum):
    """What an allowlist holds."""

    VALIDATOR = "validator"
    PAYOUT = "payout address"


@dataclass(frozen=True)
class IntentFacts:
    """The facts of one intent on its chain, in its family's spelling."""

    chain: ChainConfig
    validators: frozenset[str]
    payout_addresses: frozenset[str]
    #: The base unit of the intent's amount ("wei", "uatom").
    denomination: str

    def allowed(self, kind: Entry, entries: frozenset[str]) -> frozenset[str]:
        """A rule's allowlist in the family's spelling for this chain (entries it refuses dropped)."""
        return _allowlist(self.chain, kind, entries)


def _family(chain: ChainConfig) -> Family:
    try:
        return family_of(chain)
    except FamilyError as e:
        raise UnknownChain(f"chain {chain.name!r} is of family {chain.family}: {e.message}") from None


def normalise(chain: ChainConfig, kind: Entry, text: str) -> str | None:
    """``text`` as the chain's family spells a validator or an address; None if it refuses it."""
    family = _family(chain)
    spell: Callable[[ChainConfig, str], str] = (
        family.normalise_validator if kind is Entry.VALIDATOR else family.normalise_address
    )
    try:
        return spell(chain, text)
    except FamilyError:
        return None


@lru_cache(maxsize=4096)
def _allowlist(chain: ChainConfig, kind: Entry, entries: frozenset[str]) -> frozenset[str]:
    return frozenset(n for e in entries if (n := normalise(chain, kind, e)) is not None)


def denomination_of(chain: ChainConfig) -> str:
    """The unit amounts count in on ``chain`` (its base denomination; an Ethereum chain's is wei)."""
    return chain.denom


def chain_of(chains: ChainRegistry, spec: IntentSpec) -> ChainConfig:
    """The registry's configuration of the intent's chain; UnknownChain when it has none."""
    chain = chains.get(spec.chain)
    if chain is None:
        raise UnknownChain(f"chain {spec.chain!r} is not in the chain registry: its facts are unknown")
    return chain


def intent_facts(chains: ChainRegistry, spec: IntentSpec) -> IntentFacts:
    """The facts rules see of ``spec``; raises UnknownChain for a chain outside the registry
    (or of a family custos has not built in)."""
    chain = chain_of(chains, spec)
    facts = _family(chain).facts(chain, spec)

    def spelled(kind: Entry, texts: Iterable[str]) -> frozenset[str]:
        # facts do not validate: an entry the family refuses stays as written, and matches
        # no allowlist entry (those it refuses are dropped)
        return frozenset(normalise(chain, kind, t) or t for t in texts)

    return IntentFacts(
        chain=chain,
        validators=spelled(Entry.VALIDATOR, facts.validators),
        payout_addresses=spelled(Entry.PAYOUT, facts.payout_addresses),
        denomination=facts.denomination,
    )


def rule_chains(chains: ChainRegistry, named: frozenset[str] | None) -> list[ChainConfig]:
    """The registry's chains a rule may apply to: those it names (that the registry knows), or all."""
    if named is None:
        return [chains[n] for n in sorted(chains)]
    return [chains[n] for n in sorted(named) if n in chains]
