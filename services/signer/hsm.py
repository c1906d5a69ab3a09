"""The PKCS#11 HSM, as the signer uses it: ``lib -> token.open() -> session -> key.sign()``.

One library handle and ONE session per process, logged in once and guarded by a
lock: SoftHSM 2.6.1 with python-pkcs11 crashes under unguarded threads. Scale
with processes started with multiprocessing "spawn"; a process must never fork
after the library is loaded (the session is refused in the child).

Private keys are generated inside the HSM with ``CKA_SENSITIVE`` and without
``CKA_EXTRACTABLE``: nothing here can read them. PINs come from
:class:`~services.runtime.settings.HsmSettings` and never reach a log, a repr or
an error message.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.util.ec import encode_named_curve_parameters

from services.families import secp256k1
from services.families.base import Mechanism as FamilyMechanism
from services.families.base import SigningPayload
from services.families.errors import FamilyError
from services.runtime.settings import HsmSettings
from services.runtime.telemetry import hsm_operation
from services.signer.errors import (
    HsmKeyNotFound,
    HsmLoginFailed,
    HsmOperationFailed,
    HsmUnavailable,
    InvalidPublicKey,
    SignerError,
)
from services.signer.types import KeyAlgorithm

log = logging.getLogger(__name__)

# DER of OID 1.3.101.112 (id-Ed25519); asn1crypto's named curves do not list it.
ED25519_PARAMS = bytes.fromhex("06032b6570")
SECP256K1_PARAMS = encode_named_curve_parameters("secp256k1")

_LOGIN = (
    p11.PinIncorrect,
    p11.PinLocked,
    p11.PinExpired,
    p11.PinInvalid,
    p11.PinLenRange,
    p11.UserPinNotInitialized,
)
_GONE = (
    p11.NoSuchToken,
    p11.TokenNotPresent,
    p11.TokenNotRecognised,
    p11.DeviceRemoved,
    p11.DeviceError,
    p11.DeviceMemory,
    p11.SessionClosed,
    p11.SessionHandleInvalid,
    p11.SessionCount,
    p11.UserNotLoggedIn,
    p11.GeneralError,
    p11.ObjectHandleInvalid,
    p11.KeyHandleInvalid,
)


def unwrap_ec_point(value: bytes, size: int) -> bytes:
    """Returns the raw point from ``CKA_EC_POINT``, DER OCTET STRING-wrapped or not.

    SoftHSM wraps it (``04 41 04 ...`` for secp256k1, ``04 20 ...`` for Ed25519);
    other HSMs return it raw. ``size`` is the raw length (65 or 32).
    """
    if len(value) == size and (size != 65 or value[0] == 0x04):
        return value
    if len(value) == size + 2 and value[0] == 0x04 and value[1] == size:
        return value[2:]
    if len(value) == size + 3 and value[0] == 0x04 and value[1] == 0x81 and value[2] == size:
        return value[3:]
    raise InvalidPublicKey(f"unexpected CKA_EC_POINT encoding ({len(value)} bytes)")


class Hsm:
    """A logged-in session on one PKCS#11 token.

    Args:
        settings: Module path, token label and PIN (a ``SecretStr`` or a PIN file).
    """

    def __init__(self, settings: HsmSettings) -> None:
        self._settings = settings
        self._lock = threading.RLock()
        self._session: pkcs11.Session | None = None
        self._pid: int | None = None
        self._private: dict[bytes, Any] = {}  # pkcs11 private key objects (SignMixin)
        self._public: dict[bytes, tuple[KeyAlgorithm, bytes]] = {}

    def __repr__(self) -> str:
        return f"Hsm(module={str(self._settings.module)!r}, token={self._settings.token_label!r})"

    @property
    def token_label(self) -> str:
        return self._settings.token_label

    # --- lifecycle ------------------------------------------------------------------------

    def open(self) -> Hsm:
        """Loads the module, opens a read-write session and logs in (once per process)."""
        with self._lock:
            if self._session is not None:
                self._check_pid()
                return self
            pin = self._settings.user_pin()
            try:
                lib = pkcs11.lib(str(self._settings.module))
                token = lib.get_token(token_label=self._settings.token_label)
                try:
                    self._session = token.open(user_pin=pin, rw=True)
                except p11.UserAlreadyLoggedIn:
                    # PKCS#11 logins are per process and token: another session of this
                    # process is logged in already, and a new session shares that login.
                    self._session = token.open(rw=True)
            except _LOGIN as e:
                raise HsmLoginFailed(
                    f"token {self._settings.token_label!r} refused the PIN ({type(e).__name__})"
                ) from None
            except (p11.PKCS11Error, RuntimeError, OSError) as e:
                raise HsmUnavailable(
                    f"cannot open token {self._settings.token_label!r}: {type(e).__name__}"
                ) from None
            self._pid = os.getpid()
            log.info("HSM session opened on token %s", self._settings.token_label)
            return self

    def close(self) -> None:
        with self._lock:
            session, self._session = self._session, None
            self._private.clear()
            if session is not None and self._pid == os.getpid():
                try:
                    session.close()
                except p11.PKCS11Error:
                    pass

    def __enter__(self) -> Hsm:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_pid(self) -> None:
        if self._pid != os.getpid():
            raise HsmUnavailable(
                "the HSM session belongs to another process (forked after loading): "
                "start workers with multiprocessing 'spawn'"
            )

    @contextmanager
    def session(self) -> Iterator[pkcs11.Session]:
        """The process's session, held under the lock; PKCS#11 errors become signer errors."""
        with self._lock:
            if self._session is None:
                self.open()
            self._check_pid()
            assert self._session is not None
            try:
                yield self._session
            except SignerError:
                raise
            except p11.NoSuchKey:
                raise HsmKeyNotFound("no such key on the token") from None
            except _GONE as e:
                self._session = None  # reopen on the next call
                self._private.clear()
                raise HsmUnavailable(f"HSM session lost ({type(e).__name__})") from None
            except p11.PKCS11Error as e:
                raise HsmOperationFailed(f"HSM operation failed ({type(e).__name__})") from None

    # --- keys -----------------------------------------------------------------------------

    def generate_keypair(
        self, algorithm: KeyAlgorithm, label: str, key_id: bytes, *, binding: bytes | None = None
    ) -> bytes:
        """Generates a key pair in the HSM; returns the raw public key (65 or 32 bytes).

        ``binding`` goes into the private key's CKA_SUBJECT, made unmodifiable: what the
        key is for (its vault), stated where only the token's PIN holder could have put it.
        """
        private_template: dict[Attribute, Any] = {
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.SIGN: True,
            Attribute.PRIVATE: True,
            Attribute.TOKEN: True,
        }
        if binding is not None:
            private_template[Attribute.SUBJECT] = binding
            private_template[Attribute.MODIFIABLE] = False
        public_template: dict[Attribute, Any] = {Attribute.VERIFY: True, Attribute.TOKEN: True}
        with self.session() as s:
            if any(True for _ in s.get_objects({Attribute.ID: key_id})):
                raise HsmOperationFailed("a key with this id already exists on the token")
            if algorithm is KeyAlgorithm.SECP256K1:
                params = s.create_domain_parameters(
                    KeyType.EC, {Attribute.EC_PARAMS: SECP256K1_PARAMS}, local=True
                )
                pub, priv = params.generate_keypair(
                    store=True,
                    label=label,
                    id=key_id,
                    public_template=public_template,
                    private_template=private_template,
                )
            else:
                pub, priv = s.generate_keypair(
                    KeyType.EC_EDWARDS,
                    mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
                    store=True,
                    label=label,
                    id=key_id,
                    public_template={**public_template, Attribute.EC_PARAMS: ED25519_PARAMS},
                    private_template=private_template,
                )
            raw = self._raw_public(algorithm, pub)
            self._private[key_id] = priv
            self._public[key_id] = (algorithm, raw)
            return raw

    @staticmethod
    def _raw_public(algorithm: KeyAlgorithm, pub: Any) -> bytes:
        size = 65 if algorithm is KeyAlgorithm.SECP256K1 else 32
        raw = unwrap_ec_point(bytes(pub[Attribute.EC_POINT]), size)
        if algorithm is KeyAlgorithm.SECP256K1:
            try:
                secp256k1.check_point(raw)
            except FamilyError as e:
                raise InvalidPublicKey(e.message) from None
        return raw

    def public_key(self, key_id: bytes) -> tuple[KeyAlgorithm, bytes]:
        """Algorithm and raw public key of the key pair with CKA_ID ``key_id``."""
        with self.session() as s:
            cached = self._public.get(key_id)
            if cached is not None:
                return cached
            pub = s.get_key(object_class=ObjectClass.PUBLIC_KEY, id=key_id)
            algorithm = KeyAlgorithm.ED25519 if pub.key_type == KeyType.EC_EDWARDS else KeyAlgorithm.SECP256K1
            if pub.key_type not in (KeyType.EC, KeyType.EC_EDWARDS):
                raise InvalidPublicKey(f"key is {pub.key_type.name}, not EC or EdDSA")
            result = (algorithm, self._raw_public(algorithm, pub))
            self._public[key_id] = result
            return result

    def key_binding(self, key_id: bytes) -> bytes | None:
        """The CKA_SUBJECT of the private key with CKA_ID ``key_id`` (None when it has none)."""
        with self.session() as s:
            subject = self._private_key(s, key_id)[Attribute.SUBJECT]
        return bytes(subject) if subject else None

    def destroy_key(self, key_id: bytes) -> None:
        """Destroys both halves of a key pair (only used to undo a half-made CreateKey)."""
        with self.session() as s:
            for obj in list(s.get_objects({Attribute.ID: key_id})):
                obj.destroy()
            self._private.pop(key_id, None)
            self._public.pop(key_id, None)

    def find_key_ids(self, label: str) -> list[bytes]:
        """CKA_IDs of the private keys labelled ``label``."""
        with self.session() as s:
            return [
                bytes(k[Attribute.ID])
                for k in s.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: label})
            ]

    def private_key_labels(self) -> list[str]:
        """Labels of every private key this session sees on the token."""
        with self.session() as s:
            keys = s.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})
            return [str(k[Attribute.LABEL]) for k in keys]

    def _private_key(self, s: pkcs11.Session, key_id: bytes) -> Any:
        key = self._private.get(key_id)
        if key is None:
            key = s.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key_id)
            self._private[key_id] = key
        return key

    # --- data objects -----------------------------------------------------------------------

    def load_data(self, label: str) -> bytes | None:
        """The newest value stored under ``label`` (a private token object), or None.

        What custos keeps here is small and must survive anyone who can write the
        database: the last governance head the signer verified, the last audit head
        that was checkpointed. Only a session logged in with the token's PIN sees it.
        """
        with self.session() as s:
            found = self._data_objects(s, label)
        return found[-1][1] if found else None

    def store_data(self, label: str, value: bytes) -> None:
        """Replaces the value under ``label``.

        Tokens keep a data object's CKA_VALUE read-only (SoftHSM 2.6.1 refuses the
        change), so the new value is a new object with the next generation, created
        before the older ones are destroyed: a crash in between leaves both, and
        :meth:`load_data` takes the newer.
        """
        with self.session() as s:
            found = self._data_objects(s, label)
            generation = found[-1][0] + 1 if found else 1
            s.create_object(
                {
                    Attribute.CLASS: ObjectClass.DATA,
                    Attribute.LABEL: label,
                    Attribute.APPLICATION: "custos",
                    Attribute.VALUE: generation.to_bytes(8, "big") + value,
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                }
            )
            for _, _, obj in found:
                try:
                    obj.destroy()
                except p11.ObjectHandleInvalid:  # another process destroyed it first
                    pass

    def load_all_data(self, label: str) -> list[bytes]:
        """Every value stored under ``label``, oldest generation first (see :meth:`replace_data`)."""
        with self.session() as s:
            return [value for _, value, _ in self._data_objects(s, label)]

    def replace_data(self, label: str, value: bytes, replaces: Collection[bytes]) -> None:
        """Adds ``value`` under ``label`` and destroys only the objects holding one of ``replaces``.

        For a value several processes write, each after reading it: a writer removes what it read,
        never what another wrote meanwhile, so two writes that raced both stay for the next reader.
        """
        with self.session() as s:
            found = self._data_objects(s, label)
            generation = found[-1][0] + 1 if found else 1
            s.create_object(
                {
                    Attribute.CLASS: ObjectClass.DATA,
                    Attribute.LABEL: label,
                    Attribute.APPLICATION: "custos",
                    Attribute.VALUE: generation.to_bytes(8, "big") + value,
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                }
            )
            for _, old, obj in found:
                if old in replaces:
                    try:
                        obj.destroy()
                    except p11.ObjectHandleInvalid:  # another process destroyed it first
                        pass

    @staticmethod
    def _data_objects(s: pkcs11.Session, label: str) -> list[tuple[int, bytes, Any]]:
        """(generation, value, object) of the data objects labelled ``label``, oldest first."""
        for attempt in range(8):
            try:
                out = []
                for obj in s.get_objects({Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: label}):
                    raw = bytes(obj[Attribute.VALUE])
                    if len(raw) >= 8:
                        out.append((int.from_bytes(raw[:8], "big"), raw[8:], obj))
                return sorted(out, key=lambda t: t[0])
            except p11.ObjectHandleInvalid:
                # Another process replaced and destroyed an object between the search and the
                # read (SoftHSM shares token objects between processes): search again.
                if attempt == 7:
                    raise
        raise AssertionError("unreachable")

    # --- signing --------------------------------------------------------------------------

    def sign_raw(self, key_id: bytes, data: bytes, mechanism: Mechanism) -> bytes:
        """One ``C_Sign`` with the named mechanism (no post-processing)."""
        # custos.key_id as the signer's registry names it ("key_" + CKA_ID)
        with (
            hsm_operation("sign", key_id="key_" + key_id.hex(), mechanism=mechanism.name),
            self.session() as s,
        ):
            return bytes(self._private_key(s, key_id).sign(data, mechanism=mechanism))

    def sign(self, key_id: bytes, payload: SigningPayload) -> bytes:
        """Signs a chain family's payload with the mechanism it names."""
        if payload.mechanism is FamilyMechanism.ECDSA_SECP256K1:
            return self.sign_secp256k1(key_id, payload.data)
        return self.sign_ed25519(key_id, payload.data)

    def sign_secp256k1(self, key_id: bytes, digest: bytes) -> bytes:
        """``CKM_ECDSA`` over a 32-byte digest: 64 bytes ``r || s``, normalised to low-S."""
        if len(digest) != 32:
            raise HsmOperationFailed("CKM_ECDSA signs a 32-byte digest")
        algorithm, _ = self.public_key(key_id)
        if algorithm is not KeyAlgorithm.SECP256K1:
            raise InvalidPublicKey("key is not secp256k1")
        raw = self.sign_raw(key_id, digest, Mechanism.ECDSA)
        try:
            return secp256k1.low_s(raw)
        except FamilyError:
            raise HsmOperationFailed("CKM_ECDSA returned a signature that is not r||s in range") from None

    def sign_ed25519(self, key_id: bytes, message: bytes) -> bytes:
        """``CKM_EDDSA`` (pure Ed25519) over ``message``; 64 bytes."""
        algorithm, _ = self.public_key(key_id)
        if algorithm is not KeyAlgorithm.ED25519:
            raise InvalidPublicKey("key is not Ed25519")
        return self.sign_raw(key_id, message, Mechanism.EDDSA)
