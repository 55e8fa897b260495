#!/usr/bin/env python3
"""Third-party license report for the `uag` binary, from `cargo metadata`.

    scripts/licenses.py TARGET OUT_DIR

Walks the normal (linked) dependency graph of the `uag` package for TARGET, and writes
OUT_DIR/THIRD-PARTY-LICENSES.md (crate, version, license expression, source) plus each crate's
own license files (LICENSE*, COPYING*, NOTICE*) under OUT_DIR/crates/NAME-VERSION/. Build-only
and dev-only dependencies are not in the binary and are left out. Exits 1 when a crate declares
no license.
"""
import json
import pathlib
import shutil
import subprocess
import sys

target, out = sys.argv[1], pathlib.Path(sys.argv[2])
meta = json.loads(subprocess.check_output(
    ["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", target]))
packages = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
root = next(p["id"] for p in meta["packages"] if p["name"] == "uag" and p["source"] is None)

seen, stack = set(), [root]
while stack:
    pid = stack.pop()
    if pid in seen:
        continue
    seen.add(pid)
    for dep in nodes[pid]["deps"]:
        if any(k["kind"] is None for k in dep["dep_kinds"]):  # normal: linked into the binary
            stack.append(dep["pkg"])

rows, missing = [], []
(out / "crates").mkdir(parents=True, exist_ok=True)
for pid in sorted(seen, key=lambda i: (packages[i]["name"], packages[i]["version"])):
    p = packages[pid]
    if p["source"] is None:
        continue  # the workspace's own crates: uag's LICENSE
    if all("proc-macro" in t["kind"] for t in p["targets"]):
        continue  # runs in the compiler only; nothing of it is in the binary
    lic = p.get("license") or (f"see {p['license_file']}" if p.get("license_file") else None)
    if not lic:
        missing.append(f"{p['name']} {p['version']}")
    src_dir = pathlib.Path(p["manifest_path"]).parent
    dest = out / "crates" / f"{p['name']}-{p['version']}"
    files = [f for f in sorted(src_dir.iterdir()) if f.is_file() and f.name.upper().startswith(("LICENSE", "LICENCE", "COPYING", "NOTICE", "COPYRIGHT", "UNLICENSE"))]
    if files:
        dest.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy(f, dest / f.name)
    rows.append(f"| {p['name']} | {p['version']} | {lic or '**none declared**'} | {p.get('repository') or ''} | {len(files)} |")

report = [
    "# Third-party licenses of the uag binary",
    "",
    f"Target `{target}`: {len(rows)} crates linked into `uag` (build-only and dev-only crates excluded).",
    "Each crate's own license files are under `crates/NAME-VERSION/`.",
    "",
    "| crate | version | license | repository | files |",
    "| --- | --- | --- | --- | ---: |",
    *rows,
    "",
]
(out / "THIRD-PARTY-LICENSES.md").write_text("\n".join(report))
print(f"licenses: {len(rows)} crates -> {out / 'THIRD-PARTY-LICENSES.md'}")
if missing:
    print("licenses: no license declared by: " + ", ".join(missing), file=sys.stderr)
    sys.exit(1)
