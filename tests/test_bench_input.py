"""The input benchmark end to end on tiny folders (its numbers are checked by hand)."""

import bench_input


def test_bench_input_runs_and_reports(tmp_path, capsys):
    rows, rate = bench_input.main(["--sizes=30,60", "--loadings=stream", "--image_size=8",
                                   "--batch=8", f"--work_dir={tmp_path}"])
    assert [(r["images"], r["loading"]) for r in rows] == [(30, "stream"), (60, "stream")]
    assert all(r["peak_mib"] > 50 and r["step_images_per_s"] > 0 for r in rows)
    assert rate > 0
    out = capsys.readouterr().out
    assert "[bench_input] 2/2 60 images, stream" in out  # progress: run i of n, time left
    assert "stream: peak memory x" in out and "the training step's" in out
    assert len(list((tmp_path / "png60").rglob("*.png"))) == 60
