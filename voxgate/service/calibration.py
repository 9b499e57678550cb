"""Calibration from an uploaded labelled dataset, as a job with progress: ``voxgate calibrate`` for the console.

The upload is a ZIP archive with one folder per speaker (the layout ``voxgate calibrate`` reads; one top
folder around them is fine). Its names and sizes are checked before anything is unpacked; it is unpacked into
a private folder of the data directory, and every recording is embedded once on the inference engine's offline
worker, one at a time (so a calibration never starves live calls, and its progress counts recordings). Then a
profile is fitted on every pair of recordings, stored (not active), and scored on the same trials: the report
(EER, minDCF, Cllr, error rates at the thresholds, the DET curve, LLR histograms) comes with it, for a person to
read before activating the profile; it is kept beside the profile (``GET /api/v2/maintenance/asp/{uuid}``).

Jobs live in this process, the last :data:`KEEP_JOBS` of them; a restart forgets them (the stored profile stays).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import shutil
import tempfile
import uuid as uuid_module
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from voxgate.audio.types import AudioLimits
from voxgate.biometrics.metrics import det_curve
from voxgate.biometrics.profile import CalibrationProfile, Channel, channel_for_rate
from voxgate.errors import VoxgateError
from voxgate.evaluation.datasets import DatasetError, read_dataset
from voxgate.evaluation.embedding import EmbedJob, FileResult, embed_one
from voxgate.evaluation.fitting import EmbeddedSet, fit_profile, score_sets
from voxgate.evaluation.report import evaluate
from voxgate.service import maintenance
from voxgate.service.models import engine_models
from voxgate.store import profiles

if TYPE_CHECKING:
    from voxgate.service.runtime import Runtime

log = logging.getLogger(__name__)

KEEP_JOBS = 10
MAX_FILES = 5000  # recordings in one archive
DET_POINTS = 200  # the DET curve is thinned to about this many points
HISTOGRAM_BINS = 40


class CalibrationJobNotFound(VoxgateError):
    """No calibration job with that id in this process (never started, or forgotten)."""


@dataclass(frozen=True)
class CalibrationOptions:
    name: str
    model_ids: tuple[str, ...]  # the models the profile fuses; all loaded by the engine
    normalisation: str = "none"  # none | asnorm
    accept_far: float = 0.005
    reject_frr: float = 0.02
    simulate_telephone: bool = False  # pass the recordings through an 8 kHz G.711 channel first


@dataclass(frozen=True)
class CalibrationReport:
    """The fitted profile scored on its own trials (each pair of recordings within the upload)."""

    target_trials: int
    nontarget_trials: int
    unscored: int  # pairs with an unusable recording, counted as rejections
    eer: float
    min_dcf: float  # normalised, P_target 0.01
    cllr: float  # bits
    min_cllr: float
    false_accept: float  # non-target trials `verified` at the profile's thresholds
    false_reject: float  # target trials `not_verified`
    det: list[tuple[float, float]]  # (p_fa, p_miss), thinned, from accept-all to reject-all
    histogram_edges: list[float]  # LLR bin edges (HISTOGRAM_BINS + 1)
    target_counts: list[int]
    nontarget_counts: list[int]


@dataclass
class CalibrationJob:
    id: str
    name: str
    created: datetime
    stage: str = "unpacking"  # unpacking, embedding, fitting, scoring, done, failed
    done: int = 0  # recordings embedded
    total: int = 0  # recordings in the upload
    detail: str | None = None  # why it failed; which recordings could not be used
    profile_uuid: str | None = None  # the stored profile, once done
    report: CalibrationReport | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


def check_archive(data: bytes, max_unpacked_bytes: int) -> list[zipfile.ZipInfo]:
    """The archive's files, if it is a ZIP whose names stay inside it and whose content is not too large;
    DatasetError otherwise. Reads only the central directory."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"the upload is not a ZIP archive: {exc}") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
    if not members:
        raise DatasetError("the archive is empty")
    if len(members) > MAX_FILES:
        raise DatasetError(f"the archive holds {len(members)} files; at most {MAX_FILES}")
    for member in members:
        parts = PurePosixPath(member.filename.replace("\\", "/")).parts
        if member.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise DatasetError(f"the archive names a file outside itself: {member.filename!r}")
    unpacked = sum(m.file_size for m in members)
    if unpacked > max_unpacked_bytes:
        raise DatasetError(f"the archive unpacks to {unpacked} bytes; at most {max_unpacked_bytes}")
    return members


def _unpack(data: bytes, folder: Path, max_unpacked_bytes: int) -> Path:
    """Unpack into ``folder``; the dataset's root (the single top folder, if the archive has one)."""
    check_archive(data, max_unpacked_bytes)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for member in archive.infolist():
            if member.is_dir():
                continue
            target = folder.joinpath(*PurePosixPath(member.filename.replace("\\", "/")).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            # zipfile stops a member at the size the central directory declares (checked above)
            with archive.open(member) as source, target.open("wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
    root = folder
    entries = [p for p in root.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    while len(entries) == 1 and entries[0].is_dir():
        inner = [p for p in entries[0].iterdir() if not p.name.startswith(".")]
        if not inner or not all(p.is_dir() for p in inner):
            break
        root = entries[0]
        entries = inner
    return root


def _report(profile: CalibrationProfile, embedded: list[EmbeddedSet]) -> CalibrationReport:
    scores = score_sets(profile, embedded)
    evaluation = evaluate(scores)
    labelled = [s for s in scores if s.trial.target is not None]
    tar = np.array([0.0 if s.llr is None else s.llr for s in labelled if s.trial.target])
    non = np.array([0.0 if s.llr is None else s.llr for s in labelled if not s.trial.target])
    _, p_miss, p_fa = det_curve(tar, non)
    step = max(1, len(p_miss) // DET_POINTS)
    keep = sorted({*range(0, len(p_miss), step), len(p_miss) - 1})
    low, high = float(min(tar.min(), non.min())), float(max(tar.max(), non.max()))
    edges = np.linspace(low, high if high > low else low + 1.0, HISTOGRAM_BINS + 1)
    m, r = evaluation.metrics, evaluation.rates
    return CalibrationReport(
        target_trials=m.n_target,
        nontarget_trials=m.n_nontarget,
        unscored=evaluation.unscored,
        eer=m.eer,
        min_dcf=m.min_dcf,
        cllr=m.cllr,
        min_cllr=m.min_cllr,
        false_accept=r.false_accept,
        false_reject=r.false_reject,
        det=[(float(p_fa[i]), float(p_miss[i])) for i in keep],
        histogram_edges=[float(e) for e in edges],
        target_counts=[int(c) for c in np.histogram(tar, edges)[0]],
        nontarget_counts=[int(c) for c in np.histogram(non, edges)[0]],
    )


class Calibrations:
    """The calibration jobs of this process."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._jobs: dict[str, CalibrationJob] = {}

    def start(self, data: bytes, options: CalibrationOptions, user: str) -> CalibrationJob:
        """Check the archive (DatasetError) and the models (ModelNotPrepared), then run the job."""
        biometrics = self._runtime.require_biometrics()
        missing = [m for m in options.model_ids if m not in biometrics.models]
        if missing:
            raise DatasetError(
                f"the engine does not run {', '.join(missing)} (it runs {', '.join(biometrics.models)})"
            )
        check_archive(data, self._runtime.settings.max_snapshot_bytes)
        job = CalibrationJob(str(uuid_module.uuid4()), options.name, datetime.now(UTC))
        job.task = asyncio.get_running_loop().create_task(self._run(job, data, options, user))
        self._jobs[job.id] = job
        for old_id in list(self._jobs)[:-KEEP_JOBS]:  # forget the oldest finished ones
            task = self._jobs[old_id].task
            if task is None or task.done():
                del self._jobs[old_id]
        return job

    def get(self, job_id: str) -> CalibrationJob:
        job = self._jobs.get(job_id)
        if job is None:
            raise CalibrationJobNotFound(f"no calibration job {job_id!r} (never started, or forgotten)")
        return job

    async def close(self) -> None:
        """Cancel running jobs (the server is stopping)."""
        for job in self._jobs.values():
            if job.task is not None and not job.task.done():
                job.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job.task

    async def _run(self, job: CalibrationJob, data: bytes, options: CalibrationOptions, user: str) -> None:
        runtime = self._runtime
        settings = runtime.settings
        folder = Path(tempfile.mkdtemp(prefix="calibrate-", dir=settings.data_dir))
        try:
            root = await runtime.run_offline(_unpack, data, folder, settings.max_snapshot_bytes)
            dataset = await runtime.run_offline(read_dataset, root)
            inside = folder.resolve()
            if any(not p.resolve().is_relative_to(inside) for p in dataset.files):
                raise DatasetError("the dataset's manifest names files outside the archive")
            job.stage, job.total = "embedding", len(dataset.files)
            embed = EmbedJob(
                model_dir=settings.model_dir,
                model_ids=options.model_ids,
                limits=AudioLimits.from_settings(settings),
                min_speech_s=settings.min_score_speech_s,
                telephone=options.simulate_telephone,
                max_chunk_s=settings.max_embed_chunk_s,
                int8=settings.int8,
            )
            biometrics = runtime.require_biometrics()
            results: list[FileResult] = []
            for path in dataset.files:
                results.append(await runtime.run_offline(embed_one, path, embed, biometrics))
                job.done += 1
            usable = [r for r in results if not r.error]
            failed = [r for r in results if r.error]
            if failed:
                first = failed[0]
                job.detail = f"{len(failed)} of {len(results)} recordings unusable (first: {first.path.relative_to(root)}: {first.error})"
            if not usable:
                raise DatasetError("no recording in the archive gave a voiceprint")
            channel = (
                Channel.TELEPHONE
                if options.simulate_telephone
                else channel_for_rate(int(np.median([r.source_rate_hz for r in usable])))
            )
            embedded = [EmbeddedSet(dataset, channel, tuple(results))]
            job.stage = "fitting"
            profile = await runtime.run_offline(
                fit_profile,
                embedded,
                options.model_ids,
                name=options.name,
                channel=channel,
                normalisation=options.normalisation,
                accept_far=options.accept_far,
                reject_frr=options.reject_frr,
                description=f"fitted in the console on {len(dataset.files)} recordings of "
                f"{len(set(dataset.speakers))} speakers",
            )
            job.stage = "scoring"
            report = await runtime.run_offline(_report, profile, embedded)
            profiles.check_fits(profile, engine_models(settings))
            info = await profiles.add_profile(runtime.store.sessions, profile)
            await profiles.set_report(runtime.store.sessions, info.uuid, asdict(report))
            await maintenance.record(runtime, "asp_calibrate", user, uuid=info.uuid, name=info.name)
            job.profile_uuid, job.report, job.stage = info.uuid, report, "done"
        except asyncio.CancelledError:
            job.stage, job.detail = "failed", "the server stopped"
            raise
        except (VoxgateError, ValueError) as exc:  # a dataset that cannot be fitted: the job says why
            job.stage, job.detail = "failed", str(exc) or type(exc).__name__
            log.info("calibration job failed", extra={"job": job.id, "detail": job.detail})
        except Exception as exc:  # never a silent job: the operator sees that it failed, the log says why
            job.stage, job.detail = "failed", f"internal error: {type(exc).__name__}"
            log.exception("calibration job failed", extra={"job": job.id})
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)
