"""Training tasks (SFT, DPO, ...), one module each, registered by name (see ``base``)."""

from federated_learning.tasks.base import RoundBenchmark, Task, available_tasks, get_task, register

__all__ = ["RoundBenchmark", "Task", "available_tasks", "get_task", "register"]
