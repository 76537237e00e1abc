"""``python -m aiowax.run IMPORT_STR``: Bytewax's command name, for migrated deployments.

Bytewax starts a flow with ``python -m bytewax.run``; a Dockerfile, a
Kubernetes manifest or a systemd unit migrated by changing the import root
says ``python -m aiowax.run``, and that must start the flow rather than fail
with "No module named aiowax.run". It is the same command line as
``python -m aiowax`` (`aiowax._cli`), options and exit statuses included.

Only ``python -m`` runs this file. ``aiowax.run`` in code is the function that
runs a flow (`aiowax._run.run`): importing this module by name
(``import aiowax.run``, as a tool walking the package does) must not replace
that function on the package, so the module puts the function in its own
place in `sys.modules`, which is what the import system then binds.
"""

import sys

if __name__ == "__main__":
    from aiowax._cli import main

    raise SystemExit(main(prog="python -m aiowax.run"))
else:
    from aiowax._run import run

    sys.modules[__name__] = run  # type: ignore[assignment]
