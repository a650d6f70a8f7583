"""The report of ``examples/rings.py`` (the exercise's deliverable, Sec. 5.2.1): every question of
Sec. 3.3 and 4.3 and the bonus quoted and answered in words, in three formats (Markdown, a
self-contained HTML page, an A4 PDF of at most 12 pages), rebuilt by ``--report-only``.

A quick run provides the figures and a results dictionary; the answers are then checked
in-process on synthetic variants of those results: different numbers must give different
text, and a flipped comparison must flip the conclusion."""
from __future__ import annotations

import copy
import io
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.common.report import Report, inline_spans  # noqa: E402
from examples.common.report_pdf import PageLimitError, pdf_bytes  # noqa: E402
from examples.rings_exercise.answers import ANSWERS, QUESTIONS  # noqa: E402
from examples.rings_exercise.report import REPORTS, build_report, render  # noqa: E402
from tests.example_runner import run_example_with_fault, shared_run  # noqa: E402
from tests.test_example_rings import QUICK_RUN, SCRIPT, run_rings  # noqa: E402

pypdf = pytest.importorskip("pypdf")

A4_POINTS = (595.28, 841.89)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """The quick run of test_example_rings (run once per session; read only here)."""
    out, result = shared_run(tmp_path_factory, "rings-quick", SCRIPT, *QUICK_RUN)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text())


def pdf_text(data: bytes) -> tuple:
    reader = pypdf.PdfReader(io.BytesIO(data))
    text = " ".join(page.extract_text() for page in reader.pages)
    return reader, " ".join(text.split())


def answer_text(r: dict, label: str) -> str:
    return " ".join(ANSWERS[label](r))


# --------------------------------------------------------------------------- the three files of a run
def test_quick_run_writes_markdown_html_and_pdf(quick_run):
    out, _ = quick_run
    for name in REPORTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 1000, name
    assert not list(out.glob("*.tmp"))


def test_pdf_opens_fits_twelve_a4_pages_and_marks_every_answer(quick_run):
    out, _ = quick_run
    reader, text = pdf_text((out / "report.pdf").read_bytes())
    assert 1 <= len(reader.pages) <= 12
    for page in reader.pages:
        assert float(page.mediabox.width) == pytest.approx(A4_POINTS[0], abs=1)
        assert float(page.mediabox.height) == pytest.approx(A4_POINTS[1], abs=1)
    assert len(QUESTIONS) == 14 and "Bonus" in QUESTIONS
    for label in QUESTIONS:
        assert f"Question ({label})" in text, label
        assert f"Answer ({label})" in text, label
        assert f"{label}:" in text, label  # the question's heading
    assert "Bonus: sampling (4, 5)" in text and "Best of N" in text and "sixth class" in text.lower()
    # the figures are in it, one image each
    images = sum(len(page.images) for page in reader.pages)
    assert images == len(json.loads((out / "results.json").read_text())["figures"])


def test_html_is_self_contained_and_phone_readable(quick_run):
    out, r = quick_run
    html = (out / "report.html").read_text(encoding="utf-8")
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]*)""", html, flags=re.I)
    assert refs and all(ref.startswith("data:") or ref.startswith("#") for ref in refs), refs[:5]
    assert "<link" not in html.lower() and "@import" not in html and "url(" not in html
    assert html.count("<img ") == len(r["figures"])
    assert 'name="viewport"' in html and "max-width:100%" in html
    for label in QUESTIONS:
        assert f"Question ({label})" in html and f"Answer ({label})" in html, label


def test_markdown_quotes_and_answers_every_question(quick_run):
    out, _ = quick_run
    md = (out / "report.md").read_text(encoding="utf-8")
    for label, wording in QUESTIONS.items():
        assert f"> **Question ({label}).** {wording}" in md, label
        assert f"**Answer ({label}).**" in md, label
    assert "quick smoke run" in md and "undertrained" in md  # a quick run says so, with the numbers


# --------------------------------------------------------------------------- generated, not fixed
def variant(r: dict, **changes) -> dict:
    """A deep copy of the results with ``path=value`` changes (``nf__q5__log_p=[...]``)."""
    r = copy.deepcopy(r)
    for path, value in changes.items():
        *keys, last = path.split("__")
        node = r
        for k in keys:
            node = node[k]
        node[last] = value
    return r


def test_different_numbers_give_different_answers(quick_run):
    out, r = quick_run
    a = variant(r, nf__q5__log_p=[-1.234, -1.5, -2.25, -7.75, -12.5], fm__q4_on_ring_by_dt={
        "0.002": 0.81, "0.02": 0.8, "0.05": 0.79, "0.1": 0.75, "0.2": 0.6})
    b = variant(r, nf__q5__log_p=[-2.875, -3.5, -2.625, -9.25, -20.5], fm__q4_on_ring_by_dt={
        "0.002": 0.55, "0.02": 0.55, "0.05": 0.54, "0.1": 0.55, "0.2": 0.56})
    for label in ("NF Q5", "FM Q4"):
        assert answer_text(a, label) != answer_text(b, label), label
    assert "-1.23" in answer_text(a, "NF Q5") and "-2.88" in answer_text(b, "NF Q5")
    assert "lose 21.0 points" in answer_text(a, "FM Q4") and "barely changes" in answer_text(b, "FM Q4")
    # the whole reports differ in those answers, in every format
    text_a, text_b = build_report(a, out).text(), build_report(b, out).text()
    assert "-1.23" in text_a and "-1.23" not in text_b


@pytest.mark.parametrize("label, change_a, change_b, says_a, says_b", [
    ("NF Q5", {"nf__q5__log_p": [-1.0, -1.2, -1.1, -5.0, -8.0]}, {"nf__q5__log_p": [-6.0, -7.0, -8.0, -1.0, -2.0]},
     "inside the logo are more likely", "inside the logo are less likely"),
    ("FM Q3", {"fm__q3_paths": {"length_ratio": 1.05, "step_cv": 0.2, "mean_length": 3.0},
               "nf__q4_paths": {"length_ratio": 2.5, "step_cv": 0.9, "mean_length": 3.0}},
     {"fm__q3_paths": {"length_ratio": 2.5, "step_cv": 0.9, "mean_length": 3.0},
      "nf__q4_paths": {"length_ratio": 1.05, "step_cv": 0.2, "mean_length": 3.0}},
     "flow-matching model's flow is the more consistent", "normalizing flow's paths are the more consistent"),
    ("FM Q1", {"fm__cfm_final_train_loss": 1.0, "fm__final_train_loss": 2.0},
     {"fm__cfm_final_train_loss": 3.0, "fm__final_train_loss": 2.0}, "loss is lower", "not lower here"),
    ("Conditional Q3", {"cfm__q3_on_any_ring": 0.95, "fm__samples_on_ring": 0.8},
     {"cfm__q3_on_any_ring": 0.7, "fm__samples_on_ring": 0.8}, "Conditioning helps", "does not help"),
    ("Conditional Q2", {"cfm__q2_landed": [True] * 5}, {"cfm__q2_landed": [True, False, True, True, False]},
     "All five points reach", "3 of 5 points reach their own ring; missed: black, green"),
    ("FM Q5", {"nf__q5__round_trip_error": [1e-7] * 5}, {"nf__q5__round_trip_error": [1e-7] * 4 + [0.5]},
     "The normalizing flow: yes", "The normalizing flow: only approximately"),
    ("Bonus", {"bonus__sixth_class__median_distance": 0.05}, {"bonus__sixth_class__median_distance": 0.5},
     "A sixth class (reached", "A sixth class (failed"),
    ("Bonus", {"bonus__best_of_n__best_distance": 0.05}, {"bonus__best_of_n__best_distance": 3.0},
     "Best of N ordinary samples (reached)", "Best of N ordinary samples (failed)"),
])
def test_a_flipped_comparison_flips_the_answer(quick_run, label, change_a, change_b, says_a, says_b):
    _, r = quick_run
    a, b = variant(r, **change_a), variant(r, **change_b)
    text_a, text_b = answer_text(a, label), answer_text(b, label)
    assert says_a in text_a and says_b not in text_a
    assert says_b in text_b and says_a not in text_b


def test_every_format_is_made_from_the_same_answers(quick_run):
    out, r = quick_run
    r = variant(r, nf__q5__log_p=[-1.0, -1.2, -1.1, -5.0, -8.0])
    files = render(build_report(r, out))
    _, pdf = pdf_text(files["report.pdf"])
    assert "inside the logo are more likely" in files["report.md"]
    assert "inside the logo are more likely" in files["report.html"]
    assert "inside the logo are more likely" in pdf


# --------------------------------------------------------------------------- --report-only
def snapshot(folder: Path) -> dict:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_report_only_rebuilds_the_reports_without_training(quick_run, tmp_path):
    out, _ = quick_run
    copy_dir = tmp_path / "run"
    shutil.copytree(out, copy_dir)
    for name in REPORTS:
        (copy_dir / name).unlink()
    before = {name: (copy_dir / name).stat().st_mtime_ns for name in ("nf.npz", "results.json")}
    result = run_rings("--report-only", "--out", copy_dir, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch" not in result.stdout and "[rings] rebuilt" in result.stdout
    assert {name: (copy_dir / name).stat().st_mtime_ns for name in before} == before
    answers = lambda md: [line for line in md.splitlines() if line.startswith("**Answer")]  # noqa: E731
    assert answers((copy_dir / "report.md").read_text()) == answers((out / "report.md").read_text())
    assert len(pypdf.PdfReader(copy_dir / "report.pdf").pages) <= 12


def _no_results(folder):
    (folder / "results.json").unlink()


def _partial_results(folder):
    r = json.loads((folder / "results.json").read_text())
    del r["bonus"]
    (folder / "results.json").write_text(json.dumps(r))


def _older_results(folder):
    r = json.loads((folder / "results.json").read_text())
    del r["bonus"]["sixth_class"]
    (folder / "results.json").write_text(json.dumps(r))


def _broken_json(folder):
    (folder / "results.json").write_text('{"settings": ')


def _missing_figure(folder):
    (folder / "fm_q4_time_steps.png").unlink()


@pytest.mark.parametrize("damage, message", [
    (_no_results, "no results.json in"),
    (_partial_results, "is incomplete, it has no bonus"),
    (_older_results, "is incomplete or from another version"),
    (_broken_json, "is not valid JSON"),
    (_missing_figure, "figures missing in"),
])
def test_report_only_on_a_partial_folder_fails_clearly_and_writes_nothing(quick_run, tmp_path, damage, message):
    out, _ = quick_run
    folder = tmp_path / "run"
    shutil.copytree(out, folder)
    for name in REPORTS:
        (folder / name).unlink()
    damage(folder)
    before = snapshot(folder)
    result = run_rings("--report-only", "--out", folder, timeout=300)
    assert result.returncode == 2
    assert message in result.stderr and "--report-only" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(folder) == before


def test_report_only_after_an_interrupted_run_refuses_the_mixed_folder(quick_run, tmp_path):
    """A --seed 1 run into the finished seed-0 folder, killed (SIGKILL) after it rewrote the checkpoints
    and nf_q1_loss.png: the seed-0 results.json does not belong to that figure, and --report-only
    must refuse (exit 2, one line) instead of quoting seed 0's numbers around seed 1's figure."""
    out, _ = quick_run
    folder = tmp_path / "run"
    shutil.copytree(out, folder)
    killed = run_example_with_fault(SCRIPT, "nf_q2_samples.png", "--quick", "--no-progress", "--seed", "1",
                                    "--out", folder, code=0)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (folder / "nf_q1_loss.png").read_bytes() != (out / "nf_q1_loss.png").read_bytes()  # seed 1's
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    result = run_rings("--report-only", "--out", folder, timeout=300)
    assert result.returncode == 2, result.stdout[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nf_q1_loss.png was written by another run" in lines[0], result.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the old (seed-0) reports kept


def test_report_only_refuses_results_without_a_figure_manifest(quick_run, tmp_path):
    out, _ = quick_run
    folder = tmp_path / "run"
    shutil.copytree(out, folder)
    r = json.loads((folder / "results.json").read_text())
    del r["figure_sha256"]
    (folder / "results.json").write_text(json.dumps(r))
    result = run_rings("--report-only", "--out", folder, timeout=300)
    assert result.returncode == 2 and "it has no figure_sha256" in result.stderr


@pytest.mark.parametrize("failing", ["report.md", "report.html", "report.pdf"])
def test_report_only_on_a_full_disk_keeps_the_old_report_set(quick_run, tmp_path, failing):
    """The disk is full as one of the three formats is written: exit 2 with one line naming that
    file, and the three old reports are left as they were (not one new beside two old)."""
    out, _ = quick_run
    folder = tmp_path / "run"
    shutil.copytree(out, folder)
    for name in REPORTS:  # an older report set, to see that none of it is replaced
        (folder / name).write_bytes(b"old " + name.encode())
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    result = run_example_with_fault(SCRIPT, failing, "--report-only", "--out", folder)
    assert result.returncode == 2
    assert result.stderr.strip() == f"rings.py: error: cannot write {folder / failing}: No space left on device"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # and no temporary file


def test_report_only_onto_a_folder_named_like_a_report_fails_clearly(quick_run, tmp_path):
    out, _ = quick_run
    folder = tmp_path / "run"
    shutil.copytree(out, folder)
    (folder / "report.html").unlink()
    (folder / "report.html").mkdir()
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    result = run_rings("--report-only", "--out", folder, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{folder / 'report.html'} is a folder" in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_report_only_on_a_missing_folder_creates_nothing(tmp_path):
    result = run_rings("--report-only", "--out", tmp_path / "nowhere", timeout=120)
    assert result.returncode == 2 and "is not a folder" in result.stderr
    assert not (tmp_path / "nowhere").exists()


def test_report_only_refuses_training_options(tmp_path):
    result = run_rings("--report-only", "--quick", "--out", tmp_path, timeout=120)
    assert result.returncode == 2 and "--report-only reads the run's own settings" in result.stderr
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the writers
def test_inline_markup_is_rendered_and_escaped_in_every_format(tmp_path):
    assert inline_spans("a **b** *c* `d` x * y") == [("", "a "), ("bold", "b"), ("", " "), ("italic", "c"),
                                                    ("", " "), ("code", "d"), ("", " x * y")]
    rep = Report("t <1>")
    rep.paragraph("run with `--reuse` and a__b, p < q, **strong** and *soft*")
    rep.answer("Q", ["first", "second"])
    html = rep.html()
    assert "<code>--reuse</code>" in html and "p &lt; q" in html and "<strong>strong</strong>" in html
    assert "<em>soft</em>" in html and "<title>t &lt;1&gt;</title>" in html
    md = rep.text()
    assert "**Answer (Q).** first\n\nsecond" in md
    _, text = pdf_text(pdf_bytes(rep))
    assert "--reuse" in text and "a__b" in text and "p < q" in text and "Answer (Q)." in text


def test_pdf_refuses_a_report_beyond_the_page_limit(quick_run):
    out, r = quick_run
    rep = build_report(r, out)
    with pytest.raises(PageLimitError, match="limit is 3"):
        pdf_bytes(rep, max_pages=3)
