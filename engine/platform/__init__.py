"""Platform: what every domain stands on (config, clock, errors, database, write queue, pagination, Temporal). Knows no domain."""
