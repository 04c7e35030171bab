"""Synthetic patients for the demo portal: invented, deterministic, obviously fictitious.

Every patient is drawn from its own RNG seeded by its number, so patient ``n`` is the same
whatever ``count`` is asked for and however often it is generated. Names come from small
invented lists, identifiers are ``SYN-<country>-<number>``: nothing here can match a person.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

SEED = "ncp-asgi-demo-v1"

GIVEN_NAMES: tuple[str, ...] = (
    "Zorvan", "Quillith", "Brimsa", "Yondrel", "Ottavex", "Ferrowyn", "Lumelle", "Kadrisk",
    "Vespith", "Orlanne", "Tebbrix", "Sylquen", "Marrowen", "Jintrel", "Aulbrix", "Dorvessa",
)  # fmt: skip
FAMILY_NAMES: tuple[str, ...] = (
    "Testwick", "Synthmoor", "Demoquist", "Placebrook", "Mockridge", "Fauxhaven", "Samplethorn",
    "Dummelow", "Fictabury", "Stubworth", "Nullbridge", "Fixtureby",
)  # fmt: skip
COUNTRIES: tuple[str, ...] = ("BE", "DE", "ES", "FR", "IT", "LU", "MT", "PT")
MEDICATIONS: tuple[str, ...] = (
    "Placebonol 10 mg once daily", "Demozepam 5 mg at night", "Fictamol 500 mg as needed",
    "Synthopril 20 mg once daily", "Mockacillin 250 mg three times daily",
)  # fmt: skip
ALLERGIES: tuple[str, ...] = (
    "Imaginary pollen", "Demo dust", "Fictional shellfish", "Synthetic latex",
)  # fmt: skip
PROBLEMS: tuple[str, ...] = (
    "Demo condition A", "Demo condition B", "Sample chronic finding", "Placeholder diagnosis",
)  # fmt: skip

PATIENT_ID_PATTERN = re.compile(r"^SYN-[A-Z]{2}-\d{6}$")
FIRST_BIRTH_DATE = date(1940, 1, 1)
BIRTH_DATE_SPAN_DAYS = 70 * 365


@dataclass(frozen=True)
class SyntheticPatient:
    patient_id: str
    given_name: str
    family_name: str
    birth_date: date
    country: str
    summary: dict[str, Any] = field(default_factory=dict)

    def model_fields(self) -> dict[str, Any]:
        """The ``DemoPatient`` fields other than ``patient_id``."""
        return {
            "given_name": self.given_name,
            "family_name": self.family_name,
            "birth_date": self.birth_date,
            "country": self.country,
            "summary": self.summary,
        }


def synthetic_patient(number: int) -> SyntheticPatient:
    """Synthetic patient ``number`` (1-based); the same on every call."""
    rng = random.Random(f"{SEED}:{number}")
    country = rng.choice(COUNTRIES)
    return SyntheticPatient(
        patient_id=f"SYN-{country}-{number:06d}",
        given_name=rng.choice(GIVEN_NAMES),
        family_name=rng.choice(FAMILY_NAMES),
        birth_date=FIRST_BIRTH_DATE + timedelta(days=rng.randrange(BIRTH_DATE_SPAN_DAYS)),
        country=country,
        summary={
            "medications": sorted(rng.sample(MEDICATIONS, rng.randint(0, 3))),
            "allergies": sorted(rng.sample(ALLERGIES, rng.randint(0, 2))),
            "problems": sorted(rng.sample(PROBLEMS, rng.randint(1, 2))),
        },
    )


def synthetic_patients(count: int) -> list[SyntheticPatient]:
    """The first ``count`` synthetic patients."""
    return [synthetic_patient(number) for number in range(1, count + 1)]
