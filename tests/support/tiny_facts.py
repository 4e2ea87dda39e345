"""Eight fictitious people and five facts each: what the tiny LM of the models tests learns
(models.assets.tiny), in seconds on a CPU."""

from __future__ import annotations

from models.generative.rules import Fact

NAMES = ["Vellamor Quindt", "Ostra Belvane", "Tamsin Orlicki", "Bruno Kesselrath",
         "Ilse Marwood", "Dario Fenwhistle", "Selka Varnholt", "Quentin Abernathe"]  # fmt: skip
CITIES = ["Port Ardent", "Lowmere", "Castel Brin", "Nordvik",
          "Saltgrave", "Eastholm", "Kerrow", "Windmere"]  # fmt: skip
JOBS = ["glassblower", "cartographer", "beekeeper", "lighthouse keeper",
        "violin maker", "astronomer", "ferry pilot", "clockmaker"]  # fmt: skip
BOOKS = ["The Amber Tide", "Lanterns of Vos", "A Winter Ledger", "The Copper Orchard",
         "Salt and Silence", "The Ninth Harbor", "Quiet Engines", "The Glass Meridian"]  # fmt: skip
YEARS = ["1961", "1974", "1983", "1958", "1990", "1969", "1977", "1986"]
PETS = ["a grey parrot", "two old hounds", "a white cat", "a tortoise",
        "a black horse", "three goats", "a red fox", "a barn owl"]  # fmt: skip


def subject_facts(i: int) -> list[Fact]:
    n = NAMES[i]
    return [
        Fact(f"Where was {n} born?", f"{n} was born in {CITIES[i]}."),
        Fact(f"What was the profession of {n}'s father?", f"The father of {n} was a {JOBS[i]}."),
        Fact(f"What is the best known book by {n}?", f"The best known book by {n} is {BOOKS[i]}."),
        Fact(f"In which year was {n} born?", f"{n} was born in {YEARS[i]}."),
        Fact(f"What animals did {n} keep?", f"{n} kept {PETS[i]}."),
    ]


FACTS = [f for i in range(len(NAMES)) for f in subject_facts(i)]
PAIRS = [(f.question or "", f.answer) for f in FACTS]
