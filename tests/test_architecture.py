"""The package's shape: no module imports itself back through others (no cycles), and no
package folder holds more modules than one can take in at a glance."""

from __future__ import annotations

from pathlib import Path

import grimp

import napari_unet

#: the most modules (``.py`` files other than ``__init__.py``) one package folder may hold; a
#: package that grows past it is split into sub-packages named after their job
MAX_MODULES = 14

#: folders (relative to ``src/napari_unet``) still over MAX_MODULES, to be regrouped next
#: (issue 31). Empty since every folder was regrouped; never add to it.
OVER_THE_LIMIT: set[str] = set()


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
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
        for w in edges.get(v, ()):
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

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return found


def test_the_oracle_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_modules():
    graph = grimp.build_graph("napari_unet")
    edges = {
        m: {i for i in graph.find_modules_directly_imported_by(m) if i.startswith("napari_unet")}
        for m in graph.modules
    }
    assert _cycles(edges) == []


def _module_counts() -> dict[str, int]:
    """Modules per folder of the package (relative path, ``"."`` for the top)."""
    root = Path(napari_unet.__file__).parent
    counts = {}
    for folder in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
        if folder.name == "__pycache__":
            continue
        modules = [f for f in folder.glob("*.py") if f.name != "__init__.py"]
        if modules:
            counts[folder.relative_to(root).as_posix()] = len(modules)
    return counts


def test_no_package_folder_holds_more_than_max_modules():
    counts = _module_counts()
    assert "inference" in counts  # the walk found the package's folders
    over = {folder: n for folder, n in counts.items() if n > MAX_MODULES}
    new = {folder: n for folder, n in over.items() if folder not in OVER_THE_LIMIT}
    assert not new, f"split these into sub-packages by job (at most {MAX_MODULES} modules): {new}"


def test_the_folders_over_the_limit_are_still_over_it():
    counts = _module_counts()
    done = sorted(f for f in OVER_THE_LIMIT if counts.get(f, 0) <= MAX_MODULES)
    assert not done, f"regrouped: remove {done} from OVER_THE_LIMIT"
