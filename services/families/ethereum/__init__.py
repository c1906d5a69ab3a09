"""The Ethereum chain family (pure): EIP-1559 transactions, deposit data, the system contracts."""
