"""Journey language: YAML -> IR (no I/O). The IR (tidings.engine.journeys.ir) is the contract with the runtime."""
