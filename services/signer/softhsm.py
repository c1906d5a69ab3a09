"""SoftHSM2 tokens for development stacks, the demo and the tests.

Each stack gets its own token directory under its state folder and a generated
``softhsm2.conf`` that ``SOFTHSM2_CONF`` names. ``ensure_token`` is idempotent:
an existing token with the label is left as it is.

PINs are typed into ``softhsm2-util`` through a pseudo-terminal, never passed on
its command line, so they never show in a process list. This module runs only
``softhsm2-util`` (a child process) and never loads the PKCS#11 library itself,
so it is safe to call before an :class:`~services.signer.hsm.Hsm` is opened.
A production HSM is initialised by its operators; custos only needs its settings.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from services.runtime.settings import HsmSettings
from services.signer.errors import HsmUnavailable

SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
TEMPLATE = Path(__file__).resolve().parents[2] / "softhsm" / "softhsm2.conf.template"
_FALLBACK_TEMPLATE = (
    "directories.tokendir = @TOKEN_DIR@\n"
    "objectstore.backend = file\n"
    "log.level = ERROR\n"
    "slots.removable = false\n"
)
_MIN_PIN = 4


@dataclass(frozen=True)
class TokenConfig:
    """Where a stack's token lives and how to reach it (the PIN stays a ``SecretStr``)."""

    label: str
    conf_path: Path
    token_dir: Path
    module: Path
    pin: SecretStr

    def env(self) -> dict[str, str]:
        """Variables a child process needs to see this token (no secrets)."""
        return {"SOFTHSM2_CONF": str(self.conf_path)}

    def apply_env(self) -> None:
        """Points this process's SoftHSM at the token; call before the library is loaded."""
        os.environ.update(self.env())

    def hsm_settings(self) -> HsmSettings:
        return HsmSettings(module=self.module, token_label=self.label, pin=self.pin)


def _util() -> str:
    path = shutil.which("softhsm2-util")
    if path is None:
        raise HsmUnavailable("softhsm2-util not found: install the Debian package softhsm2")
    return path


def write_conf(state_dir: Path) -> tuple[Path, Path]:
    """Writes ``<state_dir>/softhsm/softhsm2.conf`` (if changed); returns (conf, token dir)."""
    root = state_dir.expanduser().absolute() / "softhsm"
    token_dir = root / "tokens"
    token_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    template = TEMPLATE.read_text() if TEMPLATE.exists() else _FALLBACK_TEMPLATE
    text = template.replace("@TOKEN_DIR@", str(token_dir))
    conf = root / "softhsm2.conf"
    if not conf.exists() or conf.read_text() != text:
        tmp = conf.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(conf)
    return conf, token_dir


def token_labels(conf: Path) -> list[str]:
    """Labels of the initialised tokens that ``conf`` gives access to."""
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    out = subprocess.run(
        [_util(), "--show-slots"], env=env, capture_output=True, text=True, check=False, timeout=30
    )
    if out.returncode != 0:
        raise HsmUnavailable(f"softhsm2-util --show-slots failed: {out.stderr.strip()[:200]}")
    labels: list[str] = []
    initialized = False
    for line in out.stdout.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Initialized":
            initialized = value.strip() == "yes"
        elif key == "Label" and initialized and value.strip():
            labels.append(value.strip())
    return labels


def _init_token(conf: Path, label: str, pin: str, so_pin: str) -> None:
    """Runs ``softhsm2-util --init-token`` answering its PIN prompts on a pseudo-terminal."""
    master, slave = os.openpty()
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    try:
        proc = subprocess.Popen(
            [_util(), "--init-token", "--free", "--label", label],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            close_fds=True,
        )
    finally:
        os.close(slave)
    answers = [so_pin, so_pin, pin, pin]
    transcript = b""
    pending = b""
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 1024)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            transcript += chunk
            pending += chunk
            if pending.rstrip().endswith(b":") and answers:
                os.write(master, answers.pop(0).encode() + b"\n")
                pending = b""
        rc = proc.wait(timeout=10)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    if rc != 0:
        # The transcript holds only prompts and asterisks, never the PINs.
        last = transcript.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise HsmUnavailable(f"could not initialise SoftHSM token {label!r}: {last[0][:200]}")


def ensure_token(state_dir: Path, label: str, pin: str | SecretStr, so_pin: str | SecretStr) -> TokenConfig:
    """Creates the stack's token once; returns its configuration. Safe to run twice.

    Args:
        state_dir: The stack's state folder; the token lives in ``<state_dir>/softhsm/tokens``.
        label: Token label (``HsmSettings.token_label``).
        pin: User PIN, from settings or the environment.
        so_pin: Security officer PIN, from settings or the environment.
    """
    pin_s = pin.get_secret_value() if isinstance(pin, SecretStr) else pin
    so_s = so_pin.get_secret_value() if isinstance(so_pin, SecretStr) else so_pin
    if len(pin_s) < _MIN_PIN or len(so_s) < _MIN_PIN:
        raise HsmUnavailable(f"SoftHSM PINs must be at least {_MIN_PIN} characters")
    if not label or len(label) > 32:
        raise HsmUnavailable("token label must be 1-32 characters")
    conf, token_dir = write_conf(state_dir)
    if label not in token_labels(conf):
        _init_token(conf, label, pin_s, so_s)
        if label not in token_labels(conf):
            raise HsmUnavailable(f"SoftHSM token {label!r} was not created")
    return TokenConfig(
        label=label, conf_path=conf, token_dir=token_dir, module=SOFTHSM_MODULE, pin=SecretStr(pin_s)
    )


def _secret_from_env(name: str) -> str:
    value = os.environ.get(name)
    if value:
        return value
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    raise SystemExit(f"set {name} or {name}_FILE")


def main(argv: list[str]) -> int:
    """``softhsm/setup-token.sh [STATE_DIR] [LABEL]``; PINs from the environment."""
    state_dir = Path(argv[0] if argv else os.environ.get("CUSTOS_STATE_DIR", ".custos"))
    label = argv[1] if len(argv) > 1 else os.environ.get("CUSTOS_HSM__TOKEN_LABEL", "custos")
    cfg = ensure_token(
        state_dir, label, _secret_from_env("CUSTOS_HSM__PIN"), _secret_from_env("CUSTOS_HSM_SO_PIN")
    )
    print(f"export SOFTHSM2_CONF={cfg.conf_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
