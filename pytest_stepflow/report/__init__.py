"""Queries and renderings over the recorded history; never imports pytest or the writer."""
