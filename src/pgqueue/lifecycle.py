"""The job state machine, written once: which event moves a job from which state to which.

Every statement that changes a job's state guards on the sources listed here (a test drives
each event from each state on a real database and compares with this table), and the
diagram in docs/architecture.md is drawn from it (a test compares the two).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .models import JobState

__all__ = ["TRANSITIONS", "Event", "Transition", "mermaid", "targets"]


class Event(str, enum.Enum):
    """What can happen to a job.

    Example:
        ```python
        from pgqueue.lifecycle import Event, targets

        targets(JobState.active, Event.complete)  # {JobState.completed}
        ```
    """

    send = "send"  # send, insert, publish, a cron slot
    claim = "claim"  # a worker or fetch() takes it
    complete = "complete"  # its run finished
    fail = "fail"  # its run raised, or fail() was called
    expire = "expire"  # maintenance: it ran past expire_in, or its heartbeat went stale
    release = "release"  # its worker stopped before it finished and handed it back
    outwait = "outwait"  # maintenance: it waited past its retention without starting
    cancel = "cancel"  # cancel()
    resume = "resume"  # resume()
    retry = "retry"  # retry()
    archive = "archive"  # maintenance: moved to the archive table after its retention
    delete = "delete"  # delete_job(), or purge_queue() and delete_queue()


@dataclass(frozen=True, slots=True)
class Transition:
    """``event`` moves a job in ``source`` to ``target`` when ``when`` holds. None as a
    source is "not yet a job"; as a target, "no longer in the job table". ``retries`` is
    True or False where the target depends on whether the job has retries left;
    ``blocked`` marks the way out taken when a policy blocks the usual target.

    Example:
        ```python
        from pgqueue.lifecycle import TRANSITIONS, Event

        for t in TRANSITIONS:
            if t.event is Event.expire:
                print(t.source, "->", t.target, t.when)
        ```
    """

    source: JobState | None
    event: Event
    target: JobState | None
    when: str = ""
    retries: bool | None = None
    blocked: bool = False


_S = JobState
_WAITING = (_S.created, _S.retry)
_FINISHED = (_S.completed, _S.failed, _S.expired, _S.cancelled)
# Every outcome of a run (complete, fail, release, a heartbeat) names the run: the job's
# attempt when it was claimed. A run that no longer holds the job changes nothing.
_HOLDS = "the run holds the job (same attempt)"

TRANSITIONS: tuple[Transition, ...] = (
    Transition(
        None,
        Event.send,
        _S.created,
        "its queue exists and no singleton key, time slot or policy blocks it",
    ),
    *(
        Transition(
            s,
            Event.claim,
            _S.active,
            "start_after has come, the queue is not paused and its policy allows it; attempt + 1",
        )
        for s in _WAITING
    ),
    Transition(_S.active, Event.complete, _S.completed, _HOLDS),
    Transition(
        _S.active,
        Event.fail,
        _S.retry,
        f"{_HOLDS}, retries left; retry_count + 1, starts after the retry delay",
        retries=True,
    ),
    Transition(_S.active, Event.fail, _S.failed, f"{_HOLDS}, no retries left", retries=False),
    Transition(
        _S.active,
        Event.fail,
        _S.failed,
        f"{_HOLDS}; stately, and another job of its "
        "key waits to retry; or its data fails the handler's model, or its output "
        "cannot be stored (retrying would not help)",
        retries=True,
        blocked=True,
    ),
    Transition(_S.active, Event.expire, _S.retry, "retries left; retry_count + 1", retries=True),
    Transition(_S.active, Event.expire, _S.expired, "no retries left", retries=False),
    Transition(
        _S.active,
        Event.expire,
        _S.expired,
        "stately, and another job of its key waits to retry",
        retries=True,
        blocked=True,
    ),
    Transition(
        _S.active, Event.release, _S.retry, f"{_HOLDS}; retry_count unchanged, starts at once"
    ),
    Transition(
        _S.active,
        Event.release,
        _S.failed,
        f"{_HOLDS}; stately, and another job of its key waits to retry",
        blocked=True,
    ),
    *(Transition(s, Event.outwait, _S.expired, "keep_until has passed") for s in _WAITING),
    *(Transition(s, Event.cancel, _S.cancelled) for s in (*_WAITING, _S.active)),
    Transition(
        _S.cancelled,
        Event.resume,
        _S.created,
        "no singleton key or policy blocks it; starts at once",
    ),
    *(
        Transition(
            s,
            Event.retry,
            _S.retry,
            "no singleton key or policy blocks it; one more "
            "retry allowed if it had used them, starts at once",
        )
        for s in (_S.failed, _S.expired)
    ),
    *(
        Transition(
            s,
            Event.archive,
            None,
            "finished for archive_completed_after (completed) or archive_failed_after (the others)",
        )
        for s in _FINISHED
    ),
    *(Transition(s, Event.delete, None) for s in JobState),
)


def targets(
    source: JobState | None,
    event: Event,
    retries_left: bool | None = None,
    blocked: bool | None = None,
) -> set[JobState | None]:
    """The states ``event`` can move a job in ``source`` to (empty: it changes nothing);
    with ``retries_left`` or ``blocked`` (by a policy) given, only the ones they allow.

    Example:
        ```python
        targets(JobState.failed, Event.retry)  # {JobState.retry}
        targets(JobState.completed, Event.cancel)  # set(): cancel changes nothing
        ```
    """
    return {
        t.target
        for t in TRANSITIONS
        if t.source is source
        and t.event is event
        and (retries_left is None or t.retries is None or t.retries is retries_left)
        and (blocked is None or t.blocked is blocked)
    }


def mermaid() -> str:
    """The state diagram, in Mermaid (docs/architecture.md holds a copy a test compares).
    Archive and delete, which every final state (or every state) allows, are drawn once.

    Example:
        ```python
        print(pgqueue.lifecycle.mermaid())  # paste into a Mermaid block
        ```
    """
    lines = ["stateDiagram-v2"]
    edges: dict[tuple[str, str], list[str]] = {}
    for t in TRANSITIONS:
        if t.event in (Event.archive, Event.delete):
            continue
        source = "[*]" if t.source is None else t.source.value
        target = "[*]" if t.target is None else t.target.value
        events = edges.setdefault((source, target), [])
        if t.event.value not in events:
            events.append(t.event.value)
    for (source, target), events in edges.items():
        lines.append(f"    {source} --> {target}: {', '.join(events)}")
    lines.append(
        "    note right of completed: completed, failed, expired and cancelled "
        "are final; maintenance archives them, then deletes them"
    )
    return "\n".join(lines)
