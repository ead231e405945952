"""Installs the folders engine/, api/ and plugins/ as tidings.engine, tidings.api and tidings.plugins, so
the project claims one top-level import name, `tidings`, and not generic ones such as `api` (issue 15,
item 7). Everything else is declared in pyproject.toml; only the package list needs code."""
from setuptools import find_packages, setup

FOLDERS = ("engine", "api", "plugins")

setup(
    package_dir={f"tidings.{folder}": folder for folder in FOLDERS},
    packages=[f"tidings.{name}" for name in find_packages(include=[p for f in FOLDERS for p in (f, f"{f}.*")])],
)
