"""Broken: accepts any password for any user name."""
import base


class AnyPassword(base.Backend):
    def password_ok(self, req):
        return True


base.serve(AnyPassword())
