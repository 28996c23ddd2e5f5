"""Every ORM model, imported so ``metadata`` is complete for Alembic and the tests."""

from cmschat.accounts import models as accounts_models
from cmschat.attachments import models as attachments_models
from cmschat.audit import models as audit_models
from cmschat.chat import models as chat_models
from cmschat.cms.canned_replies import models as canned_reply_models
from cmschat.cms.notices import models as notice_models
from cmschat.db.base import Base
from cmschat.jobs import models as jobs_models
from cmschat.monitoring import models as monitoring_models
from cmschat.retention import models as retention_models

metadata = Base.metadata

__all__ = [
    "accounts_models",
    "attachments_models",
    "audit_models",
    "canned_reply_models",
    "chat_models",
    "jobs_models",
    "metadata",
    "monitoring_models",
    "notice_models",
    "retention_models",
]
