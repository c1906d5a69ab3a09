#!/usr/bin/env bash
# Creates (once) the SoftHSM2 token of a custos stack; safe to run again.
#
#   CUSTOS_HSM__PIN=... CUSTOS_HSM_SO_PIN=... softhsm/setup-token.sh [STATE_DIR] [LABEL]
#
# PINs come from the environment (or CUSTOS_HSM__PIN_FILE / CUSTOS_HSM_SO_PIN_FILE), never from
# the command line: they are typed into softhsm2-util through a pseudo-terminal so they never
# appear in a process list. Prints the export line for SOFTHSM2_CONF.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
[ -x "$python" ] || python=python3
cd "$here"
exec "$python" -m services.signer.softhsm "$@"
