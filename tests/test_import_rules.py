"""The import rules of docs/architecture.md section 2, held over the real import graph.

Every `import` and `from ... import` in the service's own code is collected with an AST walk,
the ones inside functions included (a lazy import is still a dependency), and checked:

- `config/` imports nothing of ours;
- `workflows/` imports only `workflows/` and `config/`: never `integrations/`, `web/`, the CLI,
  the app or the composition root;
- an integration does not import another one: only the shared plumbing (`integrations/_*.py`),
  and the plumbing imports no integration; no integration imports `web/`, the CLI, the app or
  the root;
- `web/` does not import the CLI, the app or the root;
- exactly one composition root (`peerline_root.py`) builds the Context and the queue: it alone
  calls `build_context`, `make_huey`, `tasks.register` and installs the worker's Context factory;
- no import cycle between modules.

Rules go by top-level package and module prefix, so a module split into a package
(`integrations/database/...`) is held by the same rule.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from config.settings import ROOT

PACKAGES = ("config", "integrations", "workflows", "web")
ROOT_MODULE = "peerline_root"

#: Imports other slices of the restructuring remove; each names who. Delete an entry with the
#: change that removes it (a stale entry fails `test_no_stale_exceptions`).
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    files = [p for p in ROOT.glob("*.py")]
    for package in PACKAGES:
        files += sorted((ROOT / package).rglob("*.py"))
    return {_module_name(p): p for p in files}


def _imports(name: str, path: Path, modules: set[str]) -> set[str]:
    """Our modules that `name` imports, anywhere in its file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found = set()

    def ours(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(ours(alias.name))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                # `from integrations import airtable` imports the module integrations.airtable
                target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                found.add(ours(target))
    found.discard(None)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    sources = _sources()
    modules = set(sources)
    return {name: _imports(name, path, modules) for name, path in sources.items()}


def _top(module: str) -> str:
    return module.split(".")[0]


def _in(module: str, *tops: str) -> bool:
    return _top(module) in tops


def _is_plumbing(module: str) -> bool:
    return module.startswith("integrations._")


def _is_integration(module: str) -> bool:
    return _in(module, "integrations") and module != "integrations" and not _is_plumbing(module)


def _integration_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def broken_rules(graph: dict[str, set[str]]) -> list[str]:
    broken = []
    for source, targets in sorted(graph.items()):
        for target in sorted(targets):
            why = None
            if _in(source, "config") and not _in(target, "config"):
                why = "config/ imports nothing of ours"
            elif _in(source, "workflows") and not _in(target, "workflows", "config"):
                why = "workflows/ imports only workflows/ and config/"
            elif _in(source, "integrations") and not _in(target, "integrations", "workflows", "config"):
                why = "integrations/ import no web/, CLI, app or composition root"
            elif _is_plumbing(source) and _is_integration(target):
                why = "the shared plumbing (integrations/_*) imports no integration"
            elif _is_integration(source) and _is_integration(target) \
                    and _integration_of(source) != _integration_of(target):
                why = "an integration imports no other integration (only integrations/_* plumbing)"
            elif _is_integration(source) and target == "integrations":
                why = "an integration does not import the registry (integrations/__init__.py)"
            elif _in(source, "web") and _in(target, "cli", "app", ROOT_MODULE):
                why = "web/ imports no CLI, app or composition root"
            if why and (source, target) not in KNOWN_EXCEPTIONS:
                broken.append(f"{source} imports {target}: {why}")
    return broken


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


#: Names only the composition root may use: building the Context and the queue.
ROOT_ONLY = {"build_context": "integrations", "make_huey": ROOT_MODULE, "install_context_factory": "workflows.tasks"}


def root_violations(sources: dict[str, Path]) -> list[str]:
    """Uses of the root's building blocks outside the root (their definitions excepted)."""
    found = []
    for name, path in sorted(sources.items()):
        if name == ROOT_MODULE:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            used = None
            if isinstance(node, ast.Name) and node.id in ROOT_ONLY and ROOT_ONLY[node.id] != name:
                used = node.id
            elif isinstance(node, ast.Attribute) and node.attr in ROOT_ONLY and ROOT_ONLY[node.attr] != name:
                used = node.attr
            elif isinstance(node, ast.Attribute) and node.attr == "register" \
                    and isinstance(node.value, ast.Name) and node.value.id == "tasks":
                used = "tasks.register"
            elif isinstance(node, ast.ImportFrom) and any(a.name in ROOT_ONLY for a in node.names):
                used = ", ".join(a.name for a in node.names if a.name in ROOT_ONLY)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Context" \
                    and name != "integrations":
                used = "Context(...)"
            if used:
                found.append(f"{name} line {node.lineno}: {used} (only {ROOT_MODULE}.py builds the Context and queue)")
    return found


def test_the_walk_sees_lazy_imports_and_resolves_submodules():
    graph = import_graph()
    assert "workflows.intake" in graph and "integrations" in graph and "app" in graph
    # app.py imports `web` inside create_app: a lazy import is an edge too.
    assert "web" in graph["app"]
    assert "integrations._webhooks" in graph["integrations.qualtrics"]


def test_layers_import_only_what_they_may():
    assert broken_rules(import_graph()) == []


def test_no_import_cycles_lazy_imports_included():
    assert cycles(import_graph()) == []


def test_one_composition_root_builds_the_context_and_the_queue():
    sources = _sources()
    assert ROOT_MODULE in sources, f"{ROOT_MODULE}.py is the composition root"
    assert root_violations(sources) == []
    graph = import_graph()
    assert ROOT_MODULE in graph["app"], "the web process and the CLI get their Context from the root"
    users = defaultdict(list)
    for source, targets in graph.items():
        if ROOT_MODULE in targets:
            users[source].append(ROOT_MODULE)
    assert set(users) <= {"app", "cli"}, f"only app.py and cli.py use the root: {sorted(users)}"


def test_no_stale_exceptions():
    graph = import_graph()
    stale = sorted(pair for pair in KNOWN_EXCEPTIONS if pair[1] not in graph.get(pair[0], ()))
    assert stale == [], f"these imports are gone: remove them from KNOWN_EXCEPTIONS: {stale}"


def test_the_rules_catch_what_they_forbid():
    """The checker itself: a forbidden edge and a cycle, on a made-up graph."""
    graph = {"workflows.tasks": {"integrations"}, "integrations": {"workflows.context"},
             "workflows.context": {"workflows.tasks"}, "config.forms": {"workflows.model"},
             "integrations.airtable": {"integrations.database"}, "integrations.twilio": {"integrations._webhooks"},
             "web.pages": {"cli"}, "workflows.model": set()}
    broken = broken_rules(graph)
    assert any(b.startswith("workflows.tasks imports integrations") for b in broken)
    assert any(b.startswith("config.forms imports workflows.model") for b in broken)
    assert any(b.startswith("web.pages imports cli") for b in broken)
    assert not any(b.startswith("integrations.twilio") for b in broken)
    assert cycles(graph) == [["integrations", "workflows.context", "workflows.tasks"]]
