"""The two tasks behind one interface (`base.Task`): dense event detection (UnAV-100) and segment labelling (AVE)."""

from __future__ import annotations

from avdet.errors import CheckpointError
from avdet.pipeline.tasks.base import Report, Task
from avdet.pipeline.tasks.dense import DenseTask
from avdet.pipeline.tasks.segment import SegmentTask

TASKS: dict[str, type[Task]] = {task.name: task for task in (DenseTask, SegmentTask)}


def task_class(name: str) -> type[Task]:
    """The task a config's `task:` field or a checkpoint's task names."""
    if name not in TASKS:
        raise CheckpointError(f"unknown task {name!r} (known: {', '.join(TASKS)})")
    return TASKS[name]


__all__ = ["TASKS", "DenseTask", "Report", "SegmentTask", "Task", "task_class"]
