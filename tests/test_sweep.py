"""``srkit sweep``: grid and crop parsing, sheet geometry, cell contents, errors, atomic output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from srkit import cli
from srkit.commands.sweep import cell_origin, contact_sheet, parse_crop, parse_grid
from srkit.errors import ConfigError
from srkit.io.images import from_float, read_rgb, to_float, write_image
from srkit.data.conditions import udvd_condition
from srkit.utils.device import torch_threads


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with torch_threads(1):
        yield


def test_parse_grid_forms():
    assert parse_grid("0.5:3:6", "--blur") == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert parse_grid("0,10,25", "--noise") == [0.0, 10.0, 25.0]
    assert parse_grid("1.6", "--blur") == [1.6]
    assert parse_grid("2:2:1", "--blur") == [2.0]
    for bad in ("1:2", "a,b", "1:2:0", "1:2:1.5", "", "nan"):
        with pytest.raises(ConfigError, match="--blur"):
            parse_grid(bad, "--blur")


def test_parse_crop_forms():
    assert parse_crop("10,20,30,40", 100, 200) == (10, 20, 30, 40)
    assert parse_crop("30x40+10+20", 100, 200) == (10, 20, 30, 40)
    assert parse_crop("50x20", 100, 200) == (75, 40, 50, 20)  # centred
    for bad in ("300x10", "10,10,195,10", "10,95,5,10", "0x5", "1x1+-1+0", "left"):
        with pytest.raises(ConfigError, match="--crop"):
            parse_crop(bad, 100, 200)


def test_contact_sheet_geometry_and_placement():
    blurs, noises = [0.5, 1.0, 2.0], [0, 15]
    cells = [[np.full((10, 40, 3), 10 * (3 * r + c + 1), np.uint8) for c in range(3)] for r in range(2)]
    sheet = contact_sheet(cells, blurs, noises, title="t", label_height=14, gap=4)
    assert sheet.shape == (14 + 2 * (14 + 10) + 4, 3 * 40 + 2 * 4, 3)
    for r in range(2):
        for c in range(3):
            y, x = cell_origin(r, c, (10, 40), 14, 14, 4)
            assert np.all(sheet[y : y + 10, x : x + 40] == 10 * (3 * r + c + 1))
            band = sheet[y - 14 : y, x : x + 40]
            assert band.max() > 160 and band.min() <= 32  # light text drawn on the dark label band


def _run(argv: list[str]) -> int:
    return cli.main(["sweep", *argv])


def test_cli_sheet_has_the_grid_and_the_model_outputs(tmp_path, capsys, tiny_model):
    from srkit.models.checkpoint import save_model

    rng = np.random.default_rng(0)
    src = tmp_path / "photo.png"
    write_image(src, (rng.random((10, 12, 3)) * 255).astype(np.uint8))
    # A trained-looking checkpoint with a non-default config: the sweep must rebuild it from the file.
    model = tiny_model("udvd-x2").eval()
    for p in model.parameters():
        p.data.add_(0.05 * torch.randn_like(p))  # make every cell depend visibly on its maps
    weights = save_model(model, tmp_path / "tiny.safetensors")
    out = tmp_path / "sheet.png"
    code = _run([str(src), "--weights", str(weights), "--blur", "0.5:2:3", "--noise", "0,25", "-o", str(out), "-q",
                 "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    sheet = read_rgb(out)
    cell_h, cell_w = 20, 24  # x2 output of the 10x12 input, unscaled
    label_h = max(14, min(32, cell_w // 10))
    assert sheet.shape == (label_h + 2 * (label_h + cell_h) + 4, 3 * cell_w + 2 * 4, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png", "sheet.png", "tiny.safetensors"]

    # Every cell (row = noise, column = blur) is the model's output for exactly those settings.
    x = torch.from_numpy(to_float(read_rgb(src))).permute(2, 0, 1)[None]
    for r, noise in enumerate([0.0, 25.0]):
        for c, blur in enumerate([0.5, 1.25, 2.0]):
            maps = torch.from_numpy(udvd_condition(10, 12, blur=blur, noise=noise))[None]
            with torch.no_grad():
                expected = from_float(model(x, maps).image[0].permute(1, 2, 0).numpy())
            y, x0 = cell_origin(r, c, (cell_h, cell_w), label_h, label_h)
            got = sheet[y : y + cell_h, x0 : x0 + cell_w]
            assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1, (r, c)
    cells = []
    for r, c in ((0, 0), (1, 2)):
        y, x0 = cell_origin(r, c, (cell_h, cell_w), label_h, label_h)
        cells.append(sheet[y : y + cell_h, x0 : x0 + cell_w])
    assert not np.array_equal(*cells)  # the settings matter, so the placement check above means something

    # --model must agree with the checkpoint.
    assert _run([str(src), "--weights", str(weights), "--model", "udvd-x4", "-o", str(tmp_path / "o.png")]) != 0
    assert "holds a udvd-x2 network but --model says udvd-x4" in capsys.readouterr().err


def test_cli_crop_and_cell_width(tmp_path, capsys):
    src = tmp_path / "big.png"
    write_image(src, np.full((40, 50, 3), 128, np.uint8))
    out = tmp_path / "s.png"
    assert _run([str(src), "--model", "udvd-x2", "--crop", "8x6+4+2", "--blur", "1", "--noise", "0,5",
                 "--cell-width", "32", "-o", str(out), "-q"]) == 0
    assert "no --weights" in capsys.readouterr().err
    sheet = read_rgb(out)
    # crop 8x6 -> output 16x12 -> resized to 32x24; label band = 14 px (32 // 10 < 14).
    assert sheet.shape == (14 + 2 * (14 + 24) + 4, 32, 3)


def test_cli_errors_are_one_line_and_leave_nothing(tmp_path, capsys):
    src = tmp_path / "p.png"
    write_image(src, np.zeros((6, 6, 3), np.uint8))
    out = tmp_path / "sheet.png"
    cases = [
        (["--model", "edvr-m"], "not conditioned on degradation maps"),
        (["--blur", "0,1"], "--blur: widths must be positive"),
        (["--noise", "300"], "0..255"),
        (["--crop", "7x7"], "outside"),
        (["--model", "udvd-x2", "--cell-width", "4000", "--blur", "1:2:3", "--noise", "0,1,2"], "--crop WxH"),
    ]
    for extra, message in cases:
        assert _run([str(src), "-o", str(out), "-q", *extra]) != 0
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not out.exists()
    assert _run([str(tmp_path / "missing.png"), "-o", str(out)]) != 0
    assert "missing.png: no such file" in capsys.readouterr().err
    out.write_bytes(b"keep")
    assert _run([str(src), "-o", str(out), "--model", "udvd-x2", "--blur", "1", "--noise", "0"]) != 0
    assert "output exists" in capsys.readouterr().err and out.read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png", "sheet.png"]  # no temporary left over


@pytest.mark.shared_data
def test_sweep_on_real_footage_crop(shared_data, tmp_path):
    frame = shared_data / "video_hr" / "set8" / "snowboard" / "00001.png"
    out = tmp_path / "real.png"
    assert _run([str(frame), "--model", "udvd-x2", "--crop", "24x16", "--blur", "0.5,2", "--noise", "0",
                 "-o", str(out), "-q"]) == 0
    assert read_rgb(out).shape == (14 + 14 + 32, 2 * 48 + 4, 3)


def test_cli_default_output_name_in_the_working_folder(tmp_path, monkeypatch, capsys):
    # The command line has no -o: the sheet goes to INPUT_STEM_sweep.png in the current folder.
    src_dir = tmp_path / "photos"
    src_dir.mkdir()
    src = src_dir / "photo.png"
    write_image(src, np.full((6, 7, 3), 90, np.uint8))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert _run([str(src), "--model", "udvd-x2", "--blur", "0.5,1", "--noise", "0", "-q"]) == 0
    assert sorted(p.name for p in work.iterdir()) == ["photo_sweep.png"]
    assert read_rgb(work / "photo_sweep.png").shape[1] == 2 * 14 + 4
    assert sorted(p.name for p in src_dir.iterdir()) == ["photo.png"]
    # A second run does not silently replace it.
    assert _run([str(src), "--model", "udvd-x2", "--blur", "1", "--noise", "0", "-q"]) != 0
    assert "exists" in capsys.readouterr().err


def test_engine_warnings_shown_once_not_per_cell(tmp_path, monkeypatch, caplog):
    import logging

    import srkit.infer.engine as engine

    # Stand-in for a once-per-run engine warning (e.g. emulated bf16 on a CPU without native support).
    monkeypatch.setattr(engine, "_warn_slow_precision", lambda dev, precision: engine.log.warning("slow %s", precision))
    src = tmp_path / "p.png"
    write_image(src, np.full((5, 6, 3), 30, np.uint8))
    with caplog.at_level(logging.WARNING, logger="srkit.infer.engine"):
        assert _run([str(src), "--model", "udvd-x2", "--blur", "0.5,1", "--noise", "0,5", "-q",
                     "-o", str(tmp_path / "s.png")]) == 0
    assert [r.getMessage() for r in caplog.records if r.name == "srkit.infer.engine"] == ["slow fp32"]
    assert logging.getLogger("srkit.infer.engine").level == logging.NOTSET  # restored
