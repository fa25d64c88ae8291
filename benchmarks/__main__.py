"""``python -m benchmarks [NAME ...]``: run the issue-7 comparisons one after another (all by default), each
in a fresh process so one cannot warm caches for the next; every script prints its own Markdown table."""

from __future__ import annotations

import subprocess
import sys

SCRIPTS = ("gradients", "attacks", "sweeps", "tsne", "style_transfer", "model_load", "server", "memory", "startup")


def main() -> int:
    chosen = sys.argv[1:] or list(SCRIPTS)
    unknown = [name for name in chosen if name not in SCRIPTS + ("conversion_matrix", "localization")]
    if unknown:
        print(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(SCRIPTS)}, conversion_matrix, localization.", file=sys.stderr)
        return 2
    failed = []
    for name in chosen:
        print(f"\n## {name}\n", flush=True)
        if subprocess.run([sys.executable, "-m", f"benchmarks.{name}"]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
