"""Reading PDFs the way a person would: their text (pypdf) and their first page rendered
(pdftoppm)."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest
from pypdf import PdfReader


def pdf_text(data: bytes) -> tuple[str, int]:
    """All pages' text with whitespace collapsed (line wraps read as spaces), and the page count."""
    reader = PdfReader(io.BytesIO(data))
    text = "\n".join(page.extract_text() or "" for page in reader.pages)
    return " ".join(text.split()), len(reader.pages)


def render_first_page(data: bytes, out: Path) -> Path:
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed")
    src = out / "report.pdf"
    src.write_bytes(data)
    subprocess.run(
        ["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", str(src), str(out / "p")], check=True
    )
    [png] = sorted(out.glob("p*.png"))
    return png
