"""The Cosmos SDK chain family (pure): x/staking, reward-withdrawal and x/gov vote messages in
SIGN_MODE_DIRECT transactions.

:mod:`.family` is the :class:`~services.families.base.Family`; :mod:`.tx` the transaction
model and its protobuf; :mod:`.wire` the protobuf writer and strict reader; :mod:`.addresses`
bech32 accounts and validators.
"""
