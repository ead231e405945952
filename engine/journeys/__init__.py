"""Journeys as YAML: the format, its compiler and the graph IR the interpreter workflow runs.

    from engine.journeys import compile_journey, compile_path, load_resources
"""
from engine.journeys.compiler import API_VERSION, compile_journey, compile_path, compile_resource
from engine.journeys.issues import CompileIssue, JourneyCompileError
from engine.journeys.ir import END, Edge, JourneyIR, Node, successors
from engine.journeys.resources import Resource, StaticCatalog, load_resources
from engine.journeys.view import Catalog

__all__ = [
    "API_VERSION", "END", "Catalog", "CompileIssue", "Edge", "JourneyCompileError", "JourneyIR", "Node", "Resource",
    "StaticCatalog", "compile_journey", "compile_path", "compile_resource", "load_resources", "successors",
]
