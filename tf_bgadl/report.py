r"""Writes the report of a study: Table I with statistics, curves, CSV and JSON.

  python -m tf_bgadl.report --workdir=runs/<name> [--paper_method=vaeacgan] [--levels=0.9,0.95]

Reads only the cells' config.json, results.jsonl and failed.json (no TensorFlow) and writes
report.md, curves.png, summary.csv and summary.json into the study workdir.
"""

from __future__ import annotations

import sys

from absl import app, flags

from tf_bgadl import cli
from tf_bgadl.studies import summary as summary_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "Study folder (<workdir>/<method>/seed_<s>/).")
_PAPER_METHOD = flags.DEFINE_string("paper_method", "vaeacgan", "Method tested (one-sided "
                                    "Welch t-test) against every other method of the study.")
_LEVELS = flags.DEFINE_list("levels", [], "Test accuracies in (0, 1] for 'oracle labels to "
                            "reach'; empty: 3 round levels derived from the results.")
flags.mark_flag_as_required("workdir")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        levels = [float(v) for v in _LEVELS.value] or None
    except ValueError:
        sys.exit(f"error: --levels={','.join(_LEVELS.value)} must be numbers, e.g. 0.9,0.95")
    try:
        summary = summary_lib.write_report(_WORKDIR.value, paper_method=_PAPER_METHOD.value,
                                           levels=levels)
    except (ValueError, OSError) as e:
        sys.exit(f"error: {e}")
    if summary["methods"]:
        print(f"Test accuracy at {summary['budget']} oracle labels, mean ± std over seeds:\n")
        print(summary_lib.table_markdown(summary))
    else:
        print("No complete cell yet: nothing to compare.")
    left_out = [c for c in summary["cells"] if c["status"] != summary_lib.COMPLETE]
    if left_out:
        print(f"\n{len(left_out)} cell(s) incomplete or failed, left out (listed in report.md).")
    print("\nWrote:")
    for path in summary["files"].values():
        print(f"  {path}")


if __name__ == "__main__":
    cli.run(main)
