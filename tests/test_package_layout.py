"""The package's shape: one folder per concern, no import cycle, small modules, a self-contained remote-code folder,
and the old flat import paths still working for users who wrote them."""

import ast
import json
import sys
from pathlib import Path

from conftest import fresh_python
from spcxr_hub._moved import MOVED

PACKAGE = Path(__file__).resolve().parents[1] / "spcxr_hub"
MAX_LINES = 500
STDLIB = set(sys.stdlib_module_names)


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def top_level_imports(name: str, path: Path) -> set[str]:
    """The spcxr_hub modules `name` imports when it is imported (not those imported inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    known, imported = modules(), set()
    for node in ast.parse(path.read_text()).body:
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        # An enclosing package is always imported first (`from . import x`): not an edge a cycle can run through.
        imported |= {target for target in targets if target in known and not (name + ".").startswith(target + ".")}
    return imported


def test_no_import_cycle():
    graph = {name: top_level_imports(name, path) for name, path in modules().items()}
    state, cycles = {}, []

    def visit(name, stack):
        state[name] = "open"
        for other in sorted(graph[name]):
            if state.get(other) == "open":
                cycles.append(" → ".join(stack[stack.index(other):] + [other]))
            elif other not in state:
                visit(other, stack + [other])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, cycles


def test_no_module_is_over_500_lines():
    long = {str(path.relative_to(PACKAGE)): n for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_the_remote_code_folder_imports_only_its_own_modules_and_the_libraries_a_hub_user_has():
    allowed = STDLIB | {"torch", "transformers", "huggingface_hub", "numpy", "PIL", "pydicom", "safetensors"}
    for path in (PACKAGE / "models" / "spcxr").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                roots = [node.module.split(".")[0]]
            else:
                continue  # relative: a module of the same folder, copied beside it
            assert set(roots) <= allowed, f"{path.name} imports {roots}: not available where the project is not installed"


def test_every_old_import_path_gives_the_moved_module_itself():
    """One fresh process for all of them (each would pay for importing torch): the report lists every failure."""
    code = ("import importlib, json, sys\n"
            "wrong = []\n"
            "for old, new in json.loads(sys.argv[1]).items():\n"
            "    module = importlib.import_module(old)\n"
            "    if module is not importlib.import_module(new) or module.__spec__.name != new:\n"
            "        wrong.append(f'{old} -> {module.__spec__.name}')\n"
            "print(json.dumps(wrong))\n")
    assert json.loads(fresh_python(code, json.dumps(MOVED)).strip().splitlines()[-1]) == []


def test_old_from_imports_users_wrote_still_work():
    code = ("from spcxr_hub.imaging import load_image\n"
            "from spcxr_hub.synthetic import generate, write_png8\n"
            "from spcxr_hub.modeling_spcxr import SpcxrModel\n"
            "from spcxr_hub.configuration_spcxr import SpcxrConfig\n"
            "from spcxr_hub.data import load_records\n"
            "from spcxr_hub.plugins import get_task\n"
            "import spcxr_hub\n"
            "assert SpcxrModel is spcxr_hub.SpcxrModel and SpcxrConfig is spcxr_hub.SpcxrConfig\n"
            "assert load_image(generate(0, 32).image).shape == (32, 32)\n")
    fresh_python(code)


def test_every_subpackage_is_listed_for_the_wheel():
    # setuptools builds the wheel from an explicit package list; a folder left out of it installs as nothing.
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {name for name, path in modules().items() if path.name == "__init__.py"}
    assert on_disk <= listed, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(on_disk - listed)}"
