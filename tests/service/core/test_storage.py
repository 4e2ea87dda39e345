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


def test_a_host_drops_merged_weights_whose_checkpoint_another_host_erased(
    tmp_path: Path,
) -> None:
    import uuid

    from models.finetune.checkpoints import checkpoint_key
    from service.core.config import Settings
    from service.core.storage import artifact_store, drop_stale_merged, merged_root

    shared = f"memory://lethe-{uuid.uuid4().hex[:8]}/artifacts"  # one store, two hosts
    host_a = Settings(data_dir=tmp_path / "a", artifact_url=shared)
    host_b = Settings(data_dir=tmp_path / "b", artifact_url=shared)
    assert merged_root(host_a) != merged_root(host_b)  # each host's own folder
    store = artifact_store(host_a)
    for checkpoint in ("old", "new"):
        store.put(checkpoint_key(checkpoint), b"weights")
        (merged_root(host_b) / f"ft-{checkpoint}").mkdir(parents=True)
    # Host A's erasure destroys the old checkpoint; host B still holds its merged weights.
    store.delete(checkpoint_key("old"))
    assert drop_stale_merged(host_b) == ["old"]
    assert [p.name for p in merged_root(host_b).iterdir()] == ["ft-new"]
    assert drop_stale_merged(host_b) == []
