"""benchmarks/RESULTS.md: each benchmark owns one "## <title>" section and rewrites only that one."""

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(title: str, section: str) -> None:
    """Replace the "## <title>" section (up to the next "## "), keeping every other section."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == f"## {title}"), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = "\n".join(lines[:start] + section.splitlines() + ([""] + lines[end:] if end < len(lines) else []))
    RESULTS.write_text(new.rstrip("\n") + "\n")
