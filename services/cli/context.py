"""What every operating command shares: the settings, who is calling, typed clients, output.

Where the services are comes from a settings file (a stack's ``custos.yaml``);
who is calling is a client certificate of the custos CA. Output is a human table
or, with ``--output json``, JSON with stable keys (the proto field names, bytes as
hex, enums without their prefix, times as ISO 8601 UTC).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import click
from google.protobuf.message import Message

from services.families.config import ChainConfig, ChainFamily
from services.runtime.client import BaseClient
from services.runtime.errors import CustosError, InvalidArgument
from services.runtime.grpc_errors import RemoteError, status_for
from services.runtime.intent import MAX_AMOUNT
from services.runtime.settings import SERVICE_NAMES, ServiceSettings, validation_line

T = TypeVar("T")
C = TypeVar("C", bound=BaseClient)
S = TypeVar("S", bound=ServiceSettings)
OUTPUTS = ("table", "json")


def state_root() -> Path:
    return Path(os.environ.get("CUSTOS_STATE_DIR", ".custos"))


@contextmanager
def _config_env(path: Path | None) -> Iterator[None]:
    """Names ``path`` as the settings file while settings are read (restored afterwards)."""
    before = os.environ.get("CUSTOS_CONFIG")
    if path is not None:
        os.environ["CUSTOS_CONFIG"] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CUSTOS_CONFIG", None)
        else:
            os.environ["CUSTOS_CONFIG"] = before


def load_settings(config: Path | None, cls: type[S], *, state_dir: Path | None = None) -> S:
    """Settings from ``config`` (or ``CUSTOS_CONFIG``), under the environment's ``CUSTOS_*``.

    ``state_dir`` pins the state folder (a stack's own), whatever ``CUSTOS_STATE_DIR`` says:
    for the CLI that variable names where the stacks live.
    """
    from pydantic import ValidationError

    if config is not None and not config.is_file():
        raise InvalidArgument(f"settings file {config} does not exist")
    with _config_env(config):
        try:
            pinned: dict[str, Any] = {} if state_dir is None else {"state_dir": state_dir}
            return cls(**pinned)
        except ValidationError as e:
            raise InvalidArgument(validation_line(e)) from None


@dataclass
class CliContext:
    """The root options of ``custos``, resolved lazily (``custos dev up`` needs none of them)."""

    output: str = "table"
    stack: str | None = None
    config: Path | None = None
    person: str | None = None
    cert: Path | None = None
    key_file: Path | None = None
    #: ``--passphrase-file`` of a command that signs with an approver key file
    passphrase_file: Path | None = None
    _settings: dict[type, ServiceSettings] = field(default_factory=dict, repr=False)

    def stack_root(self) -> Path | None:
        return (
            None if self.stack is None or self.config is not None else (state_root() / self.stack).absolute()
        )

    def config_path(self) -> Path | None:
        """``--config``, else the ``--stack``'s settings file, else ``CUSTOS_CONFIG`` (None: env only)."""
        if self.config is not None:
            return self.config
        root = self.stack_root()
        if root is not None:
            path = root / "custos.yaml"
            if not path.is_file():
                raise InvalidArgument(
                    f"stack {self.stack} is not set up ({path}): custos dev up --stack {self.stack}"
                )
            return path
        return None

    def settings(self) -> ServiceSettings:
        return self.settings_as(ServiceSettings)

    def settings_as(self, cls: type[S]) -> S:
        """Settings of class ``cls`` (e.g. a service's, for the sections only it reads)."""
        if cls not in self._settings:
            self._settings[cls] = load_settings(self.config_path(), cls, state_dir=self.stack_root())
        out = self._settings[cls]
        assert isinstance(out, cls)
        return out

    def chains(self) -> dict[str, ChainConfig]:
        """The chain registry of the settings file (the chains the services are configured with)."""
        from services.chain.main import ChainSettings

        return {c.name: c for c in self.settings_as(ChainSettings).chains}

    def display_units(self) -> dict[str, DisplayUnit]:
        return {name: c.display() for name, c in self.chains().items()}

    def credentials(self) -> tuple[Path, Path]:
        """The caller's certificate and key: ``--cert``/``--key-file``, ``--as``, or the settings."""
        tls = self.settings().tls
        if self.cert is not None or self.key_file is not None:
            if self.cert is None or self.key_file is None:
                raise InvalidArgument("give both --cert and --key-file")
            cert, key = self.cert, self.key_file
        elif self.person is not None:
            assert tls.pki_dir is not None
            cert, key = tls.pki_dir / f"{self.person}.crt", tls.pki_dir / f"{self.person}.key"
            if not cert.is_file():
                raise InvalidArgument(f"no certificate for {self.person} in {tls.pki_dir}")
        elif tls.cert is not None and tls.key is not None:
            cert, key = tls.cert, tls.key
        else:
            raise InvalidArgument("who is calling? give --as PERSON (or --cert and --key-file)")
        for path in (cert, key):
            if not path.is_file():
                raise InvalidArgument(f"{path} does not exist")
        return cert, key

    def identity(self) -> str:
        """The caller's identity: the CN of their certificate."""
        from services.runtime.pki import identity_of

        cert, _ = self.credentials()
        try:
            name, _roles = identity_of(cert.read_bytes())
        except ValueError:
            raise InvalidArgument(f"{cert} is not a PEM certificate") from None
        if not name:
            raise InvalidArgument(f"{cert} names no identity (CN)")
        return name

    def client(self, cls: type[C]) -> C:
        """A typed client of ``cls.service`` that calls as this person (use with ``async with``)."""
        cert, key = self.credentials()
        client: C = cls.connect(self.settings(), cert=cert, key=key)
        return client

    async def acall(
        self, cls: type[BaseClient], rpc: str, request: Any, *, deadline: float | None = None
    ) -> Any:
        """One call of ``rpc`` as this person, on a channel of its own."""
        async with self.client(cls) as client:
            return await client.call(rpc, request, deadline=deadline)

    def call(self, cls: type[BaseClient], rpc: str, request: Any) -> Any:
        """:meth:`acall` for commands that make a single call."""
        return run(self.acall(cls, rpc, request))

    @property
    def json(self) -> bool:
        return self.output == "json"

    def emit(self, data: Any, human: Callable[[Any], Iterable[str]]) -> None:
        """Prints ``data`` as JSON, or the lines ``human(data)`` gives."""
        if self.json:
            click.echo(json.dumps(data, indent=2, sort_keys=True))
        else:
            for line in human(data):
                click.echo(line)


def _keep_passphrase_file(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.ensure_object(CliContext).passphrase_file = value


#: ``--passphrase-file`` of the commands that take ``--key``: where an encrypted key file's
#: passphrase is (else ``CUSTOS_KEY_PASSPHRASE``, else a prompt): never an argument ``ps`` shows.
passphrase_option = click.option(
    "--passphrase-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    expose_value=False,
    callback=_keep_passphrase_file,
    help="If the key file is encrypted: a file holding its passphrase "
    "(else $CUSTOS_KEY_PASSPHRASE, else a prompt).",
)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


pass_cli = click.make_pass_decorator(CliContext, ensure=True)


# --- errors ---------------------------------------------------------------------------------------


def error_code(e: CustosError) -> str:
    return e.status.name if isinstance(e, RemoteError) else status_for(e).name


def error_message(e: CustosError) -> str:
    """The message without the ``<service>: `` prefix a remote error carries."""
    # one line, but all of it: a usage error's choices, a position in a file
    text = " ".join(str(e).split()) or type(e).__name__
    service, sep, rest = text.partition(": ")
    return rest if isinstance(e, RemoteError) and sep and service in SERVICE_NAMES else text


def error_line(e: CustosError, *, as_json: bool = False) -> str:
    """One line for stderr: ``error: CODE: message`` (or a JSON object)."""
    if as_json:
        return json.dumps({"error": {"code": error_code(e), "message": error_message(e)}}, sort_keys=True)
    return f"error: {error_code(e)}: {error_message(e)}"


# --- protobuf to JSON -----------------------------------------------------------------------------


def _upper_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def _scalar(f: Any, value: Any) -> Any:
    if f.type == f.TYPE_BYTES:
        return bytes(value).hex()
    if f.type == f.TYPE_ENUM:
        name = f.enum_type.values_by_number[value].name if value in f.enum_type.values_by_number else ""
        return name.removeprefix(_upper_snake(f.enum_type.name) + "_") or str(value)
    if f.type == f.TYPE_MESSAGE:
        if f.message_type.full_name == "google.protobuf.Timestamp":
            return iso(value)
        return to_json(value)
    return value


def to_json(msg: Message) -> dict[str, Any]:
    """A message as plain JSON values: every field (stable keys), the set member of a oneof only."""
    out: dict[str, Any] = {}
    for f in msg.DESCRIPTOR.fields:
        oneof = f.containing_oneof
        if oneof is not None and msg.WhichOneof(oneof.name) != f.name:
            continue
        value = getattr(msg, f.name)
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            value_field = f.message_type.fields_by_name["value"]
            out[f.name] = {str(k): _scalar(value_field, value[k]) for k in sorted(value)}
        elif f.is_repeated:
            out[f.name] = [_scalar(f, v) for v in value]
        elif f.type == f.TYPE_MESSAGE and not msg.HasField(f.name):
            out[f.name] = None
        else:
            out[f.name] = _scalar(f, value)
    return out


def iso(ts: Any) -> str | None:
    """A Timestamp as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (None when unset)."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    when = datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


# --- human output ---------------------------------------------------------------------------------


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> list[str]:
    """Plain text columns, left aligned; the last column is not padded."""
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return [
        "  ".join(c.ljust(widths[i]) if i < len(headers) - 1 else c for i, c in enumerate(r)).rstrip()
        for r in cells
    ]


def fields(pairs: Iterable[tuple[str, Any]]) -> list[str]:
    """``name  value`` lines for one object, skipping empty values."""
    shown = [(k, str(v)) for k, v in pairs if v not in (None, "", [])]
    width = max((len(k) for k, _ in shown), default=0)
    return [f"{k.ljust(width)}  {v}" for k, v in shown]


def page_hint(data: dict[str, Any]) -> list[str]:
    """The line that tells how to get the next page, if there is one."""
    token = data.get("next_page_token")
    return [f"more: --page-token {token}"] if token else []


def hhmmss(value: str | None) -> str:
    """``HH:MM:SS.mmm`` of an ISO time from :func:`iso`."""
    return value[11:23] if value else ""


# --- options shared by the commands -------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


def paged(default: int = 50, maximum: int = 500) -> Callable[[F], F]:
    """``--page-size`` and ``--page-token`` of a listing command."""

    def wrap(f: F) -> F:
        f = click.option("--page-token", default="", help="The token a previous page ended with.")(f)
        size = click.IntRange(1, maximum)
        return click.option("--page-size", type=size, default=default, show_default=True)(f)

    return wrap


def fill_range(out: Any, since: datetime | None, until: datetime | None) -> None:
    """Sets the ``start`` and ``end`` of a TimeRange message from ``--since`` / ``--until``."""
    from services.runtime.convert import datetime_to_ts

    if since is not None:
        out.start.CopyFrom(datetime_to_ts(since))
    if until is not None:
        out.end.CopyFrom(datetime_to_ts(until))


# --- parameter types ------------------------------------------------------------------------------

_DURATION = re.compile(r"^(\d+)([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Duration(click.ParamType):
    """``90s``, ``15m``, ``1h``, ``2d``."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        m = _DURATION.match(str(value).strip())
        if m is None:
            self.fail(f"{value!r} is not a duration like 90s, 15m, 1h or 2d", param, ctx)
        return timedelta(seconds=int(m.group(1)) * _SECONDS[m.group(2)])


class When(click.ParamType):
    """An ISO 8601 time (UTC unless it says otherwise) or a duration ago (``1h``)."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        if _DURATION.match(text):
            return datetime.now(UTC) - Duration().convert(text, param, ctx)
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            self.fail(
                f"{value!r} is not an ISO 8601 time (2025-01-31T12:00:00Z) or a duration ago", param, ctx
            )
        return when if when.tzinfo else when.replace(tzinfo=UTC)


#: How amounts of a chain are shown: (unit, exponent), e.g. ("ETH", 18) (``ChainConfig.display``).
DisplayUnit = tuple[str, int]


def amount_text(amount: str, unit: DisplayUnit | None) -> str:
    """An amount of base units as people read it (``32 ETH``), exactly; without a unit, as is."""
    if not amount.isdigit():
        return amount
    if unit is None:
        return f"{amount} base units"
    name, exponent = unit
    if exponent == 0:
        return f"{amount} {name}"
    whole, frac = divmod(int(amount), 10**exponent)
    return f"{whole}.{frac:0{exponent}d}".rstrip("0").rstrip(".") + f" {name}"


# --- amounts in a chain's own units ---------------------------------------------------------------

#: An amount longer than this is no amount (2**256 has 78 digits; int() has a digit limit).
_MAX_AMOUNT_TEXT = 200
_AMOUNT_TEXT = re.compile(r"(\d+)(?:\.(\d+))?\s*([A-Za-z][A-Za-z0-9/:._-]*)?")
#: What a number written without a unit counts: base units (``intents submit``), or the chain's
#: display unit (``policy simulate``, where people think in ETH).
Bare = Literal["base", "display"]


@dataclass(frozen=True)
class Unit:
    """A unit an amount may be written in on a chain: ``10**exponent`` of its base units."""

    name: str
    exponent: int


def units_of(chain: ChainConfig) -> tuple[Unit, ...]:
    """The units amounts on ``chain`` may be written in: its display unit and its base
    denomination (``INJ``, ``inj``), and on an Ethereum chain also ETH, gwei and wei."""
    display, exponent = chain.display()
    found = [Unit(display, exponent), Unit(chain.denom, 0)]
    if chain.family is ChainFamily.ETHEREUM:
        found += [Unit("ETH", 18), Unit("gwei", 9), Unit("wei", 0)]
    return tuple(dict.fromkeys(found))


def _unit_names(chain: ChainConfig) -> str:
    return ", ".join(u.name for u in units_of(chain))


def unit_named(written: str, chain: ChainConfig, value: str) -> Unit:
    """The unit ``written`` names on ``chain``.

    Case-insensitive, except where two units differ only by case (``INJ`` is 10**18 ``inj``):
    those match only as spelled, and any other spelling of them is refused as ambiguous, never
    read as one of the two. Raises InvalidArgument.
    """
    units = units_of(chain)
    for u in units:
        if u.name == written:
            return u
    folded = [u for u in units if u.name.lower() == written.lower()]
    if len({u.exponent for u in folded}) > 1:
        big, small = sorted(folded, key=lambda u: -u.exponent)[:2]
        raise InvalidArgument(
            f"{value!r} is ambiguous on {chain.name}: {written!r} could be {big.name} "
            f"(10**{big.exponent - small.exponent} {small.name}) or {small.name}; "
            f"write {big.name} or {small.name} exactly"
        )
    if folded:
        return folded[0]
    raise InvalidArgument(
        f"{value!r} is not an amount on {chain.name}: {written!r} is none of its units ({_unit_names(chain)})"
    )


def _refusal(value: str, text: str, chain: ChainConfig | None, name: str, bare: Bare) -> str:
    """Why ``value`` is no amount, and how to write one on the chain."""
    if chain is None:
        where, hint = f"on chain {name!r}", "give a bare integer of base units"
    elif bare == "display":
        display = chain.display()[0]
        where, hint = f"in {display}", f"give an amount in {display}, e.g. 2000 or 0.5"
        hint += f", or with a unit ({_unit_names(chain)})"
    else:
        where = f"on {chain.name}"
        hint = f"give base units ({chain.denom}, e.g. 2500) or a number with a unit ({_unit_names(chain)})"
    return f"{value!r} {'is negative' if text.startswith('-') else 'is not an amount ' + where}: {hint}"


def _unit_for(
    value: str, written: str, fraction: str, chain: ChainConfig | None, name: str, bare: Bare
) -> Unit:
    """The unit the number of ``value`` counts (``written``, or the bare number's)."""
    if chain is None:
        if written or fraction or bare == "display":
            raise InvalidArgument(
                f"cannot read {value!r}: chain {name!r} is not in the chain registry of the settings, "
                "so its units are unknown" + (": give a bare integer of base units" if bare == "base" else "")
            )
        return Unit("base units", 0)
    if written:
        return unit_named(written, chain, value)
    if bare == "display":
        return Unit(*chain.display())
    return Unit(chain.denom, 0)


def chain_amount(value: str, chain: ChainConfig | None, *, name: str = "", bare: Bare = "base") -> int:
    """``value`` as an exact integer of ``chain``'s base units; never a float, never rounded.

    A bare number counts base units (``bare="display"``: the display unit); a number with a
    unit counts that unit of the chain (:func:`units_of`, :func:`unit_named`): ``2.5INJ`` is
    2.5 * 10**18 inj, ``2500inj`` 2500 inj. A digit finer than one base unit is refused. A
    chain the settings do not name (``chain`` None, ``name`` its name) has unknown units:
    only a bare integer of base units is read. Raises InvalidArgument, one line.
    """
    text = str(value).strip().replace("_", "")
    m = _AMOUNT_TEXT.fullmatch(text) if len(text) <= _MAX_AMOUNT_TEXT else None
    if m is None:
        raise InvalidArgument(_refusal(value, text, chain, name, bare))
    whole, fraction, written = m.group(1), m.group(2) or "", m.group(3) or ""
    unit = _unit_for(value, written, fraction, chain, name, bare)
    scaled, rest = divmod(int(fraction or "0") * 10**unit.exponent, 10 ** len(fraction))
    if rest and unit.exponent == 0:
        raise InvalidArgument(f"{value!r} is not a whole number of base units ({unit.name} has no decimals)")
    if rest:
        base = chain.denom if chain is not None else "base unit"
        raise InvalidArgument(
            f"{value!r} has more than {unit.exponent} decimals (finer than 1 {base}): "
            "not a whole number of base units"
        )
    amount = int(whole) * 10**unit.exponent + scaled
    if amount > MAX_AMOUNT:
        raise InvalidArgument(f"{value!r} is more than any amount an intent can carry (2**256-1 base units)")
    return amount
