"""Storage: tables, the database handle (SQLite or PostgreSQL) and migrations."""
