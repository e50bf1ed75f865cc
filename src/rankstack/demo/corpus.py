"""The demo corpus: documentation that ships with the Python interpreter itself.

Two sources, both read without importing arbitrary modules (some have side effects on import):
the ``pydoc`` help topics (``pydoc_data.topics``, plain data) and the docstrings of standard-library
modules, classes and functions, parsed from their source files with ``ast``. Modules that newer
Pythons removed (distutils and the PEP 594 "dead batteries") are left out: answers from them would
send a newcomer to code that no longer exists.
"""

from __future__ import annotations

import ast
import itertools
import sysconfig
import warnings
from collections.abc import Iterator
from pathlib import Path

from rankstack.types import Doc

EXAMPLE_QUERIES = (
    "read a file line by line",
    "sort a list in place with a key function",
    "parse command line arguments",
    "regular expression match groups",
    "run a subprocess and capture its output",
)
_SKIPPED_DIRS = {"test", "tests", "idlelib", "lib2to3", "turtledemo", "site-packages", "ensurepip", "__pycache__"}
# Removed in Python 3.12 (distutils, imp, asynchat, asyncore, smtpd) and 3.13 (PEP 594, lib2to3).
_REMOVED_MODULES = {
    "distutils", "imp", "asynchat", "asyncore", "smtpd", "aifc", "audioop", "cgi", "cgitb", "chunk", "crypt",
    "imghdr", "lib2to3", "mailcap", "msilib", "nis", "nntplib", "ossaudiodev", "pipes", "sndhdr", "spwd", "sunau",
    "telnetlib", "uu", "xdrlib",
}
_MIN_DOCSTRING_CHARS = 40


def stdlib_path() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def pydoc_topic_docs() -> Iterator[Doc]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        return
    for name in sorted(topics):
        text = " ".join(topics[name].split())
        if text:
            yield Doc(f"topic:{name}", text, f"{name} (language reference)")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _docstring_docs(module: str, tree: ast.Module) -> Iterator[Doc]:
    doc = ast.get_docstring(tree)
    if doc and len(doc) >= _MIN_DOCSTRING_CHARS:
        yield Doc(module, doc, f"{module} (module)")

    def visit(node: ast.AST, prefix: str) -> Iterator[Doc]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if child.name.startswith("_"):
                    continue
                qualified = f"{prefix}.{child.name}"
                text = ast.get_docstring(child)
                if text and len(text) >= _MIN_DOCSTRING_CHARS:
                    kind = "class" if isinstance(child, ast.ClassDef) else "function"
                    yield Doc(qualified, text, f"{qualified} ({kind})")
                if isinstance(child, ast.ClassDef):
                    yield from visit(child, qualified)

    yield from visit(tree, module)


def stdlib_docstring_docs(root: Path | None = None) -> Iterator[Doc]:
    root = root or stdlib_path()
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if any(part in _SKIPPED_DIRS or part.startswith("test") for part in relative.parts[:-1]):
            continue
        module = _module_name(path, root)
        parts = module.split(".")
        if not module or parts[0] in _REMOVED_MODULES or any(part.startswith("_") for part in parts):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # old sources raise SyntaxWarning for escapes
                tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, OSError):
            continue  # a few stdlib files are templates or need another Python version
        yield from _docstring_docs(module, tree)


def python_docs_corpus() -> Iterator[Doc]:
    """Every demo document; ids are unique (topics are prefixed, dotted names are unique)."""
    seen: set[str] = set()
    for doc in itertools.chain(pydoc_topic_docs(), stdlib_docstring_docs()):
        if doc.doc_id not in seen:
            seen.add(doc.doc_id)
            yield doc
