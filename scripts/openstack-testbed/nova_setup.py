"""Create Nova's databases in one process: API schema, cell0 mapping, cell1, cell schemas.

``nova_setup.py NOVA_CONF CELL0_URL`` does what ``nova-manage api_db sync``,
``cell_v2 map_cell0``, ``cell_v2 create_cell --name cell1`` and ``db sync``
do, through nova-manage's own command classes, so the interpreter and Nova's
imports load once instead of four times.
"""

import sys

from nova import monkey_patch  # noqa: E402  (must come first, as in nova-manage)

monkey_patch.patch()

from nova import config, objects  # noqa: E402
from nova.cmd import manage  # noqa: E402


def main(conf_file, cell0_url):
    config.parse_args(["nova_setup", "--config-file", conf_file])
    objects.register_all()
    cells = manage.CellV2Commands()
    for step, run in (
        ("api_db sync", manage.ApiDbCommands().sync),
        ("map_cell0", lambda: cells.map_cell0(database_connection=cell0_url)),
        ("create_cell", lambda: cells.create_cell(name="cell1")),
        ("db sync", manage.DbCommands().sync),
    ):
        ret = run()
        if ret not in (None, 0):
            raise SystemExit(f"nova setup step {step} returned {ret}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
