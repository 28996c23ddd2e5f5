"""The /api/v1 router: every feature's routes in one place."""

from __future__ import annotations

from fastapi import APIRouter

from cmschat.accounts import admin_api as accounts_admin_api
from cmschat.accounts import api as accounts_api
from cmschat.attachments import api as attachments_api
from cmschat.audit import api as audit_api
from cmschat.backup import api as backup_api
from cmschat.chat import api as chat_api
from cmschat.cms import admin_api as cms_admin_api
from cmschat.cms.canned_replies import api as canned_replies_api
from cmschat.cms.moderation import api as moderation_api
from cmschat.cms.notices import api as notices_api
from cmschat.monitoring import api as monitoring_api
from cmschat.retention import api as retention_api

API_PREFIX = "/api/v1"


def build_api_router() -> APIRouter:
    """All versioned API routes."""
    router = APIRouter(prefix=API_PREFIX)
    router.include_router(accounts_api.router)
    router.include_router(accounts_admin_api.router)
    router.include_router(chat_api.router)
    router.include_router(attachments_api.router)
    router.include_router(audit_api.router)
    router.include_router(retention_api.router)
    router.include_router(backup_api.router)
    router.include_router(notices_api.router)
    router.include_router(canned_replies_api.router)
    router.include_router(moderation_api.router)
    router.include_router(cms_admin_api.router)
    router.include_router(monitoring_api.router)
    return router
