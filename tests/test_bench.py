"""Smoke test of the benchmark harness on a small generated dataset, as CI runs it."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
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
    assert table[2].startswith("| synthetic-400 | hilander | epoch ")


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
    for option in ("--synthetic", "--hilander-params", "--methods", "--datasets", "--seeds", "--output", "--update-markdown"):
        assert option in result.stdout
    assert "python -m benchmarks report" in " ".join(result.stdout.split())


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
    # One line per hilander level; k-means has no levels.
    table = scaling.levels_table(report["runs"]).splitlines()
    level_count = sum(len(run["result"]["stages"]["levels"]) for run in report["runs"][::2])
    assert len(table) == 2 + level_count
    assert table[2].startswith("| 300 | 0 | 300 | exact |")
    assert "| (exact) |" in table[2]


def test_scaling_cache_follows_defaults(tmp_path, monkeypatch):
    from benchmarks import scaling
    from hilander import HiLander

    params = json.loads(TINY_HILANDER)
    cache = tmp_path / "cache"
    first = scaling.prepare(["hilander"], cache, params, train_samples=600)["hilander"]["model"]
    again = scaling.prepare(["hilander"], cache, params, train_samples=600)["hilander"]["model"]

    class NewDefaults(HiLander):
        """HiLander whose default of a parameter not named in ``params`` has changed."""

        def __init__(self, **kwargs):
            super().__init__(**{"lr": 0.05, **kwargs})

    monkeypatch.setattr(scaling, "HiLander", NewDefaults)
    changed = scaling.prepare(["hilander"], cache, params, train_samples=600)["hilander"]["model"]

    assert again == first
    assert changed != first
    assert len(list(cache.iterdir())) == 2


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
    except FileNotFoundError:
        pytest.skip("Omniglot not found: set HILANDER_DATA to the folder that contains omniglot/ to run this test")
    output = tmp_path / "omniglot.json"
    params = '{"encoder_epochs": 1, "lander": {"epochs": 1, "hidden": 16, "validation_folds": 1, "train_knn": [[5, 2]]}}'
    omniglot.main([
        "--classes", "40", "--baselines", "kmeans", "--pipeline-params", params, "--output", str(output),
        "--features-dir", str(tmp_path / "features"),
    ])
    rows = json.loads(output.read_text())["rows"]
    assert [(row["dataset"], row["method"]) for row in rows] == [
        ("omniglot (pixels to clusters)", "hilander"),
        ("omniglot (learned features)", "k-means (true k, oracle)"),
        ("omniglot (raw pixels)", "k-means (true k, oracle)"),
    ]
    for row in rows:
        assert row["metrics"]["n_classes"] == 40
        assert 0.0 <= row["metrics"]["pairwise_f"] <= 1.0
    assert 0.0 <= rows[0]["runs"][0]["metrics"]["validation_bcubed_f"] <= 1.0
    assert "| omniglot (raw pixels) |" in capsys.readouterr().out
    with np.load(tmp_path / "features" / "seed0.npz") as saved:
        # 40 evaluation classes of 20 drawings; the LANDER classes are those the encoder left out.
        assert saved["test"].shape[0] == saved["test_labels"].shape[0] == 800
        assert np.unique(saved["test_labels"]).shape[0] == 40
        assert saved["train"].shape[1] == saved["test"].shape[1]
        assert 2 <= np.unique(saved["train_labels"]).shape[0] < 40
        np.testing.assert_allclose(np.linalg.norm(saved["test"], axis=1), 1.0, atol=1e-5)


def test_omniglot_harness_keeps_finished_runs(tmp_path, monkeypatch):
    from benchmarks import omniglot
    from hilander.images import load_omniglot

    try:
        load_omniglot("evaluation")
    except FileNotFoundError:
        pytest.skip("Omniglot not found: set HILANDER_DATA to the folder that contains omniglot/ to run this test")

    def crash(*args, **kwargs):
        raise RuntimeError("baseline crashed")

    monkeypatch.setattr(omniglot, "run_baseline", crash)
    output = tmp_path / "omniglot.json"
    params = '{"encoder_epochs": 1, "lander": {"epochs": 1, "hidden": 16, "validation_folds": 1, "train_knn": [[5, 2]]}}'
    with pytest.raises(RuntimeError, match="baseline crashed"):
        omniglot.main(["--classes", "40", "--baselines", "kmeans", "--pipeline-params", params, "--output", str(output)])

    rows = json.loads(output.read_text())["rows"]
    assert [(row["dataset"], row["method"]) for row in rows] == [("omniglot (pixels to clusters)", "hilander")]
    assert rows[0]["runs"][0]["seed"] == 0


# ---------------------------------------------------------------------------- benchmarks.report

REPOSITORY = Path(__file__).resolve().parents[1]


def quality_row(dataset: str, method: str, pairwise_f: float) -> dict:
    """Return one row as benchmarks.quality writes it, with a single run."""
    metrics = {
        "pairwise_f": pairwise_f, "pairwise_f_range": [pairwise_f, pairwise_f],
        "bcubed_f": 0.5, "bcubed_f_range": [0.5, 0.5], "nmi": 0.6,
        "pairwise_precision": 0.7, "pairwise_recall": 0.8, "n_clusters": 9, "n_classes": 8,
    }
    return {"dataset": dataset, "method": method, "setting": "k=5", "metrics": metrics, "seconds": 3.0, "runs": [{}]}


def write_results(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rows": rows}))
    return path


def test_links_benchmark_scores_every_link_score(tmp_path, capsys):
    from benchmarks import links

    from conftest import blobs

    features, labels = blobs(num_classes=40, per_class=15, spread=0.9, seed=2)
    path = tmp_path / "features.npz"
    train = labels < 25
    np.savez(path, train=features[train], train_labels=labels[train], test=features[~train], test_labels=labels[~train])
    output = tmp_path / "links.json"
    links.main([
        "--features", str(path), "--k", "5", "10", "--output", str(output),
        "--hilander-params", '{"hidden": 16, "epochs": 2, "eval_every": 1, "tau_grid": [0.3, 0.6]}',
    ])
    results = json.loads(output.read_text())
    assert [row["k"] for row in results["rows"]] == [5, 10]
    for row in results["rows"]:
        assert set(row["auc"]) == {*links.VARIANTS, "cosine similarity", "shared-neighbour share"}
        assert all(0.0 <= auc <= 1.0 for auc in row["auc"].values()), row
        # The two scores that need no training rank these overlapping blobs well above chance.
        assert row["auc"]["cosine similarity"] > 0.6, row
        assert row["auc"]["shared-neighbour share"] > 0.6, row
        assert 0.0 < row["same_class_share"] < 1.0
    assert set(results["clusterings"]) == set(links.VARIANTS)
    for run in results["clusterings"].values():
        assert run["metrics"]["n_classes"] == 15
        assert run["metrics"]["pairwise_f"] > 0.3
    assert "AUC: shared-neighbour share" in capsys.readouterr().out


def test_report_replaces_only_marked_table(tmp_path):
    from benchmarks.report import update_markdown

    rows = [quality_row("toy", "hilander", 0.123), quality_row("toy", "k-means (true k, oracle)", 0.456)]
    write_results(tmp_path / "results" / "toy.json", rows)
    before = (
        "# Page\r\n\r\nText with trailing spaces   \r\n"
        "```\r\n<!-- results: results/missing.json -->\r\n```\r\n\r\n"
        "<!-- results: results/toy.json -->\r\n"
    )
    after = "<!-- /results -->\r\n\r\nClosing text, no final newline"
    markdown = tmp_path / "page.md"
    markdown.write_bytes((before + "| old | table |\r\n|---|---|\r\n" + after).encode())

    regions = update_markdown(markdown)

    text = markdown.read_bytes().decode()
    assert text.startswith(before)
    assert text.endswith(after)
    body = text[len(before):-len(after)]
    assert body == "\r\n" + quality.markdown_table(rows).replace("\n", "\r\n") + "\r\n\r\n"
    assert "| toy | hilander | k=5 | 1 | 0.123 |" in body
    assert [(region.line, region.changed) for region in regions] == [(8, True)]


def test_report_second_run_changes_nothing(tmp_path):
    from benchmarks.report import update_markdown

    write_results(tmp_path / "toy.json", [quality_row("toy", "hilander", 0.5)])
    markdown = tmp_path / "page.md"
    markdown.write_text("<!-- results: toy.json -->\n<!-- /results -->\n")
    update_markdown(markdown)
    first = markdown.read_bytes()

    regions = update_markdown(markdown)

    assert markdown.read_bytes() == first
    assert [region.changed for region in regions] == [False]


def test_report_missing_results_file(tmp_path):
    from benchmarks.report import ReportError, update_markdown

    write_results(tmp_path / "toy.json", [quality_row("toy", "hilander", 0.5)])
    markdown = tmp_path / "page.md"
    original = (
        "<!-- results: toy.json -->\n| stale |\n<!-- /results -->\n\n"
        "<!-- results: gone.json -->\n| stale |\n<!-- /results -->\n"
    ).encode()
    markdown.write_bytes(original)

    with pytest.raises(ReportError) as raised:
        update_markdown(markdown)

    message = str(raised.value)
    assert f"{markdown}:5:" in message
    assert "results file not found: gone.json" in message
    assert markdown.read_bytes() == original
    assert sorted(path.name for path in tmp_path.iterdir()) == ["page.md", "toy.json"]


@pytest.mark.parametrize(
    "marker, results, message",
    [
        ("<!-- results: odd.json -->", {"something": 1}, "unknown kind of results file: odd.json"),
        ("<!-- results: odd.json table=pie -->", {"rows": []}, "unknown table kind 'pie'"),
        ("<!-- results: odd.json table=knn -->", {"rows": [quality_row("toy", "hilander", 0.5)]}, "no data for a knn table"),
        ("<!-- results: odd.json colour=red -->", {"rows": []}, "unknown marker option 'colour'"),
        ("<!-- results: odd.json sizes=10 -->", {"rows": [quality_row("toy", "hilander", 0.5)]}, "sizes does not apply"),
        ("<!-- results: odd.json datasets=nope -->", {"rows": [quality_row("toy", "hilander", 0.5)]}, "datasets=nope matches no row"),
        ("<!-- results: odd.json methods=nope -->", {"rows": [quality_row("toy", "hilander", 0.5)]}, "unknown methods: nope"),
        ("<!-- results: odd.json -->", [1, 2], "contains a JSON list"),
    ],
)
def test_report_rejects_bad_marker(tmp_path, marker, results, message):
    from benchmarks.report import ReportError, update_markdown

    (tmp_path / "odd.json").write_text(json.dumps(results))
    markdown = tmp_path / "page.md"
    original = f"Intro\n\n{marker}\n| stale |\n<!-- /results -->\n".encode()
    markdown.write_bytes(original)

    with pytest.raises(ReportError) as raised:
        update_markdown(markdown)

    assert f"{markdown}:3:" in str(raised.value)
    assert message in str(raised.value)
    assert markdown.read_bytes() == original


@pytest.mark.parametrize(
    "text, message",
    [
        ("<!-- results: a.json -->\ntable\n", ":1: results marker is never closed"),
        ("table\n<!-- /results -->\n", ":2: closing marker"),
        ("<!-- results: a.json -->\n<!-- results: b.json -->\n<!-- /results -->\n", ":2: results marker opened again"),
        ("<!-- results: -->\n<!-- /results -->\n", ":1: results marker names no file"),
    ],
)
def test_report_rejects_unpaired_markers(tmp_path, text, message):
    from benchmarks.report import ReportError, update_markdown

    markdown = tmp_path / "page.md"
    markdown.write_text(text)
    with pytest.raises(ReportError, match=message):
        update_markdown(markdown)
    assert markdown.read_text() == text


def test_report_marker_options_filter_rows(tmp_path):
    from benchmarks.report import update_markdown

    rows = [
        quality_row("clinc150", "hilander", 0.1),
        quality_row("clinc150", "DBSCAN (cosine, tuned)", 0.2),
        quality_row("banking77", "hilander", 0.3),
    ]
    write_results(tmp_path / "q.json", rows)
    markdown = tmp_path / "page.md"
    markdown.write_text("<!-- results: q.json datasets=clinc150 methods=hilander,dbscan -->\n<!-- /results -->\n")

    update_markdown(markdown)

    assert markdown.read_text() == (
        "<!-- results: q.json datasets=clinc150 methods=hilander,dbscan -->\n\n"
        + quality.markdown_table(rows[:2]) + "\n\n<!-- /results -->\n"
    )


def test_report_quality_runs_table(tmp_path):
    from benchmarks.report import update_markdown

    row = quality_row("clinc150", "hilander", 0.25)
    run_metrics = {
        "pairwise_f": 0.25, "bcubed_f": 0.5, "nmi": 0.6, "n_clusters": 9, "n_classes": 8,
        "validation_pairwise_f": 0.75, "validation_bcubed_f": 0.8,
    }
    row["runs"] = [
        {"seed": 0, "setting": "epoch 5, k=5", "metrics": run_metrics, "seconds": 12.4},
        {"seed": 1, "setting": "epoch 10, k=10", "metrics": {**run_metrics, "pairwise_f": 0.35}, "seconds": 20.0},
    ]
    baseline = quality_row("clinc150", "k-means (true k, oracle)", 0.2)
    baseline_metrics = {key: value for key, value in run_metrics.items() if not key.startswith("validation")}
    baseline["runs"] = [{"seed": 0, "setting": "true k given", "metrics": baseline_metrics, "seconds": 1.0}]
    write_results(tmp_path / "q.json", [row, baseline])
    markdown = tmp_path / "page.md"
    markdown.write_text("<!-- results: q.json table=quality-runs -->\n<!-- /results -->\n")

    update_markdown(markdown)

    lines = markdown.read_text().splitlines()
    assert lines[2].startswith("| dataset | method | seed | setting |")
    assert lines[4] == "| clinc150 | hilander | 0 | epoch 5, k=5 | 0.250 | 0.500 | 0.600 | 9 (8) | 0.750 / 0.800 | 12 |"
    assert lines[5].startswith("| clinc150 | hilander | 1 | epoch 10, k=10 | 0.350 |")
    assert lines[6] == "| clinc150 | k-means (true k, oracle) | 0 | true k given | 0.250 | 0.500 | 0.600 | 9 (8) |  | 1 |"
    assert len(lines) == 9


def test_report_scaling_levels_table(tmp_path):
    from benchmarks.report import update_markdown

    def level(nodes, method, recall):
        return {
            "nodes": nodes, "knn_method": method, "knn_seconds": 2.0, "recall": recall,
            "gnn_seconds": 1.0, "decode_seconds": 0.5, "peak_memory": 2 * 1024**3,
        }

    hilander_run = {"status": "done", "stages": {"levels": [level(300_000, "ivf", 0.655), level(17_000, "exact", None)]}}
    runs = [
        {"method": "hilander", "n": 300_000, "result": hilander_run},
        {"method": "kmeans", "n": 300_000, "result": {"status": "over budget", "seconds": 600.0}},
        {"method": "hilander", "n": 10_000, "result": {**hilander_run, "stages": {"levels": [level(10_000, "exact", None)]}}},
    ]
    (tmp_path / "s.json").write_text(json.dumps({"runs": runs}))
    markdown = tmp_path / "page.md"
    markdown.write_text("<!-- results: s.json table=scaling-levels sizes=300000 -->\n<!-- /results -->\n")

    update_markdown(markdown)

    lines = markdown.read_text().splitlines()
    assert lines[2].startswith("| N | level | nodes | kNN method |")
    assert lines[4] == "| 300,000 | 0 | 300,000 | ivf | 2.0 | 0.655 | 1.0 | 0.5 | 2.00 |"
    assert lines[5] == "| 300,000 | 1 | 17,000 | exact | 2.0 | (exact) | 1.0 | 0.5 | 2.00 |"
    assert len(lines) == 8


def test_report_only_named_results(tmp_path):
    from benchmarks.report import update_markdown

    write_results(tmp_path / "a.json", [quality_row("a", "hilander", 0.5)])
    markdown = tmp_path / "page.md"
    untouched = "<!-- results: missing.json -->\n| kept |\n<!-- /results -->\n"
    markdown.write_text("<!-- results: a.json -->\n<!-- /results -->\n" + untouched)

    regions = update_markdown(markdown, only=[tmp_path / "a.json"])

    assert [region.written_path for region in regions] == ["a.json"]
    assert markdown.read_text().endswith(untouched)
    assert "| a | hilander |" in markdown.read_text()


def test_report_check_flags_stale_table(tmp_path, capsys):
    from benchmarks.__main__ import main

    write_results(tmp_path / "a.json", [quality_row("a", "hilander", 0.5)])
    markdown = tmp_path / "page.md"
    markdown.write_text("<!-- results: a.json -->\n| stale |\n<!-- /results -->\n")

    with pytest.raises(SystemExit) as raised:
        main(["report", "--markdown", str(markdown), "--check"])

    assert raised.value.code == 1
    assert markdown.read_text() == "<!-- results: a.json -->\n| stale |\n<!-- /results -->\n"
    assert "a.json: differs" in capsys.readouterr().out


def test_report_keeps_repository_figures(tmp_path):
    """Regenerating a copy of BENCHMARKS.md from the committed results must reproduce it exactly."""
    shutil.copy(REPOSITORY / "BENCHMARKS.md", tmp_path / "BENCHMARKS.md")
    shutil.copytree(REPOSITORY / "benchmarks" / "results", tmp_path / "benchmarks" / "results")

    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "report", "--markdown", str(tmp_path / "BENCHMARKS.md")],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=120,
    )

    assert result.returncode == 0, result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.endswith("marked tables, 0 changed"), result.stdout
    assert int(summary.split()[0]) >= 5
    assert (tmp_path / "BENCHMARKS.md").read_bytes() == (REPOSITORY / "BENCHMARKS.md").read_bytes()


def test_quality_update_markdown(tmp_path):
    output = tmp_path / "results" / "quality.json"
    markdown = tmp_path / "page.md"
    other = "<!-- results: results/other.json -->\n| kept |\n<!-- /results -->\n"
    markdown.write_text("Intro\n<!-- results: results/quality.json -->\n| stale |\n<!-- /results -->\n" + other)

    quality.main(["--synthetic", "300", "--methods", "dbscan", "--output", str(output), "--update-markdown", str(markdown)])

    rows = json.loads(output.read_text())["rows"]
    assert markdown.read_text() == (
        "Intro\n<!-- results: results/quality.json -->\n\n" + quality.markdown_table(rows) + "\n\n<!-- /results -->\n" + other
    )


def test_quality_update_markdown_needs_output(tmp_path, capsys):
    markdown = tmp_path / "page.md"
    markdown.write_text("Intro\n")
    with pytest.raises(SystemExit):
        quality.main(["--synthetic", "300", "--update-markdown", str(markdown)])
    assert "--update-markdown needs --output" in capsys.readouterr().err


def test_python_m_benchmarks_quality_subcommand(tmp_path):
    from benchmarks.__main__ import main

    output = tmp_path / "quality.json"
    main(["quality", "--synthetic", "300", "--methods", "dbscan", "--output", str(output)])
    assert json.loads(output.read_text())["rows"][0]["dataset"] == "synthetic-300"
