"""CPU per stream-second of a live stream's stages, without a server: a noise-tolerant density check.

``bench/density.py`` measures what a whole server sustains in real time, which needs a quiet machine. This
plays the same kind of calls (``density.build_call``: speech turns and silences, µ-law at 8 kHz) through
``SpeechPipeline.push`` in 20 ms frames on one thread and reports the process CPU time per second of call
audio, split into VAD, embedding and the rest. CPU time, not wall time, so another process on the machine
moves it little; run it on two checkouts to compare them in one sitting:

    .venv/bin/python bench/stage_cost.py                       # this checkout, CAM++ (the fastest profile)
    .venv/bin/python bench/stage_cost.py --models ecapa,campplus
    git worktree add /tmp/before <commit> && .venv/bin/python bench/stage_cost.py --code /tmp/before
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", type=Path, help="a checkout of voxgate to measure instead of this one")
    parser.add_argument("--models", default="campplus", help="comma-separated model ids (default: campplus)")
    parser.add_argument("--calls", type=int, default=4, help="calls, one per speaker (default 4)")
    parser.add_argument("--call-s", type=float, default=150.0, help="seconds per call (default 150)")
    parser.add_argument("--max-speech", type=float, default=30.0, help="VOXGATE_STREAM_MAX_SPEECH_S (default 30)")
    args = parser.parse_args()
    if args.code:
        sys.path.insert(0, str(args.code.resolve()))
    sys.path.insert(0, str(BENCH))
    import density  # the calls density.py plays
    import numpy as np

    import voxgate
    from voxgate.audio.g711 import ulaw_decode
    from voxgate.biometrics.engine import Biometrics
    from voxgate.settings import Settings
    from voxgate.streams.stages import SpeechPipeline

    print(f"code: {Path(voxgate.__file__).resolve().parent.parent}", flush=True)
    biometrics = Biometrics(Settings().model_dir, args.models.split(","))
    spent: dict[str, float] = {"vad": 0.0, "embedding": 0.0}

    def timed(name: str, call: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            started = time.process_time()
            try:
                return call(*a, **k)
            finally:
                spent[name] += time.process_time() - started

        return wrapper

    for model in biometrics.models.values():
        model.embed = timed("embedding", model.embed)  # type: ignore[method-assign]
    biometrics.vad.probabilities = timed("vad", biometrics.vad.probabilities)  # type: ignore[method-assign]
    rng = random.Random(7)
    speakers = density.load_speakers()[: args.calls]
    total = audio_s = 0.0
    for speaker in speakers:
        codes, _ = density.build_call(speaker, args.call_s, rng)
        samples = ulaw_decode(codes).astype(np.float32) / 32768.0
        pipeline = SpeechPipeline("bench", 8000, biometrics, max_speech_s=args.max_speech)
        started = time.process_time()
        for i in range(0, samples.size, density.FRAME):
            pipeline.push(samples[i : i + density.FRAME])
        total += time.process_time() - started
        audio_s += samples.size / 8000
        print(f"  {speaker.name}: {samples.size / 8000:.0f} s, {pipeline.chunks} chunks, "
              f"{pipeline.speech_s:.1f} s of speech in the voiceprint", flush=True)
    per_s = {name: 1000 * spent[name] / audio_s for name in ("vad", "embedding")}
    rest = 1000 * total / audio_s - sum(per_s.values())
    print(f"{1000 * total / audio_s:.2f} CPU ms per stream-second ({args.models}, cap {args.max_speech:g} s): "
          f"VAD {per_s['vad']:.2f}, embedding {per_s['embedding']:.2f}, the rest {rest:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
