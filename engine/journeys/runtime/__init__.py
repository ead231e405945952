"""Journey runtime: IR -> Temporal (the cohort interpreter workflow, its activities, audience, entries, local time)."""
