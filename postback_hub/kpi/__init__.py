"""The KPI store: additive rollups of callbacks in SQLite or PostgreSQL, and their queries."""
