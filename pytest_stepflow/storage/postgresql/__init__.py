"""The PostgreSQL backend: many machines' runs in one server (psycopg 3, imported only when a
postgresql:// location is given)."""
