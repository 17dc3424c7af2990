"""report.md and the rich table show the same figures as report.json."""

from rich.console import Console

from kdcli.pipeline.report import markdown, summary_lines, table, write


def sample_report():
    model = {
        "top1": 0.9,
        "nll": 0.3,
        "params": 2_000_000,
        "flops": 4e6,
        "latency_ms": 2.0,
        "checkpoint_bytes": 2**20,
        "reused": False,
    }
    return {
        "seed": 0,
        "device": "cpu",
        "dataset": {"name": "digits"},
        "loss": {"name": "kd"},
        "teacher": {
            **model,
            "name": "resnet18",
            "params": 10_000_000,
            "latency_ms": 8.0,
            "reused": True,
        },
        "student": {**model, "name": "smallcnn", "top1": 0.95, "agreement": 0.97},
        "baseline": {**model, "name": "smallcnn", "agreement": 0.93},
        "kd_gain": 0.05,
        "compression": {"params": 5.0, "flops": 1.0, "latency_speedup": 4.0},
    }


def test_markdown_has_a_row_per_metric_and_the_summary():
    text = markdown(sample_report())
    assert "| top-1 accuracy | 90.00% | 95.00% | 90.00% |" in text
    assert "| computed or reused | reused | computed | computed |" in text
    assert "KD gain (student - baseline top-1): +5.00 points" in text
    assert "5.0x fewer parameters" in text


def test_without_baseline_there_is_no_baseline_column_or_gain():
    report = sample_report()
    del report["baseline"], report["kd_gain"]
    assert "baseline" not in markdown(report)
    assert not any("KD gain" in line for line in summary_lines(report))
    assert len(table(report).columns) == 3


def test_write_puts_json_and_markdown_in_the_run_dir(tmp_path):
    with open(tmp_path / "out.txt", "w") as out:
        write(sample_report(), tmp_path, Console(file=out, width=120))
    assert (tmp_path / "report.json").is_file() and (tmp_path / "report.md").is_file()
    assert not list(tmp_path.glob(".*tmp*"))
