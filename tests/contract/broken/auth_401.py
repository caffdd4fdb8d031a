"""Broken: refuses a wrong password with 401 instead of 200 {"ok": false}.
The gateway reads a 401 as the backend refusing the webhook itself (a bad
signature or token): the user would get [SYS/TEMP], not [AUTH], and the
gateway would log an error about backend_secret / backend_token."""
import base


class Auth401(base.Backend):
    def authenticate(self, req):
        if req.get("method") == "USER" and self.password_ok(req):
            return 200, {"ok": True}
        return 401, {"error": "invalid user name or password"}


base.serve(Auth401())
