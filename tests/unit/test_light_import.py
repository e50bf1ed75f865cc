from __future__ import annotations

import subprocess
import sys


def test_core_import_does_not_load_heavy_dependencies() -> None:
    code = (
        "import sys, rankstack, rankstack.stages, rankstack.evaluate, rankstack.io, rankstack.index, rankstack.cli;"
        "heavy = [m for m in ('torch', 'transformers', 'faiss', 'fastapi', 'ray') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
