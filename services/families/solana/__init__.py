"""The Solana chain family (pure): native staking through stake accounts derived from the vault.

:mod:`.family` is the :class:`~services.families.base.Family`; :mod:`.message` the legacy
message and transaction wire format (compact-u16, header, keys, blockhash, instructions);
:mod:`.instructions` the System and Stake program instructions custos builds; :mod:`.keys`
base58 public keys, program ids and ``create_with_seed``.
"""
