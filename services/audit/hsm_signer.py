"""The checkpoint key in the HSM: an Ed25519 key pair the token generated and keeps.

The private half is ``CKA_SENSITIVE`` and not extractable; custos only asks the
token to sign checkpoint messages with it (``CKM_EDDSA``).
"""

from __future__ import annotations

import secrets

from services.signer.hsm import Hsm
from services.signer.types import KeyAlgorithm

DEFAULT_LABEL = "custos-audit-checkpoint"


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
        """The token's checkpoint key labelled ``label``, generated in the HSM if there is none."""
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
