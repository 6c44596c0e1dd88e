"""The outreach queue: a critical-risk student's staff task, as career officers work it
(``GET /v1/admin/outreach``, assign, resolve; live on ``/dashboard``), without I/O.

A task is born from the engine's ``human_outreach`` notification (its id is the notification's,
so a redelivered one is the same task) with what a person needs to act: the student's risk, the
signals behind it in words, and the last notifications the student was sent. It is then open,
assigned to someone, and resolved with a note. Every change is kept in a short history (who,
what, when), bounded like everything the engine keeps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from models.events import format_ts

STATUSES = ("open", "assigned", "resolved")
#: What a task keeps of the student's recent notifications, and of its own history.
MAX_LAST_INTERVENTIONS = 5
MAX_HISTORY = 20
#: A resolution note and an assignee name, bounded (both come from staff's requests).
MAX_NOTE_LEN = 1000
MAX_ASSIGNEE_LEN = 128


class OutreachError(ValueError):
    """A change the task's state does not allow; ``code`` is the API's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class OutreachTask:
    id: str
    user_id: str
    created_ms: int
    updated_ms: int
    score: float | None = None
    level: str | None = None
    signals: tuple[str, ...] = ()
    explanations: tuple[str, ...] = ()
    summary: str = ""
    last_interventions: tuple[Mapping[str, Any], ...] = ()
    status: str = "open"
    assignee: str | None = None
    note: str | None = None
    history: tuple[tuple[int, str, str], ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "created_ms": self.created_ms,
            "updated_ms": self.updated_ms,
            "score": self.score,
            "level": self.level,
            "signals": list(self.signals),
            "explanations": list(self.explanations),
            "summary": self.summary,
            "last_interventions": [dict(i) for i in self.last_interventions],
            "status": self.status,
            "assignee": self.assignee,
            "note": self.note,
            "history": [list(h) for h in self.history],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OutreachTask:
        return cls(
            id=str(data["id"]),
            user_id=str(data["user_id"]),
            created_ms=int(data["created_ms"]),
            updated_ms=int(data.get("updated_ms") or data["created_ms"]),
            score=data.get("score"),
            level=data.get("level"),
            signals=tuple(data.get("signals") or ()),
            explanations=tuple(data.get("explanations") or ()),
            summary=str(data.get("summary") or ""),
            last_interventions=tuple(data.get("last_interventions") or ()),
            status=str(data.get("status") or "open"),
            assignee=data.get("assignee"),
            note=data.get("note"),
            history=tuple((int(h[0]), str(h[1]), str(h[2])) for h in data.get("history") or ()),
        )

    def public(self) -> dict[str, Any]:
        """What staff see: times as RFC 3339, the history as objects."""
        shown = self.to_dict()
        shown["created_at"] = format_ts(shown.pop("created_ms"))
        shown["updated_at"] = format_ts(shown.pop("updated_ms"))
        shown["history"] = [
            {"at": format_ts(ts), "action": action, "by": by} for ts, action, by in self.history
        ]
        return shown


def new_task(
    notification_id: str,
    user_id: str,
    created_ms: int,
    summary: str,
    risk: Mapping[str, Any] | None,
    explanations: Sequence[str],
    inbox: Sequence[Mapping[str, Any]],
) -> OutreachTask:
    """The task for one ``human_outreach`` notification, from the student's risk view and
    inbox as they are when it is created."""
    risk = risk or {}
    score = risk.get("score")
    shown = ("type", "subject", "created_at", "read")
    last = tuple({name: n.get(name) for name in shown} for n in list(inbox)[:MAX_LAST_INTERVENTIONS])
    return OutreachTask(
        id=notification_id,
        user_id=user_id,
        created_ms=created_ms,
        updated_ms=created_ms,
        score=float(score) if isinstance(score, int | float) else None,
        level=risk.get("level") if isinstance(risk.get("level"), str) else None,
        signals=tuple(str(s) for s in (risk.get("signals") or ())[:8]),
        explanations=tuple(explanations[:8]),
        summary=summary[:1000],
        last_interventions=last,
        history=((created_ms, "created", "engine"),),
    )


def _changed(task: OutreachTask, now_ms: int, action: str, by: str, **changes: Any) -> OutreachTask:
    history = (*task.history, (now_ms, action, by[:MAX_ASSIGNEE_LEN]))[-MAX_HISTORY:]
    return replace(task, updated_ms=max(now_ms, task.updated_ms), history=history, **changes)


def assign(task: OutreachTask, assignee: str, by: str, now_ms: int) -> OutreachTask:
    if task.status == "resolved":
        raise OutreachError("already_resolved", "the task is resolved; nothing to assign")
    name = assignee.strip()
    if not name or len(name) > MAX_ASSIGNEE_LEN or not name.isprintable():
        limit = f"an assignee is 1 to {MAX_ASSIGNEE_LEN} printable characters"
        raise OutreachError("invalid_assignee", limit)
    return _changed(task, now_ms, f"assigned to {name}", by, status="assigned", assignee=name)


def resolve(task: OutreachTask, note: str, by: str, now_ms: int) -> OutreachTask:
    if task.status == "resolved":
        raise OutreachError("already_resolved", "the task is already resolved")
    if len(note) > MAX_NOTE_LEN:
        raise OutreachError("invalid_note", f"a note is at most {MAX_NOTE_LEN} characters")
    return _changed(task, now_ms, "resolved", by, status="resolved", note=note.strip() or None)
