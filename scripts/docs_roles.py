"""A griffe extension for ``mkdocs build``: the docstrings' reStructuredText roles
(``:meth:`start```, ``:class:`~pgqueue.Flow```) become Markdown code spans, as mkdocstrings
renders Markdown. Not part of the package: mkdocs.yml loads this file as a hook, which
makes it importable for mkdocstrings as ``docs_roles``, wherever mkdocs runs from.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import griffe

_ROLE = re.compile(r":(?:meth|class|mod|func|attr|data|exc|obj):`(~?)([^`]+)`")


def _code(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def plain(text: str) -> str:
    """``text`` with its roles written as code spans."""
    return _ROLE.sub(_code, text)


class RstRoles(griffe.Extension):
    """Rewrites the roles of every docstring once the object tree is built."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain(obj.docstring.value)


def on_config(config: Any, **kwargs: Any) -> Any:
    """The mkdocs hook: put this directory on the import path, once."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    return config
