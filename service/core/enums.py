"""The closed sets of names the database stores as text: model kinds and statuses, account roles, job
statuses, prompt sources. `StrEnum` members compare equal to their stored strings, so a row read back
(`row["role"] == Role.ADMIN`) and a value written (`Role.ADMIN` as a query parameter) need no conversion.
The schema's CHECK constraints (service/core/schema.py) list the same values; a test keeps them in step.
"""

from __future__ import annotations

from enum import StrEnum


class ModelKind(StrEnum):
    PRETRAINED = "pretrained"
    SFT = "sft"
    REWARD = "reward"
    POLICY = "policy"
    EXTERNAL = "external"


class ModelStatus(StrEnum):
    REGISTERED = "registered"
    CANDIDATE = "candidate"
    ACTIVE = "active"
    RETIRED = "retired"
    FAILED = "failed"


class Role(StrEnum):
    ANNOTATOR = "annotator"
    ADMIN = "admin"
    SIMULATED = "simulated"
    IMPORT = "import"
    JUDGE = "judge"
    REVIEWER = "reviewer"  # ranks like an annotator, and resolves contested tasks (annotator/review.py)


HUMAN_ROLES = (Role.ANNOTATOR, Role.ADMIN, Role.REVIEWER)  # the roles that log in with a password
REVIEW_ROLES = (Role.REVIEWER, Role.ADMIN)  # who may resolve a contested task


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class PromptSource(StrEnum):
    SEED = "seed"
    IMPORT = "import"
    SERVED = "served"
    EVAL = "eval"
