"""Chain families: everything chain-specific behind one interface (:mod:`services.families.base`).

One pure package per family (``ethereum``, ``cosmos``); :mod:`services.families.registry`
finds a chain's family. Nothing here does I/O: the chain service adds the nodes.
"""
