"""Smoke test of the benchmark harness on a small generated dataset, as CI runs it."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import quality

TINY_HILANDER = '{"epochs": 2, "hidden": 32, "eval_every": 1, "batch_size": 256, "tau_grid": [0.3, 0.5, 0.7]}'
METRICS = ("pairwise_f", "bcubed_f", "nmi", "pairwise_precision", "pairwise_recall", "bcubed_precision", "bcubed_recall")


def test_harness_synthetic_two_methods(tmp_path, capsys):
    output = tmp_path / "quality.json"
    quality.main([
        "--synthetic", "400", "--synthetic-classes", "16",
        "--methods", "hilander", "agglomerative",
        "--hilander-params", TINY_HILANDER,
        "--output", str(output),
    ])
    report = json.loads(output.read_text())
    rows = report["rows"]
    assert [row["method"] for row in rows] == ["hilander", "agglomerative (average, cosine, threshold)"]
    assert report["hilander_params"]["epochs"] == 2
    for row in rows:
        assert row["dataset"] == "synthetic-400"
        assert len(row["runs"]) == 1
        for key in METRICS:
            value = row["metrics"][key]
            assert 0.0 <= value <= 1.0, (row["method"], key, value)
        assert row["metrics"]["n_classes"] >= 2
        assert row["metrics"]["n_clusters"] >= 1
        assert not math.isnan(row["seconds"])

    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].startswith("| dataset | method | setting |")
    assert table[1] == "|" + "---|" * 11
    assert len(table) == 2 + len(rows)
    assert table[2].startswith("| synthetic-400 | hilander | k=")


def test_harness_seeds_give_runs(tmp_path, capsys):
    output = tmp_path / "quality.json"
    quality.main(["--synthetic", "300", "--methods", "kmeans", "dbscan", "--seeds", "0", "1", "--output", str(output)])
    rows = json.loads(output.read_text())["rows"]
    # k-means runs once per seed, and DBSCAN, which has no seed, runs once.
    assert [len(row["runs"]) for row in rows] == [2, 1]
    assert rows[1]["setting"].startswith("tuned: eps=")


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"epochz": 2}', "unknown HiLander parameters: epochz"),
        ('{"random_state": 3}', "random_state is set from --seeds"),
    ],
)
def test_harness_rejects_bad_hilander_params(text, message, capsys):
    with pytest.raises(SystemExit):
        quality.main(["--synthetic", "300", "--hilander-params", text])
    assert message in capsys.readouterr().err


def test_harness_rejects_tiny_synthetic(capsys):
    with pytest.raises(SystemExit):
        quality.main(["--synthetic", "20"])
    assert "invalid synthetic dataset" in capsys.readouterr().err


def test_python_m_benchmarks_help():
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--help"], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m benchmarks")
    for option in ("--synthetic", "--hilander-params", "--methods", "--datasets", "--seeds", "--output"):
        assert option in result.stdout


def test_noise_variant_singleton_classes(clinc_root):
    plain = quality.load_benchmark_split("clinc150", clinc_root)
    noisy = quality.load_benchmark_split(quality.WITH_NOISE, clinc_root)
    assert noisy.train_features.shape == plain.train_features.shape
    added = noisy.test_labels.shape[0] - plain.test_labels.shape[0]
    assert added == 1200
    assert noisy.test_labels.min() >= 0
    # 50 intents plus one singleton class per out-of-scope query.
    assert len(set(noisy.test_labels.tolist())) == 50 + added


def test_cross_variant_split(clinc_root):
    cross = quality.load_benchmark_split(quality.CROSS, clinc_root)
    clinc = quality.load_benchmark_split("clinc150", clinc_root)
    banking = quality.load_benchmark_split("banking77", clinc_root)
    assert cross.train_features.shape == clinc.train_features.shape
    assert cross.test_features.shape == banking.test_features.shape
    assert len(set(cross.test_labels.tolist())) == 26


def test_scaling_harness_small_sizes(tmp_path, capsys, monkeypatch):
    from benchmarks import scaling

    # The children are separate processes started from the repository root.
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    output, figure = tmp_path / "scaling.json", tmp_path / "scaling.png"
    scaling.main([
        "--sizes", "300", "600", "--methods", "hilander", "kmeans", "--budget", "120",
        "--train-samples", "600", "--hilander-params", TINY_HILANDER,
        "--exact-check", "600", "--cache", str(tmp_path / "cache"),
        "--output", str(output), "--plot", str(figure),
    ])
    report = json.loads(output.read_text())
    assert [(run["method"], run["n"]) for run in report["runs"]] == [
        ("hilander", 300), ("kmeans", 300), ("hilander", 600), ("kmeans", 600),
    ]
    for run in report["runs"]:
        result = run["result"]
        assert result["status"] == "done", result
        assert result["peak_memory"] > result["input_bytes"] > 0
        assert 0.0 <= result["metrics"]["pairwise_f"] <= 1.0
    levels = report["runs"][0]["result"]["stages"]["levels"]
    assert levels[0]["nodes"] == 300
    assert levels[0]["knn_method"] == "exact"
    assert [check["knn_method"] for check in report["exact_check"]] == ["exact", "ivf"]
    assert report["exact_check"][1]["result"]["stages"]["levels"][0]["recall"] > 0.5
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| hilander | 600 | done |" in capsys.readouterr().out


def test_scaling_marks_over_budget_runs():
    from benchmarks import scaling

    result = scaling.launch({"method": "kmeans", "n": 2_000_000, "parameter": None}, budget=2)
    assert result == {"status": "over budget", "seconds": 2}
    table = scaling.scaling_table([{"method": "kmeans", "n": 2_000_000, "result": result}])
    assert "| kmeans | 2,000,000 | over budget (budget 2 s) |" in table


def test_omniglot_harness_small(tmp_path, capsys):
    from benchmarks import omniglot
    from hilander.images import load_omniglot

    try:
        load_omniglot("evaluation")
    except FileNotFoundError as error:
        pytest.skip(str(error))
    output = tmp_path / "omniglot.json"
    params = '{"encoder_epochs": 1, "lander": {"epochs": 1, "hidden": 16, "validation_folds": 1, "train_knn": [[5, 2]]}}'
    omniglot.main(["--classes", "40", "--baselines", "kmeans", "--pipeline-params", params, "--output", str(output)])
    rows = json.loads(output.read_text())["rows"]
    assert [(row["dataset"], row["method"]) for row in rows] == [
        ("omniglot (pixels to clusters)", "hilander"),
        ("omniglot (learned features)", "k-means (true k, oracle)"),
        ("omniglot (raw pixels)", "k-means (true k, oracle)"),
    ]
    for row in rows:
        assert row["metrics"]["n_classes"] == 40
        assert 0.0 <= row["metrics"]["pairwise_f"] <= 1.0
    assert "| omniglot (raw pixels) |" in capsys.readouterr().out
