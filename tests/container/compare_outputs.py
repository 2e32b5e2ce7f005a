"""Compare a container run's output folder with the stored expectations.

Used by tests/container/test_container_build.py and by the CircleCI job:
``python tests/container/compare_outputs.py [--tree FILE] [--volumes FILE] OUTPUT_DIR``
exits 1 and logs each difference when the tree or a thalamus volume is off.

Tree files hold one fnmatch pattern per line, relative to the output folder.
Every file must match a pattern and every pattern must match a file, except
patterns written after ``? ``, which are allowed but not required.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import logging
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXPECTED_TREE = HERE / "expected_outputs.txt"
EXPECTED_VOLUMES = HERE / "expected_volumes.tsv"

logger = logging.getLogger(__name__)


def tree_differences(output_dir: Path, patterns_file: Path = EXPECTED_TREE) -> list[str]:
    """Files that match no pattern and required patterns that match no file."""
    required, optional = [], []
    for line in patterns_file.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("? "):
            optional.append(line[2:].strip())
        else:
            required.append(line)
    files = sorted(p.relative_to(output_dir).as_posix() for p in output_dir.rglob("*") if p.is_file())
    problems = [f"unexpected file: {f}" for f in files
                if not any(fnmatch.fnmatchcase(f, p) for p in required + optional)]
    problems += [f"missing: {p}" for p in required if not any(fnmatch.fnmatchcase(f, p) for f in files)]
    return problems


def volume_differences(output_dir: Path, expected_file: Path = EXPECTED_VOLUMES) -> list[str]:
    """Thalamus volumes outside the stored tolerance (or missing)."""
    problems = []
    with expected_file.open(newline="") as fh:
        expected = list(csv.DictReader(fh, delimiter="\t"))
    for row in expected:
        sub = row["participant_id"]
        tsvs = sorted(output_dir.glob(f"{sub}/**/{sub}*_label-thalamus_volumes.tsv"))
        found = None
        for tsv in tsvs:
            with tsv.open(newline="") as fh:
                for got in csv.DictReader(fh, delimiter="\t"):
                    if (got["method"] == row["method"] and got["contrast"] == row["contrast"]
                            and got.get("hemisphere", "bilateral") == row.get("hemisphere", "bilateral")):
                        found = float(got["volume_ml"])
        if found is None:
            problems.append(f"no volume for {sub} {row['method']} {row['contrast']} in {tsvs}")
            continue
        want, tol = float(row["volume_ml"]), float(row["abs_tolerance_ml"])
        if abs(found - want) > tol:
            problems.append(f"{sub} {row['method']} {row['contrast']}: {found:.3f} mL, expected {want} +/- {tol}")
        else:
            logger.info("%s %s %s: %.3f mL (expected %s +/- %s)", sub, row["method"], row["contrast"], found, want, tol)
    return problems


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--tree", type=Path, default=EXPECTED_TREE, help="expected file patterns")
    parser.add_argument("--volumes", type=Path, default=EXPECTED_VOLUMES, help="expected volumes TSV")
    args = parser.parse_args(argv)
    problems = tree_differences(args.output_dir, args.tree) + volume_differences(args.output_dir, args.volumes)
    for problem in problems:
        logger.error("%s", problem)
    if not problems:
        logger.info("outputs match %s and %s", args.tree.name, args.volumes.name)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
