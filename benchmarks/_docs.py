"""Write a generated section of ``docs/benchmarks.md`` between its markers.

Each script owns the text between ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->``; the hand-written prose around them stays.
"""

import os

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "benchmarks.md")


def write_section(name: str, body: str, path: str = DOCS) -> None:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    with open(path) as handle:
        text = handle.read()
    if begin not in text or end not in text:
        raise SystemExit(f"{path} lacks the markers {begin} ... {end}")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as handle:
        handle.write(f"{head}{begin}\n{body.strip()}\n{end}{tail}")
    print(f"wrote the {name} section of {path}")
