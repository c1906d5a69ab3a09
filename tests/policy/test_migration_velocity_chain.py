"""policy_0005: velocity reservations made before chains were kept take their intent's chain."""

from __future__ import annotations

import json

from alembic import command
from sqlalchemy import text

from services.runtime.db import make_engine
from services.runtime.migrate import alembic_config, upgrade
from tests.fixtures.database import sql
from tests.policy.helpers import WED_10_UTC


def test_old_reservations_take_the_chain_of_their_latest_evaluation(db_url: str) -> None:
    command.downgrade(alembic_config(db_url), "policy_schema")  # the velocity table without its chain
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            for n, (intent, chain) in enumerate(
                [("evaluated", "wrong-chain"), ("evaluated", "ethereum-devnet"), ("other", "cosmoshub")]
            ):
                conn.execute(
                    text(
                        sql(
                            conn,
                            "INSERT INTO {policy_evaluations} (intent_id, spec, initiator, evaluated_at, "
                            "policy_version, outcome, rule_id) "
                            "VALUES (:i, :s, 'alice', :t, 'v', 'ALLOW', 'r')",
                        )
                    ),
                    {"i": intent, "s": json.dumps({"chain": chain}), "t": WED_10_UTC.replace(minute=n)},
                )
            for intent in ("evaluated", "unknown"):
                conn.execute(
                    text(
                        sql(
                            conn,
                            "INSERT INTO {policy_velocity} (intent_id, vault_id, action, amount, "
                            "reserved_at, state) VALUES (:i, 'v1', 'STAKE', '5', :t, 'RESERVED')",
                        )
                    ),
                    {"i": intent, "t": WED_10_UTC},
                )
        upgrade(db_url)
        with engine.connect() as conn:
            rows = conn.execute(text(sql(conn, "SELECT intent_id, chain FROM {policy_velocity}"))).all()
        assert dict(rows) == {"evaluated": "ethereum-devnet", "unknown": ""}
    finally:
        engine.dispose()
