"""Forms of the demo portal."""

from __future__ import annotations

from typing import Any

from django import forms

from patient_data.demo_data import COUNTRIES

#: Marks a field whose value is patient data: the cleanup script empties it on the open page.
PATIENT_FIELD_ATTRS = {"data-patient-data": "", "autocomplete": "off"}


class PatientSearchForm(forms.Form):
    name = forms.CharField(
        required=False,
        max_length=64,
        widget=forms.TextInput(attrs={**PATIENT_FIELD_ATTRS, "class": "form-control"}),
    )
    patient_id = forms.CharField(
        required=False,
        max_length=32,
        label="Patient ID",
        widget=forms.TextInput(attrs={**PATIENT_FIELD_ATTRS, "class": "form-control"}),
    )
    country = forms.ChoiceField(
        required=False,
        choices=[("", "Any country"), *((code, code) for code in COUNTRIES)],
        widget=forms.Select(attrs={**PATIENT_FIELD_ATTRS, "class": "form-select"}),
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        cleaned = {key: (value or "").strip() for key, value in cleaned.items()}
        if not any(cleaned.values()):
            raise forms.ValidationError("Enter a name, a patient ID or a country.")
        return cleaned
