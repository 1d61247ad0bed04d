from rest_framework import authentication, exceptions
from rest_framework.request import Request

from apps.core.models import ApiToken
from apps.core.selectors import api_token_for_secret
from apps.core.services import api_token_touch


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer phk_…``, the form Prometheus' ``authorization``
    block and most HTTP clients send. ``request.auth`` is the ApiToken."""

    keywords = ("bearer", "token")

    def authenticate(self, request: Request) -> tuple[object, ApiToken] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower().decode(errors="replace") not in self.keywords:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <token>'.")
        try:
            secret = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("The token contains invalid characters.") from None
        token = api_token_for_secret(secret=secret)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid, revoked or orphaned API token.")
        api_token_touch(token=token)
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (with WWW-Authenticate) rather than 403 to an
        # unauthenticated client.
        return 'Bearer realm="api"'
