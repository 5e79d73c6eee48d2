"""The bibliography's author-year labels (book/_ext/ssd_bibstyle.py) and the plain-text titles of references.bib."""
from __future__ import annotations

import re
import sys

import pytest

from ssdlib.utils import REPO_ROOT

pybtex = pytest.importorskip("pybtex", reason="needs pybtex (the book extra: sphinxcontrib-bibtex)")
from pybtex.database import parse_file, parse_string  # noqa: E402

sys.path.insert(0, str(REPO_ROOT / "book" / "_ext"))
import ssd_bibstyle  # noqa: E402

BIB = REPO_ROOT / "book" / "references.bib"


def _labels(bibtex: str) -> list[str]:
    style = ssd_bibstyle.AuthorYearStyle()
    return [e.label for e in style.format_bibliography(parse_string(bibtex, "bibtex"))]


def test_labels_follow_the_in_text_author_year_form():
    labels = _labels(r"""
      @article{a, author = {King, Davis E.}, title = {T}, journal = {J}, year = {2009}}
      @book{b, author = {Cover, Thomas M. and Thomas, Joy A.}, title = {T}, publisher = {P}, year = {2006}}
      @article{c, author = {van der Maaten, Laurens and Hinton, Geoffrey}, title = {T}, journal = {J}, year = {2008}}
      @article{d, author = {Sch{\"o}lkopf, B. and Smola, A. and Gretton, A.}, title = {T}, journal = {J}, year = {2005}}
    """)
    assert labels == ["Cover and Thomas, 2006", "King, 2009", "Schölkopf et al., 2005",
                      "van der Maaten and Hinton, 2008"]


def test_equal_labels_get_letters_and_sort_by_year():
    labels = _labels(r"""
      @article{x, author = {Huang, G. and Ramesh, M. and Berg, T.}, title = {B}, journal = {J}, year = {2012}}
      @article{y, author = {Huang, G. and Mattar, M. and Lee, H.}, title = {A}, journal = {J}, year = {2007}}
      @article{z, author = {Huang, G. and Zhu, Q. and Lee, H.}, title = {C}, journal = {J}, year = {2007}}
    """)
    assert labels == ["Huang et al., 2007a", "Huang et al., 2007b", "Huang et al., 2012"]


def test_the_books_bibliography_has_unique_labels_and_no_tex_math_in_titles():
    bib = parse_file(str(BIB))
    labels = [e.label for e in ssd_bibstyle.AuthorYearStyle().format_bibliography(bib)]
    assert len(set(labels)) == len(labels) == len(bib.entries)
    math = {key: e.fields["title"] for key, e in bib.entries.items() if re.search(r"\$|\\math", e.fields["title"])}
    assert not math, f"titles with TeX math (shown raw in the HTML bibliography): {math}"
