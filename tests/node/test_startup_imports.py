"""A node process starts without the libraries only statistics need: `datasketches` brings numpy
and its BLAS threads (start-up time and memory in every node, and in every apply process)."""

from __future__ import annotations

import subprocess
import sys


def test_a_node_process_does_not_import_numpy_until_a_statistic_needs_it() -> None:
    probe = (
        "import sys\n"
        "import node.cli, node.app, sync.apply_worker, node.stats.compute\n"
        "assert 'numpy' not in sys.modules and 'datasketches' not in sys.modules\n"
        "from node.stats.cells import new_sketch\n"
        "new_sketch(['a', 'b'])\n"
        "assert 'datasketches' in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
