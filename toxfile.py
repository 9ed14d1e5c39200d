"""tox plugin: say which Python a TF line needs when this machine lacks it, and where else to run it.

tox's own skip line only names the interpreter spec; a TF user also needs to hear that the
Docker backend runs any line without installing that Python.
"""

from __future__ import annotations

import shutil
import sys
from typing import Any

from tox.plugin import impl


@impl
def tox_add_env_config(env_conf: Any, state: Any) -> None:
    name = env_conf.name
    if not (name.startswith("tf2") and name[3:].isdigit()):
        return
    wanted = [str(spec) for spec in env_conf["base_python"]]
    if not wanted or any(shutil.which(spec) for spec in wanted):
        return
    line = f"{name[2]}.{name[3:]}"
    print(
        f"{name}: TF {line} needs {' or '.join(wanted)}, which this machine does not have; tox will skip it. "
        f"Install it (e.g. `pyenv install {wanted[0].removeprefix('python')}`) or run the line in a container: "
        f"`tfbisect run --tf {line} --backend docker`.",
        file=sys.stderr,
    )
