"""``make demo``: the main job on a fresh machine, on the embedded defaults.

Brings the whole stack up as separate processes, shows every service healthy and
listing its API by reflection, runs the staking scenario, and stops everything,
leaving no process behind (``--keep`` leaves it running).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from pathlib import Path

from services.cli import devstack
from services.cli.context import error_line
from services.runtime.errors import CustosError


def _say(text: str) -> None:
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    parser.add_argument("--state", default=".custos", help="state folder (default .custos)")
    args = parser.parse_args(argv)
    stack = devstack.Stack.named(Path(args.state), "demo")
    if stack.running():
        devstack.down(stack)
    if stack.root.exists():
        shutil.rmtree(stack.root)  # every demo starts from a clean state
    _say(f"== bringing up the stack in {stack.root}")
    try:
        config = devstack.up(stack)
        _say(f"   Temporal UI: http://127.0.0.1:{config['dev']['temporal_ui_port']}")
        rows = asyncio.run(devstack.status(stack))
        for r in rows:
            _say(f"   {r['service']:<8} {r['address']:<22} {r['status']:<10} {', '.join(r['services'])}")
        if any(r["status"] != "SERVING" for r in rows):
            raise SystemExit("a service is not healthy")
        from services.cli.scenario import run_scenario

        asyncio.run(run_scenario(stack, _say))
    except CustosError as e:
        _say(error_line(e))
        return 2
    finally:
        if args.keep:
            env = "" if args.state == ".custos" else f"CUSTOS_STATE_DIR={args.state} "
            _say(f"== the stack keeps running: {env}custos --stack demo --as alice intents list")
            _say(f"   stop it: {env}custos dev down --stack demo")
        else:
            procs = stack.running()
            stopped = devstack.down(stack)
            left = devstack.leftover(procs)
            _say(f"== stopped {', '.join(stopped)}; processes left: {', '.join(left) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
