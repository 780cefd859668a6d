"""The layout docs/architecture.md describes holds: no import cycles, contracts stated, dependencies point down."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

BOT = Path(__file__).resolve().parents[1] / "bot"
PACKAGES = sorted(p.name for p in BOT.iterdir() if (p / "__init__.py").is_file())
# Kernel modules that must not know about Twitch or the web app (they run in replay and tests without either).
KERNEL_WITHOUT_FEATURES = ("config", "errors", "domain", "logs", "tasks", "outbox", "ingest", "pipeline")


def module_name(path: Path) -> str:
    parts = path.relative_to(BOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every bot.* module each module imports, lazily or not (``from bot.x import y`` counts ``bot.x``)."""
    modules = {module_name(p) for p in BOT.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for path in BOT.rglob("*.py"):
        mod = module_name(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bot"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    graph[mod].add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                graph[mod].update(a.name for a in node.names if a.name.startswith("bot."))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


class TestLayout:
    def test_no_import_cycles(self) -> None:
        assert cycles(imports()) == []

    def test_the_cycle_finder_finds_cycles(self) -> None:
        assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]

    def test_every_package_states_its_contract(self) -> None:
        assert PACKAGES, "bot/ has sub-packages"
        for name in PACKAGES:
            doc = ast.get_docstring(ast.parse((BOT / name / "__init__.py").read_text(encoding="utf-8")))
            assert doc and "May import" in doc and "Owns" in doc, f"bot/{name}/__init__.py states no contract"

    def test_packages_re_export_nothing(self) -> None:
        for name in PACKAGES:
            tree = ast.parse((BOT / name / "__init__.py").read_text(encoding="utf-8"))
            assert [type(n).__name__ for n in tree.body] == ["Expr"], f"bot/{name}/__init__.py holds code"

    def test_kernel_knows_neither_twitch_nor_web(self) -> None:
        graph = imports()
        for mod in KERNEL_WITHOUT_FEATURES:
            bad = {t for t in graph.get(f"bot.{mod}", ()) if t.startswith(("bot.twitch", "bot.web", "bot.app"))}
            assert not bad, f"bot.{mod} imports {bad}"

    def test_only_eventsub_knows_twitchapis_websocket(self) -> None:
        users = [
            module_name(p)
            for p in BOT.rglob("*.py")
            if "twitchAPI.eventsub" in p.read_text(encoding="utf-8")
        ]
        assert users == ["bot.twitch.eventsub"]

    def test_architecture_doc_names_every_package(self) -> None:
        doc = (BOT.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
        for name in PACKAGES:
            assert f"`{name}/`" in doc, f"docs/architecture.md does not describe bot/{name}/"
