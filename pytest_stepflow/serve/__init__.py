"""`stepflow serve`: a live, local, read-only web monitor over the recorded history.

`server` answers HTTP (the standard library's threaded server), `api` shapes the query
layer's answers as JSON, `live` polls the database once for every open page and streams
increments, `pages` serves the one HTML shell, its script and stylesheet (`assets/`).
"""
