"""`python -m bench.markdown [FILE]`: the table of a results file (default bench/results/latest.json)
as Markdown, for docs/performance.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .__main__ import RESULTS


def table(doc: dict[str, object]) -> str:
    lines = [
        "| scenario | figure | median | min | max | n | target |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    figures = doc["figures"]
    assert isinstance(figures, list)
    for f in figures:
        fmt = "{:,.0f}" if f["unit"] in ("msg/s", "req/s") else ("{:.2f}" if f["unit"] == "x" else "{:.3f}")
        cells = [fmt.format(f[k]) for k in ("median", "min", "max")]
        name = f"{f['name']} ({f['unit']})"
        lines.append(
            f"| {f['scenario']} | {name} | {' | '.join(cells)} | {len(f['values'])} | {f['target']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS
    print(table(json.loads(path.read_text())))
