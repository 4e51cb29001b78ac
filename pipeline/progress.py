"""Progress bars on long steps: shown on a terminal, silent when output is piped or with ``--quiet``."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int, desc: str, quiet: bool = False) -> tqdm:
    return tqdm(total=total, desc=desc, unit="it", disable=quiet or not sys.stderr.isatty(), leave=False)
