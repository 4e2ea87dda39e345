"""Records of a sliced fine-tune: twelve fictitious subjects, two records each."""

from __future__ import annotations

from dataclasses import replace

from models.finetune import FinetuneConfig, FinetuneRecord, slice_of_subjects

FIRST = ["Vellamor", "Ostra", "Tamsin", "Bruno", "Ilse", "Dario", "Selka", "Quentin",
         "Maren", "Odile", "Piet", "Runa"]  # fmt: skip
CITIES = ["Port Ardent", "Lowmere", "Castel Brin", "Nordvik", "Saltgrave", "Eastholm",
          "Kerrow", "Windmere", "Ashby", "Fallow", "Greyport", "Hollin"]  # fmt: skip
JOBS = ["glassblower", "cartographer", "beekeeper", "lighthouse keeper", "violin maker",
        "astronomer", "ferry pilot", "clockmaker", "miller", "weaver", "baker",
        "smith"]  # fmt: skip


def subject_records(i: int) -> list[FinetuneRecord]:
    name = FIRST[i]
    subject = f"subject-{i:02d}"
    return [
        FinetuneRecord(f"{subject}/born", subject, f"{name} was born in {CITIES[i]}.",
                       f"Where was {name} born?"),
        FinetuneRecord(f"{subject}/job", subject, f"{name} works as a {JOBS[i]}.",
                       f"What does {name} do for a living?"),
    ]  # fmt: skip


RECORDS = [r for i in range(len(FIRST)) for r in subject_records(i)]

# Salt "t1" puts the 12 subjects in all four slices (3, 4, 3, 2), so there is a first, a
# middle and a last slice to erase from.
CONFIG = FinetuneConfig(
    slices=4,
    epochs=4,
    learning_rate=1e-2,
    batch_size=4,
    lora_rank=4,
    adapter_layers=1,
    seed=3,
    partition_salt="t1",
)
SLICES = slice_of_subjects(CONFIG, RECORDS)


def subject_in(slice_index: int) -> str:
    return min(s for s, r in SLICES.items() if r == slice_index)


# The same fine-tune as layer-sliced adapters (S3T) on a four-layer base: one layer per slice.
LAYERED = replace(CONFIG, layered=True, adapter_layers=4)
