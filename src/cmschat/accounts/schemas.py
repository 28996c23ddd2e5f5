"""API shapes for accounts: XCreate / XUpdate / XRead / XPage."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from cmschat.accounts.models import Role


def _clean_display_name(value: str) -> str:
    value = unicodedata.normalize("NFC", value).strip()
    if not value:
        raise ValueError("must not be blank")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in value):
        raise ValueError("must not contain control or invisible formatting characters")
    return value


DisplayName = Annotated[
    str, Field(min_length=1, max_length=100), AfterValidator(_clean_display_name)
]
Username = Annotated[str, Field(min_length=1, max_length=64)]
# Long enough for any policy-conforming password, short enough to bound the work per request.
SubmittedPassword = Annotated[str, Field(min_length=1, max_length=1024)]


class RequestBody(BaseModel):
    """Request bodies refuse unknown fields, so a typo is an error and not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class UserRead(BaseModel):
    """A user as the API shows it (never the password hash)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    display_name: str
    role: Role
    is_active: bool
    must_change_password: bool
    must_change_reason: Literal["first_start", "set_by_admin"] | None = Field(
        description="why a password change is required: the password was generated at the "
        "first start, or set by an administrator; null when no change is required"
    )
    created_at: datetime
    updated_at: datetime


class AdminUserRead(UserRead):
    """A user as the console shows it, with who created and last changed the account."""

    created_by: str
    updated_by: str


class UserPage(BaseModel):
    """One page of users."""

    items: list[AdminUserRead]
    next_cursor: str | None


class UserCreate(RequestBody):
    """What an admin gives to create an account; no password: cmschat generates one."""

    username: Username
    password: SubmittedPassword | None = Field(
        default=None, description="omitted: a one-time password is generated and returned once"
    )
    role: Role = Role.member
    display_name: DisplayName | None = None
    must_change_password: bool | None = Field(
        default=None,
        description="default: true for a generated password, false for a given one",
    )


class UserCreated(AdminUserRead):
    """The new account, and its one-time password when cmschat generated it (shown once)."""

    temporary_password: str | None = None


class PasswordPolicy(BaseModel):
    """The rules a new password must meet, as ``accounts/passwords.py`` enforces them."""

    min_length: int
    max_length: int
    min_distinct_characters: int
    not_username: bool = True
    not_common: bool = True


class UserUpdate(RequestBody):
    """Admin changes to an account; omitted fields stay as they are."""

    display_name: DisplayName | None = None
    role: Role | None = None
    is_active: bool | None = None


class PasswordReset(RequestBody):
    """An admin's password reset: a given password, or none for a generated one."""

    password: SubmittedPassword | None = None


class PasswordResetResult(BaseModel):
    """The reset account, and the one-time password when cmschat generated it."""

    user: AdminUserRead
    temporary_password: str | None


class PasswordChange(RequestBody):
    """A user's own password change."""

    current_password: SubmittedPassword
    new_password: SubmittedPassword


class LoginRequest(RequestBody):
    """Credentials for a new session."""

    username: Username
    password: SubmittedPassword
    device_token: str | None = Field(
        default=None,
        max_length=512,
        description="the device_token of this client's last login as this user, if any",
    )


class LoginResponse(BaseModel):
    """A new session's bearer token, its user, and the device token to keep."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the scheme name, not a secret
    expires_at: datetime
    user: UserRead
    device_token: str = Field(
        description="keep it (per username) and send it with this client's next logins: "
        "a client that signed in before keeps its own failure budget"
    )


class DirectoryEntry(BaseModel):
    """Who someone is, for finding people to talk to (nothing more)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    display_name: str


class Directory(BaseModel):
    """People matching a search."""

    items: list[DirectoryEntry]
    next_cursor: str | None = None
