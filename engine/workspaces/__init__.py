"""Workspaces and API keys: the tenant every other table hangs from."""
