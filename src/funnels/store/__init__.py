"""The two stores: events (ClickHouse SQL on chDB) and state (SQLite through SQLAlchemy Core)."""
