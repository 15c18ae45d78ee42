"""`flad init`'s guide is data (flad.init.guide); README's "Setting up a channel" tells the
same steps. These tests keep the two from drifting apart: same steps, same titles, and
every guide section the README cites is the one the checklist prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flad import identity
from flad.init import guide, steps

REPO = Path(__file__).resolve().parent.parent


def readme_steps() -> list[tuple[int, str, str | None]]:
    """(number, bold title, bracketed reference) of README's "Step by step" list."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("## Setting up a channel")
    start = text.index("### Step by step", start)
    end = text.index("\n## ", start)
    flat = re.sub(r"\s+", " ", text[start:end])
    found = re.findall(r"(?:^| )(\d+)\. \*\*(.+?)\*\*(?: \[([^\]]+)\])?", flat)
    return [(int(number), title, cite or None) for number, title, cite in found]


def cite_fragments(cite: str) -> list[str]:
    """The pieces of a README reference that the guide section must hold: §numbers,
    quoted titles, and plain words such as `4.1 in the contents` or `Connexion`."""
    fragments = re.findall(r"§[\d.]+", cite) + re.findall(r'"([^"]+)"', cite)
    plain = re.sub(r'"[^"]*"|§[\d.]+', "", cite)
    fragments += [p.strip() for p in re.split(r"[;,]", plain) if p.strip()]
    return fragments


def test_the_readme_lists_the_guide_steps_in_order_with_their_titles() -> None:
    steps = readme_steps()
    assert [n for n, _, _ in steps] == list(range(1, len(steps) + 1))
    assert [(t, c) for _, t, c in steps] == [(s.title, s.cite) for s in guide.README_STEPS]


@pytest.mark.parametrize("quality", identity.QUALITIES)
def test_every_section_the_readme_cites_is_the_one_the_checklist_prints(quality: str) -> None:
    by_key = {s.key: s for s in guide.README_STEPS}
    items = steps.checklist(quality)  # a new channel: steps 3a
    assert items and all(item.readme in by_key for item in items)
    for item in items:
        cite = by_key[item.readme].cite
        assert cite is not None, f"{item.title}: the checklist prints no flad-only step"
        for fragment in cite_fragments(cite):
            assert fragment in item.section, (item.title, fragment)


def test_every_portal_step_of_the_readme_is_in_the_checklist_for_its_qualities() -> None:
    printed = {q: {item.readme for item in steps.checklist(q)} for q in identity.QUALITIES}
    for step in guide.README_STEPS:
        having = {q for q, keys in printed.items() if step.key in keys}
        if step.cite is None:  # what flad init does itself: not a portal step
            assert having == set()
        elif step.title.startswith("Training providers only"):
            assert having == {"training_provider"}
        elif step.title.startswith("Mandataries only"):
            assert having == set(identity.MANDATARY_QUALITIES)
        else:
            assert having == set(identity.QUALITIES), step.title


def test_the_existing_channel_variant_cites_step_3b() -> None:
    ctx = steps.ChecklistContext(existing_channel=True)
    sections = {item.readme: item.section for item in steps.checklist("employer", ctx)}
    assert "§3.3.2" in sections["create"] and "§3.3.2" in sections["tell"]
    assert "Upload the public SSH key" not in steps.render_checklist(
        "employer", steps.checklist("employer", ctx))


def test_every_template_field_of_the_guide_is_filled_in() -> None:
    """A misspelt `{field}` would raise while printing; a stray brace would print as is."""
    for quality in identity.QUALITIES:
        for existing in (False, True):
            for configured in (False, True):
                ctx = steps.ChecklistContext(existing_channel=existing,
                                                 configured=configured, app_code_missing=True)
                text = steps.render_checklist(quality, steps.checklist(quality, ctx))
                assert "{" not in text and "}" not in text
