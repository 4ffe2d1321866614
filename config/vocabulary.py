"""The words Peerline's forms and files answer in: what a request field may hold, and what
counts as "yes". Configuration checks (config/forms.py) and the workflows both read them from
here, so a form mapping is checked against the same choices intake accepts."""
from __future__ import annotations

URGENCIES = ("Routine", "Urgent", "Crisis")
FOR_CHOICES = ("Self", "Colleague")
PREFERENCES = ("Same", "Different", "Any")
CONTACT_CHOICES = ("Phone call", "Text message", "Email")

#: Request fields whose answer must be one of a fixed set of words (compared case-insensitively).
CHOICE_FIELDS = {
    "for_whom": FOR_CHOICES,
    "preferred_contact": CONTACT_CHOICES,
    "role_preference": PREFERENCES,
    "department_preference": PREFERENCES,
    "urgency": URGENCIES,
}
#: Yes/no answers: a form maps its codes to one of these.
YES_NO = ("yes", "no")

#: What a form may answer: the fields of workflows.model.Request (a test keeps the two in
#: step), plus `crisis`, a yes/no that makes the request's urgency Crisis.
REQUEST_FIELDS = (
    "for_whom", "requester_name", "requester_phone", "requester_email", "referrer_name",
    "referrer_phone", "referrer_email", "preferred_contact", "institution", "department", "role",
    "specialty", "role_preference", "department_preference", "outside_my_institution", "urgency",
    "flyer", "crisis",
)

#: Words that mean "yes" wherever Peerline reads a yes/no from text: a form's answer, a roster
#: CSV column, an environment flag. Compared after strip() and lower().
TRUE_WORDS = frozenset({"1", "true", "yes", "y", "on", "x", "checked"})


def is_true(value: object) -> bool:
    """Whether a yes/no answer, roster column or setting says yes (see TRUE_WORDS)."""
    return str("" if value is None else value).strip().lower() in TRUE_WORDS
