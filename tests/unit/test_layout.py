"""The package's layout and public API: subpackages by domain, imports that only point downwards,
no import cycles, no module left at a flat path, and a docstring on every public name.

The layers, lowest first, are those of the README's map (and of ``visitcal.__doc__``):
``core`` <- ``io`` <- ``detection`` <- ``psf`` <- ``measurement`` <- ``calib`` <- ``tasks`` <- ``sim`` <-
``pipeline`` <- ``qa`` <- ``cli``. A module may import from its own layer and from the layers below it; the
compiled kernels (``visitcal._core``) and ``visitcal.__version__`` are below everything. The package's
own ``__init__`` is the facade above everything: it imports lazily from every layer.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import visitcal

LAYERS = ["core", "io", "detection", "psf", "measurement", "calib", "tasks", "sim", "pipeline", "qa", "cli"]
RANK = {name: k for k, name in enumerate(LAYERS)}
PACKAGE_DIR = Path(visitcal.__file__).resolve().parent


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    is_pkg = parts[-1] == "__init__"
    if is_pkg:
        parts.pop()
    return ".".join(parts), is_pkg


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every visitcal module (or ``visitcal.<name>`` object) that ``path`` imports, with its line."""
    module, is_pkg = _module_name(path)
    package = module if is_pkg else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "visitcal"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "visitcal":
                continue
            # "from . import _core" or "from .measurement import plugins" names a module or an object
            out += [(node.lineno, f"{target}.{a.name}") for a in node.names]
    return out


def _layer(dotted: str) -> str | None:
    """The layer of ``visitcal.<layer>...``; None for the base (``_core``, ``__version__``)."""
    parts = dotted.split(".")
    if len(parts) == 1 or parts[1] in ("_core", "__version__"):
        return None
    return parts[1]


def _source_files():
    return sorted(p for p in PACKAGE_DIR.rglob("*.py") if p != PACKAGE_DIR / "__init__.py")


def test_top_level_holds_only_subpackages():
    """Every module lives in a domain subpackage; at the top: the facade, the CLI and the kernels."""
    flat = sorted(p.name for p in PACKAGE_DIR.glob("*.py"))
    assert flat == ["__init__.py", "cli.py"], f"modules left at the flat path: {flat}"
    subpackages = sorted(p.name for p in PACKAGE_DIR.iterdir() if (p / "__init__.py").is_file())
    assert subpackages == sorted(set(LAYERS) - {"cli"})


def test_imports_point_downwards():
    upward = []
    for path in _source_files():
        module, _ = _module_name(path)
        own = _layer(module)
        assert own in RANK, f"{module} is in no layer of {LAYERS}"
        for line, target in _imports(path):
            other = _layer(target)
            if other is None:
                continue
            assert other in RANK, f"{path}:{line} imports {target}, which is in no layer"
            if RANK[other] > RANK[own]:
                upward.append(f"{path.relative_to(PACKAGE_DIR.parent)}:{line}: {own} imports {target}")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_layer_check_catches_an_upward_import(tmp_path, monkeypatch):
    """The checker itself: a core module importing a task is reported."""
    fake = tmp_path / "visitcal"
    (fake / "core").mkdir(parents=True)
    (fake / "core" / "bad.py").write_text("from ..tasks.calibrate import CalibrateTask\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE_DIR", fake)
    [(line, target)] = _imports(fake / "core" / "bad.py")
    assert (line, target) == (1, "visitcal.tasks.calibrate.CalibrateTask")
    assert RANK[_layer(target)] > RANK[_layer("visitcal.core.bad")]


def test_no_import_cycles():
    """No cycle among the modules' top-level imports (imports inside functions included)."""
    modules = {_module_name(p)[0]: p for p in _source_files()}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for _, target in _imports(path):
            # "visitcal.core.image.Exposure" -> the module "visitcal.core.image"
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                deps.add(target)
        graph[name] = deps
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_top_level_names_resolve_lazily():
    """``import visitcal`` imports no subpackage; ``visitcal.CalibrateTask`` then imports the tasks."""
    code = ("import sys, visitcal; "
            "assert not any(m.startswith('visitcal.') for m in sys.modules), sorted(sys.modules); "
            "visitcal.CalibrateTask; visitcal.read_exposure; visitcal.PixelGridPsf; "
            "print(visitcal.CalibrateTask.__module__, visitcal.read_exposure.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["visitcal.tasks.calibrate", "visitcal.io.fits"]
    with pytest.raises(AttributeError, match="no attribute 'NoSuchTask'"):
        visitcal.NoSuchTask  # noqa: B018
    assert set(visitcal.__all__) <= set(dir(visitcal))


def _public_modules():
    yield visitcal
    for info in pkgutil.walk_packages(visitcal.__path__, "visitcal."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            yield importlib.import_module(info.name)


def _missing_docstrings():
    missing, seen = [], set()
    for module in _public_modules():
        if not inspect.getdoc(module):
            missing.append(module.__name__)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)) or id(obj) in seen:
                continue
            seen.add(id(obj))
            if not inspect.getdoc(obj):
                missing.append(f"{module.__name__}.{name}")
            if not inspect.isclass(obj):
                continue
            for attr, value in vars(obj).items():
                if attr.startswith("_"):
                    continue
                if isinstance(value, (staticmethod, classmethod)):
                    value = value.__func__
                if inspect.isfunction(value) or isinstance(value, property):
                    # getdoc on the class attribute follows the base classes' documentation
                    if not inspect.getdoc(getattr(obj, attr, value)) and not inspect.getdoc(value):
                        missing.append(f"{module.__name__}.{name}.{attr}")
    return missing


def test_every_public_name_has_a_docstring():
    """Each module, each class and function in an ``__all__``, and their public methods and properties."""
    missing = _missing_docstrings()
    assert not missing, f"{len(missing)} public names without a docstring:\n" + "\n".join(missing)


def test_subpackage_exports_exist():
    for module in _public_modules():
        for name in getattr(module, "__all__", ()):
            assert hasattr(module, name), f"{module.__name__}.__all__ names {name}, which it lacks"


CPP = Path(__file__).resolve().parents[2] / "cpp"


@pytest.mark.skipif(not CPP.is_dir(), reason=f"the C++ sources are not beside the tests ({CPP})")
def test_cpp_mirrors_the_subpackages():
    """``cpp/include/visitcal``, ``cpp/src`` and ``cpp/bindings`` are grouped by the same domains, and
    every header has its source or binding under the same domain (one algorithm, one stem)."""
    domains = set(LAYERS) - {"cli", "io", "sim", "pipeline", "tasks"}
    for tree in (CPP / "include" / "visitcal", CPP / "src", CPP / "bindings"):
        folders = {p.name for p in tree.iterdir() if p.is_dir()}
        assert folders <= domains, f"{tree}: folders {sorted(folders - domains)} name no subpackage"
        loose = sorted(p.name for p in tree.glob("*.cpp"))
        assert loose in ([], ["module.cpp"]), f"{tree}: sources outside a domain folder: {loose}"
    for header in (CPP / "include" / "visitcal").rglob("*.hpp"):
        domain, stem = header.parent.name, header.stem
        assert domain in domains, f"{header} is in no domain folder"
        python_side = PACKAGE_DIR / domain
        assert python_side.is_dir(), f"{header}: no Python subpackage visitcal.{domain}"


#: The one C++ edge against the Python order: a PSF model's shape and aperture flux
#: (``Psf::compute_shape``, ``compute_aperture_flux``) are measured on its image with the same adaptive
#: moments and exact-overlap apertures as the measurement plugins, not with a second copy of them.
CPP_UPWARD_ALLOWED = {("src/psf/models.cpp", "measurement/sdss_shape.hpp"),
                      ("src/psf/models.cpp", "measurement/aperture_flux.hpp")}


@pytest.mark.skipif(not CPP.is_dir(), reason=f"the C++ sources are not beside the tests ({CPP})")
def test_cpp_includes_point_downwards():
    """Headers and sources include only their own domain and the domains below it (the bindings glue
    sees everything)."""
    upward = []
    for tree in (CPP / "include" / "visitcal", CPP / "src"):
        for path in sorted(tree.rglob("*.[ch]pp")):
            own = path.relative_to(tree).parts[0]
            for line_no, line in enumerate(path.read_text().splitlines(), 1):
                if not line.startswith('#include "visitcal/'):
                    continue
                included = line.split('"')[1].removeprefix("visitcal/")
                other = included.split("/")[0]
                key = (str(path.relative_to(CPP)), included)
                if RANK[other] > RANK[own] and key not in CPP_UPWARD_ALLOWED:
                    upward.append(f"{path.relative_to(CPP)}:{line_no}: {own} includes {included}")
    assert not upward, "upward includes:\n" + "\n".join(upward)
