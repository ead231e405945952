"""Journey language: YAML -> IR (no I/O). The IR (engine.journeys.ir) is the contract with the runtime."""
