"""Griffe extension for tilt's site: Sphinx roles in docstrings become cross-references.

tilt's numpydoc docstrings name other objects with Sphinx roles
(``:func:`tilt.train.train```, ``:class:`Policy```, ``:mod:`tilt.share.exact```).
mkdocstrings renders docstrings as Markdown, where a role would show as
``:func:`` followed by code.  This extension (listed under ``extensions`` in
``mkdocs.yml``; not a page of the site) rewrites each role when the package is
loaded:

* a target that names an object of the package (absolute, or relative to the
  object, its class or its module) becomes a link to that object's entry in
  the API reference, shown as code (an *optional* cross-reference: a private
  object the reference does not render is shown as code, without a link);
* any other target is shown as code.

``~name`` shows the last component only, as in Sphinx.  A line ending with
the reStructuredText literal-block marker ``::`` ends with ``:`` (the indented
block after it is a code block in Markdown too).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|mod|data|attr|meth|obj|exc|const):`(~?)([^`]+)`")
LITERAL = re.compile(r"(\S)::$", re.MULTILINE)


def _find(root: griffe.Object, path: str) -> griffe.Object | griffe.Alias | None:
    """The member of ``root`` at dotted ``path``, or ``None``."""
    obj: Any = root
    for part in path.split("."):
        try:
            obj = obj.members[part]
        except (KeyError, AttributeError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            return None
    return obj


def _resolve(obj: griffe.Object, target: str, package: griffe.Module) -> str | None:
    """The path of the object ``target`` names from inside ``obj``, or ``None``."""
    if target == package.name or target.startswith(package.name + "."):
        rest = target[len(package.name) + 1 :]
        found = _find(package, rest) if rest else package
        return found.path if found is not None else None
    scope: Any = obj
    while scope is not None:
        found = _find(scope, target)
        if found is not None:
            return found.path
        scope = scope.parent
    return None


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring of the loaded package."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        self._walk(pkg, pkg)

    # griffe before 1.14 names the event on_package_loaded (rewriting twice changes nothing)
    on_package_loaded = on_package

    def _walk(self, obj: griffe.Object, package: griffe.Module) -> None:
        if obj.docstring is not None:
            obj.docstring.value = self._rewrite(obj.docstring.value, obj, package)
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member, package)  # type: ignore[arg-type]

    @staticmethod
    def _rewrite(text: str, obj: griffe.Object, package: griffe.Module) -> str:
        def one(match: re.Match[str]) -> str:
            short, target = match.group(1) == "~", match.group(2).strip()
            target = target.removesuffix("()")
            shown = target.rsplit(".", 1)[-1] if short else target
            path = _resolve(obj, target, package)
            if path is None:
                return f"`{shown}`"
            return f'<autoref identifier="{path}" optional><code>{shown}</code></autoref>'

        return LITERAL.sub(r"\1:", ROLE.sub(one, text))
