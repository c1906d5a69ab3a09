"""Shared test set-up. Fixtures live in tests/fixtures/, one module per real component."""

pytest_plugins = [
    "tests.fixtures.database",
    "tests.fixtures.softhsm",
    "tests.fixtures.anvil",
    "tests.fixtures.injective",
    "tests.fixtures.solana",
    "tests.fixtures.pki",
    "tests.fixtures.temporal",
]
