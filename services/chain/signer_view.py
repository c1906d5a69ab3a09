"""The signer's keys and signing records as reconciliation reads them: over gRPC, as ``svc:chain``."""

from __future__ import annotations

from services.chain.reconcile import SignedNonce, VaultKey
from services.pb.custos.signer.v1 import signer_pb2
from services.signer.client import SignerClient

PAGE_SIZE = 500


class SignerView:
    """A :class:`~services.chain.reconcile.SigningRecordSource` over the signer's client.

    A failed call raises the custos error of its status (``Unavailable`` when the
    signer is down), which the reconciler logs and retries.
    """

    def __init__(self, client: SignerClient) -> None:
        self._client = client

    async def vault_keys(self, vault_id: str = "") -> list[VaultKey]:
        keys: list[VaultKey] = []
        token = ""
        while True:
            page = await self._client.call(
                "ListKeys",
                signer_pb2.ListKeysRequest(vault_id=vault_id, page_size=PAGE_SIZE, page_token=token),
            )
            keys += [
                VaultKey(
                    key_id=k.key_id,
                    vault_id=k.vault_id,
                    algorithm=signer_pb2.KeyAlgorithm.Name(k.algorithm).removeprefix("KEY_ALGORITHM_"),
                    public_key=k.public_key,
                )
                for k in page.keys
                if k.purpose == signer_pb2.KEY_PURPOSE_VAULT
            ]
            token = page.next_page_token
            if not token:
                return keys

    async def signed_nonces(self, key_id: str, chain: str, min_nonce: int) -> list[SignedNonce]:
        out: list[SignedNonce] = []
        token = ""
        while True:
            page = await self._client.call(
                "ListSigningRecords",
                signer_pb2.ListSigningRecordsRequest(
                    key_id=key_id, chain=chain, min_nonce=min_nonce, page_size=PAGE_SIZE, page_token=token
                ),
            )
            out += [
                SignedNonce(record_id=r.record_id, nonce=r.nonce, tx_hash=r.tx_hash) for r in page.records
            ]
            token = page.next_page_token
            if not token:
                return out
