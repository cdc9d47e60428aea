"""Every study, one module each; a module defines ``STUDY``. New tasks add theirs to MODULES."""

from __future__ import annotations

import difflib
import importlib

from groklab.reproduce.base import Study, StudyError

MODULES = ("demo", "composition", "comparison", "circuits", "nanda", "pair", "power", "grokfast",
           "mnist1d", "omnigrok", "complex", "family", "abacus", "fact_injection",
           "tinystories")


def studies() -> dict[str, Study]:
    out = {}
    for m in MODULES:
        study = importlib.import_module(f"groklab.reproduce.studies.{m}").STUDY
        out[study.name] = study
    return out


def get(name: str) -> Study:
    known = studies()
    if name not in known and name.replace("_", "-") in known:  # the module's spelling
        name = name.replace("_", "-")
    if name not in known:
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise StudyError(f"unknown study '{name}'{hint} studies: {', '.join(known)}")
    return known[name]
