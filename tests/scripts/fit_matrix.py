"""Several small fits, one after the other, in the same processes (started by torchrun).

``torchrun --nproc-per-node 2 tests/scripts/fit_matrix.py '<json list of fit_tiny configs>'``:
the imports, the process start and the process group are paid once for the whole list instead
of once per fit, which keeps a strategy × precision matrix of 2-process fits inside the CI
budget. Each config is fit_tiny's, with its own ``root``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.scripts.fit_tiny import main  # noqa: E402

if __name__ == "__main__":
    for config in json.loads(sys.argv[1]):
        start = time.perf_counter()
        main(config)
        if os.environ.get("RANK") == "0":  # what each fit costs, for keeping the matrix inside the CI budget
            print(f"fit_matrix: {Path(config['root']).name} {time.perf_counter() - start:.1f} s", flush=True)
