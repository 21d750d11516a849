"""The SQLite backend: one WAL file, written through aiosqlite by each writer process.

Reached through storage/backend.py (`open_backend`); only storage/ imports these modules.
"""
