"""Numbers as people read them: sizes and durations in messages, tables and reports.

One spelling everywhere, so that `stepflow stats`, `doctor`, the artifact warnings and the
Markdown summary say the same thing about the same number.
"""

from __future__ import annotations

_SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def size_text(size: float) -> str:
    """Bytes in binary units: '512 B', '1.5 KiB', '50.0 MiB', '2.0 GiB'."""
    value = float(size)
    for unit in _SIZE_UNITS[:-1]:
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} {_SIZE_UNITS[-1]}"


def duration_text(seconds: float | None) -> str:
    """Short enough for a table column: '850us', '12ms', '1.25s', '2m05s', '1h02m'; '-'
    when unknown."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms" if seconds >= 0.001 else f"{seconds * 1e6:.0f}us"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes:.0f}m{rest:02.0f}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours:.0f}h{minutes:02.0f}m"
