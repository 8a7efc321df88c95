"""The layering of docs/architecture.md, checked on every import in src/ (lazy ones included).

domain → store → manager → live → engine / webrtc / grpc → app: a package may import only the
packages its row allows, so nothing points back up and `live` never learns a transport.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "parleyd"

# Which parleyd packages (first dotted part after `parleyd.`) each package may import.
ALLOWED: dict[str, set[str]] = {
    "domain": {"domain"},
    "audio": {"audio"},
    "_periodic": set(),
    "store": {"domain", "store"},
    "manager": {"domain", "store", "_periodic"},
    "live": {"domain", "audio", "live", "_periodic"},
    "engine": {"domain", "audio", "live", "engine"},
    "webrtc": {"domain", "audio", "live", "webrtc"},
    "grpc": {"domain", "live", "manager", "grpc"},
}
# Third-party transports the live side must not know.
TRANSPORTS = {
    "grpc",
    "grpc_status",
    "grpc_health",
    "grpc_reflection",
    "aiortc",
    "aiohttp",
    "parley",
}


def _package(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


MODULES = sorted(p for p in SRC.rglob("*.py") if "migrations" not in p.parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_follow_the_layers(path: Path) -> None:
    package = _package(path)
    allowed = ALLOWED.get(package)
    if allowed is None:  # the composition root and the command line may use everything
        assert package in {"app", "cli", "config", "logs", "talk", "__init__"}, package
        return
    wrong = []
    for line, module in _imports(path):
        parts = module.split(".")
        if parts[0] == "parleyd" and len(parts) > 1 and parts[1] not in allowed:
            wrong.append(f"{path.name}:{line} imports {module}")
        if package == "live" and parts[0] in TRANSPORTS:
            wrong.append(f"{path.name}:{line} imports the transport {module}")
    assert wrong == []


def test_only_the_manager_and_the_composition_roots_touch_the_repository() -> None:
    users = {
        str(p.relative_to(SRC))
        for p in MODULES
        if any(m.startswith("parleyd.store") for _, m in _imports(p))
        and _package(p) not in {"store"}
    }
    assert users == {"manager.py", "app.py", "cli.py"}
