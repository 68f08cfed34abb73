import os
import signal

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# A suite started in the background by a shell without job control (`cmd &`
# in a script) inherits Ctrl-C ignored, and so would every process a test
# starts and then interrupts: those tests would wait for a Ctrl-C that never
# lands. A handler, unlike "ignored", is reset for a child at exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def run_dir(tmp_path):
    return tmp_path / "runs"
