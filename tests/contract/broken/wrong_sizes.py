"""Broken: sizes are the stored length, without counting LF as CRLF (the
most common mistake of a backend that stores messages with LF line ends)."""
import base


class WrongSizes(base.Backend):
    def size(self, uid, data):
        return len(data)


base.serve(WrongSizes())
