"""The built-in request form, `GET/POST /request`: the form a flyer's QR code opens when the
program uses no Qualtrics or REDCap survey (and always available beside them). A page of the
service's own, so it lives in `web/` (no outside system's wire format here).

The POST only checks the CSRF token and the rate limit, stores the answers in the inbox and
answers; the worker makes the case. Works without JavaScript. `?flyer=<tag>` on the link is
kept on the case as its Flyer.
"""
from __future__ import annotations

import logging
import re
import uuid

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from wtforms import BooleanField, HiddenField, RadioField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, Length, Optional, ValidationError

from config.program import Program
from web import ratelimit
from workflows import phones
from workflows.inbox import record_and_enqueue
from workflows.model import CONTACT_CHOICES

log = logging.getLogger("peerline.web.request_form")

bp = Blueprint("request_form", __name__)

PREFERENCE_CHOICES = [SelectChoice("Any", "No preference"), SelectChoice("Same", "Same as mine"),
                      SelectChoice("Different", "Different from mine")]
URGENCY_CHOICES = [
    SelectChoice("Routine", "In the next few days is fine"),
    SelectChoice("Urgent", "Today, if possible"),
    SelectChoice("Crisis", "I am in crisis or worried about my safety, or someone else's"),
]


class PhoneNumber:
    """A number we can call or text, read as intake will read it (workflows/phones.py), in
    the program's region (set on the form by `build_form`)."""

    def __init__(self, message: str = "Please enter a phone number, for example 555 010 1234."):
        self.message = message

    def __call__(self, form, field):
        if not phones.is_phone(field.data, getattr(form, "phone_region", phones.DEFAULT_REGION)):
            raise ValidationError(self.message)


class RequestForm(FlaskForm):
    submission_id = HiddenField()
    flyer = HiddenField(validators=[Length(max=64)])
    for_whom = RadioField("Who is this support for?", choices=[
        SelectChoice("Self", "For me"), SelectChoice("Colleague", "For a colleague (please check with them first)")],
        validators=[DataRequired("Please choose who the support is for.")])
    requester_name = StringField("First name, or the name you would like us to use", validators=[
        DataRequired("Please give a name we can use."), Length(max=100)])
    requester_phone = StringField("Phone number", validators=[Optional(), PhoneNumber()])
    requester_email = StringField("Email", validators=[
        Optional(), Email("Please enter an email address, for example name@example.org."), Length(max=254)])
    preferred_contact = RadioField("How should a peer supporter reach out?",
                                   choices=[SelectChoice(c) for c in CONTACT_CHOICES],
                                   validators=[DataRequired("Please choose how we should reach out.")])
    institution = SelectField("Hospital", validators=[Optional()])
    department = StringField("Department or unit", validators=[Optional(), Length(max=100)])
    role = SelectField("Role", validators=[Optional()])
    specialty = StringField("Specialty", validators=[Optional(), Length(max=100)])
    role_preference = RadioField("A supporter in the same role as you?", choices=PREFERENCE_CHOICES, default="Any")
    department_preference = RadioField("A supporter from your own department?", choices=PREFERENCE_CHOICES,
                                       default="Any")
    outside_my_institution = BooleanField("I would prefer someone from outside my hospital")
    urgency = RadioField("How soon would you like to talk?", choices=URGENCY_CHOICES, default="Routine")

    referrer_name = StringField("Your name", validators=[Optional(), Length(max=100)])
    referrer_phone = StringField("Your phone number", validators=[Optional(), PhoneNumber()])
    referrer_email = StringField("Your email", validators=[
        Optional(), Email("Please enter an email address, for example name@example.org."), Length(max=254)])

    def validate(self, extra_validators=None) -> bool:
        """Field checks, then a way to reach the person (and, for a colleague, who referred
        them). Done here, not in validate_<field>: Optional() stops a field's own chain when
        it is empty, which is exactly the case to catch."""
        ok = super().validate(extra_validators)
        colleague = self.for_whom.data == "Colleague"
        whose = "your colleague" if colleague else "you"
        phone, email = self.requester_phone, self.requester_email
        if not phone.data and not email.data and not phone.errors and not email.errors:
            phone.errors.append(f"Please give a phone number or an email address, so someone can reach {whose}.")
        elif self.preferred_contact.data in ("Phone call", "Text message") and not phone.data \
                and not phone.errors:
            phone.errors.append("Please give a phone number for a call or text, or choose email.")
        elif self.preferred_contact.data == "Email" and not email.data and not email.errors:
            email.errors.append("Please give an email address, or choose a call or text.")
        if colleague:
            if not self.referrer_name.data and not self.referrer_name.errors:
                self.referrer_name.errors.append("Please give your own name, so the program can check back with you.")
            if not self.referrer_phone.data and not self.referrer_email.data \
                    and not self.referrer_phone.errors and not self.referrer_email.errors:
                self.referrer_phone.errors.append("Please give your own phone number or email address.")
        return ok and not self.errors


def build_form(program: Program) -> RequestForm:
    # The page posts a form, never JSON: read the form fields only (Flask-WTF would otherwise
    # wrap a JSON body such as `false` and fail with a 500; found by tests/test_fuzz.py).
    form = RequestForm(formdata=request.form if request.method == "POST" else None)
    form.phone_region = phones.region(program)
    form.institution.choices = [SelectChoice("", "Choose your hospital")] + [
        SelectChoice(code, name) for code, name in program.institutions.items()]
    form.role.choices = [SelectChoice("", "Choose your role")] + [
        SelectChoice(r) for r in program.roles.choices]
    return form


def _rate_limit() -> str:
    return current_app.config["REQUEST_RATE_LIMIT"]


def _rate_limit_per_address() -> str:
    return current_app.config["REQUEST_RATE_LIMIT_PER_ADDRESS"]


@bp.route("/request", methods=["GET", "POST"])
def request_form():
    ctx = current_app.extensions["peerline"]
    form = build_form(ctx.program)
    if request.method == "GET":
        form.submission_id.data = uuid.uuid4().hex
        form.flyer.data = request.args.get("flyer", "")[:64]
    elif form.validate_on_submit():
        answers = {name: form[name].data for name in (
            "for_whom", "requester_name", "requester_phone", "requester_email", "preferred_contact",
            "institution", "department", "role", "specialty", "role_preference",
            "department_preference", "outside_my_institution", "urgency", "flyer")}
        if answers["for_whom"] == "Colleague":   # asked only of someone referring a colleague
            answers |= {name: form[name].data for name in ("referrer_name", "referrer_phone", "referrer_email")}
        submission = form.submission_id.data if re.fullmatch(r"[0-9a-f]{32}", form.submission_id.data or "") \
            else uuid.uuid4().hex
        inbox_id, new = record_and_enqueue(ctx, source="web", source_key=f"web:{submission}",
                                           payload={"answers": answers}, crisis=answers["urgency"] == "Crisis")
        log.info("request received inbox=%s new=%s", inbox_id, new)
        return redirect(url_for("request_form.thanks", urgent=1 if answers["urgency"] == "Crisis" else None,
                                colleague=1 if answers["for_whom"] == "Colleague" else None), 303)
    status = 400 if request.method == "POST" else 200
    return render_template("request.html", form=form, crisis=ctx.program.crisis,
                           program=ctx.program.program), status


@bp.get("/request/thanks")
def thanks():
    ctx = current_app.extensions["peerline"]
    return render_template("thanks.html", crisis=ctx.program.crisis,
                           program=ctx.program.program, urgent=request.args.get("urgent") == "1",
                           colleague=request.args.get("colleague") == "1")


def field_attrs(field, *, type=None, hint=None, autocomplete=None) -> dict:
    """Accessibility attributes for an input: its hint and error are read with it."""
    attrs, described = {}, []
    if type:
        attrs["type"] = type
    if autocomplete:
        attrs["autocomplete"] = autocomplete
    if hint:
        described.append(f"{field.id}-hint")
    if field.errors:
        described.append(f"{field.id}-error")
        attrs["aria-invalid"] = "true"
    if described:
        attrs["aria-describedby"] = " ".join(described)
    return attrs


def init_app(app) -> None:
    app.jinja_env.globals["field_attrs"] = field_attrs
    # One count for every process (web/ratelimit.py, set up first by web.register_pages);
    # the 429 page is web/home.py's.
    limiter = app.extensions["peerline_limiter"]
    ratelimit.only_for_blueprints(limiter, bp.name)
    ratelimit.hooks_on_blueprints(app, limiter, bp.name)
    app.register_blueprint(bp)
    per_browser = limiter.limit(_rate_limit, key_func=ratelimit.browser_key, methods=["POST"])
    per_address = limiter.limit(_rate_limit_per_address, key_func=ratelimit.address_key, methods=["POST"])
    app.view_functions["request_form.request_form"] = per_address(per_browser(request_form))
