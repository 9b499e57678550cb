from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from voxgate.biometrics.engine import Biometrics
from voxgate.streams.inference import InferenceEngine
from voxgate.streams.threads import INFERENCE, OFFLINE, name_this_thread

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread names are read from /proc")


def os_names() -> set[str]:
    return {(task / "comm").read_text().strip() for task in Path("/proc/self/task").iterdir()}


def test_a_named_thread_shows_its_name_to_the_operating_system() -> None:
    seen: list[str] = []

    def run() -> None:
        assert name_this_thread("vg-test-a-very-long-name")  # Linux keeps 15 bytes
        seen.append(Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip())

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == ["vg-test-a-very-"]


def test_the_engine_and_its_offline_worker_carry_their_names(model_dir: Path) -> None:
    assert INFERENCE not in os_names() and OFFLINE not in os_names()
    engine = InferenceEngine(Biometrics(model_dir, ["campplus"]))
    engine.start()  # its offline worker too
    try:
        pause = threading.Event()
        for _ in range(100):  # each thread names itself as it starts running
            if {INFERENCE, OFFLINE} <= os_names():
                break
            pause.wait(0.02)
        assert {INFERENCE, OFFLINE} <= os_names()
    finally:
        engine.stop()
    assert INFERENCE not in os_names()
