"""The audit token: the checkpoint key and the memory of the last checkpoint signed.

The checkpoint key is an Ed25519 key pair the token generated and keeps: ``CKA_SENSITIVE``
and not extractable; custos only asks the token to sign checkpoint messages with it
(``CKM_EDDSA``). The token is the audit service's own, with its own label and PIN: it
holds no vault key, and the signer's token holds no checkpoint key, so neither service
can sign what the other one signs.
"""

from __future__ import annotations

import secrets

from services.audit.errors import AuditTokenShared, HeadUnreadable
from services.audit.signing import SignedHead
from services.signer.hsm import Hsm
from services.signer.types import KeyAlgorithm

DEFAULT_LABEL = "custos-audit-checkpoint"
DEFAULT_HEAD_LABEL = "custos-audit-head"


class HsmCheckpointSigner:
    """Signs checkpoints with the HSM key whose CKA_ID is ``hsm_key_id``.

    ``key_id`` (what checkpoints name) is ``label:<hex CKA_ID>``, so a rotated key
    gets a new name.
    """

    def __init__(self, hsm: Hsm, hsm_key_id: bytes, *, label: str = DEFAULT_LABEL) -> None:
        algorithm, public = hsm.public_key(hsm_key_id)
        if algorithm is not KeyAlgorithm.ED25519:
            raise ValueError("the audit checkpoint key must be Ed25519")
        self._hsm = hsm
        self._hsm_key_id = hsm_key_id
        self._public = public
        self._key_id = f"{label}:{hsm_key_id.hex()}"

    @classmethod
    def ensure(cls, hsm: Hsm, *, label: str = DEFAULT_LABEL) -> HsmCheckpointSigner:
        """The token's checkpoint key labelled ``label``, generated in the HSM if there is none.

        Raises:
            AuditTokenShared: the token holds other private keys (a vault's): it is not the
                audit service's own, and the checkpoint key must not sit next to them.
        """
        others = sorted({name for name in hsm.private_key_labels() if name != label})
        if others:
            raise AuditTokenShared(
                f"token {hsm.token_label!r} holds {len(others)} other kind(s) of private key: "
                "the audit service needs a token of its own (its own label and PIN)"
            )
        ids = hsm.find_key_ids(label)
        if ids:
            return cls(hsm, sorted(ids)[0], label=label)
        key_id = secrets.token_bytes(16)
        hsm.generate_keypair(KeyAlgorithm.ED25519, label, key_id)
        return cls(hsm, key_id, label=label)

    @property
    def key_id(self) -> str:
        return self._key_id

    def public_key(self) -> bytes:
        return self._public

    def sign(self, message: bytes) -> bytes:
        return self._hsm.sign_ed25519(self._hsm_key_id, message)


class HsmHeadStore:
    """The last checkpoint signed, as a private data object on the audit token.

    Only a session logged in with the audit token's PIN reads or replaces it; whoever
    can write the database cannot. Replicas sharing the token serialise their writes
    (``AuditService`` holds the trail's head lock around :meth:`store`).
    """

    def __init__(self, hsm: Hsm, *, label: str = DEFAULT_HEAD_LABEL) -> None:
        self._hsm = hsm
        self.label = label

    def load(self) -> SignedHead | None:
        raw = self._hsm.load_data(self.label)
        if raw is None:
            return None
        try:
            return SignedHead.decode(raw)
        except ValueError as e:
            raise HeadUnreadable(f"the audit token's {self.label!r} object is unreadable: {e}") from None

    def store(self, head: SignedHead) -> None:
        self._hsm.store_data(self.label, head.encode())
