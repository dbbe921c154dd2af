"""Migrations for annotation as labelling teams run it (issue 22): versioned guidelines, a qualification
quiz, preference strength and attribute ratings, adaptive overlap and adjudication by reviewers."""

from __future__ import annotations

from service.core.schema_types import Migration, table_sql

ANNOTATION_DEPTH = [
    Migration(
        18,
        "guidelines, the quiz, strengths and attribute ratings, contested tasks, reviewers' adjudications",
        # The role check gains 'reviewer' (the table is rebuilt as in migration 7, ids kept), and an
        # account records when it passed the quiz.
        """CREATE TABLE annotators_v18 (
  id BIGINT PRIMARY KEY DEFAULT nextval('seq_annotators'),
  name VARCHAR NOT NULL UNIQUE,
  role VARCHAR NOT NULL CHECK (role IN ('annotator', 'admin', 'simulated', 'import', 'judge', 'reviewer')),
  password_hash VARCHAR,
  disabled BOOLEAN NOT NULL DEFAULT false,
  created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
  profile JSON,
  sessions_since DOUBLE,
  qualified_at TIMESTAMPTZ
);
INSERT INTO annotators_v18 (id, name, role, password_hash, disabled, created_at, profile, sessions_since)
  SELECT id, name, role, password_hash, disabled, created_at, profile, sessions_since FROM annotators;
DROP TABLE annotators;
ALTER TABLE annotators_v18 RENAME TO annotators;
"""
        # batch '' is the whole project's guideline; a batch's own, when it has one, wins for its tasks.
        + table_sql(
            "guidelines",
            """batch VARCHAR NOT NULL DEFAULT '',
  version INTEGER NOT NULL,
  text VARCHAR NOT NULL,
  UNIQUE (batch, version)""",
        )
        + """ALTER TABLE rankings ADD COLUMN guideline_id BIGINT;
ALTER TABLE rankings ADD COLUMN strengths VARCHAR[];
ALTER TABLE rankings ADD COLUMN attributes JSON;
ALTER TABLE tasks ADD COLUMN contested BOOLEAN DEFAULT false;
"""
        # A quiz attempt's answers: kept apart from rankings, since a quiz task is answered once per attempt.
        + table_sql(
            "quiz_answers",
            """annotator_id BIGINT NOT NULL,
  attempt INTEGER NOT NULL,
  task_id BIGINT NOT NULL,
  ranks INTEGER[] NOT NULL,
  agreement DOUBLE NOT NULL,
  submission_id VARCHAR NOT NULL UNIQUE,
  UNIQUE (annotator_id, attempt, task_id)""",
        )
        + table_sql(
            "adjudications",
            """task_id BIGINT NOT NULL UNIQUE,
  reviewer_id BIGINT NOT NULL,
  ranks INTEGER[] NOT NULL,
  strengths VARCHAR[],
  rationale VARCHAR NOT NULL,
  guideline_id BIGINT""",
        ),
    ),
]
