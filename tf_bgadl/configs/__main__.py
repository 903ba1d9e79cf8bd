r"""Lists the configs that ship with tf_bgadl, or prints some of them.

  python -m tf_bgadl.configs                  # name and first comment line of each
  python -m tf_bgadl.configs mnist.flags      # the text of one (or several), e.g. to copy and edit
"""

from __future__ import annotations

import argparse
import sys

from tf_bgadl import configs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tf_bgadl.configs",
        description="Lists the configs shipped with tf_bgadl; any entry point takes them by "
                    "bare name from any directory: --flagfile=NAME.")
    parser.add_argument("names", nargs="*", metavar="NAME", help="print these configs' text")
    args = parser.parse_args(argv)
    shipped = configs.names()
    unknown = [name for name in args.names if name not in shipped]
    if unknown:
        sys.exit(f"error: no shipped config {', '.join(unknown)}; "
                 f"the shipped configs are {', '.join(shipped)}")
    if args.names:
        for name in args.names:
            sys.stdout.write(configs.file(name).read_text(encoding="utf-8"))
        return
    print(f"Configs shipped with tf_bgadl, in {configs.directory()}")
    print("(use them by bare name from any directory: --flagfile=NAME):")
    width = max(len(name) for name in shipped)
    for name in shipped:
        print(f"  {name:<{width}}  {configs.summary(name)}")


if __name__ == "__main__":
    main()
