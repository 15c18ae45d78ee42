"""The portal checklist: the guide's steps (flad.init.guide) for one quality, filled in.

`flad init --explain QUALITY` prints it with placeholders; `flad init` prints it with
the files and folders it just made, so the person at the portal reads real names.
"""

from __future__ import annotations

from dataclasses import dataclass

from flad import config as config_mod
from flad.init import guide

__all__ = ["ChecklistContext", "ChecklistItem", "checklist", "explain", "render_checklist",
           "render_lines"]


@dataclass(frozen=True)
class ChecklistItem:
    """One step as printed: its guide section, its title and its lines, filled in."""

    section: str
    title: str
    lines: tuple[str, ...] = ()
    readme: str = ""  # the key of the README step it belongs to (guide.README_STEPS)


@dataclass(frozen=True)
class ChecklistContext:
    """What `flad init` knows, so the checklist names real files instead of placeholders."""

    config_path: str = "CONFIG"
    channel_name: str = "NAME"
    company_id: str = "BCE"
    public_key: str | None = None
    cer: str | None = None
    outbox: str = "<outbox>"
    inbox: str = "<inbox>"
    existing_channel: bool = False  # step 3b: the SFTP channel exists for another application
    configured: bool = False  # the [[channel]] block is in the configuration
    app_code_missing: bool = False
    given_flags: str | None = None  # the answers given this time, as flags; None: unknown

    def holds(self, condition: guide.When) -> bool:
        """Whether one of guide.CONDITIONS holds for this run."""
        return {
            "new": not self.existing_channel,
            "existing": self.existing_channel,
            "configured": self.configured,
            "unconfigured": not self.configured,
            "app_code_missing": self.app_code_missing,
        }[condition]


def _rerun_command(quality: str, ctx: ChecklistContext) -> str:
    """The next run's command: the answers already given as they were, placeholders only
    for what Chaman has not shown yet (sender number, user name) and the FLA code."""
    if ctx.given_flags is not None:
        given = f" {ctx.given_flags}" if ctx.given_flags else ""
    else:
        given = (" --certificate CERT --signing-key KEY (or --pkcs12 P12)"
                 + (" --ssh-key KEY" if ctx.existing_channel else ""))
    return (f"flad init -c {ctx.config_path} --quality {quality} --company {ctx.company_id} "
            f"--name {ctx.channel_name} --sender N --username U --app-code CODE{given}")


def _fields(quality: str, ctx: ChecklistContext) -> dict[str, str]:
    fields = {f"s_{key}": text for key, text in guide.SECTIONS.items()}
    fields |= {
        "s_channel_step": guide.SECTIONS["3b" if ctx.existing_channel else "3a"],
        "label": guide.QUALITY_LABELS[quality],
        "permission": guide.FLA_PERMISSION,
        "app": guide.FLA_APPLICATION,
        "channel_name": ctx.channel_name,
        "config_path": ctx.config_path,
        "company_id": ctx.company_id,
        "outbox": ctx.outbox,
        "inbox": ctx.inbox,
        "public_key": ctx.public_key or "the public SSH key (.pub, made by flad init)",
        "cer": ctx.cer or "the certificate's .cer (made by flad init)",
        "rerun": _rerun_command(quality, ctx),
        "host": guide.DEFAULT_HOST,
        "port": str(config_mod.DEFAULT_PORT),
    }
    return fields


def render_lines(lines: tuple[str, ...], quality: str) -> tuple[str, ...]:
    """Plain template lines (STEP_3B_LINES) filled in for `quality`, outside a checklist."""
    fields = _fields(quality, ChecklistContext())
    return tuple(line.format(**fields) for line in lines)


def checklist(quality: str, ctx: ChecklistContext | None = None) -> list[ChecklistItem]:
    """The set-up steps for `quality`, in the guide's order, each naming its section.

    Mandates appear only for mandataries, the quality activation only for training
    providers: the guide gives those steps to them alone.
    """
    if quality not in guide.QUALITIES:
        raise ValueError(f"unknown quality {quality!r}, expected one of "
                         f"{', '.join(guide.QUALITIES)}")
    ctx = ctx or ChecklistContext()
    fields = _fields(quality, ctx)
    items = []
    for step in guide.CHECKLIST:
        if quality not in step.qualities or not all(map(ctx.holds, step.when)):
            continue
        lines = []
        for line in step.lines:
            if isinstance(line, tuple):
                condition, line = line
                if not ctx.holds(condition):
                    continue
            lines.append(line.format(**fields))
        items.append(ChecklistItem(step.section.format(**fields), step.title.format(**fields),
                                   tuple(lines), step.readme))
    return items


def render_checklist(quality: str, items: list[ChecklistItem]) -> str:
    """The checklist as numbered text, each item followed by the guide's section it comes from."""
    label = guide.QUALITY_LABELS[quality]
    lines = [f'Checklist for the quality {quality} ("{label}"), in the order of the official '
             f"guide {guide.GUIDE}:"]
    lines.append(f"  Note: {guide.QUALITY_NOTES[quality]}")
    for number, item in enumerate(items, start=1):
        lines.append(f"{number:2}. {item.title}  [guide {item.section}]")
        lines += [f"      {line}" for line in item.lines]
    return "\n".join(lines)


def explain(quality: str) -> str:
    """The checklist of `flad init --explain`: nothing is read or written."""
    return ("\n".join(guide.APPLICATIONS_NOTE) + "\n\n"
            + render_checklist(quality, checklist(quality)))
