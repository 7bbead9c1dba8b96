"""benchmarks/targets.py: the issues' targets judged from result files."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from benchmarks import targets

REPO = Path(__file__).resolve().parents[2]


def kernel_row(op, provider, mode, shape, speedup, share=None, device="cpu", timing="wall"):
    return {"op": op, "provider": provider, "mode": mode, "shape": list(shape), "dtype": "torch.float32",
            "case": f"{op} {shape}", "device": device, "timing": timing, "speedup_vs_eager": speedup,
            "share_of_copy": share}


def write(folder: Path, name: str, doc: dict) -> None:
    (folder / name).write_text(json.dumps({"machine": "test machine", **doc}))


def judged(folder: Path, devices=("cpu", "gpu")) -> dict[str, tuple[str, str]]:
    return {t.text: (verdict, figures)
            for t, verdict, figures in targets.verdicts(targets.load_results(str(folder)), devices)}


def target(start: str) -> str:
    matches = [t.text for t in targets.TARGETS if t.text.startswith(start)]
    assert len(matches) == 1, (start, matches)
    return matches[0]


def test_met_missed_and_unmeasured_from_the_worst_row(tmp_path):
    write(tmp_path, "kernels_cpu.json", {"rows": [
        kernel_row("instance_norm_act", "cpu", "forward+backward", (1, 256, 64, 64), 2.4),
        kernel_row("instance_norm_act", "cpu", "forward+backward", (1, 64, 256, 256), 1.1),  # another shape: not this target's
        kernel_row("cycle_losses", "cpu", "forward+backward", (1, 3, 256, 256), 2.9),
        kernel_row("cycle_losses", "cpu", "forward+backward", (16, 3, 256, 256), 1.9),
        kernel_row("cycle_losses", "cpu", "forward", (16, 3, 256, 256), 0.5),  # forward alone: not judged
    ]})
    write(tmp_path, "kernels_nvidia-h200.json", {"rows": [
        kernel_row("instance_norm_act", "cuda", "forward", (16, 64, 256, 256), 3.5, 0.8, "cuda", "cuda graph"),
        kernel_row("instance_norm_act", "cuda", "forward", (16, 256, 64, 64), 3.3, 0.9, "cuda", "cuda graph"),
        # batch 1 (its tensors fit in L2): judged for the ratio to eager, not the share of copy bandwidth
        kernel_row("instance_norm_act", "cuda", "forward", (1, 64, 256, 256), 3.1, 0.1, "cuda", "cuda graph"),
    ]})
    got = judged(tmp_path)
    assert got[target("instance_norm_act forward+backward ≥2x")] == (
        "met", "2.40x (instance_norm_act 1x256x64x64 float32 forward+backward; kernels_cpu.json)")
    assert got[target("cycle_losses forward+backward ≥2x")][0] == "missed"
    assert got[target("cycle_losses forward+backward ≥2x")][1].startswith("worst of 2: 1.90x (cycle_losses 16x3x256x256")
    assert got[target("instance_norm_act forward ≥85%")] == (
        "missed", "worst of 2: 80% (instance_norm_act 16x64x256x256 float32 forward, timed cuda graph; "
                  "kernels_nvidia-h200.json)")
    assert got[target("instance_norm_act forward ≥3x")] == (
        "met", "worst of 3: 3.10x (instance_norm_act 1x64x256x256 float32 forward, timed cuda graph; "
               "kernels_nvidia-h200.json)")
    assert got[target("--loader dali ≥1.5x")] == ("unmeasured", "")
    assert got[target("cycle_losses ≥85%")] == ("unmeasured", "")


def timed_row(shape, mode, bytes_moved, seconds, copy_gb_per_s):
    gb_per_s = bytes_moved / seconds / 1e9
    return {**kernel_row("instance_norm_act", "cuda", mode, shape, 1.0, gb_per_s / copy_gb_per_s, "cuda",
                         "cuda graph"),
            "bytes": bytes_moved, "median_s": seconds, "gb_per_s": gb_per_s}


@pytest.mark.parametrize("speedup,verdict", [(2.0, "met"), (1.995, "missed")])
def test_a_figure_meets_a_target_from_its_threshold_on(tmp_path, speedup, verdict):
    write(tmp_path, "kernels_cpu.json", {"rows": [
        kernel_row("instance_norm_act", "cpu", "forward+backward", (1, 256, 64, 64), speedup)]})
    assert judged(tmp_path)[target("instance_norm_act forward+backward ≥2x")][0] == verdict


def test_the_fastest_level_target_does_not_count_eager_itself(tmp_path):
    """A level that is no faster than eager misses "the fastest level ≥5x", whatever eager's own
    row holds (an eager row carrying a ratio, as a file of another run might)."""
    rows = [{"level": "eager", "vs_eager": 9.0}, {"level": "default (fp32)", "vs_eager": 1.2}]
    write(tmp_path, "train_throughput_b1_nvidia-h200.json",
          {"results": [{"config": {"arch": "cyclegan", "size": 256, "batch": 1}, "rows": rows}]})
    assert judged(tmp_path)[target("the fastest level ≥5x")][0] == "missed"


def test_the_backward_share_is_what_forward_and_backward_add_to_the_forward(tmp_path):
    """No benchmark times the backward alone: its share of copy bandwidth is the bytes and the
    time the forward+backward row has beyond its case's forward row (2n bytes in 1 ms, then 3n
    more in 2 ms more: at 1,000 GB/s of copy, 3n / 2 ms / copy)."""
    n = 10**8
    write(tmp_path, "kernels_nvidia-h200.json", {"rows": [
        timed_row((16, 64, 256, 256), "forward", 2 * n, 1e-3, 1000.0),
        timed_row((16, 64, 256, 256), "forward+backward", 5 * n, 3e-3, 1000.0),
        timed_row((16, 256, 64, 64), "forward", 2 * n, 1e-3, 1000.0),
        timed_row((16, 256, 64, 64), "forward+backward", 5 * n, 2e-3, 1000.0),  # backward 3n in 1 ms: 30%
        timed_row((1, 256, 64, 64), "forward", 2 * n, 1e-3, 1000.0),  # batch 1: not judged
        timed_row((1, 256, 64, 64), "forward+backward", 5 * n, 1e-1, 1000.0),
        timed_row((16, 128, 128, 128), "forward+backward", 5 * n, 1e-1, 1000.0),  # no forward row: no figure
    ]})
    verdict, figures = judged(tmp_path)[target("instance_norm_act backward ≥70%")]
    assert verdict == "missed"
    assert figures == ("worst of 2: 15% (instance_norm_act 16x64x256x256 float32 backward (forward+backward less "
                       "forward), timed cuda graph; kernels_nvidia-h200.json)")


def test_gpu_training_target_takes_the_fastest_level_and_cpu_files_judge_only_cpu_targets(tmp_path):
    def train(rows, size, batch):
        return {"results": [{"config": {"arch": "cyclegan", "size": size, "batch": batch}, "rows": rows}]}

    levels = [{"level": "eager", "vs_eager": 1.0}, {"level": "default (fp32)", "vs_eager": 5.5},
              {"level": "fast", "vs_eager": 4.0, "share_of_datasheet_bf16_peak": 0.1}]
    write(tmp_path, "train_throughput_b1_nvidia-h200.json", train(levels, 256, 1))
    write(tmp_path, "train_throughput_cpu.json", train([{"level": "fast", "vs_eager": 3.2}], 256, 1))
    got = judged(tmp_path)
    assert got[target("the fastest level ≥5x")] == (
        "met", "5.50x (cyclegan 256² batch 1, level default (fp32); train_throughput_b1_nvidia-h200.json)")
    assert got[target("bf16 (--fast) ≥40%")] == ("unmeasured", "")  # batch 16 was not run
    assert got[target("--fast ≥3x")] == ("unmeasured", "")  # the CPU target's config is 128²
    assert set(judged(tmp_path, ("gpu",))) == {t.text for t in targets.TARGETS if t.device == "gpu"}


def test_a_newer_run_of_a_config_replaces_an_older_file_and_a_cut_run_is_incomplete(tmp_path):
    """The suite's tagged files beside an untagged one of an earlier run: the newest file of each
    config judges it. A best-of target missed by a run that did not time every planned level is
    unmeasured, not missed. A figure keeps the digits that put it on its side of the threshold."""
    def train(rows, date, planned=None):
        result = {"config": {"arch": "cyclegan", "size": 256, "batch": 1}, "rows": rows}
        if planned:
            result["levels_planned"] = planned
        return {"results": [result], "provenance": {"date": date}}

    write(tmp_path, "train_throughput_nvidia-h200.json", train([{"level": "default (fp32)", "vs_eager": 6.0}],
                                                               "2026-01-01T00:00:00+00:00"))
    write(tmp_path, "train_throughput_b1_nvidia-h200.json", train(
        [{"level": "eager", "vs_eager": 1.0}, {"level": "accelerate", "vs_eager": 2.996}],
        "2026-11-30T00:00:00+00:00", ["eager", "accelerate", "default (fp32)", "fast"]))
    verdict, figures = judged(tmp_path)[target("the fastest level ≥5x")]
    assert verdict == "unmeasured" and figures.startswith("incomplete (not timed: default (fp32), fast); best timed: ")
    assert "3.00x (cyclegan 256² batch 1, level accelerate; train_throughput_b1_nvidia-h200.json)" in figures
    assert targets.TARGETS[0]._format(1.996) == "1.996x" and targets.TARGETS[0]._format(2.4) == "2.40x"


def test_a_refused_level_completes_a_run_and_runs_of_ones_own_tag_are_not_judged(tmp_path):
    """A level the device refused has a row (an error): the run is complete and the target missed.
    A --size or --tag run of one's own beside make bench's file is not judged."""
    def train(rows, planned):
        return {"results": [{"config": {"arch": "cyclegan", "size": 256, "batch": 1}, "rows": rows,
                             "levels_planned": planned}]}

    write(tmp_path, "train_throughput_b1_tesla-v100.json", train(
        [{"level": "eager", "vs_eager": 1.0}, {"level": "default (fp32)", "vs_eager": 2.0},
         {"level": "fast", "error": "--amp bf16 needs compute capability 8.0"}], ["eager", "default (fp32)", "fast"]))
    write(tmp_path, "train_throughput_cyclegan256_b1_tesla-v100.json", train(
        [{"level": "eager", "vs_eager": 1.0}, {"level": "default (fp32)", "vs_eager": 9.0}], ["eager", "default (fp32)"]))
    assert judged(tmp_path)[target("the fastest level ≥5x")] == (
        "missed", "2.00x (cyclegan 256² batch 1, level default (fp32); train_throughput_b1_tesla-v100.json)")
    assert [targets.judged_file(n) for n in ("train_throughput_cpu.json", "train_throughput_b16_nvidia-h100.json",
                                             "train_throughput_pix2pix128_b1_cpu.json", "kernels_cpu.json")] == \
        [True, True, False, True]


def test_the_repositorys_results_give_a_verdict_for_every_target(tmp_path):
    text = targets.main(["--results", str(REPO / "benchmarks" / "results"), "--out", str(tmp_path)])
    assert (tmp_path / "targets.md").read_text() == text
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == len(targets.TARGETS)
    assert all(any(f"| {v} |" in row for v in ("met", "missed", "unmeasured")) for row in rows)
    assert f"of {len(targets.TARGETS)}." in text


def test_the_files_read_say_when_git_last_committed_them(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    write(tmp_path, "loader_cpu.json", {"results": []})
    assert targets.committed(str(tmp_path / "loader_cpu.json")) == ""  # not a git checkout
    git("init", "-q")
    assert targets.committed(str(tmp_path / "loader_cpu.json")) == "not committed"
    git("add", "loader_cpu.json")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "figures")
    (tmp_path / "other.txt").write_text("code")
    git("add", "other.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "code")
    assert re.fullmatch(r"committed [0-9a-f]{7,} \d{4}-\d\d-\d\d, 1 commits ago",
                        targets.committed(str(tmp_path / "loader_cpu.json")))
    write(tmp_path, "loader_cpu.json", {"results": [], "changed": True})
    assert targets.committed(str(tmp_path / "loader_cpu.json")) == "not committed"
    text = targets.markdown([], str(tmp_path), targets.load_results(str(tmp_path)))
    assert "loader_cpu.json (test machine; not committed)" in text


def test_a_results_folder_that_is_not_there_is_a_usage_error(tmp_path, capsys):
    for missing in (tmp_path / "nowhere", tmp_path / "a_file"):
        if missing.name == "a_file":
            missing.write_text("{}")
        with pytest.raises(SystemExit) as e:
            targets.main(["--results", str(missing)])
        assert e.value.code == 2 and f"--results {missing}: no such folder of result files" in capsys.readouterr().err


def test_an_unreadable_file_leaves_the_others_judged_and_a_ratio_without_its_baseline_is_unmeasured(tmp_path,
                                                                                                    capsys):
    write(tmp_path, "kernels_cpu.json", {"rows": [
        kernel_row("instance_norm_act", "cpu", "forward+backward", (1, 256, 64, 64), 2.4)]})
    (tmp_path / "train_throughput_cpu.json").write_text('{"machine": "cut while writ')
    write(tmp_path, "loader_cpu.json", {"rows": [{"loader": "dali", "vs_torch": float("nan"), "images_per_s": 9.0}]})
    got = judged(tmp_path)
    assert "train_throughput_cpu.json cannot be read" in capsys.readouterr().err
    assert got[target("instance_norm_act forward+backward ≥2x")][0] == "met"
    assert got[target("--loader dali ≥1.5x")] == ("unmeasured", "")
