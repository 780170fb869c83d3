"""`grok-mini figures` renders every registered figure as a valid PNG; figures/ and the README gallery
hold exactly the registered figures."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import pytest

from grok_mini import cli
from grok_mini.teach import figures  # figures.render switches matplotlib to the Agg backend (files only)

ROOT = Path(__file__).parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_valid_png(path: Path):
    assert path.is_file(), f"{path} was not written"
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    pixels = matplotlib.image.imread(path)
    height, width = pixels.shape[:2]
    assert 200 <= height <= 2000 and 300 <= width <= 2500, f"{path}: implausible size {width}×{height}"
    assert pixels[..., :3].std() > 0.01, f"{path} is blank"


@pytest.mark.parametrize("name", list(figures.FIGURES))
def test_each_figure_renders_as_a_png(name, tmp_path):
    [path] = figures.render([name], tmp_path)
    assert path == tmp_path / f"{name}.png"
    assert_valid_png(path)


def test_cli_renders_into_the_folder_given(tmp_path, capsys):
    assert cli.main(["figures", "--only", "04_kv_cache_memory", "00_memory_per_gpu", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00_memory_per_gpu.png", "04_kv_cache_memory.png"]
    for path in tmp_path.iterdir():
        assert_valid_png(path)
    assert str(tmp_path / "04_kv_cache_memory.png") in capsys.readouterr().out


def test_cli_rejects_an_unknown_figure_in_one_line(tmp_path, capsys):
    assert cli.main(["figures", "--only", "no_such_figure", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "unknown figure(s) no_such_figure" in err and "00_memory_per_gpu" in err
    assert not any(tmp_path.iterdir())


def test_figures_folder_holds_exactly_the_registered_figures():
    committed = {p.stem for p in (ROOT / "figures").glob("*.png")}
    registered = set(figures.FIGURES)
    assert committed == registered, (f"run `grok-mini figures` and commit figures/: missing {registered - committed}, "
                                     f"not registered {committed - registered}")


def test_readme_gallery_shows_every_figure():
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in figures.FIGURES if f"figures/{name}.png" not in readme]
    assert not missing, f"README gallery lacks {missing}; `grok-mini figures --markdown` prints the entries"


def test_a_figure_name_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="registered twice"):
        figures.figure("00_memory_per_gpu", "again")(lambda: None)
