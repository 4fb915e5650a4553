"""Authentication and authorisation of the REST API (spec section 11.2), as pure logic.

Modules, bottom up: `privileges` (PBS's privileges and roles as data), `acl` (ACL
evaluation), `checks` (the rules endpoints apply, listing filters), `keys` (signing key and
CSRF secret files), `tickets` (tickets and CSRF tokens), `tokens` (API token header and
ticket cookie parsing), `ratelimit` (failed login counting), `authenticate` (a request's
caller, password login). No HTTP framework is involved.
"""

from chunkyard.server.auth.acl import AclEntry, AclTree, InvalidAcl, acl_path_for
from chunkyard.server.auth.authenticate import (
    Accounts,
    Authenticated,
    LoginResult,
    NoCredentials,
    authenticate_request,
    login,
)
from chunkyard.server.auth.errors import AuthError, LoginRateLimited, PermissionDenied
from chunkyard.server.auth.keys import AuthKey, AuthKeys, CsrfSecret
from chunkyard.server.auth.privileges import NS_PRIVS_OK, ROLES, Privilege
from chunkyard.server.auth.ratelimit import LoginRateLimiter

__all__ = [
    "NS_PRIVS_OK",
    "ROLES",
    "Accounts",
    "AclEntry",
    "AclTree",
    "AuthError",
    "AuthKey",
    "AuthKeys",
    "Authenticated",
    "CsrfSecret",
    "InvalidAcl",
    "LoginRateLimited",
    "LoginRateLimiter",
    "LoginResult",
    "NoCredentials",
    "PermissionDenied",
    "Privilege",
    "acl_path_for",
    "authenticate_request",
    "login",
]
