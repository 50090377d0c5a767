"""The descriptor every statement is declared with."""

from __future__ import annotations

from typing import Protocol, overload

__all__ = ["Template"]


class _Rendered(Protocol):
    _rendered: dict[str, str]


class Template:
    """A statement of :class:`Statements`: on the class, its template; on an instance, the
    statement rendered for the instance's schema."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.name = ""

    def __set_name__(self, owner: type[object], name: str) -> None:
        self.name = name

    @overload
    def __get__(self, statements: None, owner: type[object]) -> Template: ...

    @overload
    def __get__(self, statements: _Rendered, owner: type[object]) -> str: ...

    def __get__(self, statements: _Rendered | None, owner: type[object]) -> Template | str:
        return self if statements is None else statements._rendered[self.name]
