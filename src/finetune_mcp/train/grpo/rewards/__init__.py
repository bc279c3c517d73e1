"""GRPO rewards: built-ins (`builtins`), their loading with allowed user functions (`combine`) and
the preflight that calls each on sample rows before a job starts (`check`)."""
