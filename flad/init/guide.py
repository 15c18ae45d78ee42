"""The official guide "Etablir le canal batch" as data: the steps `flad init` prints.

Nothing here runs: it is the portal checklist, per quality, in the order of the guide
(CareerPro - Federal Learning Account, 28/11/2024), each step naming the section it
comes from, so that a change of the guide is a change of this data and nothing else.
`flad.init.steps` fills in the templates (`{label}`, `{channel_name}`, ...) and
numbers the steps; a test checks that README's "Setting up a channel" lists the same
steps with the same titles and sections (`README_STEPS`).

Template fields: `label` (the quality as Chaman shows it), `permission`, `app`,
`channel_name`, `config_path`, `company_id`, `outbox`, `inbox`, `public_key`, `cer`,
`rerun` (the next `flad init` command), `host`, `port`, and every section of
`SECTIONS` as `s_<key>`; `s_channel_step` is step 3a for a new channel and 3b for an
existing one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flad import identity

__all__ = [
    "APPLICATIONS_NOTE",
    "CHECKLIST",
    "CONDITIONS",
    "DEFAULT_HOST",
    "FLA_APPLICATION",
    "FLA_PERMISSION",
    "GUIDE",
    "QUALITIES",
    "QUALITY_LABELS",
    "QUALITY_NOTES",
    "README_STEPS",
    "SECTIONS",
    "STEP_3B_LINES",
    "ReadmeStep",
    "Step",
    "When",
]

GUIDE = '"Etablir le canal batch"'
DEFAULT_HOST = "sftp.socialsecurity.be"
FLA_PERMISSION = "CareerPro - Federal Learning Account"
FLA_APPLICATION = "fla"

QUALITIES = identity.QUALITIES
MANDATARIES = tuple(q for q in QUALITIES if q in identity.MANDATARY_QUALITIES)

#: The quality names as Chaman and "Gestion des accès" show them (guide §3.3.1, point 4).
QUALITY_LABELS: Mapping[str, str] = {
    "employer": "Employeur ONSS",
    "social_secretariat": "Secrétariat social",
    "service_provider": "Prestataire de service",
    "training_provider": "Prestataire de formation",
}

#: Where each step stands in the guide. Its table of contents and its text number the
#: last sections differently; the titles are what a reader can search for.
SECTIONS: Mapping[str, str] = {
    "step1": '§3.1 "Etape 1 : inscrire son entreprise sur le portail de la sécurité sociale"',
    "step2": "§3.2 \"Etape 2 : obtenir un accès au service en ligne 'CHAMAN'\"",
    "annex": ('annex "Identifier son gestionnaire d\'accès local" (5.1 in the contents, 6.1 '
              "in the text)"),
    "quality": ('"4. Activer une nouvelle qualité (ex prestataire de formation)" (and §2.5 '
                '"Spécificité des prestataires de formation")'),
    "mandate": '§2.2.1 "Création d\'un mandat"',
    "step3": '§3.3 "Etape 3 : activer le canal BATCH"',
    "3a": '§3.3.1 "Etape 3a: activer un nouveau canal BATCH"',
    "3b": '§3.3.2 "Etape 3b: activer un canal BATCH existant"',
    "connect": '"Information technique", "Connexion" (4.1 in the contents, 5.1 in the text)',
    "files": ('"Information technique", "Créer les fichiers" (4.2 in the contents, 5.2 in '
              "the text)"),
}

#: What `--explain` says first: the FLA has ended, the channel it sets up lives on.
APPLICATIONS_NOTE = (
    "The Federal Learning Account (FLA) ended on 1 January 2026 (law of 14 January 2026:",
    "no new data is accepted; the data is kept until the end of 2026). The SFTP channel",
    "this checklist sets up lives on: it carries the DmfA (every quarter), DIMONA, the",
    "social-risk declarations, supplementary pensions and the generic documents. flad",
    "has profiles for the DmfA, DIMONA and the generic documents (profile = \"dmfa\",",
    "\"dimona\", \"generic\" in [[channel.application]]). Where a step names the FLA",
    "permission or an FLA mandate, tick or ask for the applications you send instead.",
)

#: One note per quality, printed before the steps.
QUALITY_NOTES: Mapping[str, str] = {
    "employer": ("An employer sends only for its own enterprise number. When a mandatary "
                 "sends your FLA data for you, you need no channel of your own (§2.2.2)."),
    **dict.fromkeys(MANDATARIES, (
        "A mandatary sends for its client employers, under each client's enterprise number, "
        "through one channel for all of them and all applications (§2.2.2). A company of a "
        "group can be the mandatary of the others (§2.3).")),
    "training_provider": ("A training provider sends under its own enterprise number; the "
                          "data may name a participant's employer, and no mandate is needed "
                          "for that (§2.5)."),
}

#: Step 3b: keep the channel that exists; also what a refused second channel is told.
STEP_3B_LINES = (
    "Keep the existing SFTP channel: no new certificate and no new SSH key, the existing "
    "ones are used.",
    "In Chaman: www.socialsecurity.be → entreprise → service en ligne → Chaman → gérer vos "
    'canaux techniques; public cible "entreprise"; CSAM; the quality "{label}". Keep the '
    '"numéro d\'expéditeur" shown.',
    'On the line of the existing SFTP channel click "modifier" (keep the user name shown); '
    'under "Permissions sécurisées" tick "{permission}", then "valider".',
)

#: What must hold for a step or a line: the channel is new (3a) or exists (3b); the
#: [[channel]] block is written or not yet; the application code is still to fill in.
When = str
CONDITIONS: tuple[When, ...] = ("new", "existing", "configured", "unconfigured",
                                "app_code_missing")


@dataclass(frozen=True)
class ReadmeStep:
    """A step as README's "Step by step" lists it: its bold title and its bracketed
    reference to the guide (None for what flad does itself)."""

    key: str
    title: str
    cite: str | None


@dataclass(frozen=True)
class Step:
    """One thing a person does on the portal (or with flad), and where the guide says so.

    `lines` holds templates; a `(condition, template)` pair is printed only when the
    condition holds. `qualities` are the qualities that get the step, `when` the
    conditions that must all hold, `readme` the README step it belongs to.
    """

    readme: str
    section: str
    title: str
    lines: tuple[str | tuple[When, str], ...] = ()
    qualities: tuple[str, ...] = QUALITIES
    when: tuple[When, ...] = ()


README_STEPS: tuple[ReadmeStep, ...] = (
    ReadmeStep("register", "Register the company on the portal", '§3.1 "Etape 1"'),
    ReadmeStep("quality", "Training providers only: activate the quality",
               '"4. Activer une nouvelle qualité", §2.5'),
    ReadmeStep("chaman", "Get access to Chaman", '§3.2 "Etape 2"'),
    ReadmeStep("mandates", "Mandataries only: mandates in MAHIS", "§2.2.1"),
    ReadmeStep("keys", "Make the keys and the certificate file", None),
    ReadmeStep("create", "Create the channel in Chaman", '§3.3.1 "Etape 3a"'),
    ReadmeStep("tell", "Give flad the sender number and user name",
               '§3.3.1; "Connexion", 4.1 in the contents, 5.1 in the text'),
    ReadmeStep("trust", "Trust the server's host key", "Connexion"),
    ReadmeStep("first_file", "Send a first test file",
               '"Créer les fichiers", 4.2 in the contents, 5.2 in the text'),
)

_LOGIN = ("www.socialsecurity.be → entreprise → Vers tous les services en ligne → Chaman → "
          'gérer vos canaux techniques; public cible "entreprise"; log in with CSAM (eID, '
          'itsme, ...); choose the quality "{label}".')

CHECKLIST: tuple[Step, ...] = (
    Step("register", "{s_step1}", "Register the company on the social-security portal", (
        "Skip this when the company already uses a service of the portal.",
        "Otherwise: \"Etape 1 : Identifiez-vous en tant qu'employeur\" and \"Etape 2 : "
        "Enregistrez-vous sur le portail\", described on "
        "https://www.socialsecurity.be/site_fr/general/first_time.htm",
    )),
    Step("quality", "{s_quality}", 'Activate the quality "{label}" first', (
        "A channel in this quality can only be made once the quality exists, and its local "
        "manager is named while activating it.",
        "The entity's access manager (\"responsable d'accès entité\") logs in to \"Gestion "
        "des accès\" (UMAN) with the employer quality: www.socialsecurity.be → entreprise → "
        "service en ligne → gestion des accès → gestion des accès.",
        'Click the company\'s name; under "Activer la qualité" choose "{label}", "suivant"; '
        'fill in the activation screen, naming the local manager ("gestionnaire local"), '
        '"suivant", "confirmer": "La qualité a bien été activée".',
        "That local manager gets Chaman access in this quality automatically.",
    ), qualities=("training_provider",)),
    Step("chaman", "{s_step2}; {s_annex}", "Get access to Chaman", (
        'The local manager ("gestionnaire local") of the quality "{label}" has it. Anyone '
        'else asks that local manager for "Gestion des canaux techniques" in the service '
        '"Gestion des accès", under the quality "{label}".',
        'Who the local manager is: "Gestion des accès" → page "Vos responsables", at the '
        'level of the quality "{label}" (the access manager is at the "entité" level).',
        '"Accès interdit" in Chaman means this step is not done.',
    )),
    Step("mandates", "{s_mandate}", 'Mandates in MAHIS for "Federal Learning Account"', (
        "For each client employer, an active mandate for the service \"Federal Learning "
        "Account\" must link the employer (mandant) and your company (mandataire): "
        "www.socialsecurity.be → entreprise → service en ligne → MAHIS. The conditions are "
        "in \"lignes de conduite pour les prestataires de services\" on that page.",
        "An employer has only one FLA mandatary (it may differ from its DmfA or DIMONA one); "
        "without an active mandate the platform refuses the employer's files.",
        "List those employers' enterprise numbers, one per line, in a file named by "
        '`mandates = "..."` in channel {channel_name}: flad then refuses, before sending, a '
        "file for an employer without a mandate.",
    ), qualities=MANDATARIES),
    Step("create", "{s_3b}", 'Give the existing SFTP channel the permission "{permission}"',
         STEP_3B_LINES, when=("existing",)),
    Step("create", "{s_step3}; {s_3a}", "Create the SFTP channel in Chaman", (
        "One SFTP channel per quality: if Chaman already lists an SFTP channel in this "
        "quality (made for DmfA, DIMONA, ...), do not create one; follow step 3b ({s_3b}) "
        "instead, and give flad that channel's private key with --ssh-key.",
        _LOGIN,
        'If the quality "{label}" is not offered, the main access manager must create it in '
        '"gestion des accès".',
        '"Ajouter un compte FTP ou SFTP", Type "SFTP"; "Nom du compte": any name, for '
        "instance {channel_name}.",
    ), when=("new",)),
    Step("create", "{s_3a}", 'Tick the permission "{permission}"', (
        'Under "Permissions sécurisées", tick "{permission}" (others, such as DmfA or '
        "DIMONA, as the company needs: the same channel carries every application).",
    ), when=("new",)),
    Step("create", "{s_3a}", "Upload the public SSH key and the certificate", (
        '"Certificat": {cer}; "Nom du certificat": any name.',
        '"Nom d\'utilisateur": the technical SFTP user name you choose; keep it (--username).',
        '"Clé SSH publique": {public_key}',
        '"Valider": Chaman shows the "numéro d\'expéditeur"; keep it (--sender).',
    ), when=("new",)),
    Step("tell", "{s_channel_step}; {s_connect}", "Tell flad the sender number and user name", (
        "Done: channel {channel_name} is in {config_path}.",
        ("app_code_missing", "Still to do: fill in the FLA application code (`code = ...` in "
         "its [[channel.application]]), from the FLA batch manual."),
    ), when=("configured",)),
    Step("tell", "{s_channel_step}; {s_connect}", "Tell flad the sender number and user name", (
        "Run flad init with them (keys and .cer made by an earlier run are reused):",
        "  {rerun}",
    ), when=("unconfigured",)),
    Step("trust", "{s_connect}", "Trust the server's host key", (
        "  flad trust-host -c {config_path} {channel_name}",
        "flad connects to {host}, port {port}, and shows the host key's fingerprint: compare "
        "it with the one your administrator published before accepting it.",
    )),
    Step("first_file", "{s_files}", "Send a first test file through INTEST", (
        "With production = false, files go to INTEST (simulation), where no FS signature is "
        "needed.",
        "Drop an FLA XML file into {outbox}/test/{app}/, then run:",
        "  flad run -c {config_path} --once --wait-replies 600",
        "It waits until the platform's receipt (ACRF) is there and exits 0 only when it is "
        "positive; the receipt is in {inbox}/test/ and `flad status -c {config_path}` shows "
        "the outcome.",
        "Set production = true only after a positive receipt: files then go to IN, signed.",
    )),
)
