"""The Solana devnet: LiteSVM (from solders) behind a JSON-RPC server of ours, for tests and the dev stack.

No Solana validator runs here; :class:`.devnet.SolanaDevnet` serves the RPC methods a custos adapter built on
solana-py's ``AsyncClient`` calls, with a cluster's request and response shapes.
"""
