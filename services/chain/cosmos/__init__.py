"""The chain service's Cosmos SDK side: the local devnet (:mod:`.devnet`)."""
