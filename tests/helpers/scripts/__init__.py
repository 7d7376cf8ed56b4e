"""Scripts the kill, resume and multi-process tests start as subprocesses (``python helpers/scripts/NAME.py``).

Run as a file, a script puts ``tests/`` first on its path so that it imports ``helpers`` as the tests do.
"""

from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
TESTS = SCRIPTS.parents[1]
MTCT_MULTIPROCESS = SCRIPTS / "mtct_multiprocess.py"
SARR_WORKER = SCRIPTS / "sarr_worker.py"
TEACHER_BUILD = SCRIPTS / "teacher_build.py"
