#!/usr/bin/env bash
# Sets up a development machine for custos; safe to run twice, quick when nothing changed.
#   - system packages: SoftHSM2, Node.js/npm (for anvil), PostgreSQL (started if down)
#   - .venv with the project and its dev tools (re-installed only when pyproject.toml changes),
#     including the Cosmos devnet's node (injectived, from the PyPI package injective-core)
#   - the devnet's npm packages (anvil, the system contracts' genesis)
#   - .venv-bankrun: solders 0.21 (bankrun, a real Agave bank) for the Solana rewards test
set -euo pipefail
cd "$(dirname "$0")/.."
stamp_dir=.make
mkdir -p "$stamp_dir"

need_apt=()
command -v softhsm2-util >/dev/null || need_apt+=(softhsm2)
command -v npm >/dev/null || need_apt+=(nodejs npm)
command -v pg_ctlcluster >/dev/null || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bootstrap: installing ${need_apt[*]}"
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# PostgreSQL for the tests that run on it (CI machines start it before the session).
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "bootstrap: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi

py=${PYTHON:-python3}
hash=$(cat pyproject.toml deploy/bootstrap.sh | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp_dir/venv" 2>/dev/null)" != "$hash" ]; then
  echo "bootstrap: installing the Python environment (.venv)"
  [ -x .venv/bin/python ] || "$py" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -U pip
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  # The Cosmos family's independent reference in the tests (its generated protos); it pins
  # protobuf<6 but its modules work with ours, so without its dependencies.
  .venv/bin/pip install -q --disable-pip-version-check --no-deps cosmpy==0.12.2
  # injective-core ships injectived compressed: unpack it once here, not in a test.
  .venv/bin/python -c "import injective_core; injective_core.get_binary_path()"
  echo "$hash" > "$stamp_dir/venv"
fi

# solders 0.21 ships bankrun (a real Agave 1.18 bank: epochs, warmup, inflation rewards), which 0.29
# dropped; one environment cannot hold both, so tests/chain/bankrun/ runs in its own with only what
# the Solana family imports (the script puts the repository on sys.path; custos is not installed).
bankrun_reqs=("solders==0.21.0" "base58>=2.1" "cryptography>=44" "pydantic>=2.10")
bhash=$(echo "${bankrun_reqs[*]}" | sha256sum | cut -c1-16)
if [ ! -x .venv-bankrun/bin/python ] || [ "$(cat "$stamp_dir/venv-bankrun" 2>/dev/null)" != "$bhash" ]; then
  echo "bootstrap: installing the Solana bankrun environment (.venv-bankrun)"
  [ -x .venv-bankrun/bin/python ] || "$py" -m venv .venv-bankrun
  .venv-bankrun/bin/pip install -q --disable-pip-version-check "${bankrun_reqs[@]}"
  echo "$bhash" > "$stamp_dir/venv-bankrun"
fi

if [ -f deploy/devnet/package.json ]; then
  nhash=$(cat deploy/devnet/package.json deploy/devnet/package-lock.json 2>/dev/null | sha256sum | cut -c1-16)
  if [ ! -d deploy/devnet/node_modules ] || [ "$(cat "$stamp_dir/npm" 2>/dev/null)" != "$nhash" ]; then
    echo "bootstrap: installing the devnet's npm packages"
    (cd deploy/devnet && npm ci --no-audit --no-fund --loglevel=error)
    echo "$nhash" > "$stamp_dir/npm"
  fi
fi
echo "bootstrap: ready"
