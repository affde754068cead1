"""Sphinx configuration of the visitcal documentation.

Build (warnings are errors, as in CI)::

    pip install ".[docs]" && python -m sphinx -W -b html docs docs/_build/html

The API pages, the configuration reference and the command-line reference are generated from the code
on every build (``_ext/docgen.py``); nothing is fetched from the network.
"""

import inspect
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

import visitcal  # noqa: E402  (the installed package, or python/ on PYTHONPATH)
import docgen  # noqa: E402

docgen.generate(HERE)

project = "visitcal"
author = "the visitcal developers"
copyright = "the visitcal developers"
release = visitcal.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]

# No intersphinx: CI has no network.
templates_path = ["_templates"]
# generated/*.rst are included by configuration.rst and api/cli.rst, not pages of their own
exclude_patterns = ["_build", "generated", "**/.ipynb_checkpoints"]
default_role = "py:obj"     # docstrings name objects in single backticks
nitpicky = False
# "ref.python" is only the "more than one target found for cross-reference" warning. Its sole source
# here is numpydoc's type notation "array_like, shape (n,)": the Python domain turns every word of a
# parameter type into a cross-reference, and the word "shape" matches the ``shape`` properties of
# several classes. Pure noise (with nitpicky off, unresolvable references are silent anyway).
suppress_warnings = ["ref.python"]
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False

html_theme = "furo"
html_title = f"visitcal {release}"
html_static_path = []


def _drop_inherited_type_docstrings(app, what, name, obj, options, lines):
    """Module constants (e.g. a dict) have no docstring of their own: autodoc would show their type's
    (``dict``'s), whose reStructuredText is not ours. Show nothing instead."""
    type_doc = getattr(type(obj), "__doc__", None)
    if what in ("data", "attribute") and isinstance(type_doc, str) and "\n".join(lines).strip() == inspect.cleandoc(type_doc):
        lines.clear()


def setup(app):
    app.connect("autodoc-process-docstring", _drop_inherited_type_docstrings)
