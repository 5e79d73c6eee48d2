"""Sphinx extension: bibliography labels in the author-year form the text cites ("Zhuang et al., 2025").

sphinxcontrib-bibtex's ``author_year`` reference style only changes the citations in the text; the labels of the
bibliography itself come from the pybtex formatting style (``alpha`` by default: "[ZYQ+25]"). This registers a
pybtex formatting style ``ssd_author_year`` (the ``unsrt`` entry format, sorted as its labels read) whose
label style builds the same strings as the in-text citations: one author "King, 2009", two "Cover and Thomas,
2006", three or more "Zhuang et al., 2025", with a, b, ... appended when two entries would get the same label.
"""
from __future__ import annotations

from collections import Counter
from string import ascii_lowercase

import pybtex.plugin
from pybtex.richtext import Text
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting import BaseSortingStyle

STYLE_NAME = "ssd_author_year"


def _surname(person) -> str:
    """The von and last parts of a name as plain text ("van der Maaten"), TeX braces and accents resolved."""
    latex = " ".join(person.prelast_names + person.last_names)
    return Text.from_latex(latex).render_as("text")


def _surnames(entry) -> list[str]:
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    return [_surname(p) for p in persons]


def author_year_label(entry) -> str:
    """"Surname, year", "A and B, year" or "A et al., year" from the entry's authors (else editors) and year."""
    names = _surnames(entry)
    if not names:
        who = entry.key
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    year = entry.fields.get("year", "n.d.")
    return f"{who}, {year}"


class AuthorYearLabelStyle(BaseLabelStyle):
    """Author-year labels, made unique with a letter after the year where needed ("Huang et al., 2007a")."""

    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        labels = [author_year_label(e) for e in entries]
        counts = Counter(labels)
        seen: Counter = Counter()
        for label in labels:
            if counts[label] > 1:
                suffix = ascii_lowercase[seen[label]] if seen[label] < 26 else str(seen[label])
                seen[label] += 1
                yield label + suffix
            else:
                yield label


class AuthorYearSortingStyle(BaseSortingStyle):
    """Sort as the labels read: first surname, then single / pair / "et al.", then year and title."""

    def sorting_key(self, entry):
        names = [n.lower() for n in _surnames(entry)] or [entry.key.lower()]
        second = names[1] if len(names) == 2 else ""
        return (names[0], min(len(names), 3), second, entry.fields.get("year", ""), entry.fields.get("title", ""))


class AuthorYearStyle(UnsrtStyle):
    """The ``unsrt`` entry format with author-year labels, in the order of the labels."""

    default_label_style = AuthorYearLabelStyle
    default_sorting_style = AuthorYearSortingStyle


def setup(app):
    """Register the pybtex style before sphinxcontrib-bibtex looks it up (``bibtex_default_style``)."""
    pybtex.plugin.register_plugin("pybtex.style.formatting", STYLE_NAME, AuthorYearStyle, force=True)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
