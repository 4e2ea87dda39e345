"""Files lethe writes outside its stores (reports, exports) are for its own user only."""

from __future__ import annotations

from pathlib import Path

from service.core.storage import write_private


def test_reports_are_written_private(tmp_path: Path) -> None:
    target = tmp_path / "reports" / "request.pdf"
    write_private(target, b"%PDF")
    assert target.read_bytes() == b"%PDF"
    assert target.stat().st_mode & 0o777 == 0o600
    assert target.parent.stat().st_mode & 0o777 == 0o700
    target.chmod(0o644)  # an existing, readable file is made private when rewritten
    write_private(target, b"%PDF-2")
    assert target.stat().st_mode & 0o777 == 0o600 and target.read_bytes() == b"%PDF-2"
