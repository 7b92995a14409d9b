"""Built-in verifiable tasks: prompts with gold answers that rule judges can check offline."""

from .arithmetic import ANSWER_INSTRUCTION, LIMITS, Problem, arithmetic_problems, split_problems
from .registry import TASKS, task_rows

__all__ = ["ANSWER_INSTRUCTION", "LIMITS", "Problem", "arithmetic_problems", "split_problems", "TASKS", "task_rows"]
