"""``custos db migrate | roles``: the database's schema, and its roles on PostgreSQL."""

from __future__ import annotations

import click
from sqlalchemy import MetaData

from services.runtime.db_roles import Roles, privileges, provision
from services.runtime.migrate import load_models, upgrade
from services.runtime.settings import ServiceSettings, load


@click.group("db")
def db() -> None:
    """Migrate the database; create the per-service PostgreSQL roles (operators)."""


@db.command("migrate")
@click.option(
    "--url", help="Database URL (default: CUSTOS_DATABASE_URL, else the state folder's SQLite file)."
)
def migrate(url: str | None) -> None:
    """Bring the database to the newest schema (safe to run twice).

    On PostgreSQL run it as the owner role that ``custos db roles`` made, so that what
    the migrations create is the owner's and granted to the services:

    \b
    custos db migrate --url postgresql://custos_owner@db.internal/custos
    """
    target = url or load(ServiceSettings).database_url
    upgrade(target)
    click.echo("migrated")


@db.command("roles")
@click.option("--url", required=True, help="PostgreSQL URL of the database, as a superuser.")
@click.option("--prefix", default="custos", show_default=True, help="Role names are PREFIX_<service>.")
def roles(url: str, prefix: str) -> None:
    """Create a login role per service, each writing only its own schema (safe to run twice).

    Also creates PREFIX_owner, which owns the schemas and tables and runs the migrations
    (this command runs them). Prints the CUSTOS_DATABASE_URL of each service: roles have
    no password; set one (ALTER ROLE ... PASSWORD) or use certificate authentication.

    \b
    custos db roles --url postgresql://postgres@db.internal/custos
    """
    names = Roles(prefix)
    urls = provision(url, names)
    metadata = load_models()
    click.echo(f"owner    {names.owner}: owns the schemas and tables, runs the migrations")
    for service, service_url in urls.items():
        click.echo(f"{service:<8} CUSTOS_DATABASE_URL={service_url}")
        click.echo(f"{'':<9}{_summary(metadata, privileges(metadata, service))}")


def _summary(metadata: MetaData, granted: dict[str, frozenset[str]]) -> str:
    """``schema.* PRIVS`` where a role holds the same on every table of a schema, else per table."""
    parts = []
    for schema in sorted({name.split(".")[0] for name in granted}):
        tables = [t.fullname for t in metadata.tables.values() if t.schema == schema]
        held = {granted.get(t, frozenset()) for t in tables}
        if len(held) == 1:
            parts.append(f"{schema}.* {', '.join(sorted(held.pop()))}")
        else:
            parts += [f"{t} {', '.join(sorted(granted[t]))}" for t in sorted(tables) if t in granted]
    return "; ".join(parts)
