"""The operations of the API, each written once as a plan that both flavours run.

Input is validated here, before any statement is yielded, so bad input never writes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

from ._config import check_count, check_name
from ._db import Plan, Row, Stmt
from ._payload import encode_json, job_ids
from ._registry import JobDefinition, Registry
from ._sql import FIND_KINDS, JOB_COLUMNS, Statements, state_kind
from .errors import (
    DependencyError,
    InvalidInputError,
    InvalidOptionError,
    JobNotFoundError,
    QueueNotFoundError,
)
from .flow import Flow, FlowStep, check_on_parent_failure
from .models import (
    MAX_SECONDS,
    GroupStats,
    Job,
    JobOptions,
    JobState,
    QueueInfo,
    QueueOptions,
    QueueStats,
    parse_options,
)

__all__ = ["ONE_ACTIVE_PER_KEY", "UNCHANGED", "Core", "QueueBusy"]

_JOB_OPTION_NAMES = frozenset(JobOptions.model_fields)
# Options of a job that depends on others (see Flow): not handler defaults.
_DEPENDENCY_OPTIONS = frozenset({"depends_on", "on_parent_failure"})
# The most parents one job may wait for.
MAX_PARENTS = 100_000
# Policies that allow one active job per singleton key: fetchers take turns on such queues.
ONE_ACTIVE_PER_KEY = frozenset({"singleton", "stately"})

_INT4 = 2**31 - 1


class QueueBusy(Exception):
    """Nothing was claimed: another fetcher has the turn of a queue whose fetchers take
    turns, or the queue's limits let no job start now; try again in ``retry_in`` seconds
    (None: when a run of the queue ends). ``some_groups``: only the limits of the groups
    with waiting jobs held them back, so a job sent meanwhile (of another group) may start
    sooner."""

    def __init__(
        self, name: str, retry_in: float | None = None, *, some_groups: bool = False
    ) -> None:
        super().__init__(name)
        self.retry_in = retry_in
        self.some_groups = some_groups


# Seconds before a fetcher tries again a queue whose turn another fetcher held (a turn
# is one short transaction, unless a caller's own holds it).
_BUSY_RETRY = 0.1


@dataclass(frozen=True, slots=True)
class QueueRules:
    """What decides how a queue's jobs are claimed: its policy, whether it is paused, and
    whether it has limits across workers."""

    policy: str = "standard"
    paused: bool = False
    limited: bool = False

    @property
    def take_turns(self) -> bool:
        """Whether its fetchers claim one at a time (in a transaction, under a lock)."""
        return self.limited or self.policy in ONE_ACTIVE_PER_KEY


# The most jobs one find_jobs call returns (pages of them follow with ``after``).
_MAX_FOUND = 10_000


class _Unchanged:
    """A value left as it is (update_job's data, where None is a value to set)."""

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Any = _Unchanged()

# How many groups a grouped queue's stats show (those with the most waiting jobs).
_TOP_GROUPS = 10
# How far a test may move the clock (the clock function refuses more, too).
_MAX_CLOCK_OFFSET = 100 * 365 * 86400
# The fewest waiting jobs a singleton or stately fetch looks at per statement.
_MIN_KEY_WINDOW = 100
# Parameters of the single-job insert: the job options but singleton_next_slot (group by
# its column's name), and the delay that a start_after given in seconds becomes.
_SINGLE_PARAMS = (
    "name",
    "data",
    "start_in",
    "group_key",
    "trace",
    *sorted(_JOB_OPTION_NAMES - {"singleton_next_slot", "group"}),
)


class Core:
    """Builds the plan of every operation for one schema. Jobs sent by the name of a
    handler in ``registry`` get its send defaults and have their data validated by its
    model, whichever way they are sent."""

    def __init__(self, statements: Statements, registry: Registry | None = None) -> None:
        self.sql = statements
        self.registry = registry if registry is not None else Registry()
        # Set by tracing: the current trace context as a carrier (traceparent, tracestate),
        # stored with each job sent so that its runs join the sender's trace.
        self.trace_context: Callable[[], dict[str, str] | None] | None = None

    # -- producing ---------------------------------------------------------------------------

    def job_record(
        self,
        name: str,
        data: Any,
        options: Mapping[str, Any],
        *,
        registered: bool = True,
        traced: bool = True,
    ) -> tuple[dict[str, Any], str]:
        """One job's validated options (only those given, over its handler's defaults when
        ``registered``) and its data as JSON text (validated by its handler's model); with
        tracing on and ``traced``, the trace context it is sent in."""
        check_name(name)
        if registered and name in self.registry:
            definition = self.registry[name]
            if definition.send_options:
                options = {**definition.send_options, **options}
            data = definition.parse_data(data)
        record: dict[str, Any] = {}
        if not _DEPENDENCY_OPTIONS.isdisjoint(options):
            options = dict(options)
            parents = _parent_ids(options.pop("depends_on", None) or ())
            failure = check_on_parent_failure(options.pop("on_parent_failure", "cancel"))
            if parents:
                if options.get("singleton_next_slot"):
                    raise InvalidOptionError(
                        "depends_on cannot be combined with singleton_next_slot (or "
                        "send_debounced): the next slot's job would not wait"
                    )
                record["depends_on"] = parents
            if failure == "run":
                record["run_anyway"] = True
        if options:
            unknown = set(options) - _JOB_OPTION_NAMES
            if unknown:
                raise InvalidOptionError(
                    "unknown option " + ", ".join(repr(u) for u in sorted(unknown))
                )
            parsed: JobOptions = parse_options(JobOptions, dict(options))
            record.update(parsed.model_dump(mode="json", exclude_none=True))
            if isinstance(parsed.start_after, float):  # a delay: the database adds it
                record["start_in"] = record.pop("start_after")
            if "group" in record:  # a reserved word in SQL
                record["group_key"] = record.pop("group")
        if self.trace_context is not None and traced:
            carrier = self.trace_context()
            if carrier:
                record["trace"] = carrier
        return record, encode_json(data)

    def insert(self, specs: list[str]) -> Plan[list[int | None]]:
        """Plan: insert jobs given as JSON records (see :meth:`insert_many`); ids in order,
        None where a singleton or policy blocked one."""
        if not specs:
            return []
        rows = yield Stmt(self.sql.job_insert_many, {"jobs": "[" + ",".join(specs) + "]"})
        if rows and rows[0]["missing"]:
            raise QueueNotFoundError(list(rows[0]["missing"]))
        return [row["id"] for row in rows]

    def send(self, name: str, data: Any, options: Mapping[str, Any]) -> Plan[int | None]:
        """Plan: insert one job (with the lean statement unless it needs the batch one)."""
        record, payload = self.job_record(name, data, options)
        if "depends_on" in record:
            ids = yield from self.insert_steps([_step(name, record, payload)])
            return ids[0]
        if "dead_letter" in record or record.get("singleton_next_slot"):
            ids = yield from self.insert([_spec(0, name, record, payload)])
            return ids[0]
        params = _single_params(record, name=name, data=payload)
        rows = yield Stmt(self.sql.job_insert, params)
        if not rows:
            # No such queue, or blocked. A queue created since the insert began is seen
            # now: then insert again, so that "blocked" is decided with the queue there.
            (found,) = yield Stmt(self.sql.queue_exists, {"name": name})
            if not found["exists"]:
                raise QueueNotFoundError(name)
            rows = yield Stmt(self.sql.job_insert, params)
        job_id: int | None = rows[0]["id"] if rows else None
        return job_id

    def upsert(self, name: str, data: Any, options: Mapping[str, Any]) -> Plan[int | None]:
        """Plan (in a transaction): the waiting job of queue ``name`` with the singleton key
        of ``options`` takes ``data`` (and the priority given), else a job is sent; its id,
        or None when the key's job runs (or a time slot or policy blocks a new one)."""
        record, payload = self.job_record(name, data, options)
        key = record.get("singleton_key")
        if key is None:
            raise InvalidOptionError("upsert needs a singleton_key: the job it replaces")
        if "depends_on" in record:
            raise InvalidOptionError("upsert cannot take depends_on: send the job instead")
        change = {"name": name, "key": key, "data": payload, "priority": record.get("priority")}
        for _ in range(2):  # a concurrent upsert may insert the key's job between the two
            rows = yield Stmt(self.sql.job_upsert_data, change)
            if rows:
                job_id: int = rows[0]["id"]
                return job_id
            sent = yield from self.send(name, data, options)
            if sent is not None:
                return sent
        return None

    def insert_many(self, jobs: Iterable[Mapping[str, Any]]) -> Plan[list[int | None]]:
        """Plan: insert many jobs given as mappings with ``name``, ``data`` and options."""
        specs = []
        for i, job in enumerate(jobs):
            if not isinstance(job, Mapping):
                raise InvalidInputError(f"job #{i} must be a mapping, got {type(job).__name__}")
            rest = dict(job)
            if "name" not in rest:
                raise InvalidInputError(f"job #{i} has no 'name'")
            name = rest.pop("name")
            record, payload = self.job_record(name, rest.pop("data", None), rest)
            specs.append((name, record, payload))
        if any("depends_on" in record for _, record, _ in specs):
            return (yield from self.insert_steps([_step(*spec) for spec in specs]))
        return (yield from self.insert([_spec(i, *spec) for i, spec in enumerate(specs)]))

    def send_flow(self, flow: Flow) -> Plan[list[int | None]]:
        """Plan (in a transaction): insert the jobs of ``flow``, all or none; their ids in
        the order they were added (None where a singleton or policy blocked one that no
        other job of the flow depends on)."""
        if not isinstance(flow, Flow):
            raise InvalidInputError(f"send_flow takes a Flow, got {type(flow).__name__}")
        steps = []
        for step in flow.steps:
            options = {**step.options, "on_parent_failure": step.on_parent_failure}
            record, payload = self.job_record(step.name, step.data, options)
            if "singleton_next_slot" in record:
                raise InvalidOptionError("a flow's jobs cannot use singleton_next_slot")
            ids = [p for p in step.parents if not isinstance(p, FlowStep)]
            steps.append(
                _Step(
                    step.name,
                    record,
                    payload,
                    _parent_ids(ids),
                    sorted({p.index for p in step.parents if isinstance(p, FlowStep)}),
                )
            )
        return (yield from self.insert_steps(steps))

    def insert_steps(self, steps: list[_Step]) -> Plan[list[int | None]]:
        """Plan (in a transaction): insert jobs that may depend on jobs sent before (ids)
        and on one another (indexes into ``steps``); ids in order, None where a singleton
        or policy blocked a job no other of ``steps`` depends on.

        The parents are looked up and held first (job_depend): a job is inserted waiting
        for those that have not completed, or cancelled at once, with the reason, if one
        ended otherwise (unless it runs anyway, on_parent_failure="run")."""
        order = _topological(steps)
        with_children = {p for step in steps for p in step.steps}
        if with_children:  # a flow: in a savepoint, so that a refusal leaves nothing
            yield Stmt(self.sql.step_begin)
        parents = sorted({p for step in steps for p in step.parents})
        names = sorted(
            {s.name for s in steps}
            | {s.record["dead_letter"] for s in steps if "dead_letter" in s.record}
        )
        (found,) = yield Stmt(
            self.sql.job_depend, {"parents": parents, "names": names, "count": len(steps)}
        )
        if found["missing"]:
            raise QueueNotFoundError(list(found["missing"]))
        if found["unknown"]:
            unknown = [str(i) for i in found["unknown"]]
            more = f" (and {len(unknown) - 10} more)" if len(unknown) > 10 else ""
            raise DependencyError(f"no job {', '.join(unknown[:10])}{more} to depend on")
        states: dict[str, str] = found["states"] or {}
        ids: list[int] = found["ids"]
        vanished = [p for p in parents if str(p) not in states]
        if vanished:  # moved to the archive (or deleted) since the statement began
            for job in (yield from self.get_jobs(vanished)).values():
                states[str(job.id)] = job.state.value
        ended: dict[int, dict[str, Any] | None] = {}
        specs = []
        for i in order:
            step, waits_for, reason = steps[i], [], None
            ends = [(p, states.get(str(p), "deleted")) for p in step.parents]
            ends += [(ids[q], "pending" if ended[q] is None else "cancelled") for q in step.steps]
            for parent, state in ends:
                if state in _PENDING:
                    waits_for.append(parent)
                elif state != "completed" and not step.run_anyway and reason is None:
                    reason = parent_ended(parent, state)
            ended[i] = reason
            record = {**step.record, "given_id": ids[i]}
            record["depends_on"] = [*step.parents, *(ids[q] for q in step.steps)] or None
            if reason is not None:
                record["ended"] = reason
            elif waits_for:
                record.update(waits_for=waits_for, run_anyway=step.run_anyway)
            if i in with_children:
                record["dependents"] = True
            specs.append(_spec(i, step.name, record, step.payload))
        try:
            inserted = yield from self.insert(specs)
        except psycopg.Error as exc:
            if exc.sqlstate != "PGQ01":
                raise
            yield Stmt(self.sql.step_undo)  # (the caller's transaction goes on)
            blocked = (exc.diag.message_primary or "").rpartition(": ")[2]
            raise DependencyError(
                "a singleton key or queue policy blocked "
                + ", ".join(f"step #{n} ({steps[int(n)].name!r})" for n in blocked.split(","))
                + ", which other jobs of the flow depend on: nothing was sent"
            ) from None
        if with_children:
            yield Stmt(self.sql.step_end)
        return inserted

    # -- consuming ---------------------------------------------------------------------------

    def fetch(
        self,
        name: str,
        batch_size: int,
        worker_id: str | None,
        factory: Callable[[tuple[Any, ...]], Job] = Job.from_values,
        rules: QueueRules | None = None,
        heartbeat: float | None = None,
        wait: bool = True,
    ) -> Plan[list[Job]]:
        """Plan: claim up to ``batch_size`` runnable jobs of queue ``name``.

        ``rules`` are the queue's when the caller knows them (else they are read). For
        queues whose fetchers take turns (``singleton`` and ``stately`` policies, limits
        across workers) this plan must run in a transaction; without ``wait`` it raises
        QueueBusy instead of waiting for another's turn to end, and when the queue's limits
        let no job start now (with ``wait``, it returns no jobs then). The runs promise to
        beat every ``heartbeat`` seconds unless the job sets its own.
        """
        check_name(name)
        check_count("batch_size", batch_size)
        if rules is None:
            found = yield Stmt(self.sql.queue_policy, {"name": name})
            if not found:
                raise QueueNotFoundError(name)
            rules = QueueRules(found[0]["policy"], found[0]["paused"], found[0]["limited"])
        policy = rules.policy
        params: dict[str, Any] = {
            "name": name,
            "limit": batch_size,
            "worker_id": worker_id,
            "heartbeat": heartbeat,
            "turn": rules.take_turns,
        }
        if rules.take_turns:
            lock = self.sql.queue_fetch_lock if wait else self.sql.queue_fetch_try_lock
            (turn,) = yield Stmt(lock, {"name": name})
            if turn["isolation"] != "read committed":
                raise InvalidInputError(
                    f"queue {name!r} has limits or a one-per-key policy: fetch it in a READ "
                    f"COMMITTED transaction, not {turn['isolation'].upper()}"
                )
            if not wait and not turn["locked"]:
                raise QueueBusy(name, _BUSY_RETRY)
        grouped = rated = False
        if rules.limited:
            found = yield Stmt(self.sql.queue_room, {"name": name, "limit": batch_size})
            if not found:
                raise QueueNotFoundError(name)
            (room,) = found
            params["limit"] = batch_size = room["room"]
            if batch_size == 0:
                if wait:
                    return []
                raise QueueBusy(name, room["wait"])
            grouped, rated = room["grouped"], room["rated"]
            params.update(
                group_limit=room["group_limit"],
                ordered=room["ordered"],
                group_rate_count=room["group_rate_count"],
                group_rate_seconds=room["group_rate_seconds"],
                cursor=room["group_cursor"],
                at=room["at"],
            )
        rows: list[tuple[Any, ...]] = []
        if grouped:
            rows = yield Stmt(self.sql.job_fetch_grouped, params, tuples=True)
        elif policy in ONE_ACTIVE_PER_KEY:
            window = max(4 * batch_size, _MIN_KEY_WINDOW)
            while True:  # widen the window while it was full and yielded too few jobs
                found = yield Stmt(
                    self.sql.job_fetch_one_per_key,
                    {**params, "limit": batch_size - len(rows), "window": window},
                    tuples=True,
                )
                rows += [r[:-1] for r in found if r[0] is not None]
                if len(rows) >= batch_size or found[0][-1] < window:
                    break
                window *= 4
        else:
            rows = yield Stmt(self.sql.job_fetch, params, tuples=True)
        if rated and rows:
            yield Stmt(self.sql.queue_rate_take, {"name": name, "count": len(rows)})
        if grouped and params["group_rate_count"] is not None:
            if rows:
                yield Stmt(
                    self.sql.group_rate_take,
                    {
                        "name": name,
                        "taken": encode_json(Counter(row[_GROUP] for row in rows)),
                        "count": params["group_rate_count"],
                        "seconds": params["group_rate_seconds"],
                    },
                )
            elif not wait:  # when the next start a group's rate limit holds back is due
                (held,) = yield Stmt(self.sql.group_rate_wait, {"name": name, "at": room["at"]})
                if held["wait"] is not None:
                    raise QueueBusy(name, max(held["wait"], 0.0), some_groups=True)
        rows.sort(key=_claim_order)
        return [factory(r) for r in rows]

    def due_order(
        self, names: list[str], patterns: list[str], limit: int
    ) -> Plan[list[tuple[int, str, bool]]]:
        """Plan: up to ``limit`` jobs due now in the queues named or matching ``patterns``
        (POSIX regular expressions), in claim order across them: (id, queue, paused)."""
        rows = yield Stmt(
            self.sql.job_due_order, {"names": names, "patterns": patterns, "limit": limit}
        )
        return [(r["id"], r["name"], r["paused"]) for r in rows]

    def queue_rules(
        self, names: list[str], patterns: list[str] | None = None
    ) -> Plan[tuple[dict[str, QueueRules], set[str]]]:
        """Plan: the rules of each queue that exists and is named in ``names`` or matches
        one of ``patterns`` (POSIX regular expressions), and the names of those that have
        due waiting jobs."""
        rows = yield Stmt(self.sql.queue_rules, {"names": names, "patterns": patterns or []})
        rules = {r["name"]: QueueRules(r["policy"], r["paused"], r["limited"]) for r in rows}
        return rules, {r["name"] for r in rows if r["due"]}

    # Every write of a run's outcome names the run: the job's id and the run_id that
    # claimed it (None: whichever run holds the job now). Each returns the ids it changed;
    # a run that no longer holds its job changes nothing and is left out.

    def complete(
        self,
        ids: list[int],
        runs: list[int | None],
        outputs: list[str | None],
        progress: list[str | None] | None = None,
        logs: list[str | None] | None = None,
    ) -> Plan[list[int]]:
        """Plan: complete runs, each with its JSON output (and last progress, and logs)."""
        if not ids:
            return []
        done: list[int] = []
        extras = _extras(progress, logs)
        for batch in _batches(ids, runs, ([o or "null" for o in outputs],), extras):
            rows = yield Stmt(self.sql.job_complete_many, {"batch": batch}, tuples=True)
            done += [r[0] for r in rows]
        return done

    def fail(
        self,
        ids: list[int],
        runs: list[int | None],
        outputs: list[str | None],
        *,
        terminal: list[bool] | None = None,
        final_states: list[str] | None = None,
        logs: list[str | None] | None = None,
        states: dict[int, str] | None = None,
    ) -> Plan[list[int]]:
        """Plan: fail runs (each job to retry, or to its final state).

        ``terminal[i]`` skips the retries; ``final_states[i]`` is ``failed`` (default) or
        ``expired``; ``logs[i]`` is what the run logged (None: nothing). ``states``, if
        given, gets the state each changed job went to.
        """
        if not ids:
            return []
        failed: list[int] = []
        for batch in _batches(
            ids,
            runs,
            (
                [o or "null" for o in outputs],
                ["true" if t else "false" for t in terminal or [False] * len(ids)],
                [f'"{state}"' for state in final_states or ["failed"] * len(ids)],
            ),
            _extras(None, logs),
        ):
            rows = yield Stmt(self.sql.job_fail_many, {"batch": batch})
            failed += [r["id"] for r in rows if r["state"] != "dead_letter"]
            if states is not None:
                states.update((r["id"], r["state"]) for r in rows if r["state"] != "dead_letter")
        return failed

    def touch(
        self, ids: list[int], runs: list[int | None], progress: list[str | None]
    ) -> Plan[list[int]]:
        """Plan: heartbeat runs and store their latest progress (None keeps the last)."""
        if not ids:
            return []
        held: list[int] = []
        for batch in _batches(ids, runs, optional=progress):
            rows = yield Stmt(self.sql.job_touch_many, {"batch": batch}, tuples=True)
            held += [r[0] for r in rows]
        return held

    def release(
        self,
        ids: list[int],
        runs: list[int | None],
        delays: list[float] | None = None,
        logs: list[str | None] | None = None,
    ) -> Plan[list[int]]:
        """Plan: hand unfinished runs back to retry, to run at once or each after its delay
        in seconds (a stopping worker's, a snoozed job's, with what it logged; a stately
        job whose key's retry place is taken fails instead, saying why); returns the ids
        no longer held."""
        if not ids:
            return []
        released: list[int] = []
        extras = _extras(None, logs)
        if extras is not None and delays is None:
            delays = [0.0] * len(ids)
        values = () if delays is None else ([repr(float(d)) for d in delays],)
        for batch in _batches(ids, runs, values, extras):
            rows = yield Stmt(self.sql.job_release_many, {"batch": batch})
            released += [r["id"] for r in rows]
        return released

    def add_logs(
        self, ids: list[int], runs: list[int | None], logs: list[str | None]
    ) -> Plan[list[int]]:
        """Plan: store what runs logged with their attempts, whatever their jobs' state
        (runs cut short); a job claimed again since is left alone."""
        if not ids:
            return []
        kept: list[int] = []
        for batch in _batches(ids, runs, (), _extras(None, logs)):
            rows = yield Stmt(self.sql.job_log_many, {"batch": batch}, tuples=True)
            kept += [r[0] for r in rows]
        return kept

    def held_by(self, worker_id: str) -> Plan[list[tuple[int, int | None]]]:
        """Plan: the runs (job id, run id) the database counts as held by ``worker_id``."""
        rows = yield Stmt(self.sql.job_held_by, {"worker_id": worker_id})
        return [(r["id"], r["run_id"]) for r in rows]

    def cancelled_among(self, ids: list[int]) -> Plan[list[tuple[int, int | None]]]:
        """Plan: which of these jobs have been cancelled, and the run that was cancelled."""
        if not ids:
            return []
        rows = yield Stmt(self.sql.job_cancelled_among, {"ids": ids})
        return [(r["id"], r["run_id"]) for r in rows]

    def probe(self, channel: str, payload: str) -> Plan[None]:
        """Plan: notify ``channel`` with ``payload`` (a listener checking that it hears)."""
        yield Stmt(self.sql.listen_probe, {"channel": channel, "payload": payload})

    # -- job management ----------------------------------------------------------------------

    def _by_ids(self, query: str, ids: int | Iterable[int]) -> Plan[list[int]]:
        id_list = job_ids(ids)
        if not id_list:
            return []
        rows = yield Stmt(query, {"ids": id_list})
        return [r["id"] for r in rows]

    def cancel(self, ids: int | Iterable[int]) -> Plan[list[int]]:
        """Plan: cancel waiting or active jobs; returns the ids cancelled."""
        return self._by_ids(self.sql.job_cancel_many, ids)

    def resume(self, ids: int | Iterable[int]) -> Plan[list[int]]:
        """Plan: send cancelled jobs back to created."""
        return self._by_ids(self.sql.job_resume_many, ids)

    def retry(self, ids: int | Iterable[int]) -> Plan[list[int]]:
        """Plan: send failed or expired jobs back to retry."""
        return self._by_ids(self.sql.job_retry_many, ids)

    def delete_job(self, ids: int | Iterable[int]) -> Plan[list[int]]:
        """Plan: delete jobs from the job table and the archive."""
        return self._by_ids(self.sql.job_delete_many, ids)

    def get_job_by_id(self, id: int) -> Plan[Job | None]:
        """Plan: one job by id, from the job table or the archive, with the jobs that
        depend on it and how many of its parents it waits for."""
        (id_value,) = job_ids(id)
        job = (yield from self.get_jobs([id_value])).get(id_value)
        if job is not None:
            (relatives,) = yield Stmt(self.sql.job_relatives, {"id": id_value})
            job.children = list(relatives["children"])
            job.parents_left = relatives["parents_left"] or 0
        return job

    def parents(self, job: Job | int) -> Plan[list[Job]]:
        """Plan: the jobs ``job`` depends on, in the order given (those deleted since are
        left out)."""
        if isinstance(job, Job):
            parents = job.depends_on or []
        else:
            (job_id,) = job_ids(job)
            found = (yield from self.get_jobs([job_id])).get(job_id)
            if found is None:
                raise JobNotFoundError(job_id)
            parents = found.depends_on or []
        jobs = yield from self.get_jobs(parents)
        return [jobs[p] for p in parents if p in jobs]

    def find_jobs(
        self,
        queue: str | None,
        states: Iterable[JobState | str] | JobState | str | None,
        key: str | None,
        group: str | None,
        data_contains: Mapping[str, Any] | None,
        limit: int,
        after: int,
        archived: bool,
    ) -> Plan[list[Job]]:
        """Plan: the jobs that match every filter given, in id order after ``after``, at
        most ``limit``; from the archive too when ``archived``."""
        params: dict[str, Any] = {"limit": check_count("limit", limit, _MAX_FOUND)}
        if isinstance(after, bool) or not isinstance(after, int) or not 0 <= after < 2**63:
            raise InvalidInputError(f"after must be a job id (0 or more), got {after!r}")
        params["after"] = after
        if queue is not None:
            params["name"] = check_name(queue)
        if states is not None:
            given = [states] if isinstance(states, str) else list(states)
            try:
                params["states"] = [JobState(s).value for s in given]
            except ValueError:
                raise InvalidInputError(f"unknown job state in {states!r}") from None
        for what, value in (("key", key), ("group", group)):
            if value is not None:
                if not isinstance(value, str):
                    raise InvalidInputError(f"{what} must be a string, got {value!r}")
                params[what] = value
        if data_contains is not None:
            if not isinstance(data_contains, Mapping):
                raise InvalidInputError(
                    f"data_contains must be a mapping, got {type(data_contains).__name__}"
                )
            params["data"] = encode_json(dict(data_contains), "data_contains")
        filters = tuple(f for f in ("name", "states", "key", "group", "data") if f in params)
        # A queue's jobs are read by kind of state, each through an index (see FIND_KINDS),
        # and planned for its values: a queue of a few jobs and one of millions want
        # different plans (its index ranges, or the primary key in id order).
        kinds: tuple[str, ...] = ()
        if "name" in params:
            wanted = {state_kind(s) for s in params.get("states", [s.value for s in JobState])}
            kinds = tuple(k for k in FIND_KINDS if k in wanted)
        statement = self.sql.job_find(filters, bool(archived), kinds)
        rows = yield Stmt(statement, params, prepare=False)
        return [Job.from_row(row) for row in rows]

    def update_job(
        self, id: int, data: Any, priority: int | None, start_after: Any
    ) -> Plan[Job | None]:
        """Plan: change a job that has not started (``data`` unless UNCHANGED, and the
        options given); the job as changed, or None if there is none that has not
        started. Data is validated by the model of the queue's handler, if it has one."""
        (job_id,) = job_ids(id)
        options = {
            k: v for k, v in (("priority", priority), ("start_after", start_after)) if v is not None
        }
        parsed: JobOptions = parse_options(JobOptions, options)
        params: dict[str, Any] = {
            "id": job_id,
            "data": None,
            "priority": parsed.priority,
            "start_after": None,
            "start_in": None,
        }
        if isinstance(parsed.start_after, float):
            params["start_in"] = parsed.start_after
        else:
            params["start_after"] = parsed.start_after
        if data is not UNCHANGED:
            job = (yield from self.get_jobs([job_id])).get(job_id)
            if job is not None and job.name in self.registry:
                data = self.registry[job.name].parse_data(data)
            params["data"] = encode_json(data)
        rows = yield Stmt(self.sql.job_update, params)
        return Job.from_row(rows[0]) if rows else None

    def get_jobs(self, ids: list[int]) -> Plan[dict[int, Job]]:
        """Plan: the jobs of ``ids`` there are, by id, from the job table or the archive."""
        rows = yield Stmt(self.sql.job_get_many, {"ids": ids})
        return {row["id"]: Job.from_row(row) for row in rows}

    def await_jobs(self, ids: list[int]) -> Plan[dict[int, bool]]:
        """Plan: the jobs among ``ids`` that have not ended, each with whether its end
        will be announced on the done channel (not when another transaction held its row:
        it was not marked then, and never waited for)."""
        rows = yield Stmt(self.sql.job_await, {"ids": ids})
        return {row["id"]: row["announced"] for row in rows}

    def unended(self, ids: list[int]) -> Plan[set[int]]:
        """Plan: the ids among ``ids`` of jobs that have not ended (the others ended or are
        gone)."""
        rows = yield Stmt(self.sql.job_unended, {"ids": ids})
        return {row["id"] for row in rows}

    # -- queues ------------------------------------------------------------------------------

    def _queue_options(self, options: Mapping[str, Any]) -> str:
        parsed: QueueOptions = parse_options(QueueOptions, dict(options))
        return json.dumps(parsed.model_dump(mode="json", include=set(options)))

    def create_queue(self, name: str, options: Mapping[str, Any]) -> Plan[bool]:
        """Plan: create a queue unless it exists; True if created."""
        check_name(name)
        try:
            rows = yield Stmt(
                self.sql.queue_create, {"name": name, "options": self._queue_options(options)}
            )
        except psycopg.errors.CheckViolation:
            raise _groups_with_policy(name) from None
        return bool(rows)

    def update_queue(self, name: str, options: Mapping[str, Any]) -> Plan[None]:
        """Plan (in one transaction): change the given options of a queue (None clears one).

        A new policy applies to the queue's unfinished jobs too, so that every job of the
        queue is claimed by the same rules; if those jobs break it (two waiting jobs of one
        key, say, for ``short``), the change is refused and nothing is written.
        """
        check_name(name)
        try:
            rows = yield Stmt(
                self.sql.queue_update, {"name": name, "options": self._queue_options(options)}
            )
        except psycopg.errors.CheckViolation:
            raise _groups_with_policy(name) from None
        if not rows:
            raise QueueNotFoundError(name)
        if options.keys() & {"group_concurrency", "ordered", "group_rate_limit"}:
            yield Stmt(self.sql.job_group_the_ungrouped, {"name": name, "limit": _INT4})
        if "policy" in options:
            policy = rows[0]["policy"]
            try:
                yield Stmt(self.sql.job_set_policy, {"name": name, "policy": policy})
            except psycopg.errors.UniqueViolation:
                raise InvalidOptionError(
                    f"option 'policy': queue {name!r} cannot become {policy!r}: its unfinished "
                    "jobs break that policy's limits (too many waiting or running jobs of one "
                    "singleton key); let them finish or cancel them first"
                ) from None

    def follow_queue_policy(self, name: str) -> Plan[int]:
        """Plan: give the queue's unfinished jobs its policy (jobs sent while the policy
        changed may carry the old one); returns how many changed."""
        rows = yield Stmt(self.sql.job_follow_queue_policy, {"name": name})
        return len(rows)

    def declare_queues(
        self, definitions: Iterable[JobDefinition], *, create: bool = True, configure: bool = True
    ) -> Plan[None]:
        """Plan: create the queues of registered handlers and set the options declared in
        code (or only one of the two). Every queue exists before any option names one as
        its dead_letter."""
        definitions = list(definitions)
        for definition in definitions if create else ():
            yield from self.create_queue(definition.name, {})
        for definition in definitions if configure else ():
            options = dict(definition.queue_options)
            if definition.description is not None:
                options["description"] = definition.description
            if options:
                yield from self.update_queue(definition.name, options)

    def delete_queue(self, name: str) -> Plan[bool]:
        """Plan: delete a queue and its jobs; True if it existed."""
        check_name(name)
        rows = yield Stmt(self.sql.queue_delete, {"name": name})
        yield Stmt(self.sql.queue_partition_drop, {"name": name})
        return bool(rows)

    def get_queue(self, name: str) -> Plan[QueueInfo | None]:
        """Plan: one queue, or None."""
        check_name(name)
        rows = yield Stmt(self.sql.queue_get, {"name": name})
        return _queue_info(rows[0]) if rows else None

    def get_queues(self) -> Plan[list[QueueInfo]]:
        """Plan: every queue, by name."""
        rows = yield Stmt(self.sql.queue_list)
        return [_queue_info(r) for r in rows]

    # -- pub/sub -----------------------------------------------------------------------------

    def subscribe(self, event: str, queue: str) -> Plan[bool]:
        """Plan: send every job published as ``event`` to ``queue`` too; False if it was."""
        check_name(event, "event")
        check_name(queue)
        rows = yield Stmt(self.sql.subscription_add, {"event": event, "queue": queue})
        return bool(rows)

    def unsubscribe(self, event: str, queue: str) -> Plan[bool]:
        """Plan: stop sending ``event`` to ``queue``; False if it was not subscribed."""
        check_name(event, "event")
        check_name(queue)
        rows = yield Stmt(self.sql.subscription_remove, {"event": event, "queue": queue})
        return bool(rows)

    def subscriptions(self, event: str | None) -> Plan[list[tuple[str, str]]]:
        """Plan: (event, queue) pairs, of one event or all."""
        if event is not None:
            check_name(event, "event")
        rows = yield Stmt(self.sql.subscription_list, {"event": event})
        return [(r["event"], r["queue"]) for r in rows]

    def publish(self, event: str, data: Any, options: Mapping[str, Any]) -> Plan[list[int]]:
        """Plan: one job per subscribed queue, in one statement; returns their ids."""
        check_name(event, "event")
        record, payload = self.job_record("publish", data, options, registered=False)
        for option in ("singleton_next_slot", "depends_on"):
            if option in record:
                raise InvalidOptionError(f"option {option!r} is not supported by publish")
        rows = yield Stmt(self.sql.job_publish, _single_params(record, data=payload, event=event))
        return [r["id"] for r in rows]

    # -- queue management --------------------------------------------------------------------

    def set_paused(self, name: str, paused: bool) -> Plan[None]:
        """Plan: pause a queue (workers stop claiming from it; sends still work) or resume it."""
        check_name(name)
        rows = yield Stmt(self.sql.queue_set_paused, {"name": name, "paused": paused})
        if not rows:
            raise QueueNotFoundError(name)

    def purge_queue(self, name: str) -> Plan[int]:
        """Plan: delete a queue's waiting jobs; returns how many."""
        check_name(name)
        rows = yield Stmt(self.sql.queue_purge, {"name": name})
        return len(rows)

    def redrive(self, name: str, limit: int) -> Plan[list[int]]:
        """Plan: send the waiting jobs of dead-letter queue ``name`` back to the queues they
        failed in, as new jobs; returns the new ids."""
        check_name(name)
        check_count("limit", limit, _INT4)
        params = dict.fromkeys(_SINGLE_PARAMS)
        params.update(name=name, limit=limit)
        rows = yield Stmt(self.sql.queue_redrive, params)
        return [r["id"] for r in rows]

    def queue_stats(self, name: str | None) -> Plan[list[QueueStats]]:
        """Plan: job counts per state of one queue or of all."""
        if name is not None:
            check_name(name)
        rows = yield Stmt(self.sql.queue_stats, {"name": name})
        stats: dict[str, tuple[dict[JobState, int], list[float], Row]] = {}
        for row in rows:
            counts, ages, _ = stats.setdefault(row["name"], (dict.fromkeys(JobState, 0), [], row))
            if row["state"] is not None:
                counts[JobState(row["state"])] = row["count"]
            if row["oldest_waiting"] is not None:
                ages.append(row["oldest_waiting"])
        groups: dict[str, dict[str, GroupStats]] = {}
        for n, (_, _, row) in stats.items():
            if row["grouped"]:
                limit = _rate_limit(row, "group_")
                found = yield Stmt(
                    self.sql.queue_group_stats,
                    {"name": n, "top": _TOP_GROUPS, "seconds": limit and limit[1]},
                )
                groups[n] = {
                    r["group_key"]: GroupStats(
                        r["waiting"],
                        r["active"],
                        None if limit is None else max(limit[0] - r["rate_used"], 0),
                    )
                    for r in found
                }
        return [
            QueueStats(
                n,
                counts,
                max(ages) if ages else None,
                group_concurrency=row["group_concurrency"],
                group_rate_limit=_rate_limit(row, "group_"),
                ordered=row["ordered"],
                groups=groups.get(n, {}),
                concurrency=row["concurrency"],
                rate_limit=_rate_limit(row),
                rate_left=None
                if row["rate_count"] is None
                else max(row["rate_count"] - row["rate_used"], 0),
            )
            for n, (counts, ages, row) in stats.items()
        ]

    def queue_throughput(
        self, name: str | None, window: float, buckets: int
    ) -> Plan[dict[str, list[tuple[int, int]]]]:
        """Plan: per queue, the jobs completed and failed (or expired) in each of
        ``buckets`` equal parts of the last ``window`` seconds, oldest first; queues with
        none are left out."""
        if name is not None:
            check_name(name)
        check_count("buckets", buckets, 1000)
        if isinstance(window, bool) or not 0 < window <= MAX_SECONDS:  # NaN fails this too
            raise InvalidInputError(f"window must be 0 to {MAX_SECONDS} seconds, got {window!r}")
        rows = yield Stmt(
            self.sql.queue_throughput,
            {"name": name, "width": window / buckets, "buckets": buckets},
        )
        found: dict[str, list[tuple[int, int]]] = {}
        for row in rows:
            series = found.setdefault(row["name"], [(0, 0)] * buckets)
            if 0 <= row["bucket"] < buckets:
                series[buckets - 1 - row["bucket"]] = (row["completed"], row["failed"])
        return found

    def grant(self, role: str) -> Plan[None]:
        """Plan: let ``role`` run pgqueue on this schema (see Statements.grant)."""
        if not isinstance(role, str) or not role or len(role) > 63:
            raise InvalidInputError(f"a role name must be 1-63 characters, got {role!r}")
        yield Stmt(self.sql.grant(role))

    def now(self) -> Plan[datetime]:
        """Plan: the time by the schema's clock (the database's, unless a test moved it)."""
        (row,) = yield Stmt(self.sql.clock_now)
        now: datetime = row["now"]
        return now

    def set_clock(self, at: datetime | None) -> Plan[None]:
        """Plan: set the schema's clock to ``at`` (None: the database's own time again)."""
        if at is None:
            yield Stmt(self.sql.clock_set_offset, {"seconds": 0.0})
            return
        if not isinstance(at, datetime) or at.tzinfo is None:
            raise InvalidInputError(f"the clock needs a timezone-aware datetime, got {at!r}")
        yield Stmt(self.sql.clock_set_at, {"at": at})

    def move_clock(self, by: float | timedelta) -> Plan[None]:
        """Plan: move the schema's clock by ``by`` (seconds or a timedelta; negative goes
        back)."""
        seconds = by.total_seconds() if isinstance(by, timedelta) else by
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not (
                -_MAX_CLOCK_OFFSET <= seconds <= _MAX_CLOCK_OFFSET  # NaN fails this too
            )
        ):
            raise InvalidInputError(
                f"the clock moves by seconds or a timedelta within 100 years, got {by!r}"
            )
        yield Stmt(self.sql.clock_move, {"seconds": float(seconds)})


_JOB_COLUMN_NAMES = [c.strip() for c in JOB_COLUMNS.split(",")]
_PRIORITY, _ID = _JOB_COLUMN_NAMES.index("priority"), _JOB_COLUMN_NAMES.index("id")
_START_AFTER = _JOB_COLUMN_NAMES.index("start_after")
_GROUP = _JOB_COLUMN_NAMES.index("group_key")


def _claim_order(row: tuple[Any, ...]) -> tuple[int, Any, int]:
    # Priority first, then due time, then age (the claim's order): UPDATE ... RETURNING
    # does not keep the CTE's order.
    return -row[_PRIORITY], row[_START_AFTER], row[_ID]


@dataclass(slots=True)
class _Step:
    """A job to insert with :meth:`Core.insert_steps`: its validated record and payload,
    its parents sent before (ids) and among the other steps (indexes)."""

    name: str
    record: dict[str, Any]
    payload: str
    parents: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)

    @property
    def run_anyway(self) -> bool:
        return bool(self.record.get("run_anyway"))


def _step(name: str, record: dict[str, Any], payload: str) -> _Step:
    return _Step(name, record, payload, record.get("depends_on", []))


# The states of a parent not ended yet ("pending": a step of the same flow).
_PENDING = frozenset({"created", "retry", "active", "pending"})


def parent_ended(parent: int, state: str) -> dict[str, Any]:
    """The output of a job cancelled because ``parent`` ended in ``state`` (failed,
    expired, cancelled, deleted) without completing: what the trigger of migration 12
    writes too."""
    how = state if state in ("failed", "expired") else f"was {state}"
    return {
        "type": "ParentFailed",
        "message": f"job {parent}, which it depends on, {how}",
        "parent": parent,
        "parent_state": state,
    }


def _parent_ids(value: Any) -> list[int]:
    """The ids a job depends on (jobs, handles or ids), each once, in the order given."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise InvalidOptionError(f"depends_on must be a list of job ids, got {value!r}")
    ids: dict[int, None] = {}
    for item in value:
        job_id = item.id if isinstance(item, Job) else item
        if isinstance(job_id, bool) or not isinstance(job_id, int) or not 0 < job_id < 2**63:
            raise InvalidOptionError(f"depends_on must hold job ids, got {item!r}")
        ids[int(job_id)] = None
    if len(ids) > MAX_PARENTS:
        raise InvalidOptionError(f"a job depends on at most {MAX_PARENTS} jobs, got {len(ids)}")
    return list(ids)


def _topological(steps: list[_Step]) -> list[int]:
    """The indexes of ``steps``, each after the steps it depends on; DependencyError
    naming the steps of a cycle if there is one."""
    order: list[int] = []
    state = [0] * len(steps)  # 0 unseen, 1 on the current path, 2 placed
    for root in range(len(steps)):
        if state[root]:
            continue
        state[root] = 1
        stack, path = [(root, iter(steps[root].steps))], [root]
        while stack:
            node, parents = stack[-1]
            for parent in parents:
                if state[parent] == 1:
                    cycle = path[path.index(parent) :]
                    raise DependencyError(
                        "the flow has a cycle: "
                        + " -> ".join(f"#{n} ({steps[n].name!r})" for n in [*cycle, parent])
                    )
                if state[parent] == 0:
                    state[parent] = 1
                    path.append(parent)
                    stack.append((parent, iter(steps[parent].steps)))
                    break
            else:
                stack.pop()
                path.pop()
                state[node] = 2
                order.append(node)
    return order


def _spec(ord: int, name: str, record: dict[str, Any], payload: str) -> str:
    if not record:  # a checked name needs no JSON escaping
        return f'{{"ord":{ord},"name":"{name}","data":{payload}}}'
    head = json.dumps({"ord": ord, "name": name, **record}, separators=(",", ":"))
    return f'{head[:-1]},"data":{payload}}}'


def _groups_with_policy(name: str) -> InvalidOptionError:
    return InvalidOptionError(
        f"queue {name!r}: group_concurrency, group_rate_limit and ordered apply to the "
        "standard and short policies (singleton and stately already run one job per "
        "singleton key)"
    )


def _rate_limit(row: Row, prefix: str = "") -> tuple[int, float] | None:
    """A queue row's rate limit (or its groups', with ``prefix`` "group_") as (count,
    seconds), or None."""
    count = row[f"{prefix}rate_count"]
    return None if count is None else (count, row[f"{prefix}rate_seconds"])


_RATE_COLUMNS = ("rate_count", "rate_seconds", "group_rate_count", "group_rate_seconds")


def _queue_info(row: Row) -> QueueInfo:
    info = {k: v for k, v in row.items() if k not in _RATE_COLUMNS}
    return QueueInfo(
        **info, rate_limit=_rate_limit(row), group_rate_limit=_rate_limit(row, "group_")
    )


# The most JSON one per-batch statement carries: jsonb holds 256 MiB in one value, and a
# public call may give several runs the same large output.
_BATCH_BYTES = 64 * 1024 * 1024


def _single_params(record: dict[str, Any], **values: Any) -> dict[str, Any]:
    """The parameters of a statement that inserts one job: its resolved ``record`` (every
    option absent from it NULL, its trace context as JSON) and ``values``."""
    params: dict[str, Any] = dict.fromkeys(_SINGLE_PARAMS)
    params.update(record, **values)
    if "trace" in record:
        params["trace"] = encode_json(record["trace"])
    return params


def _extras(
    progress: list[str | None] | None, logs: list[str | None] | None
) -> list[str | None] | None:
    """The optional last element of each run's outcome: a JSON object with its last
    progress and its logs (JSON texts already), None for a run with neither."""
    if progress is None and logs is None:
        return None
    count = len(progress if progress is not None else logs or [])
    extras: list[str | None] = []
    for p, g in zip(progress or [None] * count, logs or [None] * count, strict=True):
        if p is None and g is None:
            extras.append(None)
        elif g is None:
            extras.append(f'{{"progress":{p}}}')
        elif p is None:
            extras.append(f'{{"logs":{g}}}')
        else:
            extras.append(f'{{"progress":{p},"logs":{g}}}')
    return extras


def _batches(
    ids: list[int],
    runs: list[int | None],
    values: tuple[list[str], ...] = (),
    optional: list[str | None] | None = None,
) -> list[str]:
    """The runs as JSON arrays of ``[id, run, value..., optional]``, each at most about
    ``_BATCH_BYTES`` (one run at least); the values are JSON texts already (joined, never
    re-encoded), and an ``optional`` None is left out, so the statement keeps what the job
    has. Ids and runs are ints (checked by ``job_runs``, or read from the database). Built
    column by column: it runs for every batch a worker writes. In id order: the statements
    lock the jobs in that order, as a sender of dependents locks their parents, so writers
    never deadlock over them."""
    rows = [f"[{i},{'null' if r is None else r}" for i, r in zip(ids, runs, strict=True)]
    for column in values:
        rows = [f"{row},{v}" for row, v in zip(rows, column, strict=True)]
    if optional is not None:
        rows = [row if v is None else f"{row},{v}" for row, v in zip(rows, optional, strict=True)]
    rows = [rows[k] for k in sorted(range(len(rows)), key=ids.__getitem__)]
    if sum(map(len, rows)) <= _BATCH_BYTES:  # characters, a lower bound of the bytes
        return ["[" + "],".join(rows) + "]]"]
    batches: list[str] = []
    start = size = 0
    for end, row in enumerate(rows):
        if size + len(row) > _BATCH_BYTES and end > start:
            batches.append("[" + "],".join(rows[start:end]) + "]]")
            start, size = end, 0
        size += len(row)
    batches.append("[" + "],".join(rows[start:]) + "]]")
    return batches
