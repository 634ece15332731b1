"""The benchmark page: ratios, equivalence columns and target verdicts come from the rows it is given.

The rows here are written by hand (measuring them takes hours; that is `make bench`); what is tested
is that the page reports them faithfully, including a deviation and targets it could not measure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from run import open_run, render


def row(tmp_path: Path, path: str, size: str, diarize: float, embeddings: np.ndarray, rttm: str, **extra: Any) -> dict:
    artifacts = tmp_path / f"{path}-{size}"
    np.save(f"{artifacts}.npy", embeddings)
    Path(f"{artifacts}.rttm").write_text(rttm)
    values = {
        "path": path,
        "size": size,
        "threads": 2,
        "import_torch_seconds": 2.0,
        "import_pyannote_seconds": 5.0,
        "load_seconds": 1.0,
        "cold_start_seconds": 8.0,
        "decode_seconds": 0.5,
        "segmentation_seconds": 0.1 * diarize,
        "embedding_seconds": 0.9 * diarize,
        "clustering_seconds": 0.5,
        "diarize_seconds": diarize,
        "real_time_factor": diarize / 600,
        "peak_rss_bytes": 1.2e9,
        "cpu_user_seconds": 2 * diarize,
        "cpu_system_seconds": 1.0,
        "speakers": 2,
        "artifacts": str(artifacts),
    }
    values.update(extra)
    return values


def test_page_reports_ratios_equivalence_and_targets(tmp_path: Path) -> None:
    embeddings = np.random.default_rng(0).normal(size=(10, 3, 256)).astype(np.float32)
    rows = [
        row(tmp_path, "upstream", "10min", 800.0, embeddings, "SPEAKER a\n"),
        row(tmp_path, "fast", "10min", 200.0, embeddings + 2e-7, "SPEAKER a\n", cold_start_seconds=7.2),
        row(tmp_path, "upstream", "30s", 30.0, embeddings, "SPEAKER a\n"),
        row(tmp_path, "fast", "30s", 10.0, embeddings + 1e-3, "SPEAKER b\n"),
        row(tmp_path, "fast", "60min", 1300.0, embeddings, "", peak_rss_bytes=1.6e9),
    ]
    page = render({"started": "2026-11-25 12:00 UTC", "commit": "abc1234", "model_dir": str(tmp_path), "rows": rows})

    assert "| 1 | 10min | 2 | 4.00 | 4.00 | 90% | 100% | 1144 | 2.4e-07 | 1.000000 | yes |" in page
    assert "| 1 | 30s | 2 | 3.00 | 3.00 | 100% | 100% | 1144 | 1.0e-03 | 0.999999 | NO |" in page
    assert "10min, 2 threads: 4.00× — **met** (run 1)" in page
    assert "60min, 2 threads: not measured" in page
    assert "largest difference 1.0e-03 — **not met**" in page
    assert "identical RTTM in every pair: **not met**" in page
    assert "cold start ≤ 50 % of upstream's: worst pair 100% — **not met**" in page
    assert "peak RSS ≤ 1.5 GB for 60 minutes: 1.60 GB — **not met**" in page
    assert "run 1 started 2026-11-25 12:00 UTC at commit abc1234" in page


def test_page_reports_bf16_rows_against_both_upstream_baselines_and_fp32(tmp_path: Path) -> None:
    embeddings = np.random.default_rng(0).normal(size=(10, 3, 256)).astype(np.float32)
    rounded = embeddings.copy()
    rounded[0, 0] = -embeddings[0, 0]  # one opposite embedding: the cosine column must show it
    rows = [
        row(tmp_path, "upstream", "10min", 800.0, embeddings, "SPEAKER a\n"),
        row(tmp_path, "upstream-batch32", "10min", 1600.0, embeddings, "SPEAKER a\n"),
        row(tmp_path, "fast", "10min", 200.0, embeddings, "SPEAKER a\n"),
        row(tmp_path, "fast-bf16", "10min", 100.0, rounded, "SPEAKER a\n", peak_rss_bytes=2**30),
    ]
    page = render({"started": "2026-11-25 12:00 UTC", "commit": "abc1234", "model_dir": str(tmp_path), "rows": rows})

    assert "## fast-bf16 vs upstream-batch32, same run" in page
    assert "| 1 | 10min | 2 | 16.00 | 16.00 | 100% | 89% | 1024 |" in page
    assert "## fast-bf16 vs upstream, same run" in page and "| 1 | 10min | 2 | 8.00 | 8.00 |" in page
    assert "## fast-bf16 vs fast, same run" in page and "| -1.000000 | yes |" in page
    assert "bf16 ≥ 8× faster than upstream defaults (batch 32), 10min, 2 threads: 16.00× — **met** (run 1)" in page
    assert "bf16 ≥ 8× faster than upstream defaults, 60min, 2 threads: not measured" in page
    assert "bf16 turns identical to fp32's in every pair: **met**" in page


def test_an_appended_run_keeps_the_earlier_rows_and_pairs_only_within_each_run(tmp_path: Path) -> None:
    embeddings = np.random.default_rng(0).normal(size=(10, 3, 256)).astype(np.float32)
    first = open_run(None, {"started": "2026-11-26 11:17 UTC", "commit": "aaa1111", "model_dir": str(tmp_path)})
    first["rows"] += [
        row(tmp_path, "upstream-batch32", "10min", 1600.0, embeddings, "SPEAKER a\n"),
        row(tmp_path, "fast-bf16", "10min", 100.0, embeddings, "SPEAKER a\n"),
        # Measured in the first run without its baseline: it must not pair with the later run's upstream row.
        row(tmp_path, "fast-bf16", "60min", 10.0, embeddings, "SPEAKER a\n"),
    ]
    saved = tmp_path / "results.json"
    saved.write_text(json.dumps(first))

    run = open_run(saved, {"started": "2026-11-27 09:00 UTC", "commit": "bbb2222", "model_dir": str(tmp_path)})
    number = len(run["appended"])
    run["rows"] += [
        row(tmp_path, "upstream-batch32", "60min", 9000.0, embeddings, "SPEAKER a\n", run=number),
        row(tmp_path, "fast-bf16", "60min", 600.0, embeddings, "SPEAKER a\n", run=number),
    ]
    page = render(run)

    assert number == 1 and len(run["rows"]) == 5
    assert "bf16 ≥ 8× faster than upstream defaults (batch 32), 10min, 2 threads: 16.00× — **met** (run 1)" in page
    assert "bf16 ≥ 8× faster than upstream defaults (batch 32), 60min, 2 threads: 15.00× — **met** (run 2)" in page
    assert "| 2 | 60min | 2 | 15.00 |" in page and "| 1 | 60min | 2 | 900.00 |" not in page
    assert "run 1 started 2026-11-26 11:17 UTC at commit aaa1111" in page
    assert "run 2 started 2026-11-27 09:00 UTC at commit bbb2222" in page
    assert "| 2 | fast-bf16 | 60min | 2 |" in page and "| 1 | fast-bf16 | 60min | 2 |" in page


def test_without_an_earlier_file_appending_starts_the_first_run(tmp_path: Path) -> None:
    facts = {"started": "2026-11-26 11:17 UTC", "commit": "aaa1111", "model_dir": str(tmp_path)}
    assert open_run(tmp_path / "absent.json", facts) == {**facts, "rows": []}


def test_fanout_page_reports_the_rows_and_models_cost_from_list_prices() -> None:
    import fanout

    shards = [{"chunks": 300, "wall_seconds": 120.0, "cpu_seconds": 230.0, "part_bytes": 10}] * 2
    run = {
        "started": "2026-11-26 09:00 UTC",
        "commit": "abc1234",
        "threads": 2,
        "batch_sizes": [4, 1],
        "cold_start_seconds": 8.0,
        "warm_up_seconds": 3.0,
        "rows": [
            {
                "size": "10min",
                "audio_seconds": 600.0,
                "chunks": 600,
                "shards": shards,
                "reduce_wall_seconds": 1.0,
                "reduce_cpu_seconds": 1.5,
                "speakers": 2,
                "rttm_sha256": "0123456789ab",
            }
        ],
    }
    page = fanout.render(run)
    assert "| 10min | 600 | 2 | 120.0 + 120.0 | 230.0 + 230.0 | 1.00 | 1.50 | 241.0 | 461.5 | 0.400 | 0.767 |" in page

    one_hour = fanout.model(0.8, 1.0 / 600, 1.0, fanout.Assumptions())
    assert (one_hour["chunks"], one_hour["shards"], one_hour["transitions"]) == (3591, 6, 6 + 3 * 6)
    assert one_hour["shard_wall"] == pytest.approx(10.0 + 600 * 0.8 / 6)
    gb_seconds = 10.0 * (6 * one_hour["shard_wall"] + one_hour["reduce_wall"] + 2.0)
    assert one_hour["gb_seconds"] == pytest.approx(gb_seconds)
    assert one_hour["cost_x86"] == pytest.approx(gb_seconds * 0.0000166667 + one_hour["cost_other"])
    assert one_hour["cost_other"] == pytest.approx(9 * 0.2e-6 + 24 * 0.025e-3 + 10 * 0.005e-3 + 19 * 0.0004e-3)
    assert "| 1 h | 3,591 | 6 |" in page and "| 4 h | 14,391 | 24 |" in page
