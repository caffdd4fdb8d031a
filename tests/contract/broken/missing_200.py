"""Broken: a message that does not exist is answered 200 with an empty body
instead of 404, so a client would get an empty message."""
import base


class Missing200(base.Backend):
    def missing(self):
        return 200, b""


base.serve(Missing200())
