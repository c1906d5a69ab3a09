"""The Cosmos SDK transactions custos builds, as a model and as protobuf (SIGN_MODE_DIRECT).

Unsigned, a transaction is its serialized ``cosmos.tx.v1beta1.SignDoc``: ``body_bytes``,
``auth_info_bytes``, ``chain_id`` and ``account_number``. Those are exactly the bytes the key
signs (through sha256), and everything that ends up on chain is in them. Signed, it is a
``TxRaw`` of the same body and auth info bytes plus one 64-byte ``r || s``.

Only one shape is built or read: a body of exactly one message custos builds (x/staking's
delegate, undelegate and begin-redelegate, x/distribution's withdraw-delegator-reward, x/gov
v1's vote with empty metadata) and an optional short memo; an auth info of one signer (the
generic ``/cosmos.crypto.secp256k1.PubKey``, ``SIGN_MODE_DIRECT``, a sequence) and a fee of
at most one coin with a gas limit. Timeouts, unordered transactions, extension options,
tips, fee payers and granters are refused, as is anything not canonically encoded.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.families.cosmos import wire
from services.families.cosmos.addresses import CompressedKey, compressed_key
from services.families.cosmos.wire import FieldSpec, Wire
from services.families.errors import TransactionInvalid
from services.runtime.intent import MAX_AMOUNT, VoteOption

MSG_DELEGATE = "/cosmos.staking.v1beta1.MsgDelegate"
MSG_UNDELEGATE = "/cosmos.staking.v1beta1.MsgUndelegate"
MSG_BEGIN_REDELEGATE = "/cosmos.staking.v1beta1.MsgBeginRedelegate"
STAKING_MESSAGES = (MSG_DELEGATE, MSG_UNDELEGATE, MSG_BEGIN_REDELEGATE)
MSG_WITHDRAW_DELEGATOR_REWARD = "/cosmos.distribution.v1beta1.MsgWithdrawDelegatorReward"
MSG_VOTE = "/cosmos.gov.v1.MsgVote"
#: Every message custos builds, each alone in its transaction.
MESSAGES = (*STAKING_MESSAGES, MSG_WITHDRAW_DELEGATOR_REWARD, MSG_VOTE)
#: ``cosmos.gov.v1.VoteOption`` numbers (0, ``VOTE_OPTION_UNSPECIFIED``, is never a vote).
VOTE_OPTION_NUMBERS: dict[VoteOption, int] = {
    VoteOption.YES: 1,
    VoteOption.ABSTAIN: 2,
    VoteOption.NO: 3,
    VoteOption.NO_WITH_VETO: 4,
}
_VOTE_OPTION_OF = {number: option for option, number in VOTE_OPTION_NUMBERS.items()}
SECP256K1_PUBKEY = "/cosmos.crypto.secp256k1.PubKey"
SIGN_MODE_DIRECT = 1
#: The Cosmos SDK's default ``max_memo_characters``.
MAX_MEMO_BYTES = 256
_MAX_AMOUNT_DIGITS = len(str(MAX_AMOUNT))

_ANY = {1: FieldSpec("type_url", Wire.LEN), 2: FieldSpec("value", Wire.LEN)}
_COIN = {1: FieldSpec("denom", Wire.LEN), 2: FieldSpec("amount", Wire.LEN)}
_DELEGATE = {
    1: FieldSpec("delegator_address", Wire.LEN),
    2: FieldSpec("validator_address", Wire.LEN),
    3: FieldSpec("amount", Wire.LEN),
}
_REDELEGATE = {
    1: FieldSpec("delegator_address", Wire.LEN),
    2: FieldSpec("validator_src_address", Wire.LEN),
    3: FieldSpec("validator_dst_address", Wire.LEN),
    4: FieldSpec("amount", Wire.LEN),
}
_WITHDRAW_REWARD = {
    1: FieldSpec("delegator_address", Wire.LEN),
    2: FieldSpec("validator_address", Wire.LEN),
}
_VOTE = {
    1: FieldSpec("proposal_id", Wire.VARINT),
    2: FieldSpec("voter", Wire.LEN),
    3: FieldSpec("option", Wire.VARINT),
}
#: custos never writes a vote's free-form metadata: nobody approved its contents.
_VOTE_REFUSED = {4: "metadata"}
_BODY = {1: FieldSpec("messages", Wire.LEN, repeated=True), 2: FieldSpec("memo", Wire.LEN)}
_BODY_REFUSED = {
    3: "timeout_height",
    4: "unordered",
    5: "timeout_timestamp",
    1023: "extension_options",
    2047: "non_critical_extension_options",
}
_AUTH_INFO = {1: FieldSpec("signer_infos", Wire.LEN, repeated=True), 2: FieldSpec("fee", Wire.LEN)}
_SIGNER_INFO = {
    1: FieldSpec("public_key", Wire.LEN),
    2: FieldSpec("mode_info", Wire.LEN),
    3: FieldSpec("sequence", Wire.VARINT),
}
_MODE_INFO = {1: FieldSpec("single", Wire.LEN)}
_SINGLE = {1: FieldSpec("mode", Wire.VARINT)}
_PUBKEY = {1: FieldSpec("key", Wire.LEN)}
_FEE = {1: FieldSpec("amount", Wire.LEN, repeated=True), 2: FieldSpec("gas_limit", Wire.VARINT)}
_SIGN_DOC = {
    1: FieldSpec("body_bytes", Wire.LEN),
    2: FieldSpec("auth_info_bytes", Wire.LEN),
    3: FieldSpec("chain_id", Wire.LEN),
    4: FieldSpec("account_number", Wire.VARINT),
}


@dataclass(frozen=True)
class Coin:
    """``cosmos.base.v1beta1.Coin``: a positive integer amount of base units of ``denom``."""

    denom: str
    amount: int

    def encode(self) -> bytes:
        return wire.Writer().string(1, self.denom).string(2, str(self.amount)).finish()


@dataclass(frozen=True)
class Message:
    """The one message of a transaction; which fields it uses depends on ``type_url``.

    ``delegator`` is the account that signs for it: the delegator, or a vote's voter.
    ``validator`` is the delegation's validator (the source of a redelegation, whose rewards a
    withdrawal takes); ``destination`` is set for a redelegation only; ``amount`` for the three
    x/staking messages only; ``proposal_id`` and ``option`` for a vote only.
    """

    type_url: str
    delegator: str
    validator: str = ""
    amount: Coin | None = None
    destination: str = ""
    proposal_id: int = 0
    option: VoteOption | None = None

    def encode(self) -> bytes:
        w = wire.Writer()
        if self.type_url == MSG_VOTE:
            if self.option is None:
                raise ValueError("a MsgVote needs an option")
            w.uint(1, self.proposal_id).string(2, self.delegator).uint(3, VOTE_OPTION_NUMBERS[self.option])
            return w.finish()
        w.string(1, self.delegator).string(2, self.validator)
        if self.type_url == MSG_WITHDRAW_DELEGATOR_REWARD:
            return w.finish()
        if self.amount is None:
            raise ValueError(f"a {self.type_url} needs an amount")
        if self.type_url == MSG_BEGIN_REDELEGATE:
            w.string(3, self.destination).message(4, self.amount.encode())
        else:
            w.message(3, self.amount.encode())
        return w.finish()


#: The name of :class:`Message` when custos built x/staking messages only.
StakingMessage = Message


@dataclass(frozen=True)
class UnsignedTx:
    """Everything an unsigned transaction (a SignDoc) says, in custos's one shape."""

    message: Message
    memo: str
    public_key: CompressedKey
    sequence: int
    fee: Coin | None
    gas_limit: int
    chain_id: str
    account_number: int

    def body_bytes(self) -> bytes:
        any_msg = wire.Writer().string(1, self.message.type_url).bytes_(2, self.message.encode()).finish()
        return wire.Writer().message(1, any_msg).string(2, self.memo).finish()

    def auth_info_bytes(self) -> bytes:
        pubkey = wire.Writer().bytes_(1, self.public_key).finish()
        any_key = wire.Writer().string(1, SECP256K1_PUBKEY).bytes_(2, pubkey).finish()
        single = wire.Writer().uint(1, SIGN_MODE_DIRECT).finish()
        mode_info = wire.Writer().message(1, single).finish()
        signer = wire.Writer().message(1, any_key).message(2, mode_info).uint(3, self.sequence).finish()
        fee = wire.Writer()
        if self.fee is not None:
            fee.message(1, self.fee.encode())
        fee.uint(2, self.gas_limit)
        return wire.Writer().message(1, signer).message(2, fee.finish()).finish()

    def sign_doc(self) -> bytes:
        """The unsigned transaction's bytes (what custos passes around and the key signs)."""
        return (
            wire.Writer()
            .bytes_(1, self.body_bytes())
            .bytes_(2, self.auth_info_bytes())
            .string(3, self.chain_id)
            .uint(4, self.account_number)
            .finish()
        )

    def tx_raw(self, signature: bytes) -> bytes:
        """The signed transaction: ``TxRaw`` of the same body and auth info and one signature."""
        return (
            wire.Writer()
            .bytes_(1, self.body_bytes())
            .bytes_(2, self.auth_info_bytes())
            .bytes_(3, signature)
            .finish()
        )


def memo_allowed(memo: str) -> bool:
    """Whether custos writes ``memo``: at most 256 printable ASCII characters (a tag, not data)."""
    return len(memo) <= MAX_MEMO_BYTES and all(" " <= ch <= "~" for ch in memo)


def _amount(text: str, what: str) -> int:
    # The length bound comes first: int() refuses strings past 4,300 digits with a ValueError.
    if (
        len(text) > _MAX_AMOUNT_DIGITS
        or not text.isascii()
        or not text.isdigit()
        or text[0] == "0"
        or int(text) > MAX_AMOUNT
    ):
        raise TransactionInvalid(f"{what} is not a positive canonical decimal integer")
    return int(text)


def _coin(data: bytes, what: str) -> Coin:
    fields = wire.read(data, _COIN, what)
    denom = wire.one_string(fields, "denom", what)
    if not denom:
        raise TransactionInvalid(f"{what}.denom is empty")
    return Coin(denom=denom, amount=_amount(wire.one_string(fields, "amount", what), f"{what}.amount"))


def _message(data: bytes) -> Message:
    fields = wire.read(data, _ANY, "TxBody.messages")
    type_url = wire.one_string(fields, "type_url", "Any")
    value = wire.one_bytes(fields, "value")
    if type_url not in MESSAGES:
        raise TransactionInvalid(
            f"message {type_url!r} is no staking message, reward withdrawal or vote custos builds"
        )
    what = type_url.rsplit(".", 1)[-1]
    if type_url == MSG_VOTE:
        return _vote(value, what)
    if type_url == MSG_WITHDRAW_DELEGATOR_REWARD:
        f = wire.read(value, _WITHDRAW_REWARD, what)
        return Message(
            type_url=type_url,
            delegator=wire.one_string(f, "delegator_address", what),
            validator=wire.one_string(f, "validator_address", what),
        )
    if type_url == MSG_BEGIN_REDELEGATE:
        f = wire.read(value, _REDELEGATE, what)
        return Message(
            type_url=type_url,
            delegator=wire.one_string(f, "delegator_address", what),
            validator=wire.one_string(f, "validator_src_address", what),
            destination=wire.one_string(f, "validator_dst_address", what),
            amount=_coin(wire.required_message(f, "amount", what), f"{what}.amount"),
        )
    f = wire.read(value, _DELEGATE, what)
    return Message(
        type_url=type_url,
        delegator=wire.one_string(f, "delegator_address", what),
        validator=wire.one_string(f, "validator_address", what),
        amount=_coin(wire.required_message(f, "amount", what), f"{what}.amount"),
    )


def _vote(value: bytes, what: str) -> Message:
    """A ``cosmos.gov.v1.MsgVote``: a proposal (never 0), a voter and one of the four options."""
    f = wire.read(value, _VOTE, what, _VOTE_REFUSED)
    proposal_id = wire.one_uint(f, "proposal_id")
    if proposal_id == 0:
        raise TransactionInvalid(f"{what}.proposal_id is 0: no proposal has that id")
    number = wire.one_uint(f, "option")
    option = _VOTE_OPTION_OF.get(number)
    if option is None:
        raise TransactionInvalid(f"{what}.option {number} is not YES, ABSTAIN, NO or NO_WITH_VETO")
    return Message(
        type_url=MSG_VOTE,
        delegator=wire.one_string(f, "voter", what),
        proposal_id=proposal_id,
        option=option,
    )


def _signer(data: bytes) -> tuple[CompressedKey, int]:
    what = "SignerInfo"
    f = wire.read(data, _SIGNER_INFO, what)
    key_any = wire.read(wire.required_message(f, "public_key", what), _ANY, "SignerInfo.public_key")
    if wire.one_string(key_any, "type_url", "Any") != SECP256K1_PUBKEY:
        raise TransactionInvalid(f"the signer's key is not a {SECP256K1_PUBKEY}")
    key = wire.one_bytes(wire.read(wire.one_bytes(key_any, "value"), _PUBKEY, "PubKey"), "key")
    if len(key) != 33:
        raise TransactionInvalid("the signer's key is not a 33-byte compressed secp256k1 key")
    mode_info = wire.read(wire.required_message(f, "mode_info", what), _MODE_INFO, "ModeInfo", {2: "multi"})
    single = wire.read(wire.required_message(mode_info, "single", "ModeInfo"), _SINGLE, "ModeInfo.single")
    if wire.one_uint(single, "mode") != SIGN_MODE_DIRECT:
        raise TransactionInvalid("the signer's mode is not SIGN_MODE_DIRECT")
    return compressed_key(key), wire.one_uint(f, "sequence")


def parse(unsigned_tx: bytes) -> UnsignedTx:
    """Reads a SignDoc strictly; anything custos would not have written raises ``TransactionInvalid``."""
    doc = wire.read(unsigned_tx, _SIGN_DOC, "SignDoc")
    body = wire.read(wire.one_bytes(doc, "body_bytes"), _BODY, "TxBody", _BODY_REFUSED)
    messages = wire.many_bytes(body, "messages")
    if len(messages) != 1:
        raise TransactionInvalid(f"the transaction holds {len(messages)} messages, not exactly one")
    auth = wire.read(wire.one_bytes(doc, "auth_info_bytes"), _AUTH_INFO, "AuthInfo", {3: "tip"})
    signers = wire.many_bytes(auth, "signer_infos")
    if len(signers) != 1:
        raise TransactionInvalid(f"the transaction has {len(signers)} signers, not exactly one")
    public_key, sequence = _signer(signers[0])
    fee = wire.read(wire.required_message(auth, "fee", "AuthInfo"), _FEE, "Fee", {3: "payer", 4: "granter"})
    coins = [_coin(c, "Fee.amount") for c in wire.many_bytes(fee, "amount")]
    if len(coins) > 1:
        raise TransactionInvalid("the fee is paid in more than one coin")
    if wire.one_uint(fee, "gas_limit") == 0:
        raise TransactionInvalid("the gas limit is zero")
    memo = wire.one_string(body, "memo", "TxBody")
    if not memo_allowed(memo):
        raise TransactionInvalid(f"the memo is not at most {MAX_MEMO_BYTES} printable ASCII characters")
    tx = UnsignedTx(
        message=_message(messages[0]),
        memo=memo,
        public_key=public_key,
        sequence=sequence,
        fee=coins[0] if coins else None,
        gas_limit=wire.one_uint(fee, "gas_limit"),
        chain_id=wire.one_string(doc, "chain_id", "SignDoc"),
        account_number=wire.one_uint(doc, "account_number"),
    )
    if tx.sign_doc() != unsigned_tx:
        raise TransactionInvalid("the transaction is not canonically encoded")
    return tx
