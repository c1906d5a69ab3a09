"""What honest people do on the stack before any insider moves, once per stack."""

from __future__ import annotations

from dataclasses import dataclass

from tests.security.stack import Real, SecurityStack, validator_pubkey


@dataclass
class World:
    """What honest people did on the stack before any insider moves.

    ``x``: a 32 ETH stake, approved by olivia and oscar, signed, mined, CONFIRMED.
    ``d``: a 40 ETH stake submitted beside it, approved by the same two, then DENIED when
    its quorum met the vault's velocity limit (32 + 40 > 70 ETH): its approvals stay
    in the workflow's history. ``u`` (a full exit of x's validator) and ``r`` (a
    consolidation of it into an honest validator): awaiting approvals, with the
    approvals olivia and oscar signed (the worker host sees them as they reach the
    workflow, before it acts on them).
    """

    x: Real
    d: Real
    u: Real
    r: Real
    honest_validator: str


async def build_world(stack: SecurityStack) -> World:
    x_spec, d_spec = stack.stake_spec(32), stack.stake_spec(40)
    x = Real(await stack.submit(x_spec), x_spec)
    d = Real(await stack.submit(d_spec), d_spec)  # evaluated before x counts against velocity
    for real in (x, d):
        for who in ("olivia", "oscar"):
            real.approvals.append(stack.approval(real.intent, who))
    for a in x.approvals:
        await stack.approve(x.intent, a.approver_id, a)
    x.intent = (await stack.wait_for(x.id, {"CONFIRMED"})).intent
    for a in d.approvals:
        await stack.approve(d.intent, a.approver_id, a)
    d.intent = (await stack.wait_for(d.id, {"DENIED"})).intent
    validator = x_spec.target.validator  # type: ignore[union-attr]
    honest = validator_pubkey("honest")
    u_spec, r_spec = stack.unstake_spec(validator), stack.restake_spec(validator, honest)
    u = Real(await stack.submit(u_spec), u_spec)
    r = Real(await stack.submit(r_spec), r_spec)
    for real in (u, r):
        real.approvals = [stack.approval(real.intent, who) for who in ("olivia", "oscar")]
    return World(x, d, u, r, honest)
