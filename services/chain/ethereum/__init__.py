"""Ethereum adapter: deposit data checks, system-contract calldata, EIP-1559 build/decode/assemble."""
