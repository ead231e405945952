"""Operations: the CLI, the worker, the dev stack, the demo, the SMTP sink, `tidings apply`."""
