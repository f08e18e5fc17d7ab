#!/usr/bin/env python3
"""Checks that every file and folder ARCHITECTURE.md's module list names exists, and that
every Rust source file under src/ (but unit tests: tests.rs, tests/) is named there, so the map and the tree cannot drift
apart unnoticed. Exit status 1 with the differences, 0 when they agree."""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def listed():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    block = text.split("## Modules", 1)[1].split("```", 2)[1]
    # Names sit at two spaces of indent per folder level; descriptions (and their
    # continuation lines) start further right.
    paths, folders = [], []
    for line in block.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        name = line.split()[0]
        if indent % 2 or indent // 2 > len(folders):
            continue  # a continuation line of a description
        if not re.fullmatch(r"[\w./-]+", name) or ("/" not in name and "." not in name):
            continue
        del folders[indent // 2 :]
        path = "".join(folders) + name
        paths.append(path)
        if name.endswith("/"):
            folders.append(name)
    return paths


def main():
    paths = listed()
    missing = [p for p in paths if not (ROOT / p).exists()]
    named = {p for p in paths if p.endswith(".rs")}
    unnamed = [
        f.relative_to(ROOT).as_posix()
        for f in sorted((ROOT / "src").rglob("*.rs"))
        if "tests" not in (f.stem, f.parent.name) and f.relative_to(ROOT).as_posix() not in named
    ]
    for p in missing:
        print(f"ARCHITECTURE.md names {p}, which does not exist")
    for p in unnamed:
        print(f"{p} is not in ARCHITECTURE.md's module list")
    sys.exit(1 if missing or unnamed else 0)


if __name__ == "__main__":
    main()
