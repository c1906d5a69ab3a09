"""Typed settings: environment variables over an optional YAML file over defaults.

Every variable starts with ``CUSTOS_``; nested sections use ``__``
(``CUSTOS_TLS__PLAINTEXT=true``, ``CUSTOS_HSM__PIN_FILE=/run/secrets/pin``).
``CUSTOS_CONFIG`` names a YAML file with the same structure (the dev stack writes
one per stack). Each service has its own settings class built on
:class:`ServiceSettings`; secrets are ``SecretStr`` and never printed.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from services.runtime.errors import InvalidArgument
from services.runtime.yaml_errors import yaml_error_line

SERVICE_NAMES = ("policy", "signer", "chain", "audit", "staking")
DEFAULT_PORTS = {"policy": 50051, "signer": 50052, "chain": 50053, "audit": 50054, "staking": 50055}
#: The top-level keys of a settings file that some custos process reads: one file serves every
#: service, each reading its own sections, so a key is unknown only if none reads it (``dev`` is the
#: dev stack's own). tests/cli/test_context.py checks it against every settings class.
FILE_KEYS = frozenset(
    {
        "state_dir", "database_url", "log_level", "listen", "grpc_deadline_seconds", "tls", "endpoints",
        "temporal", "telemetry", "trust_file", "hsm", "chains", "reconcile_seconds", "decide_threads",
        "commit_window", "ledger_head_label", "checkpoint_every_records", "checkpoint_every_seconds",
        "checkpoint_head_label", "dev", "health_probe_seconds", "log_format",
    }
)  # fmt: skip


class _Section(BaseModel):
    """A settings section: a key it does not know is a typo, refused, never ignored."""

    model_config = ConfigDict(extra="forbid")


class TLSSettings(_Section):
    """mTLS material. Paths default to ``<state_dir>/pki/<identity>.{crt,key}``."""

    plaintext: bool = False
    # With plaintext, the header a trusted mesh sidecar sets to the caller's identity;
    # without it every call is UNAUTHENTICATED.
    trusted_identity_header: str = ""
    pki_dir: Path | None = None
    ca_cert: Path | None = None
    cert: Path | None = None
    key: Path | None = None


class TemporalSettings(_Section):
    """The Temporal frontend. With ``tls``, the connection is TLS, verified against ``ca_cert`` (the
    system roots when unset), presenting ``client_cert``/``client_key`` when the cluster asks for mTLS."""

    address: str = "127.0.0.1:7233"
    namespace: str = "default"
    task_queue: str = "custos-staking"
    tls: bool = False
    ca_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    #: The name the frontend's certificate is checked against (default: the host of ``address``).
    server_name: str = ""


class TelemetrySettings(_Section):
    exporter: Literal["none", "console", "otlp", "memory"] = "none"
    otlp_endpoint: str = "http://127.0.0.1:4317"
    service_namespace: str = "custos"


class Endpoints(_Section):
    """Where each service listens (``host:port``); clients use the same map."""

    policy: str = f"127.0.0.1:{DEFAULT_PORTS['policy']}"
    signer: str = f"127.0.0.1:{DEFAULT_PORTS['signer']}"
    chain: str = f"127.0.0.1:{DEFAULT_PORTS['chain']}"
    audit: str = f"127.0.0.1:{DEFAULT_PORTS['audit']}"
    staking: str = f"127.0.0.1:{DEFAULT_PORTS['staking']}"

    def of(self, service: str) -> str:
        return str(getattr(self, service))


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by ``CUSTOS_CONFIG``, if any."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("CUSTOS_CONFIG")
        if not path:
            return {}
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as e:
            raise InvalidArgument(f"cannot read settings file {path}: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            raise InvalidArgument(f"settings file {path} is not valid YAML: {yaml_error_line(e)}") from None
        if not isinstance(data, dict):
            raise InvalidArgument(f"settings file {path} must hold a mapping")
        known = FILE_KEYS | set(self.settings_cls.model_fields)
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InvalidArgument(f"settings file {path}: unknown key {unknown[0]!r}{hint}")
        return data


class ServiceSettings(BaseSettings):
    """Settings every custos process shares."""

    model_config = SettingsConfigDict(
        env_prefix="CUSTOS_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )
    #: The service this process is; decides its identity and default listen address.
    service: ClassVar[str] = ""

    state_dir: Path = Path(".custos")
    database_url: str = ""
    log_level: str = "INFO"
    #: ``text`` for people, ``json`` (one object a line, with trace and intent ids) for collectors.
    log_format: Literal["text", "json"] = "text"
    listen: str = ""
    grpc_deadline_seconds: float = 10.0
    #: Seconds between the checks of the service's dependencies (database, Temporal, chain
    #: nodes) that set its gRPC health; 0 turns them off.
    health_probe_seconds: float = Field(default=5.0, ge=0)
    tls: TLSSettings = Field(default_factory=TLSSettings)
    endpoints: Endpoints = Field(default_factory=Endpoints)
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    #: The trust root (``custos.trust/v1``): the admin keys and quorum that govern the approver
    #: registry and the active policy. The signer refuses to start without it.
    trust_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlFileSource(settings_cls))

    @model_validator(mode="after")
    def _derive(self) -> ServiceSettings:
        self.state_dir = self.state_dir.expanduser().absolute()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.state_dir / 'custos.db'}"
        if not self.listen and self.service in SERVICE_NAMES:
            self.listen = self.endpoints.of(self.service)
        pki = self.tls.pki_dir or self.state_dir / "pki"
        self.tls.pki_dir = pki
        self.tls.ca_cert = self.tls.ca_cert or pki / "ca.crt"
        if self.service:
            self.tls.cert = self.tls.cert or pki / f"{self.service}.crt"
            self.tls.key = self.tls.key or pki / f"{self.service}.key"
        return self


class HsmSettings(_Section):
    """A PKCS#11 token. A real HSM (Luna, CloudHSM, YubiHSM 2) is configuration only."""

    module: Path = Path("/usr/lib/softhsm/libsofthsm2.so")
    token_label: str = "custos"  # noqa: S105 - a label, not a secret
    pin: SecretStr | None = None
    pin_file: Path | None = None

    def user_pin(self) -> str:
        if self.pin is not None:
            return self.pin.get_secret_value()
        if self.pin_file is not None:
            try:
                return self.pin_file.read_text().strip()
            except OSError as e:
                raise InvalidArgument(f"cannot read HSM PIN file {self.pin_file}: {e.strerror}") from None
        raise InvalidArgument("HSM PIN is not configured (set CUSTOS_HSM__PIN or CUSTOS_HSM__PIN_FILE)")


def validation_line(e: ValidationError) -> str:
    """The first problem of invalid settings, on one line, naming the setting."""
    first = e.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"unknown setting {where} (a typo?)"
    return f"bad setting {where}: {first['msg']}"


def load(cls: type[ServiceSettings]) -> ServiceSettings:
    """Builds a settings object, turning validation errors into one clear error."""
    try:
        return cls()
    except ValidationError as e:
        raise InvalidArgument(validation_line(e)) from None
