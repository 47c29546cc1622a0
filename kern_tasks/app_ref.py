"""A KERN_APP reference: "module:attribute" (the attribute may be dotted) names an object
to import, an AgentOS, a Workflow or an ASGI app. `kern-tasks serve` serves it; Celery
workers without workflows of their own run the workflows it holds (workflow/tasks.py)."""

from __future__ import annotations

import importlib
from typing import Any


def load_ref(ref: str | None) -> Any:
    """The object `ref` names; LookupError when `ref` is not "module:attribute" or the
    attribute is missing (an ImportError of the module itself is raised as it is)."""
    module_name, _, attribute = (ref or "").partition(":")
    if not module_name or not attribute:
        raise LookupError(f'KERN_APP must be "module:attribute", got {ref!r}')
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise LookupError(f"KERN_APP={ref!r}: {module_name} has no attribute {attribute!r}") from None
    return target
