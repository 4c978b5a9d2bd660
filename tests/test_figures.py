"""What the report's figures show, read back from the matplotlib Figure built from a table made by hand: each line's
points are the table's (x = S, NFE or seconds; y = FID), its error bars the block sd or the bootstrap interval, the
axis labels and legend name the series, and the log axis' tick labels are the plain values, minor ones unlabelled."""
import os

import numpy as np
import pytest
from PIL import Image

from ddim_bench.reporting import figures
from ddim_bench.reporting.reconstruction import mse_plot

ROWS = [  # two seed blocks (bars ±sd) for η = 0; one block (bars = bootstrap interval) for η = 1
    {"row": "η = 0", "steps": 10, "nfe": 10, "sec_per_image": 0.003, "fid": 30.0, "fid_n": 2, "fid_sd": 2.0},
    {"row": "η = 0", "steps": 20, "nfe": 20, "sec_per_image": 0.006, "fid": 20.0, "fid_n": 2, "fid_sd": 1.0},
    {"row": "η = 0", "steps": 50, "nfe": 50, "sec_per_image": 0.015, "fid": 12.0, "fid_n": 2, "fid_sd": 0.5},
    {"row": "η = 1", "steps": 10, "nfe": 10, "sec_per_image": 0.004, "fid": 45.0, "fid_n": 1, "fid_lo": 40.0,
     "fid_hi": 52.0},
    {"row": "η = 1", "steps": 50, "nfe": 50, "sec_per_image": 0.017, "fid": 18.0, "fid_n": 1, "fid_lo": 16.0,
     "fid_hi": 21.0},
]
FRONT = [{"nfe": 10, "fid": 30.0}, {"nfe": 20, "fid": 20.0}, {"nfe": 50, "fid": 12.0}]


def series(ax):
    """{legend label: (x, y, [(lo, hi)] of the error bars)} of the errorbar lines."""
    out = {}
    for c in ax.containers:
        line, _, (bars,) = c.lines
        out[c.get_label()] = (np.asarray(line.get_xdata()), np.asarray(line.get_ydata()),
                              [(seg[0][1], seg[1][1]) for seg in bars.get_segments()])
    return out


def tick_texts(ax, minor=False):
    lo, hi = ax.get_xlim()
    ticks = ax.xaxis.get_minorticklocs() if minor else ax.xaxis.get_majorticklocs()
    labels = ax.xaxis.get_ticklabels(minor=minor)
    return [lab.get_text() for t, lab in zip(ticks, labels) if lo <= t <= hi]


@pytest.mark.parametrize("x", ["steps", "nfe"])
def test_fid_against_steps_and_nfe_plots_the_tables_values(x):
    fig = figures.curve_figure(ROWS, x, "steps S", FRONT if x == "nfe" else None)
    fig.canvas.draw()
    ax = fig.axes[0]
    got = series(ax)
    assert list(got) == ["η = 0", "η = 1"]
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == sorted(
        ["η = 0", "η = 1"] + (["best at ≤ k calls"] if x == "nfe" else []))
    for k, name in enumerate(got):
        xs, ys, bars = got[name]
        table = [r for r in ROWS if r["row"] == name]
        shift = np.exp((k - 0.5) * figures.DODGE)  # two series drawn a little apart on the log axis
        assert xs == pytest.approx([r[x] * shift for r in table])
        assert ys == pytest.approx([r["fid"] for r in table])
        want = [(r["fid"] - r["fid_sd"], r["fid"] + r["fid_sd"]) if r["fid_n"] > 1 else (r["fid_lo"], r["fid_hi"])
                for r in table]
        assert np.asarray(bars) == pytest.approx(np.asarray(want))
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "steps S (series dodged sideways)"
    assert ax.get_ylabel() == "FID (lower is better)"
    assert tick_texts(ax) == ["10", "20", "50"] and set(tick_texts(ax, minor=True)) <= {""}
    if x == "nfe":
        (front,) = [ln for ln in ax.get_lines() if ln.get_label() == "best at ≤ k calls"]
        assert list(front.get_xdata()) == [10, 20, 50] and list(front.get_ydata()) == [30.0, 20.0, 12.0]


def test_fid_against_seconds_has_plain_ticks_that_do_not_overlap():
    """The seconds axis was labelled at every minor tick ("3×10⁻³4×10⁻³", overlapping)."""
    fig = figures.curve_figure(ROWS, "sec_per_image", "seconds per image")
    fig.canvas.draw()
    ax = fig.axes[0]
    xs, ys, _ = series(ax)["η = 1"]
    assert list(xs) == [0.004, 0.017] and list(ys) == [45.0, 18.0]  # seconds are not dodged
    assert ax.get_xlabel() == "seconds per image"
    major = tick_texts(ax)
    assert major and all(t and "times" not in t and "$" not in t and "10^" not in t for t in major), major
    assert [float(t) for t in major] == pytest.approx(
        [v for v in ax.xaxis.get_majorticklocs() if ax.get_xlim()[0] <= v <= ax.get_xlim()[1]])
    assert set(tick_texts(ax, minor=True)) <= {""}
    boxes = [lab.get_window_extent() for lab in ax.xaxis.get_ticklabels() if lab.get_text() and lab.get_visible()
             and ax.get_xlim()[0] <= lab.get_position()[0] <= ax.get_xlim()[1]]
    assert len(boxes) >= 2
    assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:])), "tick labels overlap"


def test_nfe_ticks_close_on_the_log_axis_do_not_overlap():
    """A samplers sweep has NFE 19 (PNDM, Heun at S = 10) beside 20: their labels were drawn as one "1920"."""
    rows = [{"row": name, "nfe": n, "fid": 1.0 / n, "fid_n": 1} for name, ns in
            (("η = 0", (5, 9, 10, 14, 19, 20, 29, 39)), ("heun", (9, 19, 39)), ("pndm", (14, 19, 29)))
            for n in ns]
    fig = figures.curve_figure(rows, "nfe", "network calls (NFE)")
    fig.canvas.draw()
    ax = fig.axes[0]
    assert tick_texts(ax) == ["5", "9", "10", "14", "20", "29", "39"]  # 19 gives way to the round 20
    boxes = [lab.get_window_extent() for lab in ax.xaxis.get_ticklabels() if lab.get_text()]
    assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:])), "tick labels overlap"


def test_curves_writes_one_png_per_axis_and_no_temporary(tmp_path):
    paths = figures.curves(ROWS, str(tmp_path), FRONT, suffix="-n16")
    assert sorted(paths) == ["fid_vs_nfe-n16", "fid_vs_steps-n16", "fid_vs_time-n16"]
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in paths.values())
    assert all(Image.open(p).format == "PNG" and Image.open(p).size == (660, 456) for p in paths.values())


def test_reconstruction_mse_plots_the_records_and_the_papers_numbers():
    from ddim_bench import paper
    recs = [{"steps": s, "mse": m, "skip": "uniform", "weights": "w", "dataset": "digits", "split": "test",
             "n_images": 8, "checkpoint_sha256": "0" * 64} for s, m in ((10, 0.02), (20, 0.01), (50, 0.004))]
    ax = mse_plot(recs).axes[0]
    ours, ref = ax.get_lines()
    assert list(ours.get_xdata()) == [10, 20, 50] and list(ours.get_ydata()) == [0.02, 0.01, 0.004]
    assert list(ref.get_xdata()) == sorted(paper.TABLE2) and list(ref.get_ydata()) == [
        paper.TABLE2[s] for s in sorted(paper.TABLE2)]
    assert ours.get_label().startswith("ours: ") and ref.get_label() == "paper, CIFAR-10 (reference)"
    assert (ax.get_xscale(), ax.get_yscale(), ax.get_xlabel(), ax.get_ylabel()) == (
        "log", "log", "steps S", "MSE on [0, 1]")
