"""Sphinx configuration: the API reference, built from the docstrings (`make docs`)."""

import inspect
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

import optjax

project = "optjax"
copyright = "the optjax authors"
release = version = optjax.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "optjax_api",
]

# Google-style docstrings: an `Example:` section of doctests; the math is plain text.
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# `name` in a docstring is a cross-reference where optjax documents `name`, code otherwise.
default_role = "py:obj"
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
# No docstring starts with its signature; a generated one (a dataclass's) must not be read as one.
autodoc_docstring_signature = False
# optjax's type aliases (Params, Updates, ...), shown by name rather than expanded: the public
# names that are neither modules, functions, nor classes optjax defines.
autodoc_type_aliases = {
    name: f"optjax.{name}"
    for name, value in vars(optjax).items()
    if not name.startswith("_")
    and not (inspect.ismodule(value) or inspect.isroutine(value))
    and not (inspect.isclass(value) and value.__module__.startswith("optjax"))
}
add_module_names = True
python_display_short_literal_types = True

exclude_patterns = ["_build"]
html_theme = "alabaster"
html_title = f"optjax {release}"
html_theme_options = {
    "description": "Functional optimizer transforms for JAX",
    "fixed_sidebar": True,
}
html_sidebars = {"**": ["about.html", "navigation.html", "searchbox.html"]}
