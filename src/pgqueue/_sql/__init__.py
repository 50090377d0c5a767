"""Every SQL statement pgqueue runs, named by entity and verb.

Each statement is an attribute of :class:`Statements`, its template naming the schema as
``{schema}`` (and a few other identifiers or literals in braces); ``Statements(schema)``
formats them once per schema with :mod:`psycopg.sql`, so nothing else in the package builds
SQL. Values are always ``%(name)s`` parameters. Some templates share fragments (the columns of
a claim, the options an insert resolves): tests/snapshots/statements.sql shows every statement
whole, rendered (regenerate it with ``python -m tests.snapshots statements``).

Time is read in one way only, ``{now}``: the schema's clock function (migrations/0004), which
is the database's ``statement_timestamp()`` unless a test moved it. No statement takes a time
from the client except a ``start_after`` the user gave as a date.
"""

from __future__ import annotations

from psycopg import sql

from ..models import MAX_SECONDS
from .fragments import (
    GRANT,
    JOB_COLUMNS,
    SERVER_DATABASE_CREATE,
    SERVER_DATABASE_EXISTS,
    SERVER_WAL_LIMIT,
    SERVER_WAL_SETTINGS,
)
from .handlers import HandlerStatements
from .jobs import FIND_KINDS, JobStatements, find_statement, state_kind
from .queues import QueueStatements
from .template import Template
from .upkeep import UpkeepStatements

__all__ = [
    "FIND_KINDS",
    "JOB_COLUMNS",
    "SERVER_DATABASE_CREATE",
    "SERVER_DATABASE_EXISTS",
    "SERVER_WAL_LIMIT",
    "SERVER_WAL_SETTINGS",
    "Statements",
    "state_kind",
]


class Statements(QueueStatements, JobStatements, UpkeepStatements, HandlerStatements):
    """The statements of one schema, as query strings ready to execute (and to prepare).

    Statements are declared as class attributes (by area, in ``jobs``, ``queues`` and
    ``upkeep``), so a misspelled name fails type checking.
    """

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self._finds: dict[tuple[tuple[str, ...], bool, tuple[str, ...]], str] = {}
        ident = sql.Identifier(schema)
        params = {
            "schema": ident,
            "job_seq": sql.Literal(sql.Composed([ident, sql.SQL(".job_id_seq")]).as_string()),
            "job_table": sql.Literal(sql.Composed([ident, sql.SQL(".job")]).as_string()),
            "version_table": sql.Literal(sql.Composed([ident, sql.SQL(".version")]).as_string()),
            "schema_name": sql.Literal(ident.as_string()),
            "lock_key": sql.Literal(f"pgqueue.migrate.{schema}"),
            "maintenance_key": sql.Literal(f"pgqueue.maintain.{schema}"),
            "handlers_key": sql.Literal(f"pgqueue.handlers.{schema}"),
            "fetch_lock_prefix": sql.Literal(f"pgqueue.fetch.{schema}."),
            "jobs_channel": sql.Literal(self.jobs_channel),
            "cancel_channel": sql.Literal(self.cancel_channel),
            "jobs_channel_ident": sql.Identifier(self.jobs_channel),
            "cancel_channel_ident": sql.Identifier(self.cancel_channel),
            "done_channel_ident": sql.Identifier(self.done_channel),
            "now": sql.Composed([ident, sql.SQL(".clock()")]),
            "max_seconds": sql.Literal(MAX_SECONDS),
        }
        self._rendered = {
            name: sql.SQL(template.text).format(**params).as_string()
            for name, template in self.templates().items()
        }
        # Plain attributes from now on (they shadow the templates, which only define
        # __get__): a statement is read on every claim and completion.
        self.__dict__.update(self._rendered)

    @classmethod
    def templates(cls) -> dict[str, Template]:
        """Every statement's template by name: upkeep, jobs, queues, each in the order its
        module defines them."""
        return {
            name: value
            for klass in reversed(cls.__mro__)
            for name, value in vars(klass).items()
            if isinstance(value, Template)
        }

    @property
    def jobs_channel(self) -> str:
        """The NOTIFY channel that announces runnable jobs (payload: queue name)."""
        return f"{self.schema}_jobs"

    @property
    def cancel_channel(self) -> str:
        """The NOTIFY channel that announces cancelled active jobs (payload: job id)."""
        return f"{self.schema}_cancel"

    @property
    def done_channel(self) -> str:
        """The NOTIFY channel that announces the end of awaited jobs (payload: job id; the
        trigger of migration 9 names it the same way)."""
        return f"{self.schema}_done"

    def job_find(
        self, filters: tuple[str, ...], archived: bool, kinds: tuple[str, ...] = ()
    ) -> str:
        """The find_jobs statement for these filters (see jobs.find_statement)."""
        key = (filters, archived, kinds)
        found = self._finds.get(key)
        if found is None:
            text = find_statement(filters, archived, kinds)
            found = sql.SQL(text).format(schema=sql.Identifier(self.schema)).as_string()
            self._finds[key] = found
        return found

    def grant(self, role: str) -> str:
        """The statements that let ``role`` run pgqueue on this schema: produce, work,
        maintain and run cron; not migrate, nor move the clock (see docs/operations.md)."""
        return (
            sql.SQL(GRANT)
            .format(schema=sql.Identifier(self.schema), role=sql.Identifier(role))
            .as_string()
        )

    def migration(self, text: str) -> str:
        """A migration file's text with the schema filled in."""
        return sql.SQL(text).format(schema=sql.Identifier(self.schema)).as_string()
