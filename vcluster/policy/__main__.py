"""``python -m vcluster.policy``: print or update the pillar reference of docs/policy.md.

    python -m vcluster.policy --reference               # print the generated part
    python -m vcluster.policy --update docs/policy.md   # rewrite it in place
    python -m vcluster.policy --check docs/policy.md    # exit 1 when it differs from the schema
"""

import argparse
import pathlib
import sys

from vcluster.policy import reference


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m vcluster.policy", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--reference", action="store_true", help="print the generated reference")
    group.add_argument("--update", metavar="FILE", type=pathlib.Path, help="replace FILE's generated part")
    group.add_argument("--check", metavar="FILE", type=pathlib.Path, help="exit 1 when FILE's part is stale")
    args = parser.parse_args(argv)
    if args.reference:
        sys.stdout.write(reference.reference())
        return 0
    path = args.update or args.check
    try:
        text = path.read_text(encoding="utf-8")
        new = reference.update(text)
    except (OSError, ValueError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if new != text:
            print(f"{path}: the pillar reference differs from the schema; run: {reference.COMMAND}",
                  file=sys.stderr)
            return 1
        return 0
    if new != text:
        path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
