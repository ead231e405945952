"""Journeys as YAML: the format, its compiler and the graph IR the interpreter workflow runs.

    from tidings.engine.journeys import compile_journey, compile_path, load_resources

The names below load on first use (PEP 562): the Temporal sandbox re-imports this package for every
new cohort workflow, and importing the compiler (YAML, the JSON Schema, every step parser) there cost
the worker's event loop about a third of its time under event entry (measured with py-spy).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "API_VERSION": "language.compiler", "compile_journey": "language.compiler",
    "compile_path": "language.compiler", "compile_resource": "language.compiler",
    "CompileIssue": "language.issues", "JourneyCompileError": "language.issues", "END": "ir", "Edge": "ir",
    "JourneyIR": "ir", "Node": "ir", "successors": "ir", "Resource": "language.resources",
    "StaticCatalog": "language.resources", "load_resources": "language.resources",
    "Catalog": "language.yaml_view",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from tidings.engine.journeys.language.compiler import API_VERSION, compile_journey, compile_path, compile_resource
    from tidings.engine.journeys.ir import END, Edge, JourneyIR, Node, successors
    from tidings.engine.journeys.language.issues import CompileIssue, JourneyCompileError
    from tidings.engine.journeys.language.resources import Resource, StaticCatalog, load_resources
    from tidings.engine.journeys.language.yaml_view import Catalog


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tidings.engine.journeys' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"tidings.engine.journeys.{module}"), name)
    globals()[name] = value
    return value
