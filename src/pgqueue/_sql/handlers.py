"""Statements on the registry of the handlers workers serve (migration 19)."""

from __future__ import annotations

from .template import Template

__all__ = ["HandlerStatements"]


class HandlerStatements:
    """Statements on the handler registry."""

    # A worker's handlers (a JSON array of objects) against the registry, in one statement:
    # returns the recent rows of other applications whose handler differs and that serve a
    # queue one of them serves (the same name, or a name one's pattern matches; the caller
    # makes a [...] class exact), and writes the worker's rows if %(write)s, unless
    # %(strict)s and some came back; one row at least (the clash's columns NULL when
    # none), each with how many rows were written. Patterns, which are few, are joined
    # apart and materialised, so that names are never compared each with each (10,000
    # handlers register in ~0.2 s). Run after handler_lock, in its transaction: two workers
    # starting at once see each other.
    handler_register = Template("""
        WITH mine AS (
            SELECT h.name, h.app, h.explicit, h.handler, h.options, h.fingerprint, h.regex
            FROM jsonb_to_recordset(%(handlers)s::jsonb) AS h(name text, app text,
                explicit boolean, handler text, options jsonb, fingerprint text, regex text)
        ), recent AS (
            SELECT r.* FROM {schema}.handler r
            WHERE r.seen_at > {now} - make_interval(secs => %(recent)s)
        ), mine_patterns AS MATERIALIZED (
            SELECT * FROM mine WHERE regex IS NOT NULL
        ), recent_patterns AS MATERIALIZED (
            SELECT * FROM recent WHERE regex IS NOT NULL
        ), clash AS (
            SELECT m.name AS mine, m.app AS mine_app, m.handler AS mine_handler, r.name,
                r.app, r.handler, r.worker, r.explicit_app, r.seen_at
            FROM mine m JOIN recent r ON r.name = m.name
            WHERE r.app <> m.app AND r.fingerprint <> m.fingerprint
            UNION ALL
            SELECT m.name, m.app, m.handler, r.name, r.app, r.handler, r.worker,
                r.explicit_app, r.seen_at
            FROM mine_patterns m JOIN recent r ON r.name <> m.name AND r.name ~ m.regex
            WHERE r.app <> m.app AND r.fingerprint <> m.fingerprint
            UNION ALL
            SELECT m.name, m.app, m.handler, r.name, r.app, r.handler, r.worker,
                r.explicit_app, r.seen_at
            FROM mine m JOIN recent_patterns r ON r.name <> m.name AND m.name ~ r.regex
            WHERE r.app <> m.app AND r.fingerprint <> m.fingerprint
        ), written AS (
            INSERT INTO {schema}.handler AS t (name, app, handler, options, fingerprint, regex,
                explicit_app, worker, registered_at, seen_at)
            SELECT m.name, m.app, m.handler, m.options, m.fingerprint, m.regex,
                m.explicit, %(worker)s, {now}, {now}
            FROM mine m
            WHERE %(write)s AND (NOT %(strict)s OR NOT EXISTS (SELECT FROM clash))
            ON CONFLICT (name, app) DO UPDATE SET
                handler = excluded.handler, options = excluded.options,
                regex = excluded.regex, explicit_app = excluded.explicit_app,
                worker = excluded.worker, seen_at = excluded.seen_at,
                fingerprint = excluded.fingerprint,
                registered_at = CASE WHEN t.fingerprint = excluded.fingerprint
                    THEN t.registered_at ELSE excluded.registered_at END
            RETURNING 1
        )
        SELECT c.*, w.written
        FROM (SELECT count(*) AS written FROM written) w LEFT JOIN clash c ON true""")
    # Serialises registrations on the schema for the rest of the transaction, waiting at
    # most %(lock_ms)s (a session stuck in its registration must not stop every start).
    handler_lock = Template("""
        SELECT pg_advisory_xact_lock(hashtext({handlers_key}))
        FROM (SELECT set_config('lock_timeout', %(lock_ms)s::integer::text, true)) s""")
    # Every registration, the recent ones first.
    handler_list = Template("""
        SELECT name, app, handler, options, fingerprint, explicit_app, worker, registered_at,
            seen_at, seen_at > {now} - make_interval(secs => %(recent)s) AS recent
        FROM {schema}.handler
        ORDER BY name, seen_at DESC, app""")
    # Maintenance: the registrations no worker refreshed recently.
    handler_prune = Template("""
        DELETE FROM {schema}.handler h
        WHERE (h.name, h.app) IN (
            SELECT name, app FROM {schema}.handler
            WHERE seen_at <= {now} - make_interval(secs => %(recent)s)
            LIMIT %(limit)s)
        RETURNING h.name""")
