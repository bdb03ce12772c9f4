"""What the Python API returns for one video: `DetectionResult`, the same record `avdet detect` writes as JSON.

Its events are those of the file (sorted by start, times rounded to the millisecond, scores to float32's 9
digits), and `to_dict()` is built by the writer's own `events_document`, so `result.to_dict()` equals the
`events.json` that `avdet detect clip.mp4 --checkpoint M --out events.json` writes for the same clip and model.
No torch here: results can be read, compared and serialised without the model stack."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from avdet.pipeline.io.writers import events_document, sorted_events
from avdet.pipeline.types import Event


@dataclass(frozen=True)
class DetectionResult:
    """One video's detection.

    path: the file as given; video: its id (the file name without suffix, as in the JSON); duration: seconds;
    events: the shown events, sorted by start (as in the JSON); model: the checkpoint's name; operating_point: the
    thresholds that chose the events (as recorded in the JSON); error: why the video failed (then no events)."""

    path: str
    video: str
    duration: float
    events: list[Event] = field(default_factory=list)
    model: str = ""
    operating_point: dict | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        """The JSON document `avdet detect` writes for this video (a failed one: its video, path and error)."""
        if self.error is not None:
            return {"video": self.video, "path": self.path, "error": self.error}
        return events_document(self.video, self.duration, self.model, self.events, self.operating_point)

    def to_json(self, indent: int | None = 2) -> str:
        """`to_dict()` as the JSON text `avdet detect --out x.json` writes (without its final newline)."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)


def as_written(events: list[Event]) -> list[Event]:
    """The events as the JSON holds them: sorted by start, each rounded by `Event.to_dict`'s rule."""
    rounded = [(e, e.to_dict()) for e in sorted_events(events)]
    return [replace(e, start=d["start"], end=d["end"], score=d["score"]) for e, d in rounded]
