"""docs/QUALITY.md from a ``make quality`` run: what produced it, pooled figures per group, then every file."""

from __future__ import annotations

from typing import Any

from quality_metrics import Components, pooled

REPORTED = ("sample", "test")
"""Never tuned on: the figures that say how good the pipeline is."""
TUNING = ("development", "train")
"""Hyper-parameters may be chosen on these: their figures are optimistic."""

UNTRAINED = (
    "**These weights are random (untrained).** The figures below measure nothing about real accuracy: "
    "they show the harness works end to end on this pipeline directory."
)


def render(run: dict[str, Any]) -> str:
    model = run["model"]
    trained = "trained" if model["trained"] else "untrained (random weights)"
    clustering = ", ".join(f"{key} {value}" for key, value in run["clustering"].items() if key != "name")
    lines = [
        "# Diarization quality",
        "",
        f"Written by `make quality` on {run['started']} at commit {run['commit']}, {run['threads']} thread(s).",
        f"Pipeline directory `{run['model_dir']}`: model **{model['name']}** (revision {model['revision']}, "
        f"source {model['source']}), **{trained}**; clustering {run['clustering']['name']} ({clustering}); "
        f"pyannote.audio {run['pyannote_version']}.",
        "",
    ]
    if not model["trained"]:
        lines += [UNTRAINED, ""]
    lines += [
        "Data: excerpts of the [AMI Meeting Corpus](https://groups.inf.ed.ac.uk/ami/corpus/) (AMI Consortium; "
        "J. Carletta, 2006; [CC BY 4.0](https://creativecommons.org/licenses/by/4.0/)) and pyannote's 30 s sample, "
        "as shipped in the "
        "pyannote.audio 4.0.7 source distribution (`tests/data/`, pinned by sha256). 30 s per file.",
        "",
        "How it is scored (pyannote.metrics): DER = (missed + false alarm + confusion) / reference speech, overlapping "
        "speech scored, only inside each file's UEM (the sample, which has none: its whole length). The collar "
        f"column leaves {run['collar_seconds']} s either side of every reference boundary unscored (md-eval's "
        "convention). Group figures are pooled (summed seconds), not averaged. *with num_speakers*: the reference's "
        "speaker count given as the hint. *oracle clustering*: pyannote's OracleClustering decides which local "
        "speakers are one person, so what is left is the segmentation's error (no speech at all where every reference "
        "speaker is matched to a silent local speaker). *speech detection*: the segmentation "
        "model alone as speech/non-speech, no post-processing.",
        "",
        "## Overall",
        "",
        "Test and sample are never tuned on; train and development may be (`make quality QUALITY_ARGS=--tune`).",
        "",
        "| group | files | DER | DER, collar | missed | false alarm | confusion | DER with num_speakers | "
        "DER, oracle clustering | speech detection error | speaker count right |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    missing = []
    for group in (*REPORTED, *TUNING):
        members = [item for item in run["items"] if item["subset"] == group]
        if members:
            lines.append(_overall_row(group, members))
        else:
            missing.append(group)
    if missing:
        lines += ["", f"Not measured in this run: {', '.join(missing)}."]
    for title, groups in (("Test and sample (never tuned on)", REPORTED), ("Train and development", TUNING)):
        members = [item for item in run["items"] if item["subset"] in groups]
        if not members:
            continue
        lines += [
            "",
            f"## Per file — {title}",
            "",
            "| file | subset | speakers: reference / found / with hint | DER | DER, collar | missed | false alarm | "
            "confusion | DER with num_speakers | DER, oracle clustering | speech detection error |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [_file_row(item) for item in members]
    return "\n".join(lines) + "\n"


def _overall_row(group: str, members: list[dict[str, Any]]) -> str:
    def rate(condition: str, collar: str = "no_collar") -> float:
        return pooled([Components(**item["conditions"][condition][collar]) for item in members]).error_rate

    plain = pooled([Components(**item["conditions"]["pipeline"]["no_collar"]) for item in members])
    speech = pooled([Components(**item["speech"]) for item in members])
    right = sum(item["conditions"]["pipeline"]["speakers"] == item["reference_speakers"] for item in members)
    return (
        f"| {group} | {len(members)} | {_pct(plain.error_rate)} | {_pct(rate('pipeline', 'collar'))} | "
        f"{_pct(plain.rate('missed'))} | {_pct(plain.rate('false_alarm'))} | {_pct(plain.rate('confusion'))} | "
        f"{_pct(rate('num_speakers'))} | {_pct(rate('oracle'))} | "
        f"{_pct(speech.error_rate)} | {right} of {len(members)} |"
    )


def _file_row(item: dict[str, Any]) -> str:
    conditions = item["conditions"]
    plain = Components(**conditions["pipeline"]["no_collar"])
    return (
        f"| {item['uri']} | {item['subset']} | {item['reference_speakers']} / {conditions['pipeline']['speakers']} / "
        f"{conditions['num_speakers']['speakers']} | {_pct(plain.error_rate)} | "
        f"{_pct(Components(**conditions['pipeline']['collar']).error_rate)} | {_pct(plain.rate('missed'))} | "
        f"{_pct(plain.rate('false_alarm'))} | {_pct(plain.rate('confusion'))} | "
        f"{_pct(Components(**conditions['num_speakers']['no_collar']).error_rate)} | "
        f"{_pct(Components(**conditions['oracle']['no_collar']).error_rate)} | "
        f"{_pct(Components(**item['speech']).error_rate)} |"
    )


def _pct(rate: float) -> str:
    return f"{100 * rate:.1f} %"
