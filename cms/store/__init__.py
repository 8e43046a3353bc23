"""Durable state in SQLite (WAL), behind small interfaces so another backend can replace it."""
