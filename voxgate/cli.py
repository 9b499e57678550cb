"""The ``voxgate`` command: serve, enroll, verify, score, evaluate, calibrate, models.

Exit codes: 0 success, 1 an error voxgate explains on stderr, 2 bad usage or invalid settings,
3 not enough speech.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from voxgate.settings import Settings, describe_errors, get_settings

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

    from voxgate.biometrics.engine import SpeechAnalysis
    from voxgate.biometrics.profile import CalibrationProfile
    from voxgate.biometrics.voiceprint import Voiceprint
    from voxgate.evaluation.trials import TrialScore
    from voxgate.store.voiceprints import StoredVoiceprint
    from voxgate.worker_balance import LoadBoard

log = logging.getLogger("voxgate")

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INSUFFICIENT_SPEECH = 3
ENGINES = ("ecapa", "campplus", "ecapa+campplus")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voxgate", description="Voice biometrics for contact centres.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", help="listen address (default VOXGATE_HOST, 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, help="listen port (default VOXGATE_PORT, 8000; 0: a free port, printed at start)"
    )
    serve.add_argument(
        "--certfile",
        type=Path,
        help="TLS certificate chain (PEM): serve HTTPS and WSS (VOXGATE_TLS_CERTFILE)",
    )
    serve.add_argument("--keyfile", type=Path, help="its private key (PEM) (VOXGATE_TLS_KEYFILE)")
    serve.add_argument(
        "--workers",
        type=int,
        help="processes behind the port, each with its own inference engine (VOXGATE_WORKERS; default one "
        "per core with VOXGATE_REDIS_URL, 1 without; more than 1 needs VOXGATE_REDIS_URL)",
    )
    # set by the supervisor of --workers for each worker (voxgate.workers), never by hand
    serve.add_argument("--listen-fds", help=argparse.SUPPRESS)
    serve.add_argument("--metrics-fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--board-fd", help=argparse.SUPPRESS)  # FD,COUNT: the workers' load board

    def audio_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--channel", type=int, help="use this channel (0-based) of a multi-channel recording")
        p.add_argument("--min-speech", type=float, metavar="S", help="minimum net speech, seconds")

    enroll = sub.add_parser(
        "enroll",
        help="store a customer's voiceprint made from recordings (as POST /api/v2/import: the server's "
        "models, VOXGATE_MODELS)",
    )
    enroll.add_argument("--id", required=True, dest="external_id", help="the customer's external_id")
    enroll.add_argument("files", nargs="+", type=Path, help="recordings (one speaker each)")
    enroll.add_argument("--replace", action="store_true", help="replace an existing voiceprint")
    enroll.add_argument(
        "--passphrase",
        action="store_true",
        help="text-dependent: 3 to 5 short recordings of the same words (verified from one utterance)",
    )
    audio_options(enroll)

    verify = sub.add_parser("verify", help="verify a recording against a stored voiceprint")
    verify.add_argument("--id", required=True, dest="external_id", help="the customer's external_id")
    verify.add_argument("file", type=Path, help="the recording to verify")
    audio_options(verify)
    verify.add_argument("--profile", help="calibration profile: auto, a shipped name, or a JSON file")

    def trial_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--trials", required=True, type=Path, help="CSV with columns enroll,test[,target]")
        p.add_argument("--root", required=True, type=Path, help="folder the CSV's paths are relative to")
        p.add_argument("--model", choices=ENGINES, help="engine (default: the profile's)")
        p.add_argument("--profile", default=None, help="calibration profile (default VOXGATE_PROFILE, auto)")
        p.add_argument("--min-speech", type=float, metavar="S", help="net speech a file needs (default 1 s)")
        p.add_argument("--jobs", type=int, default=1, help="worker processes for embedding (default 1)")

    score = sub.add_parser("score", help="score a trial list; CSV to stdout, progress to stderr")
    trial_options(score)

    evaluate = sub.add_parser("evaluate", help="score a labelled trial list and print EER, minDCF, Cllr")
    trial_options(evaluate)
    evaluate.add_argument("--out", type=Path, help="write scores.csv, DET and histogram PNGs, report.md here")

    calibrate = sub.add_parser("calibrate", help="fit a calibration profile from labelled recordings")
    calibrate.add_argument(
        "datasets",
        nargs="+",
        type=Path,
        help="folder(s) with one sub-folder per speaker, or path,speaker CSVs",
    )
    calibrate.add_argument("--out", required=True, type=Path, help="profile JSON to write")
    calibrate.add_argument(
        "--model", choices=ENGINES, default="ecapa+campplus", help="engine (default fused)"
    )
    calibrate.add_argument(
        "--channel", choices=("wideband", "telephone"), help="default: by the audio's rate"
    )
    calibrate.add_argument(
        "--simulate-telephone",
        action="store_true",
        help="pass wideband audio through 8 kHz G.711 µ-law first",
    )
    calibrate.add_argument("--normalisation", choices=("none", "asnorm"), default="asnorm")
    calibrate.add_argument(
        "--duration-aware",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="weigh scores by the net speech behind them, thresholds holding in every speech band "
        "(test sides also cut to 2, 4.5, 8 and 20 s of speech; default on)",
    )
    calibrate.add_argument("--top-k", type=int, default=100, help="adaptive s-norm cohort size (default 100)")
    calibrate.add_argument("--accept-far", type=float, default=0.005, help="verified: max false accepts")
    calibrate.add_argument("--reject-frr", type=float, default=0.02, help="not_verified: max false rejects")
    calibrate.add_argument("--parent", help="the profile this one replaces (its hash is recorded)")
    calibrate.add_argument("--name", help="profile name (default: the output file's stem)")
    calibrate.add_argument(
        "--report", type=Path, help="report folder (default: <out>-report beside the profile)"
    )
    calibrate.add_argument(
        "--min-speech", type=float, metavar="S", help="net speech a file needs (default 1 s)"
    )
    calibrate.add_argument("--jobs", type=int, default=1, help="worker processes for embedding (default 1)")

    models = sub.add_parser("models", help="prepare or list the speaker models")
    models_sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    prepare = models_sub.add_parser(
        "prepare", help="export the pinned checkpoints to ONNX (needs torch once)"
    )
    prepare.add_argument("--force", action="store_true", help="export again even if up to date")
    prepare.add_argument("--check-audio", type=Path, nargs="+", help="real speech files for the export check")
    listing = models_sub.add_parser("list", help="show prepared models")
    listing.add_argument("--no-rtf", action="store_true", help="skip measuring the real-time factor")

    from voxgate import accounts_cli

    accounts_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as exc:  # refuse to start, naming each bad setting
        print(f"voxgate: {describe_errors(exc)}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from voxgate.errors import InsufficientSpeech, VoxgateError
    from voxgate.store.crypto import SecretKeyError

    try:
        handler = {
            "serve": _serve,
            "enroll": _enroll,
            "verify": _verify,
            "score": _score,
            "evaluate": _evaluate,
            "calibrate": _calibrate,
            "models": _models,
            "reset-password": _reset_password,
        }[args.command]
        return handler(args, settings)
    except InsufficientSpeech as exc:
        print(f"voxgate: {exc}", file=sys.stderr)
        return EXIT_INSUFFICIENT_SPEECH
    except VoxgateError as exc:
        print(f"voxgate: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except SecretKeyError as exc:  # the secrets key does not fit the store: a configuration error
        print(f"voxgate: refusing to start: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


# -- serve ----------------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from voxgate.api.app import create_app
    from voxgate.logs import configure_json_logging

    certfile = args.certfile or settings.tls_certfile
    keyfile = args.keyfile or settings.tls_keyfile
    if (certfile is None) != (keyfile is None):
        print("voxgate: TLS needs both --certfile and --keyfile (or neither)", file=sys.stderr)
        return EXIT_USAGE
    for path in (certfile, keyfile):
        if path is not None and not path.is_file():
            print(f"voxgate: TLS file {path} does not exist", file=sys.stderr)
            return EXIT_USAGE
    if settings.log_json:
        configure_json_logging(settings.log_level)
    port = settings.port if args.port is None else args.port
    ports = [port] if settings.ws_port is None or settings.ws_port == port else [port, settings.ws_port]
    host = args.host or settings.host
    if args.listen_fds is None:  # the process the operator started: one server, or the workers' supervisor
        from voxgate.workers import WorkersRefused, supervise, worker_count

        try:
            count = worker_count(args.workers, settings)
        except WorkersRefused as exc:
            print(f"voxgate: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if count > 1:
            tls = ["--certfile", str(certfile), "--keyfile", str(keyfile)] if certfile is not None else []
            return supervise(settings, count, host, ports, ["--host", host, *tls])
    app = create_app(settings, telephony=not args.worker_index)  # SIP agents: one per box (worker 0)
    _tune_interpreter()
    options: dict[str, Any] = {
        "host": host,
        "log_level": settings.log_level,
        "log_config": None if settings.log_json else uvicorn.config.LOGGING_CONFIG,
        "proxy_headers": True,
        "forwarded_allow_ips": settings.forwarded_allow_ips,
    }
    if certfile is not None:
        options.update(ssl_certfile=str(certfile), ssl_keyfile=str(keyfile))
    metrics = None
    if settings.metrics_port is not None:  # plain HTTP, GET /metrics only (docs/monitoring.md)
        from voxgate.api.app import create_metrics_app

        metrics = uvicorn.Config(
            create_metrics_app(app),
            host=settings.metrics_host,
            port=settings.metrics_port,
            lifespan="off",
            log_level=settings.log_level,
            log_config=options["log_config"],
            access_log=False,
        )
    listen = _Listen(ready_fd=args.ready_fd)
    if args.listen_fds is not None:  # a worker of --workers: the supervisor's sockets, an address of its own
        listen.api = [socket.socket(fileno=int(fd)) for fd in args.listen_fds.split(",")]
        if args.metrics_fd is not None:
            listen.metrics = socket.socket(fileno=args.metrics_fd)
        if args.board_fd is not None:
            from voxgate.worker_balance import LoadBoard

            fd, count = (int(part) for part in args.board_fd.split(","))
            listen.board, listen.index = LoadBoard(fd, count), args.worker_index or 0
        listen.internal = uvicorn.Config(
            app,
            host=host,
            port=0,
            lifespan="off",
            log_level=settings.log_level,
            log_config=options["log_config"],
            access_log=False,
        )
    asyncio.run(_serve_ports(app, ports, options, "https" if certfile else "http", metrics, listen))
    return 0


@dataclass
class _Listen:
    """A worker's inherited sockets (API ports, metrics port) and its internal listener."""

    api: list[socket.socket] | None = None
    metrics: socket.socket | None = None
    internal: uvicorn.Config | None = None
    ready_fd: int | None = None  # written once serving (the supervisor waits for worker 0)
    board: LoadBoard | None = None  # the workers' live streams: new connections go to the least loaded
    index: int = 0  # this worker's slot on the board


def _tune_interpreter() -> None:
    """Short GIL turns and rarer, smaller garbage collections, for verify latency under load.

    The inference engine's thread runs Python between its onnxruntime calls; with the default 5 ms switch
    interval the event loop waits that long for each turn. The objects alive at start (the imported
    libraries) are frozen out of the collector, and young-generation collections run 7x less often.
    Measured with ``bench/density.py`` (62 streams, CAM++ only, one core): verify p99 57 ms → 24 ms, same CPU.
    """
    import gc

    sys.setswitchinterval(0.001)
    gc.collect()
    gc.freeze()
    gc.set_threshold(5000, 20, 100)


async def _serve_ports(
    app: FastAPI,
    ports: list[int],
    options: dict[str, Any],
    scheme: str,
    metrics: uvicorn.Config | None = None,
    listen: _Listen | None = None,
) -> None:
    """One app on one or more ports (VOXGATE_WS_PORT) in one process. The servers run with lifespan off
    and the app's lifespan runs once around them: one store, one stream registry, one inference engine.
    Once every port is bound, each is printed on stderr (`voxgate: listening on http://127.0.0.1:8000`):
    with port 0 that is how a caller learns which port the system chose. ``metrics`` is the metrics
    listener, printed as `voxgate: metrics on http://127.0.0.1:9464/metrics`."""
    import contextlib
    import signal

    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # the loop's handlers below stop every server
            yield

    listen = listen or _Listen()
    servers = [Server(uvicorn.Config(app, port=port, lifespan="off", **options)) for port in ports]
    api_servers = list(servers)
    tasks: set[asyncio.Task[None]] = set()
    sockets: dict[int, list[socket.socket] | None] = {}
    for server, sock in zip(servers, listen.api or [], strict=False):
        sockets[id(server)] = [sock]
    metrics_server = Server(metrics) if metrics is not None else None
    if metrics_server is not None:
        servers.append(metrics_server)
        if listen.metrics is not None:
            sockets[id(metrics_server)] = [listen.metrics]
    internal_server = Server(listen.internal) if listen.internal is not None else None
    if internal_server is not None:
        servers.append(internal_server)

    def stop(sig: int) -> None:
        for server in servers:
            server.handle_exit(sig, None)
        live = getattr(app.state, "live", None)  # the server waits for open responses: end the live feeds'
        if live is not None:
            live.close()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)

    async def report() -> None:
        while not all(server.started for server in servers):
            await asyncio.sleep(0.05)
        if internal_server is not None:  # VOXGATE_NODE_URL names the box: its host, this worker's port
            named = urllib.parse.urlsplit(app.state.runtime.settings.node_url).hostname
            _announce_node_url(app, internal_server, "http", host=named, force=True)
            print(f"voxgate: node address {app.state.runtime.cluster.url}", file=sys.stderr, flush=True)
        else:
            _announce_node_url(app, servers[0], scheme)
        if listen.board is not None:
            balancer = _balance(app, listen.board, listen.index, api_servers)
            tasks.add(asyncio.create_task(balancer, name="worker-balance"))
        if listen.ready_fd is not None:
            os.write(listen.ready_fd, b"1")
            os.close(listen.ready_fd)
        for server in servers:
            if server is internal_server:
                continue
            for listener in server.servers:
                for sock in listener.sockets:
                    host, port = sock.getsockname()[:2]
                    shown = f"[{host}]" if ":" in host else host
                    if server is metrics_server:
                        print(
                            f"voxgate: metrics on http://{shown}:{port}/metrics", file=sys.stderr, flush=True
                        )
                        continue
                    print(f"voxgate: listening on {scheme}://{shown}:{port}", file=sys.stderr, flush=True)

    async with app.router.lifespan_context(app):
        reporter = asyncio.create_task(report())
        try:
            await asyncio.gather(*(server.serve(sockets=sockets.get(id(server))) for server in servers))
        finally:
            reporter.cancel()
            for task in tasks:
                task.cancel()


async def _balance(app: FastAPI, board: LoadBoard, index: int, servers: Sequence[uvicorn.Server]) -> None:
    """This worker's side of :mod:`voxgate.worker_balance`: its live streams on the board, its accepting
    paused while it holds more than its share."""
    from voxgate.worker_balance import AcceptGate, balance

    runtime = app.state.runtime
    gate = AcceptGate([listener for server in servers for listener in server.servers])
    await balance(board, index, gate, lambda: len(runtime.registry) if runtime.registry is not None else 0)


def _announce_node_url(
    app: FastAPI, server: uvicorn.Server, scheme: str, *, host: str | None = None, force: bool = False
) -> None:
    """Tell the cluster where other nodes reach this process (unless VOXGATE_NODE_URL says it, or
    ``force``): the server's first listening socket, on ``host`` or the socket's address (the host name in
    place of a wildcard address)."""
    cluster = app.state.runtime.cluster
    if cluster is None or not server.servers or not server.servers[0].sockets:
        return
    bound, port = server.servers[0].sockets[0].getsockname()[:2]
    host = host or (socket.gethostname() if bound in ("0.0.0.0", "::") else bound)
    cluster.set_url(f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}", force=force)


# -- enroll / verify ------------------------------------------------------------------------------------


def _voiceprint_of(
    path: Path,
    args: argparse.Namespace,
    settings: Settings,
    min_speech_s: float,
    what: str,
    source: dict[str, Any] | None = None,
) -> tuple[CalibrationProfile, SpeechAnalysis, Voiceprint]:
    from voxgate.audio.decode import decode_file
    from voxgate.audio.types import AudioLimits
    from voxgate.audio.vad import SegmentationRules
    from voxgate.biometrics.engine import Biometrics
    from voxgate.biometrics.profile import resolve_profile
    from voxgate.service.verification import profile_spec

    audio = decode_file(path, limits=AudioLimits.from_settings(settings), channel=args.channel)
    spec = profile_spec(args.profile or settings.profile, source or {}, audio.sample_rate_hz)
    profile = resolve_profile(spec, audio.sample_rate_hz)
    biometrics = Biometrics(
        settings.model_dir,
        profile.model_ids,
        rules=SegmentationRules(threshold=settings.vad_threshold),
        threads=settings.onnx_threads,
        max_chunk_s=settings.max_embed_chunk_s,
        int8=settings.int8,
    )
    analysis = biometrics.analyse(audio)
    return (
        profile,
        analysis,
        biometrics.voiceprint(analysis, min_speech_s=min_speech_s, what=f"{what} ({path.name})"),
    )


def _enroll(args: argparse.Namespace, settings: Settings) -> int:
    """The same enrollment as ``POST /api/v2/import`` (one copy in the service layer): the same models,
    the same voiceprint, the same ``import`` event."""
    from voxgate.service.enrollment import Recording, enroll_recordings
    from voxgate.service.runtime import Runtime

    async def recordings() -> AsyncIterator[Recording]:
        limit = settings.max_audio_bytes
        for path in args.files:
            with path.open("rb") as stream:
                data = stream.read(limit + 1)  # bounded: the file may grow, or be a device
            yield Recording(path.name, data)

    async def enroll() -> None:
        runtime = Runtime(settings)
        await runtime.start(live=False)
        try:
            done = await enroll_recordings(
                runtime,
                args.external_id,
                recordings(),
                channel=args.channel,
                overwrite=args.replace,
                min_speech_s=args.min_speech,
                passphrase=args.passphrase,
            )
        finally:
            await runtime.stop()
        for path, heard in zip(args.files, done.recordings, strict=True):
            print(f"{path}: {heard.speech_s:.2f} s net speech of {heard.duration_s:.2f} s")
        print(
            f"enrolled {args.external_id}: {done.voiceprint.speech_s:.2f} s net speech, models {done.model}"
        )

    asyncio.run(enroll())
    return 0


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    from voxgate.store import voiceprints
    from voxgate.store.db import Store

    async def fetch() -> StoredVoiceprint:
        store = await Store(settings.resolved_database_url).open()
        try:
            return await voiceprints.get(store.sessions, args.external_id)
        finally:
            await store.close()

    stored = asyncio.run(fetch())
    minimum = settings.min_verify_speech_s if args.min_speech is None else args.min_speech
    profile, analysis, voiceprint = _voiceprint_of(
        args.file, args, settings, minimum, "verification", stored.source
    )
    result = profile.score(stored.voiceprint, voiceprint)
    print(f"verdict: {result.verdict.value}")
    print(f"score: {result.llr:.3f}  (log-likelihood ratio, profile {profile.name})")
    print(f"speech_length: {analysis.speech_s:.2f} s")
    return 0


# -- score / evaluate / calibrate -----------------------------------------------------------------------


def _scored_trials(
    args: argparse.Namespace, settings: Settings, need_target: bool
) -> tuple[list[TrialScore], list[CalibrationProfile]]:
    from voxgate.audio.types import AudioLimits
    from voxgate.biometrics.profile import resolve_profile
    from voxgate.evaluation.embedding import EmbedJob, embed_files
    from voxgate.evaluation.trials import read_trials, score_trials, trial_paths

    trials = read_trials(args.trials, need_target=need_target)
    spec = args.profile or settings.profile
    cache: dict[int, CalibrationProfile] = {}

    def profile_for(rate_hz: int) -> CalibrationProfile:
        if rate_hz not in cache:
            cache[rate_hz] = resolve_profile(spec, rate_hz, model=args.model)
        return cache[rate_hz]

    model_ids = sorted({m for rate in (8000, 16000) for m in profile_for(rate).model_ids})  # both channels
    job = EmbedJob(
        model_dir=settings.model_dir,
        model_ids=tuple(model_ids),
        limits=AudioLimits.from_settings(settings),
        min_speech_s=settings.min_score_speech_s if args.min_speech is None else args.min_speech,
        max_chunk_s=settings.max_embed_chunk_s,
        int8=settings.int8,
    )
    results = embed_files(trial_paths(trials, args.root), job, jobs=args.jobs)
    scores = score_trials(trials, results, args.root, profile_for)
    used = {
        results[args.root / t.test].source_rate_hz for t in trials if not results[args.root / t.test].error
    }
    return scores, list({id(p): p for p in (profile_for(rate) for rate in sorted(used))}.values())


def _score(args: argparse.Namespace, settings: Settings) -> int:
    from voxgate.evaluation.trials import write_scores

    scores, _ = _scored_trials(args, settings, need_target=False)
    write_scores(scores, sys.stdout)
    return 0


def _evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from voxgate.evaluation.report import evaluate, summary_lines, write_report

    scores, profiles = _scored_trials(args, settings, need_target=True)
    evaluation = evaluate(scores)
    for line in summary_lines(evaluation, profiles):
        print(line)
    if args.out:
        print(f"report: {write_report(args.out, args.trials.stem, scores, evaluation, profiles)}")
    return 0


def _calibrate(args: argparse.Namespace, settings: Settings) -> int:
    from voxgate.audio.types import AudioLimits
    from voxgate.biometrics.profile import CalibrationProfile, Channel, channel_for_rate
    from voxgate.evaluation.datasets import read_dataset
    from voxgate.evaluation.embedding import EmbedJob, embed_files
    from voxgate.evaluation.fitting import CROPS_S, EmbeddedSet, fit_profile, score_sets
    from voxgate.evaluation.report import evaluate, summary_lines, write_report

    model_ids = tuple(args.model.split("+"))
    job = EmbedJob(
        model_dir=settings.model_dir,
        model_ids=model_ids,
        limits=AudioLimits.from_settings(settings),
        min_speech_s=settings.min_score_speech_s if args.min_speech is None else args.min_speech,
        telephone=args.simulate_telephone,
        max_chunk_s=settings.max_embed_chunk_s,
        int8=settings.int8,
        lengths_s=(None, *CROPS_S) if args.duration_aware else (None,),
    )
    embedded = []
    for spec in args.datasets:
        dataset = read_dataset(spec)
        results = embed_files(list(dataset.files), job, jobs=args.jobs, desc=dataset.name)
        rates = [r.source_rate_hz for r in results.values() if not r.error]
        if not rates:
            print(f"voxgate: no usable recordings in {spec}", file=sys.stderr)
            return EXIT_ERROR
        channel = (
            Channel(args.channel)
            if args.channel
            else (Channel.TELEPHONE if args.simulate_telephone else channel_for_rate(int(np.median(rates))))
        )
        embedded.append(EmbeddedSet(dataset, channel, tuple(results[p] for p in dataset.files)))
    channel = embedded[0].channel
    parent = CalibrationProfile.load(Path(args.parent)).content_hash if args.parent else None
    profile = fit_profile(
        embedded,
        model_ids,
        name=args.name or args.out.stem,
        channel=channel,
        normalisation=args.normalisation,
        top_k=args.top_k,
        accept_far=args.accept_far,
        reject_frr=args.reject_frr,
        parent_hash=parent,
        description=f"fitted by `voxgate calibrate` on {', '.join(s.name for s in embedded)}",
        duration_aware=args.duration_aware,
    )
    profile.save(args.out)
    print(
        f"profile: {args.out} ({profile.model_id}, {profile.channel.value}, hash {profile.content_hash[:16]})"
    )
    scores = score_sets(profile, embedded)
    evaluation = evaluate(scores)
    for line in summary_lines(evaluation, [profile]):
        print(line)
    report_dir = args.report or args.out.with_name(f"{args.out.stem}-report")
    print(f"report: {write_report(report_dir, profile.name, scores, evaluation, [profile])}")
    return 0


def _reset_password(args: argparse.Namespace, settings: Settings) -> int:
    from voxgate import accounts_cli

    return accounts_cli.command(args, settings)


# -- models ---------------------------------------------------------------------------------------------


def _models(args: argparse.Namespace, settings: Settings) -> int:
    from voxgate.audio.vad import install_vad_model

    if args.models_command == "prepare":
        from voxgate.biometrics.prepare.export import prepare_models

        install_vad_model(settings.model_dir)
        cards = prepare_models(
            settings.model_dir,
            force=args.force,
            check_audio=args.check_audio,
            log=lambda line: print(line, file=sys.stderr),
        )
        print(f"models ready in {settings.model_dir}: {', '.join(card.model_id for card in cards)}")
        return 0
    return _list_models(args, settings)


def _list_models(args: argparse.Namespace, settings: Settings) -> int:
    from voxgate.biometrics.models import MODEL_IDS, load_model
    from voxgate.biometrics.models.rtf import measure_rtf
    from voxgate.errors import ModelNotPrepared

    rng = np.random.default_rng(0)
    clip = (0.1 * rng.standard_normal(10 * 16000)).astype(
        np.float32
    )  # 10 s; speed does not depend on content
    print(f"{'id':<10} {'version':<26} {'sha256':<18} {'dim':>4} {'rate_hz':>7} {'rtf':>7}  int8")
    for model_id in MODEL_IDS:
        try:
            model = load_model(model_id, settings.model_dir, threads=1)
        except ModelNotPrepared as exc:
            print(f"{model_id:<10} not prepared: {exc}")
            continue
        card = model.card
        rtf = "-" if args.no_rtf else f"{measure_rtf(model, clip):.4f}"
        # the copy VOXGATE_INT8 serves, and how closely it agreed with fp32 when prepare wrote it
        int8 = f"cosine {card.int8_cosine:.3f}" if card.int8_sha256 else "none (run `voxgate models prepare`)"
        print(
            f"{card.model_id:<10} {card.version:<26} {card.source_sha256[:16]}.. {card.dimension:>4} "
            f"{card.sample_rate_hz:>7} {rtf:>7}  {int8}"
        )
    return 0
