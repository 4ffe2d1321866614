"""The program's rules (config/program.toml) as a typed, checked object.

`load(path)` reads and validates the file when a process starts: an unknown or misspelt key,
a wrong type, an unknown time zone, quiet hours that are not "HH:MM" or a window that is not
positive stops the start with a message naming the file, the key and the reason. Defaults live
here, so code reads `ctx.program.offers.link_valid_hours`, never `.get(key, default)`.
"""
from __future__ import annotations

import os
import re
from datetime import time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator

from config._load import ConfigError, Section, load_toml, shown, validate
from config.vocabulary import CHOICE_FIELDS, YES_NO

HHMM = re.compile(r"\d{2}:\d{2}")


class ProgramError(ConfigError):
    """config/program.toml cannot be used; the message names the key and why."""


class About(Section):
    """[program]"""
    name: str
    timezone: str = "UTC"
    case_prefix: str = "PS"
    #: Counts under this are shown as "<11" on the dashboard and in reports.
    small_count_threshold: PositiveInt = 11
    #: Days after closing before names, phones, emails and free text are purged.
    retention_days: int = Field(default=30, ge=0)
    #: Where reviewers open a case; default: the Airtable base, else the console.
    coordinator_url: str = ""
    #: Phone numbers written without a country code are read as this region's (ISO 3166 code).
    phone_region: str = "US"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like \"America/New_York\")") from None
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class Roles(Section):
    """[roles]"""
    choices: tuple[str, ...] = ()


class Review(Section):
    """[review], in hours."""
    window_hours: PositiveFloat = 72
    reminder_before_hours: PositiveFloat = 24
    urgent_window_hours: PositiveFloat = 12
    urgent_reminder_before_hours: PositiveFloat = 4


class Offers(Section):
    """[offers], in hours unless the name says minutes."""
    expiry_hours: PositiveFloat = 4
    urgent_expiry_minutes: PositiveFloat = 30
    contact_window_hours: PositiveFloat = 48
    urgent_contact_window_hours: PositiveFloat = 8
    contact_escalate_after_hours: PositiveFloat = 24
    link_valid_hours: PositiveFloat = 72


class Matching(Section):
    """[matching]: how supporters are ranked (workflows/matching.py)."""
    suggestions: int = Field(default=3, ge=0)
    require_outside_institution: bool = False
    weight_role_preference: float = 3.0
    weight_department_preference: float = 1.0
    weight_specialty: float = 1.0
    weight_open_cases: float = 1.0
    weight_days_since_assigned: float = 0.5
    rest_days: PositiveFloat = 14.0


class Followup(Section):
    """[followup]: the clock of the second half, after contact is made (workflows/followup.py)."""
    #: The supporter's check-in (how are you after this one?) this long after contact.
    checkin_after_hours: PositiveFloat = 24
    #: The one-time survey links go this many days after contact.
    survey_after_days: PositiveFloat = 7
    #: A Contacted or Referred case with nothing open closes itself this many days after contact.
    close_after_days: PositiveFloat = 14
    #: How long the requester's private resources link (`/r/<token>`) keeps working.
    resources_link_valid_days: PositiveFloat = 30


class Wellbeing(Section):
    """[wellbeing]: looking after supporters."""
    #: A supporter whose check-in answer is hard (4 or 5) is not offered cases for this many days.
    cooldown_days: PositiveFloat = 14
    #: New cases a supporter may accept in 30 days; matching skips them at the cap (0: no cap).
    max_cases_per_month: int = Field(default=4, ge=0)


class Console(Section):
    """[console]"""
    idle_minutes: PositiveFloat = 30


class QuietHours(Section):
    """[quiet_hours], in the program's time zone; none when both are left out."""
    start: str = ""
    end: str = ""

    @model_validator(mode="after")
    def _times(self) -> "QuietHours":
        if (self.start or self.end) and not all(HHMM.fullmatch(t) and _time(t) for t in (self.start, self.end)):
            raise ValueError('start and end must be times like "21:00"')
        return self

    @property
    def window(self) -> tuple[time, time] | None:
        """(start, end), or None when the program keeps no quiet hours."""
        return (time.fromisoformat(self.start), time.fromisoformat(self.end)) if self.start else None


def _time(text: str) -> bool:
    try:
        time.fromisoformat(text)
    except ValueError:
        return False
    return True


class CrisisResource(Section):
    name: str
    phone: str
    hours: str = ""


class Crisis(Section):
    """[crisis]: shown on every page a person sees and sent on the crisis path."""
    national: str = ""
    emergency: str = ""
    resources: tuple[CrisisResource, ...] = ()


class SurveyQuestion(Section):
    """One [[survey.questions]]: asked of `ask` (both, requester or supporter)."""
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    text: str
    choices: tuple[str, ...] = Field(min_length=2)
    ask: str = Field(default="both", pattern=r"^(both|requester|supporter)$")


DEFAULT_SURVEY_CHOICES = ("Yes", "Somewhat", "No")


class Survey(Section):
    """[survey]: the short survey sent `survey_after_days` after contact."""
    #: A program's own Qualtrics or REDCap survey: its public link is sent as is (it must carry
    #: nothing identifying); empty: Peerline's own page, /survey/<token>.
    external_url: str = Field(default="", pattern=r"^(https://\S+)?$")
    questions: tuple[SurveyQuestion, ...] = (
        SurveyQuestion(id="helpful", text="Was the peer support helpful?", choices=DEFAULT_SURVEY_CHOICES),
        SurveyQuestion(id="timely", text="Was the first contact timely?", choices=DEFAULT_SURVEY_CHOICES),
        SurveyQuestion(id="recommend", text="Would you recommend the program to a colleague?",
                       choices=DEFAULT_SURVEY_CHOICES),
    )

    @model_validator(mode="after")
    def _unique_ids(self) -> "Survey":
        ids = [q.id for q in self.questions]
        if len(ids) != len(set(ids)):
            raise ValueError("question ids must be unique")
        return self

    def questions_for(self, kind: str) -> tuple[SurveyQuestion, ...]:
        """The questions a requester or a supporter is asked."""
        return tuple(q for q in self.questions if q.ask in ("both", kind))


class Program(Section):
    """config/program.toml."""
    program: About
    institutions: dict[str, str] = Field(default_factory=dict)
    roles: Roles = Roles()
    review: Review = Review()
    offers: Offers = Offers()
    matching: Matching = Matching()
    console: Console = Console()
    quiet_hours: QuietHours = QuietHours()
    crisis: Crisis = Crisis()
    followup: Followup = Followup()
    wellbeing: Wellbeing = Wellbeing()
    survey: Survey = Survey()

    def allowed_values(self, field: str) -> tuple[str, ...] | None:
        """The program's values for a request field, for mapping a form's codes (None: any text)."""
        return {
            **CHOICE_FIELDS,
            "institution": tuple(self.institutions),
            "role": self.roles.choices,
            "outside_my_institution": YES_NO, "crisis": YES_NO,
        }.get(field)

    def institution_name(self, code: str, default: str = "") -> str:
        return self.institutions.get(code, default)


def parse(data: dict, source: str = "config/program.toml") -> Program:
    """`data` (program.toml as read) checked into a Program; ProgramError names each problem."""
    return validate(Program, data, source, ProgramError)


def load(path: str | os.PathLike) -> Program:
    """Read and check config/program.toml (or PROGRAM_FILE)."""
    return parse(load_toml(path, ProgramError), shown(path))
