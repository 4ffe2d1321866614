"""Supporter check-ins, survey invitations and survey answers, and the count of cases each
supporter accepted lately (workflows/wellbeing.py and surveys.py rely on them)."""
from __future__ import annotations

from collections import Counter
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from workflows.records import TAKEN

from .schema import checkins, offers, survey_answers, survey_invitations


#: Built once: intake runs it for every case (building costs more than running it on SQLite).
_ACCEPTED_SINCE = (sa.select(offers.c.supporter_id, sa.func.count()).where(offers.c.status.in_(TAKEN))
                   .where(offers.c.answered_at >= sa.bindparam("since_", type_=offers.c.answered_at.type))
                   .group_by(offers.c.supporter_id))


class WellbeingRepo:
    """Mixed into `Database`: needs its transactions (`_write`, `_read`)."""

    # ---- check-ins ----
    def checkin_create(self, *, supporter_id: str, case_id: str, asked_at: datetime) -> None:
        """Record that a supporter is asked about a case; a second call changes nothing."""
        try:
            with self._write(may_conflict=True) as conn:
                conn.execute(checkins.insert().values(supporter_id=supporter_id, case_id=case_id,
                                                      asked_at=asked_at, month=asked_at.strftime("%Y-%m")))
        except IntegrityError:
            pass

    def checkins_open_for(self, supporter_id: str) -> list[dict]:
        """The supporter's unanswered check-ins, oldest first."""
        with self._read() as conn:
            rows = conn.execute(sa.select(checkins).where(checkins.c.supporter_id == supporter_id)
                                .where(checkins.c.answered_at.is_(None)).order_by(checkins.c.id))
            return [dict(r._mapping) for r in rows]

    def checkin_for(self, case_id: str, supporter_id: str) -> dict | None:
        with self._read() as conn:
            row = conn.execute(sa.select(checkins).where(checkins.c.case_id == case_id)
                               .where(checkins.c.supporter_id == supporter_id)).first()
            return dict(row._mapping) if row else None

    def checkin_answer(self, checkin_id: int, score: int, at: datetime) -> bool:
        """Record the answer; False when it was answered already (the first answer stands)."""
        with self._write() as conn:
            done = conn.execute(checkins.update().where(checkins.c.id == checkin_id)
                                .where(checkins.c.answered_at.is_(None)).values(score=score, answered_at=at))
            return done.rowcount == 1

    def checkins_list(self) -> list[dict]:
        with self._read() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(checkins).order_by(checkins.c.id))]

    # ---- the monthly cap ----
    def accepted_counts_since(self, since: datetime) -> Counter:
        """Supporter id -> cases they took at or after `since`: offers they accepted, and cases
        a coordinator gave them by hand (workflows/followup.py)."""
        with self._read() as conn:
            rows = conn.execute(_ACCEPTED_SINCE, {"since_": since})
            return Counter({supporter_id: n for supporter_id, n in rows})

    # ---- surveys ----
    def survey_invite(self, *, respondent: str, institution: str, role: str, at: datetime) -> int:
        with self._write() as conn:
            return conn.execute(survey_invitations.insert().values(
                respondent=respondent, institution=institution, role=role, month=at.strftime("%Y-%m"),
                created_at=at)).inserted_primary_key[0]

    def survey_invitation(self, invitation_id: int) -> dict | None:
        with self._read() as conn:
            row = conn.execute(sa.select(survey_invitations)
                               .where(survey_invitations.c.id == invitation_id)).first()
            return dict(row._mapping) if row else None

    def survey_answer(self, invitation_id: int, answers: dict[str, str], at: datetime) -> bool:
        """Store the answers once, without the case: False when the invitation was answered
        already (nothing is stored then). One transaction: both or neither."""
        with self._write() as conn:
            done = conn.execute(survey_invitations.update().where(survey_invitations.c.id == invitation_id)
                                .where(survey_invitations.c.answered_at.is_(None)).values(answered_at=at))
            if done.rowcount != 1:
                return False
            invitation = conn.execute(sa.select(survey_invitations)
                                      .where(survey_invitations.c.id == invitation_id)).first()
            if answers:
                conn.execute(survey_answers.insert(), [
                    {"respondent": invitation.respondent, "institution": invitation.institution,
                     "role": invitation.role, "month": invitation.month, "question_id": q, "answer": a}
                    for q, a in answers.items()])
            return True

    def survey_answers_list(self) -> list[dict]:
        with self._read() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(survey_answers).order_by(survey_answers.c.id))]
