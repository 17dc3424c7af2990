"""report.md and the rich table show the same figures as report.json."""

import io

from rich.console import Console

from kdcli.pipeline.report import flops_label, markdown, summary_lines, table, warnings, write


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
    assert "KD gain +5.00 pts: student - baseline top-1" in text
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


def with_interval(report, gain=0.011, ci=(0.003, 0.019), p=0.0123, only=(6, 2)):
    report.update(
        kd_gain=gain,
        kd_gain_ci=list(ci),
        kd_gain_p=p,
        kd_gain_images={"student_only": only[0], "baseline_only": only[1], "total": 360},
    )
    return report


def test_gain_is_printed_with_its_interval_and_p_value():
    lines = summary_lines(with_interval(sample_report()))
    assert lines[0].startswith("KD gain +1.10 pts (95% CI +0.30 to +1.90, p = 0.012): ")
    assert "360 test images; the student alone gets 6 right, the baseline alone 2" in lines[0]
    tiny_p = summary_lines(with_interval(sample_report(), p=1e-9))[0]
    assert "p < 0.001" in tiny_p


def test_ece_is_a_row_of_the_table():
    report = sample_report()
    for role, ece in (("teacher", 0.01), ("student", 0.025), ("baseline", 0.1)):
        report[role]["ece"] = ece
    assert "| calibration error (ECE) | 1.00% | 2.50% | 10.00% |" in markdown(report)


def test_no_warnings_for_a_good_teacher_and_an_insignificant_loss():
    report = with_interval(sample_report(), gain=-0.003, ci=(-0.01, 0.004), p=0.5)
    report["teacher"]["top1"] = 0.99
    assert warnings(report) == []


def test_a_teacher_below_the_baseline_student_is_flagged():
    report = sample_report()  # teacher 90%, baseline 90%: not below
    assert warnings(report) == []
    report["teacher"]["top1"] = 0.744
    [text] = warnings(report)
    assert "teacher weaker than the student alone" in text
    assert "74.40% top-1 on the test split" in text and "90.00%" in text


def test_the_validation_split_decides_when_there_is_one():
    report = sample_report()
    report["teacher"].update(top1=0.5, val_top1=0.95)  # test below, validation above
    report["baseline"]["val_top1"] = 0.93
    assert warnings(report) == []
    report["teacher"]["val_top1"] = 0.92
    assert "on the validation split" in warnings(report)[0]


def test_a_significantly_worse_student_is_flagged_not_an_insignificant_one():
    report = with_interval(sample_report(), gain=-0.05, ci=(-0.08, -0.02), p=0.003)
    report["teacher"]["top1"] = 0.99
    [text] = warnings(report)
    assert "distillation made the student worse: -5.00 points" in text and "p = 0.003" in text
    assert "loss.lmbda" not in text
    report["soft_labels"] = {"mode": "online", "on_policy": 0.5}
    assert "loss.temperature, loss.lmbda)" in warnings(report)[0]  # on-policy: name its share
    report["kd_gain_p"] = 0.06
    assert warnings(report) == []
    report.update(kd_gain=0.05, kd_gain_p=0.003)  # significantly better: fine
    assert warnings(report) == []


def test_warnings_go_to_the_terminal_and_report_md(tmp_path):
    report = sample_report()
    report["teacher"]["top1"] = 0.5
    report["warnings"] = warnings(report)
    with open(tmp_path / "out.txt", "w") as out:
        write(report, tmp_path, Console(file=out, width=200))
    printed = (tmp_path / "out.txt").read_text()
    assert "warning: teacher weaker than the student alone" in printed
    assert "## Warnings\n\n- teacher weaker than the student alone" in markdown(report)
    assert "## Warnings" not in markdown(sample_report())


def test_warnings_are_yellow_on_a_terminal(tmp_path):
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="standard", width=200)
    report = sample_report()
    report["warnings"] = ["something is off"]
    write(report, tmp_path, console)
    assert "\x1b[1;33mwarning: something is off" in out.getvalue()


def test_the_flops_row_says_what_they_were_counted_on():
    assert flops_label({"dataset": {"modality": "image", "image_size": 8}}) == "FLOPs / image"
    assert flops_label({}) == "FLOPs / image"  # reports from before the modality was recorded
    texts = {"dataset": {"modality": "labelled_text", "image_size": 52}}
    assert flops_label(texts) == "FLOPs / text of 52 tokens"
    windows = {"dataset": {"modality": "text", "image_size": 64}}
    assert flops_label(windows) == "FLOPs / window of 64 tokens"
