#!/usr/bin/env python3
"""Checks that includes between folders point only downward.

The layers, bottom first (docs/architecture.md explains each):

    core < hsm < db < audit < auth < vault < http < app < api < bin

A file in src/F/ or include/keyward/F/ belongs to layer F (src/*.c, the
two programs, to bin). It may include headers of its own layer and of
layers below it, never above; a header of another folder is named
keyward/F/name.h, so its layer is in its path. Also checked: libpq is
used only in src/db (and its header only in include/keyward/db/db.h),
src/http names nothing of the application, and no handler in src/api
writes a reply itself (only the pipeline and the guard call kw_respond_*:
handlers return a kw_outcome).

Exit 0 when clean; otherwise one line per violation and exit 1.
Run from the repository root: python3 scripts/check-layers.py
"""
import glob
import os
import re
import sys

LAYERS = ["core", "hsm", "db", "audit", "auth", "vault", "http", "app", "api", "bin"]
RANK = {name: i for i, name in enumerate(LAYERS)}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
LIBPQ = re.compile(r"\bPQ[a-z]\w*\s*\(|<libpq-fe\.h>")
RESPOND = re.compile(r"\bkw_respond_\w+\s*\(")
MAY_RESPOND = {"src/api/pipeline.c", "src/api/guard.c", "src/api/coalesce.c"}  # the pipeline itself


def layer_of(path):
    parts = path.split(os.sep)
    if parts[0] == "src":
        return "bin" if len(parts) == 2 else parts[1]
    if parts[:2] == ["include", "keyward"] and len(parts) == 4:
        return parts[2]
    return None


def main():
    problems = []
    files = sorted(glob.glob("src/**/*.[ch]", recursive=True) + glob.glob("include/keyward/**/*.h", recursive=True))
    for path in files:
        me = layer_of(path)
        if me not in RANK:
            problems.append(f"{path}: not in a known layer folder ({', '.join(LAYERS[:-1])})")
            continue
        text = open(path, encoding="utf-8").read()
        for inc in INCLUDE.findall(text):
            if not inc.startswith("keyward/"):
                continue  # a header of its own folder ("handlers.h")
            parts = inc.split("/")
            if len(parts) != 3 or parts[1] not in RANK:
                problems.append(f"{path}: includes {inc}, which is not keyward/<layer>/<name>.h")
                continue
            if RANK[parts[1]] > RANK[me]:
                problems.append(f"{path} ({me}) includes {inc} ({parts[1]}): upward")
        if LIBPQ.search(text) and not (path.startswith("src/db/") or path == "include/keyward/db/db.h"):
            problems.append(f"{path}: uses libpq outside src/db")
        if path.startswith("src/api/") and path.endswith(".c") and path not in MAY_RESPOND and RESPOND.search(text):
            problems.append(f"{path}: a handler writes its reply (return a kw_outcome instead)")
    for line in problems:
        print(f"check-layers: {line}")
    print(f"check-layers: {len(files)} files, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
