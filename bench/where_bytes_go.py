#!/usr/bin/env python3
"""Where an incremental backup's stored bytes go, per relation, for pg_strata and pgBackRest.

Usage: where_bytes_go.py STRATA_MANIFEST PGBR_MANIFEST RELMAP [FLOOR_BYTES FLOOR_WHAT]

STRATA_MANIFEST is a pg_strata `manifest.json` (a head line, then the JSON body); only the pieces the
backup stored itself count (a piece naming an older backup is a reference). PGBR_MANIFEST is a
pgBackRest `backup.manifest`; only files without a `reference` count, at their `repo-size` (with block incremental, the bytes this backup stored of the file). RELMAP
holds lines `base/<db oid>/<relfilenode>|<relation name>`. A file is counted under its relation and fork
(segments `.N` folded together); anything else under "other files". FLOOR_BYTES, when given, is printed
as the bytes no tool can store less of (e.g. the new random bytes the update wrote).
"""

import json
import re
import sys
from collections import defaultdict

FILE = re.compile(r"^(base/\d+/\d+)(_fsm|_vm|_init)?(\.\d+)?$")


def relation_of(path, relmap):
    m = FILE.match(path)
    if not m or m.group(1) not in relmap:
        return "other files"
    return relmap[m.group(1)] + (m.group(2) or "")


def strata_stored(path):
    with open(path, "rb") as f:
        f.readline()  # the head line
        body = json.load(f)
    stored = defaultdict(int)
    for entry in body["files"]:
        for piece in entry["pieces"]:
            if piece.get("backup") is None:
                stored[entry["path"]] += piece["length"]
    return stored


def pgbr_stored(path):
    stored = defaultdict(int)
    section = None
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("["):
                section = line
                continue
            if section != "[target:file]" or "=" not in line:
                continue
            name, value = line.split("=", 1)
            facts = json.loads(value)
            if "reference" in facts or not name.startswith("pg_data/"):
                continue
            stored[name[len("pg_data/"):]] += facts.get("repo-size", facts.get("size", 0))
    return stored


def main():
    strata_manifest, pgbr_manifest, relmap_file = sys.argv[1:4]
    relmap = {}
    with open(relmap_file) as f:
        for line in f:
            if "|" in line:
                key, name = line.rstrip("\n").split("|", 1)
                relmap[key] = name
    totals = {"pg_strata": defaultdict(int), "pgbackrest block": defaultdict(int)}
    for tool, stored in (("pg_strata", strata_stored(strata_manifest)),
                         ("pgbackrest block", pgbr_stored(pgbr_manifest))):
        for path, size in stored.items():
            totals[tool][relation_of(path, relmap)] += size
    names = sorted(set(totals["pg_strata"]) | set(totals["pgbackrest block"]),
                   key=lambda n: -max(totals["pg_strata"][n], totals["pgbackrest block"][n]))
    mb = lambda b: f"{b / 1e6:.2f} MB"
    print(f"{'stored by relation':<32}{'pg_strata':>12}{'pgbr block':>12}")
    for name in names:
        s, p = totals["pg_strata"][name], totals["pgbackrest block"][name]
        if max(s, p) >= 100_000:
            print(f"{name:<32}{mb(s):>12}{mb(p):>12}")
    small_s = sum(v for n, v in totals["pg_strata"].items() if max(v, totals["pgbackrest block"][n]) < 100_000)
    small_p = sum(v for n, v in totals["pgbackrest block"].items() if max(v, totals["pg_strata"][n]) < 100_000)
    print(f"{'(everything under 0.1 MB)':<32}{mb(small_s):>12}{mb(small_p):>12}")
    s_all, p_all = sum(totals["pg_strata"].values()), sum(totals["pgbackrest block"].values())
    print(f"{'total':<32}{mb(s_all):>12}{mb(p_all):>12}")
    if len(sys.argv) > 5:
        floor, what = int(sys.argv[4]), sys.argv[5]
        print(f"floor: {mb(floor)} of {what} = {floor / p_all:.2f}x of pgbackrest block's total "
              f"(the 0.50x target leaves {mb(max(0, p_all / 2 - floor))} for everything else)")


if __name__ == "__main__":
    main()
