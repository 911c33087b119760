#!/usr/bin/env python3
"""Checks the layering of src/ that ARCHITECTURE.md ("Layers") states.

Every `crate::<module>` path in a file of a top-level module counts as an import of that
module. It fails if two top-level modules import each other (directly or through others),
or if a module imports one of a higher layer.
"""
import collections
import pathlib
import re
import sys

# Lowest first. A module may import modules of its own layer (without a cycle) or lower ones.
LAYERS = [
    {"config", "telemetry", "metrics", "rate_limit"},
    {"store", "auth"},
    {"stream", "access", "command"},
    {"projection", "policy"},
    {"realtime"},
    {"http"},
    {"demo", "startup", "cli"},
]
LAYER = {module: i for i, layer in enumerate(LAYERS) for module in layer}

src = pathlib.Path(__file__).resolve().parent.parent / "src"
deps = collections.defaultdict(set)
for path in src.rglob("*.rs"):
    top = path.relative_to(src).parts[0].removesuffix(".rs")
    if top in ("lib", "main"):
        continue
    text = re.sub(r"//.*", "", path.read_text())
    for match in re.finditer(r"crate::([a-z_]+)", text):
        if match.group(1) != top:
            deps[top].add(match.group(1))

problems = []
for module, targets in sorted(deps.items()):
    if module not in LAYER:
        problems.append(f"{module}: not placed in a layer in .ci/check-layers.py")
        continue
    for target in sorted(targets):
        if target not in LAYER:
            problems.append(f"{target}: not placed in a layer in .ci/check-layers.py")
        elif LAYER[target] > LAYER[module]:
            problems.append(f"{module} imports {target}, a higher layer")


def reaches(start, goal, seen):
    for nxt in deps.get(start, ()):
        if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
            return True
    return False


for module, targets in sorted(deps.items()):
    for target in sorted(targets):
        if reaches(target, module, {target}):
            problems.append(f"cycle: {module} -> {target} -> ... -> {module}")

for module in sorted(deps):
    print(f"{module} -> {', '.join(sorted(deps[module]))}")
if problems:
    print("\n".join(sorted(set(problems))), file=sys.stderr)
    sys.exit(1)
print("layers OK: no cycle between top-level modules, no import of a higher layer")
