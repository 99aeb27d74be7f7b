"""The HTML pages of restore and eval, rendered in headless Chromium: every image loads, the
before/after slider moves, face boxes show on demand, pages link to each other, and nothing is
logged to the console. Plus the trust rules: a user's index.html is never replaced."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from drbfr_cli.cli.main import app
from drbfr_cli.gallery.page import HEAD, MARKER_NAME, THUMBS, page_name
from drbfr_cli.gallery.restore import write_restore_gallery
from drbfr_cli.imaging import read_image, write_image
from drbfr_cli.restore.report import (
    REPORT_NAME,
    FaceRecord,
    ImageRecord,
    ImageStatus,
    ReportWriter,
    RunSummary,
)
from tests.browser import broken_images, chromium_context, open_page, screenshot

runner = CliRunner()
IDENTITY = ("--model", "identity", "--bg-upsampler", "lanczos", "--detector", "yunet")


@pytest.fixture(scope="module")
def browser():
    with chromium_context() as context:
        yield context


@pytest.fixture(scope="module")
def restored(real_lq_whole_dir: Path, shared_weights_dir: Path, tmp_path_factory) -> Path:
    """A restore (identity model, real detector) of two small real photos and a broken file."""
    root = tmp_path_factory.mktemp("gallery")
    photos = root / "photos"
    for name in ("Blake_Lively.jpg", "example.jpg"):
        image = read_image(real_lq_whole_dir / name).rgb
        write_image(photos / name, cv2.resize(image, None, fx=0.6, fy=0.6))
    (photos / "broken.png").write_bytes(b"not an image")
    out = root / "out"
    args = ["restore", str(photos), "-o", str(out), "--weights-dir", str(shared_weights_dir)]
    result = runner.invoke(app, [*args, *IDENTITY])
    assert result.exit_code == 1, result.output  # broken.png failed, the others restored
    assert "gallery:" in result.output
    return out


def _cards(page_text: str) -> int:
    return len(re.findall(r'<article class="card"', page_text))


def test_restore_page_renders_slides_and_draws_boxes(restored: Path, browser) -> None:
    report = json.loads((restored / REPORT_NAME).read_text())
    faces = sum(len(r["faces"]) for r in report["images"])
    assert faces >= 4
    page, problems = open_page(browser, restored / "index.html")
    assert broken_images(page) == []
    assert page.locator("img").count() == 2 * 2 + 2 * faces  # slider pair + face pairs
    assert page.locator(".card").count() == 3
    failed = page.locator(".card", has_text="broken.png")
    assert failed.locator(".badge.failed").count() == 1 and "broken.png" in failed.inner_text()
    assert "1 failed image(s)" in page.locator("header").inner_text()

    card = page.locator(".card").first
    view, before = card.locator(".ba"), card.locator("img.before")
    clip = before.evaluate("img => getComputedStyle(img).clipPath")
    shot = screenshot(view)
    card.locator(".slider").focus()
    page.keyboard.press("End")  # keyboard: the slider goes to 100 (all input)
    assert card.locator(".slider").input_value() == "100"
    assert before.evaluate("img => getComputedStyle(img).clipPath") != clip
    moved = screenshot(view)
    assert moved.shape == shot.shape and np.abs(moved.astype(int) - shot).mean() > 1.0

    boxes = card.locator("svg.boxes")
    assert boxes.evaluate("svg => getComputedStyle(svg).display") == "none"
    card.locator(".toggle-boxes").check()
    assert boxes.evaluate("svg => getComputedStyle(svg).display") == "block"
    assert boxes.locator("rect").count() == len(report["images"][0]["faces"])
    assert problems.errors == []


def test_rerun_keeps_the_gallery_and_marks_skipped_images(
    restored: Path, shared_weights_dir: Path, browser
) -> None:
    faces = sorted((restored / THUMBS / "faces").iterdir())
    stamps = [p.stat().st_mtime_ns for p in faces]
    args = ["restore", str(restored.parent / "photos"), "-o", str(restored)]
    result = runner.invoke(app, [*args, *IDENTITY, "--weights-dir", str(shared_weights_dir)])
    assert result.exit_code == 1, result.output
    assert sorted((restored / THUMBS / "faces").iterdir()) == faces  # reused, not redone
    assert [p.stat().st_mtime_ns for p in faces] == stamps
    page, problems = open_page(browser, restored / "index.html")
    assert page.locator(".badge.skipped").count() == 2
    assert broken_images(page) == [] and problems.errors == []


def test_a_users_index_html_is_never_replaced(
    restored: Path, shared_weights_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_text("<html>mine</html>")
    weights = ("--weights-dir", str(shared_weights_dir))
    args = ["restore", str(restored.parent / "photos"), "-o", str(out), *IDENTITY, *weights]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "not a drbfr page" in result.output
    assert (out / "index.html").read_text() == "<html>mine</html>"
    assert not (out / "restored_imgs").exists()  # refused before any work
    result = runner.invoke(app, [*args, "--no-gallery"])
    assert result.exit_code == 1, result.output
    assert (out / "index.html").read_text() == "<html>mine</html>"
    assert not (out / THUMBS).exists()


def test_a_foreign_gallery_folder_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / THUMBS).mkdir(parents=True)
    (out / THUMBS / "holiday.jpg").write_bytes(b"mine")
    photo = tmp_path / "in" / "a.png"
    write_image(photo, np.full((64, 64, 3), 0.5, np.float32))
    result = runner.invoke(app, ["restore", str(photo.parent), "-o", str(out), "--aligned",
                                 "--model", "identity"])  # fmt: skip
    assert result.exit_code == 2 and "did not write" in result.output
    assert (out / THUMBS / "holiday.jpg").read_bytes() == b"mine"


# --------------------------------------------------------------------------- paging


def _synthetic_run(out: Path, count: int) -> None:
    """report.json of `count` aligned images, written with the report writer restore uses:
    every 50th failed, every 7th skipped, every 10th with a face (all share one tiny input and
    output file, so the test stays fast)."""
    source, output = out / "in.png", out / "restored_imgs" / "out.png"
    pixels = np.random.default_rng(0).random((8, 8, 3), dtype=np.float32)
    write_image(source, pixels)
    write_image(output, pixels[::-1])
    writer = ReportWriter(out / REPORT_NAME, csv_path=None, settings={"model": "synthetic"})
    summary = RunSummary()
    for index in range(count):
        name = f"{index:04d}.png"
        if index % 50 == 3:
            record = ImageRecord(str(out / "in" / name), name, str(output), ImageStatus.FAILED,
                                 error=f"{name}: file not found")  # fmt: skip
        else:
            face = FaceRecord(0, None, None, None, seed=index, niqe_input=5.0, niqe_restored=4.0)
            status = ImageStatus.SKIPPED if index % 7 == 0 else ImageStatus.OK
            record = ImageRecord(str(source), name, str(output), status, size=(8, 8),
                                 output_size=(8, 8), faces=(face,) if index % 10 == 0 else (),
                                 timings={"read": 0.01}, files={name: f"{index:064x}"})  # fmt: skip
        writer.add(record)
        summary.add(record)
    writer.close(summary)


def test_names_and_notes_are_escaped(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _synthetic_run(out, 1)
    report = json.loads((out / REPORT_NAME).read_text())
    report["images"][0]["relative"] = "a<b> & c.png"
    (out / REPORT_NAME).write_text(json.dumps(report))
    page = write_restore_gallery(out, [out / REPORT_NAME], note="Lanczos & <co>")[0].read_text()
    assert "a&lt;b&gt; &amp; c.png" in page and "Lanczos &amp; &lt;co&gt;" in page
    assert "<b>" not in page and "<co>" not in page


def test_a_thousand_images_make_five_linked_pages(tmp_path: Path, browser) -> None:
    out = tmp_path / "run"
    _synthetic_run(out, 1000)
    pages = write_restore_gallery(out, [out / REPORT_NAME])
    assert [p.name for p in pages] == [page_name(n) for n in range(1, 6)]
    texts = [p.read_text() for p in pages]
    assert [_cards(t) for t in texts] == [200] * 5
    for text in texts:  # every page link points at a page that exists
        links = set(re.findall(r'href="(index[^"#]*\.html)', text))
        assert links and all((out / name).is_file() for name in links)
        assert text.startswith(HEAD)
    assert "20 failed image(s)" in texts[0] and 'href="index-5.html#img-953"' in texts[0]

    page, problems = open_page(browser, pages[0])
    assert page.locator(".card").count() == 200 and broken_images(page) == []
    page.locator('nav.pager a[rel="next"]').first.click()
    page.wait_for_selector("#img-200", state="attached")
    assert page.url.endswith("/index-2.html")
    assert page.locator("#img-200").count() == 1 and page.locator(".card").count() == 200
    page.locator("nav.pager a", has_text=re.compile(r"^5$")).first.click()
    page.wait_for_selector("#img-999", state="attached")
    assert page.url.endswith("/index-5.html") and page.locator(".card").count() == 200
    page.locator('nav.pager a[rel="prev"]').first.click()
    page.wait_for_selector("#img-799", state="attached")
    assert page.url.endswith("/index-4.html")
    assert problems.errors == []

    _synthetic_run(out, 250)  # a shorter rerun: its stale pages and thumbnails go
    pages = write_restore_gallery(out, [out / REPORT_NAME])
    assert [p.name for p in pages] == ["index.html", "index-2.html"]
    assert not (out / "index-3.html").exists()
    kept = {p.name for p in (out / THUMBS / "faces").iterdir()}
    assert len(kept) == 2 * 25  # input and restored crop of every face left
    assert (out / THUMBS / MARKER_NAME).is_file()


# --------------------------------------------------------------------------- eval


def test_eval_page_shows_metrics_histograms_and_ranked_faces(
    hq_dir: Path, tmp_path: Path, browser
) -> None:
    gt_dir, restored_dir, lq_dir = tmp_path / "gt", tmp_path / "restored", tmp_path / "lq"
    rng = np.random.default_rng(1)
    for number, source in enumerate(sorted(hq_dir.glob("*.png"))[:6]):
        rgb = cv2.resize(read_image(source).rgb, (96, 96), interpolation=cv2.INTER_AREA)
        write_image(gt_dir / source.name, rgb)
        noise = rng.normal(0, 0.01 + 0.02 * number, rgb.shape)
        write_image(restored_dir / source.name, np.clip(rgb + noise, 0, 1))
        write_image(lq_dir / source.name, cv2.GaussianBlur(rgb, (7, 7), 2))
    out = tmp_path / "report"
    args = ["eval", "--restored", str(restored_dir), "--gt", str(gt_dir), "--lq", str(lq_dir),
            "--metrics", "psnr,ssim", "--out", str(out)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    page, problems = open_page(browser, out / "index.html")
    assert broken_images(page) == []
    assert page.locator("figure.hist svg").count() == 2
    assert page.locator("figure.hist rect").count() >= 2
    text = page.locator("main").inner_text()
    assert "PSNR (higher is better)" in text and "SSIM (higher is better)" in text
    psnr = json.loads((out / "summary.json").read_text())["means"]["psnr"]
    assert f"{psnr:.4f}" in page.locator("header").inner_text()
    best = page.locator("section", has_text="PSNR (higher").locator(".ranked").first
    assert best.locator("figure").count() == 4 and best.locator("img").count() == 12
    first = best.locator("figcaption").first.inner_text()
    assert sorted(Path(p).name for p in gt_dir.iterdir())[0] in first  # least noise: the best
    assert problems.errors == []
