"""The repository explains itself: every citation of docs/reference.md points at a section that
exists there."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference.md"
CODE_DIRS = ("nasforge", "controllers", "search_spaces", "benchmarks", "tests")
# "docs/reference.md section 3", "docs/reference.md sections 4 and 6", "sections 1, 2 and 7"
CITATION = re.compile(r"docs/reference\.md\s+sections?\s+(\d+(?:\s*(?:,|and)\s*\d+)*)")


def _sections() -> set[int]:
    return {int(m) for m in re.findall(r"^## (\d+)\. ", REFERENCE.read_text(), re.MULTILINE)}


def _citations() -> list[tuple[str, int]]:
    out = []
    for folder in CODE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text()
            for m in CITATION.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                out += [(f"{path.relative_to(ROOT)}:{line}", int(n))
                        for n in re.findall(r"\d+", m.group(1))]
    return out


def test_reference_has_the_published_sections_1_to_9():
    assert _sections() >= set(range(1, 10))


def test_every_reference_citation_names_an_existing_section():
    citations = _citations()
    # the op definitions, the search procedure, the published cells and the recipes cite it
    assert {n for _, n in citations} >= {1, 2, 3, 4}
    missing = [(where, n) for where, n in citations if n not in _sections()]
    assert not missing, f"citations of sections that docs/reference.md lacks: {missing}"


def test_no_code_cites_the_file_outside_the_repository():
    outside = re.compile(r"(?<![/\w])REFERENCE\.md")
    stale = [f"{p.relative_to(ROOT)}" for folder in CODE_DIRS
             for p in (ROOT / folder).rglob("*.py")
             if p != Path(__file__).resolve() and outside.search(p.read_text())]
    assert not stale, f"cite docs/reference.md section N instead of REFERENCE.md in {stale}"


def test_citation_pattern_reads_single_and_grouped_sections():
    """The checker itself can fail: it finds the numbers of each citation form."""
    text = "see docs/reference.md section 3; docs/reference.md sections 4 and 6, 9"
    assert [re.findall(r"\d+", m.group(1)) for m in CITATION.finditer(text)] == [
        ["3"], ["4", "6", "9"]]
