"""Defaults and limits shared by the plugin, its settings and the values it records."""

from __future__ import annotations

MIB = 1 << 20
GIB = 1 << 30

# Parameters and sub-step arguments are shown as a short repr: a label, not the data.
MAX_REPR = 200  # characters
# Artifacts: the largest one stored, and what one run stores in all (split evenly between
# xdist workers); --stepflow-max-artifact-size and --stepflow-max-artifact-total.
DEFAULT_MAX_ARTIFACT_SIZE = 50 * MIB
DEFAULT_MAX_ARTIFACT_TOTAL = GIB
