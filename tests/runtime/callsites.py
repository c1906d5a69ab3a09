"""Which RPCs a piece of custos code calls, found by reading it (for tests/runtime/test_grants.py).

A call site names its RPC as a string: ``client.call("Rpc", ...)``, ``client.stream(...)``,
the CLI's ``cli.call(Client, "Rpc", ...)`` and ``cli.acall(...)``; or it uses a method of
a typed client (a ``BaseClient`` subclass) whose body names the RPC, such as
``staking.notify_transition``. Inside a typed client the RPC names are definitions, not
calls: they count where a module that imports the client uses the method.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from google.protobuf.descriptor import ServiceDescriptor

import services.pb.custos

REPO = Path(__file__).resolve().parents[2]
Call = tuple[str, str]  # (service full name, RPC)


def custos_services() -> list[ServiceDescriptor]:
    """Every service of every generated custos module, by name."""
    found: dict[str, ServiceDescriptor] = {}
    package = services.pb.custos
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(info.name)
            found.update({s.full_name: s for s in module.DESCRIPTOR.services_by_name.values()})
    return [found[name] for name in sorted(found)]


@cache
def rpc_services() -> dict[str, str]:
    """Each RPC name and its service. Call sites name RPCs as strings, so the names must be unique."""
    out: dict[str, str] = {}
    for service in custos_services():
        for method in service.methods:
            assert method.name not in out, f"{method.name} is in two services: call sites are ambiguous"
            out[method.name] = service.full_name
    return out


def _module_file(name: str) -> Path | None:
    base = REPO.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(tree: ast.AST) -> Iterator[str]:
    """Every module an AST may import (``from a import b``: ``a`` and ``a.b``), at any depth."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def code_of(entry: str) -> list[Path]:
    """The files of custos code a process runs: its entry module and all it imports, transitively
    (generated stubs aside: they call nothing)."""
    seen: dict[str, Path] = {}
    todo = [entry]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        if parts[0] not in ("services", "workflows") or name.startswith("services.pb") or name in seen:
            continue
        path = _module_file(name)
        if path is None:
            continue
        seen[name] = path
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # its packages run too
        todo += _imports(ast.parse(path.read_text()))
    return sorted(set(seen.values()))


def _is_typed_client(node: ast.AST) -> bool:
    return isinstance(node, ast.ClassDef) and any(
        isinstance(b, ast.Name) and b.id == "BaseClient" for b in node.bases
    )


def _named_rpcs(node: ast.AST) -> set[Call]:
    """The RPCs named by ``x.call("Rpc")``-style calls anywhere under ``node``."""
    known = rpc_services()
    out: set[Call] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute):
            if n.func.attr in ("call", "stream", "acall"):
                for arg in n.args[:2]:
                    if isinstance(arg, ast.Constant) and arg.value in known:
                        out.add((known[arg.value], arg.value))
    return out


@cache
def typed_clients() -> dict[str, dict[str, frozenset[Call]]]:
    """Per typed client class, per method: the RPCs it calls, itself or through its other methods."""
    out: dict[str, dict[str, frozenset[Call]]] = {}
    for path in sorted(REPO.glob("services/*/client.py")):
        for cls in filter(_is_typed_client, ast.walk(ast.parse(path.read_text()))):
            assert isinstance(cls, ast.ClassDef)
            methods = {m.name: m for m in cls.body if isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef)}
            calls = {name: _named_rpcs(m) for name, m in methods.items()}
            uses = {
                name: {
                    n.attr
                    for n in ast.walk(m)
                    if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self"
                }
                & set(methods)
                for name, m in methods.items()
            }
            changed = True
            while changed:  # a method that uses another calls what that one calls
                changed = False
                for name in methods:
                    more = set().union(*(calls[u] for u in uses[name])) - calls[name]
                    if more:
                        calls[name] |= more
                        changed = True
            out[cls.name] = {name: frozenset(c) for name, c in calls.items() if c}
    return out


def _outside_typed_clients(node: ast.AST) -> Iterator[ast.AST]:
    yield node
    for child in ast.iter_child_nodes(node):
        if not _is_typed_client(child):
            yield from _outside_typed_clients(child)


def rpcs_called(files: list[Path]) -> set[Call]:
    """The RPCs the code in ``files`` calls: named at a call site, or through a method of a typed
    client that the module imports."""
    clients = typed_clients()
    out: set[Call] = set()
    for path in files:
        tree = ast.parse(path.read_text())
        imported = {
            alias.name
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom)
            for alias in n.names
            if alias.name in clients
        }
        methods: dict[str, frozenset[Call]] = {}
        for name in imported:
            methods.update(clients[name])
        for node in _outside_typed_clients(tree):
            out |= _named_rpcs(node) if isinstance(node, ast.Call) else set()
            if isinstance(node, ast.Attribute) and node.attr in methods:
                out |= methods[node.attr]
    return out
