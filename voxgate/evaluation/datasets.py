"""Labelled recordings for calibration: a folder with one sub-folder per speaker, or a manifest CSV."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voxgate.errors import VoxgateError

AUDIO_SUFFIXES = {
    ".wav",
    ".flac",
    ".ogg",
    ".opus",
    ".mp3",
    ".m4a",
    ".aac",
    ".webm",
    ".au",
    ".aiff",
    ".gsm",
    ".amr",
}


class DatasetError(VoxgateError):
    """A dataset that cannot be read as one sub-folder per speaker or a ``path,speaker`` manifest."""


@dataclass(frozen=True)
class Dataset:
    name: str
    files: tuple[Path, ...]
    speakers: tuple[str, ...]  # speaker of each file

    def pairs(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """Every unordered pair of distinct files: (pairs, 2) indices and whether they share a speaker."""
        i, j = np.triu_indices(len(self.files), k=1)
        labels = np.array(self.speakers)
        return np.stack([i, j], axis=1).astype(np.int64), labels[i] == labels[j]


def read_dataset(spec: Path) -> Dataset:
    if spec.is_file():
        return _from_manifest(spec)
    if not spec.is_dir():
        raise DatasetError(f"dataset {spec} is neither a folder nor a manifest CSV")
    manifest = spec / "manifest.csv"
    if manifest.exists():
        return _from_manifest(manifest, name=spec.name)
    files: list[Path] = []
    speakers: list[str] = []
    for folder in sorted(p for p in spec.iterdir() if p.is_dir()):
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in AUDIO_SUFFIXES:
                files.append(path)
                speakers.append(folder.name)
    return _checked(Dataset(spec.name, tuple(files), tuple(speakers)), spec)


def _from_manifest(path: Path, name: str | None = None) -> Dataset:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not {"path", "speaker"} <= set(reader.fieldnames or ()):
                raise DatasetError(f"{path}: a manifest needs columns path,speaker")
            rows = [(path.parent / row["path"], row["speaker"]) for row in reader]
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read manifest {path}: {exc}") from exc
    dataset = Dataset(name or path.parent.name, tuple(p for p, _ in rows), tuple(s for _, s in rows))
    return _checked(dataset, path)


def _checked(dataset: Dataset, where: Path) -> Dataset:
    if len(set(dataset.speakers)) < 2:
        raise DatasetError(f"{where}: calibration needs recordings of at least two speakers")
    counts = {s: dataset.speakers.count(s) for s in set(dataset.speakers)}
    if max(counts.values()) < 2:
        raise DatasetError(f"{where}: calibration needs at least one speaker with two or more recordings")
    return dataset
