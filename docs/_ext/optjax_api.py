"""API pages generated from the package itself, so a new public name needs no edit here.

``.. optjax-api:: PREFIX [PREFIX ...]`` documents every public module at or under each PREFIX:
the module's docstring, then each name it defines that the namespace package re-exports
(``optjax.adam``, ``optjax.train.load_dataset``), then its other public functions and classes
under their module path (``optjax.tree.ema``). A package's names are its ``__all__`` where it
has one, else its names without a leading underscore. At the end of reading, a public module
that no page covers, or a re-exported name that no page shows, is a warning (and so an error
under ``-W``).

Docstrings are plain text with the math written out: an indented block after a blank line is
shown as it is written (a literal block), not reflowed into one paragraph.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import itertools
import pkgutil
import re
from types import ModuleType
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util import inspect as sphinx_inspect
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

ROOT = "optjax"
NAMESPACES = ("optjax", "optjax.train")  # the packages whose re-exported names users call


def _is_private(module_name: str) -> bool:
    return any(part.startswith("_") for part in module_name.split("."))


def public_modules(prefix: str) -> list[str]:
    """PREFIX and its public submodules (those with no name part starting with "_")."""
    module = importlib.import_module(prefix)
    found = [prefix]
    if hasattr(module, "__path__"):
        for info in pkgutil.walk_packages(module.__path__, prefix + "."):
            if not _is_private(info.name):
                found.append(info.name)
    return found


def _public_names(module: ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    return list(names)


def _imported_from(module: ModuleType) -> dict[str, str]:
    """Each name a module imports with ``from X import Y``, mapped to X (made absolute)."""
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return {}
    package = module.__name__ if hasattr(module, "__path__") else module.__name__.rpartition(".")[0]
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                found[alias.asname or alias.name] = base
    return found


def _public_home(module_name: str) -> str:
    """Where a name defined in ``module_name`` is documented: that module, or for a private one
    (``optjax.contrib._muon``) the public package that holds it (``optjax.contrib``)."""
    parts = module_name.split(".")
    public = itertools.takewhile(lambda part: not part.startswith("_"), parts)
    return ".".join(public)


def exports(namespace: str) -> dict[str, str]:
    """The names ``namespace`` re-exports (modules aside), each with the module defining it."""
    module = importlib.import_module(namespace)
    imported = _imported_from(module)
    found = {}
    for name in _public_names(module):
        obj = getattr(module, name)
        if inspect.ismodule(obj) or name.startswith("_"):  # __version__ is in __all__
            continue
        home = getattr(obj, "__module__", None)
        if not (isinstance(home, str) and home.startswith(ROOT)):
            home = imported.get(name, namespace)
        home = _public_home(home)
        if home == ROOT and name in imported:  # defined in a private module of the package
            home = _public_home(imported[name])  # (optjax._tree_state): where it comes from
        found[name] = home
    return found


def own_names(module_name: str) -> list[str]:
    """The public names a module defines (not those it imports, unless from a private module:
    ``optjax.tree`` re-exports ``optjax._tree_math``'s): its ``__all__`` where it has one, else
    its public functions and classes."""
    module = importlib.import_module(module_name)
    if hasattr(module, "__all__"):
        imported = _imported_from(module)

        def own(name: str) -> bool:
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                return False
            if name in imported:
                return _is_private(imported[name])
            return getattr(obj, "__module__", module_name) == module_name

        return [name for name in module.__all__ if own(name)]
    return [
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and obj.__module__ == module_name
    ]


def _auto(full_name: str) -> str:
    module_name, _, name = full_name.rpartition(".")
    obj = getattr(importlib.import_module(module_name), name)
    if inspect.isclass(obj):
        return f".. autoclass:: {full_name}\n   :members:\n"
    if inspect.isroutine(obj) or hasattr(obj, "__wrapped__"):
        return f".. autofunction:: {full_name}\n"
    return f".. autodata:: {full_name}\n"


def entries(module_name: str, namespace: str) -> list[str]:
    """The documented names of one module in the order the module defines them: each under
    the namespace that re-exports it, or else under its module."""
    module = importlib.import_module(module_name)
    order = list(vars(module))
    exported = exports(namespace) if namespace != module_name else {}
    mine = {n for n, home in exported.items() if home == module_name}
    names = {n: f"{namespace}.{n}" for n in mine}
    for name in own_names(module_name):
        if name not in mine:
            names[name] = f"{module_name}.{name}"
    position = {n: order.index(n) if n in order else len(order) for n in names}
    return [names[n] for n in sorted(names, key=position.__getitem__)]


class OptjaxApi(SphinxDirective):
    """``.. optjax-api:: PREFIX [PREFIX ...]``: the modules at or under each PREFIX. A page of
    one module shows it untitled; otherwise each module gets a section (a package named as a
    PREFIX on its own shows its docstring as the page's introduction)."""

    required_arguments = 1
    optional_arguments = 20
    option_spec = {"namespace": directives.unchanged}  # noqa: RUF012 (docutils' API)

    def run(self) -> list[nodes.Node]:
        prefixes = self.arguments
        namespace = self.options.get("namespace", ROOT)
        env: Any = self.env
        env.optjax_api_modules = getattr(env, "optjax_api_modules", set())
        env.optjax_api_names = getattr(env, "optjax_api_names", set())
        lines: list[str] = []
        for prefix in prefixes:
            for module_name in public_modules(prefix):
                env.optjax_api_modules.add(module_name)
                if module_name != prefix or len(prefixes) > 1:
                    lines += [f"``{module_name}``", "-" * (len(module_name) + 4), ""]
                lines += [f".. automodule:: {module_name}", ""]
                for full_name in entries(module_name, namespace):
                    env.optjax_api_names.add(full_name)
                    lines += [*_auto(full_name).splitlines(), ""]
        return self.parse_text_to_nodes("\n".join(lines), allow_section_headings=True)


def check_coverage(app: Sphinx, env: Any) -> None:
    """Every public module on some page; every re-exported name shown."""
    covered = getattr(env, "optjax_api_modules", set())
    names = getattr(env, "optjax_api_names", set())
    for module_name in public_modules(ROOT)[1:]:  # the package itself is the index page
        if module_name not in covered:
            logger.warning("optjax-api: module %s is on no page of docs/", module_name)
    for namespace in NAMESPACES:
        for name in exports(namespace):
            if f"{namespace}.{name}" not in names:
                logger.warning("optjax-api: %s.%s is on no page of docs/", namespace, name)


_STRUCTURE = re.compile(r"^(\.\. |:|[-*+] |\d+\. |>>>)")


def escape_bars(app, what, name, obj, options, lines: list[str]) -> None:
    """Escape ``|`` in prose: docstrings write a modulus as |g|, which reStructuredText would
    read as a substitution. Literal blocks, doctests and ``inline literals`` keep theirs."""
    literal_indent = None  # inside a literal block: lines indented past this
    in_doctest = False
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if not stripped:
            in_doctest = False
            continue
        if literal_indent is not None:
            if indent > literal_indent:
                continue
            literal_indent = None
        if stripped.startswith(">>>"):
            in_doctest = True
        if in_doctest:
            continue
        parts = line.split("``")
        parts[::2] = [part.replace("|", "\\|") for part in parts[::2]]
        lines[i] = "``".join(parts)
        if stripped.rstrip().endswith("::"):
            literal_indent = indent


def literal_math_blocks(app, what, name, obj, options, lines: list[str]) -> None:
    """Turn an indented block that follows a plain paragraph into a literal block, so that
    formulas written as aligned plain text keep their lines."""
    previous = ""  # the last non-blank line
    blank_before = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            blank_before = True
            i += 1
            continue
        indented = line[0] == " "
        if (
            indented
            and blank_before
            and previous
            and previous[0] != " "
            and not previous.rstrip().endswith("::")
            and not _STRUCTURE.match(previous)
        ):
            lines[i:i] = ["::", ""]
            i += 2
            while i < len(lines) and (not lines[i].strip() or lines[i][0] == " "):
                i += 1
            previous, blank_before = "", False
            continue
        previous, blank_before = line, False
        i += 1


def drop_borrowed_docstrings(app, what, name, obj, options, lines: list[str]) -> None:
    """Show only docstrings someone wrote. A constant or type alias has none of its own:
    autodoc would show its type's (the docstring of ``dict``, of ``typing.Any``); a NamedTuple
    or dataclass without one has a generated ``Name(field, ...)``, which the signature says."""
    if not lines:
        return
    text = "\n".join(lines).strip()
    if what == "data":
        borrowed = inspect.cleandoc(getattr(obj, "__doc__", None) or "")
        if borrowed and text == borrowed.strip():
            lines.clear()
    elif what == "class" and re.fullmatch(rf"{re.escape(obj.__name__)}\(.*\)", text, re.DOTALL):
        lines.clear()


def init_signature(app, what, name, obj, options, signature, return_annotation):
    """A class whose metaclass defines ``__call__`` (flax's nnx.Module) is shown with the
    signature of its ``__init__``, not the metaclass's ``(*args, **kwargs)``."""
    if what != "class" or not inspect.isclass(obj) or type(obj).__call__ is type.__call__:
        return None
    if "__init__" not in vars(obj):
        return None
    sig = sphinx_inspect.signature(
        obj.__init__, bound_method=True, type_aliases=app.config.autodoc_type_aliases
    )
    return sphinx_inspect.stringify_signature(sig, show_return_annotation=False), None


def skip_tuple_fields(app, what, name, obj, skip, options):
    """NamedTuple fields: their generated docstrings say nothing."""
    doc = getattr(obj, "__doc__", None) or ""
    if doc.startswith("Alias for field number"):
        return True
    return None


def resolve_short_names(app, env, node, contnode):
    """`chain` in a docstring links to optjax.chain, `tree.ema` to optjax.tree.ema."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    if target.startswith(ROOT + "."):
        return None
    domain = env.get_domain("py")
    for namespace in NAMESPACES:
        found = domain.resolve_xref(
            env,
            node["refdoc"],
            app.builder,
            node["reftype"],
            f"{namespace}.{target}",
            node,
            contnode,
        )
        if found is not None:
            return found
    return None


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("optjax-api", OptjaxApi)
    app.connect("autodoc-process-docstring", drop_borrowed_docstrings, priority=400)
    app.connect("autodoc-process-docstring", literal_math_blocks, priority=600)
    app.connect("autodoc-process-docstring", escape_bars, priority=700)  # after the blocks
    app.connect("autodoc-skip-member", skip_tuple_fields)
    app.connect("autodoc-process-signature", init_signature)
    app.connect("env-check-consistency", check_coverage)
    app.connect("missing-reference", resolve_short_names)
    return {"version": "1", "parallel_read_safe": False}
