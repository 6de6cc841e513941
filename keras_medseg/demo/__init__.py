"""The ``keras-medseg demo`` job: a registry of task stages and the report that links them.

Each task registers one stage with :func:`register_stage` in its own ``demo`` module and
adds that module's dotted path to :data:`STAGE_MODULES`. A stage runs its task's quick recipe
on sample data, writes everything under ``<out>/<stage name>/`` and returns a
:class:`StageResult`. A finished stage leaves ``stage_result.json``; re-running the demo
skips it (``force=True`` re-runs), so an interrupted demo resumes where it stopped.
"""
from __future__ import annotations

import dataclasses
import html
import importlib
import json
import shutil
import time
from pathlib import Path
from typing import Callable

from keras_medseg.utils import write_json, write_text

# Modules that register stages, imported on demand (in this order).
STAGE_MODULES = [
    "keras_medseg.demo.metrics_stage",
    "keras_medseg.nerve.demo",
    "keras_medseg.nerve.seg_demo",
    "keras_medseg.brainview.demo",
    "keras_medseg.nodule3d.demo",
    "keras_medseg.iseg.demo",
    "keras_medseg.neurotrace.demo",
]


@dataclasses.dataclass
class Artifact:
    """One output a stage wants in the report: ``kind`` is "figure", "table" or "file"."""

    title: str
    path: str  # relative to the stage folder
    kind: str = "file"


@dataclasses.dataclass
class StageResult:
    summary: str  # markdown shown under the stage heading
    artifacts: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0


@dataclasses.dataclass
class Stage:
    name: str
    func: Callable
    description: str
    order: int


_STAGES: dict[str, Stage] = {}


def register_stage(name, *, description, order=100):
    """Decorator registering ``func(stage_dir: Path, *, seed: int, quick: bool) -> StageResult``."""

    def deco(func):
        if name in _STAGES and _STAGES[name].func is not func:
            raise ValueError(f"demo stage {name!r} is registered twice")
        _STAGES[name] = Stage(name, func, description, order)
        return func

    return deco


def available_stages():
    """Import every stage module and return the stages in run order."""
    for mod in STAGE_MODULES:
        importlib.import_module(mod)
    return sorted(_STAGES.values(), key=lambda s: (s.order, s.name))


def run_demo(out_dir="runs/demo", *, stages=None, seed=0, quick=True, force=False, log=print):
    """Run the selected stages (all by default) and write ``report.md`` / ``report.html``.

    Returns the path of ``report.md``.
    """
    out_dir = Path(out_dir)
    all_stages = available_stages()
    names = [s.name for s in all_stages]
    if stages:
        unknown = sorted(set(stages) - set(names))
        if unknown:
            raise ValueError(f"stages: unknown stage(s) {unknown}; available: {names}")
        selected = [s for s in all_stages if s.name in stages]
    else:
        selected = all_stages
    results = {}
    for stage in selected:
        stage_dir = out_dir / stage.name
        marker = stage_dir / "stage_result.json"
        if marker.exists() and not force:
            log(f"[demo] {stage.name}: already done, skipping (use --force to re-run)")
            results[stage.name] = _load_result(marker)
            continue
        log(f"[demo] {stage.name}: {stage.description}")
        if force and stage_dir.exists():
            # a forced re-run starts from scratch: the stages' runners would otherwise
            # resume (or skip) training finished in this folder
            shutil.rmtree(stage_dir)
        stage_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        result = stage.func(stage_dir, seed=seed, quick=quick)
        result.seconds = time.perf_counter() - t0
        write_json(marker, dataclasses.asdict(result))
        log(f"[demo] {stage.name}: done in {result.seconds:.1f} s")
        results[stage.name] = result
    # Stages finished in earlier runs but not selected now still belong in the report.
    for stage in all_stages:
        marker = out_dir / stage.name / "stage_result.json"
        if stage.name not in results and marker.exists():
            results[stage.name] = _load_result(marker)
    order = [s.name for s in all_stages if s.name in results]
    report = write_report(out_dir, [(n, results[n]) for n in order])
    log(f"[demo] report: {report.resolve()}")
    return report


def _load_result(marker):
    data = json.loads(Path(marker).read_text())
    data["artifacts"] = [Artifact(**a) for a in data.get("artifacts", [])]
    return StageResult(**data)


def write_report(out_dir, named_results):
    """Write ``report.md`` and ``report.html`` linking every artifact; return report.md."""
    out_dir = Path(out_dir)
    md = ["# keras_medseg demo report", ""]
    body = ["<h1>keras_medseg demo report</h1>"]
    for name, res in named_results:
        md += [f"## {name}", "", res.summary.strip(), "", f"_Stage time: {res.seconds:.1f} s_", ""]
        body += [f"<h2>{html.escape(name)}</h2>", _md_to_html(res.summary),
                 f"<p><em>Stage time: {res.seconds:.1f} s</em></p>"]
        for a in res.artifacts:
            a = a if isinstance(a, Artifact) else Artifact(**a)
            rel = f"{name}/{a.path}"
            if a.kind == "figure":
                md += [f"### {a.title}", "", f"![{a.title}]({rel})", ""]
                body.append(f"<h3>{html.escape(a.title)}</h3><img src='{html.escape(rel)}' "
                            f"style='max-width:100%'>")
            elif a.kind == "table" and rel.endswith(".md") and (out_dir / rel).exists():
                md += [f"### {a.title}", "", (out_dir / rel).read_text().strip(), "",
                       f"([{a.path}]({rel}))", ""]
                body.append(f"<h3>{html.escape(a.title)}</h3>"
                            + _md_to_html((out_dir / rel).read_text())
                            + f"<p><a href='{html.escape(rel)}'>{html.escape(a.path)}</a></p>")
            else:
                md += [f"- [{a.title}]({rel})"]
                body.append(f"<p><a href='{html.escape(rel)}'>{html.escape(a.title)}</a></p>")
        md.append("")
    write_text(out_dir / "report.md", "\n".join(md) + "\n")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>keras_medseg demo</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}</style>"
            "</head><body>" + "\n".join(body) + "</body></html>\n")
    write_text(out_dir / "report.html", page)
    return out_dir / "report.md"


def _md_to_html(text):
    """Tiny markdown subset (tables, paragraphs, bullet lines) for the HTML report."""
    out, table = [], []

    def flush():
        if table:
            rows = [r for r in table if not set(r.replace("|", "").strip()) <= set("-: ")]
            cells = [[html.escape(c.strip()) for c in r.strip().strip("|").split("|")] for r in rows]
            h = "".join(f"<th>{c}</th>" for c in cells[0])
            b = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in cells[1:])
            out.append(f"<table><tr>{h}</tr>{b}</table>")
            table.clear()

    for line in text.splitlines():
        if line.strip().startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("- "):
            out.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.startswith("#"):
            out.append(f"<h4>{html.escape(line.lstrip('#').strip())}</h4>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "\n".join(out)
